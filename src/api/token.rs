//! Authentication: the signed JWT, the token request, and one access token
//! per run.
//!
//! The token is reused for every request (and every thread), renewed before
//! it can expire and once after a 401 (`request`). Neither the JWT nor the
//! token is ever shown: not in messages, not at `-vv`, not when the token
//! answer is malformed.

use super::ApiClient;
use super::request::{Auth, Method, NotFound, RequestSpec, Unusable};
use crate::error::{ExitKind, fail};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The token endpoint.
pub(super) const TOKEN_PATH: &str = "/auth/v2/token";
/// Longest access token accepted; real ones are about 1 KiB.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// JWT lifetime; the API refuses more than 30 minutes.
const JWT_LIFETIME_SECS: i64 = 1800;
/// An access token is replaced once it is this old, before it can expire.
const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(25 * 60);

#[derive(Clone)]
pub(super) struct Token {
    bearer: String,
    obtained: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    tid: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

impl ApiClient {
    /// Gets an access token now, so that `check` can report it as a step.
    pub fn authenticate(&self) -> Result<()> {
        self.bearer().map(drop)
    }

    /// The current access token, fetching or renewing it when needed. The
    /// lock is held while fetching, so concurrent requests wait for the one
    /// new token rather than each fetching their own.
    pub(super) fn bearer(&self) -> Result<String> {
        let mut token = self.token.lock().expect("token lock");
        if let Some(current) = token.as_ref() {
            if current.obtained.elapsed() < TOKEN_RENEW_AFTER {
                return Ok(current.bearer.clone());
            }
            crate::debug!(
                "access token is {} s old, renewing it",
                current.obtained.elapsed().as_secs()
            );
        }
        let bearer = self.fetch_token()?;
        *token = Some(Token {
            bearer: bearer.clone(),
            obtained: Instant::now(),
        });
        Ok(bearer)
    }

    /// Forgets a token the API refused, unless another thread has already
    /// replaced it.
    pub(super) fn discard_token(&self, refused: &str) {
        let mut token = self.token.lock().expect("token lock");
        if token.as_ref().is_some_and(|t| t.bearer == refused) {
            *token = None;
        }
    }

    /// The token request's body: a JWT signed now, with a fresh `jti`, so
    /// every attempt sends a new one.
    pub(super) fn token_request_body(&self) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: "http://cylance.com",
            sub: &self.settings.app_id,
            tid: &self.settings.tenant_id,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + JWT_LIFETIME_SECS,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(self.settings.secret.expose().as_bytes())
            .context("preparing the signing key")?;
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )
        .context("signing the authentication JWT")?;
        Ok(serde_json::json!({ "auth_token": jwt }).to_string())
    }

    /// `POST /auth/v2/token`, a logical request of its own with its own
    /// retry budget. An answer without a usable token is refused at once:
    /// asking again would get the same.
    fn fetch_token(&self) -> Result<String> {
        let spec = RequestSpec {
            method: Method::Post,
            path: TOKEN_PATH,
            query: &[],
            auth: Auth::Credentials,
            not_found: NotFound::Fails,
        };
        let token = self.request(&spec, |body| {
            #[derive(Deserialize)]
            struct TokenAnswer {
                access_token: String,
            }
            match serde_json::from_slice::<TokenAnswer>(&body) {
                Ok(token) if is_usable_token(&token.access_token) => Ok(token.access_token),
                Ok(token) if !token.access_token.is_empty() => Err(Unusable::Refused(fail(
                    ExitKind::Protocol,
                    format!(
                        "POST {TOKEN_PATH}: the access_token is unusable ({} bytes; a token \
                         is 1 to {MAX_TOKEN_LEN} bytes of visible ASCII); refused, not \
                         shown, not retried",
                        token.access_token.len()
                    ),
                ))),
                _ => Err(Unusable::Refused(fail(
                    ExitKind::Protocol,
                    format!(
                        "POST {TOKEN_PATH}: the answer holds no access_token; body starts: {}",
                        excerpt_without_tokens(&body)
                    ),
                ))),
            }
        })?;
        Ok(token.expect("NotFound::Fails never gives None"))
    }
}

/// A token goes into an HTTP header: visible ASCII only, and not absurdly
/// long. Anything else is refused at once; retrying would get the same.
fn is_usable_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// A token answer may carry a token even when it is malformed; never show it.
fn excerpt_without_tokens(body: &[u8]) -> String {
    format!("({} bytes, not shown: it may hold a token)", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_ascii_of_a_sane_length_is_a_usable_token() {
        assert!(is_usable_token("eyJ0eXAi.abc-_~"));
        for bad in [
            "",
            "a b",
            "a\r\nX-Injected: 1",
            "é",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(!is_usable_token(bad), "{bad:?}");
        }
    }
}
