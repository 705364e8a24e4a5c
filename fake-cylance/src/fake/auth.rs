//! Authentication as the real service does it: the HS256 JWT a client signs
//! with its application secret, exchanged for an opaque bearer token; token
//! expiry; the privileges a token has.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Map, Value, json};

use super::wire::{Answer, Req, is_json_content_type};
use super::{Credentials, Shared, lock};

/// The `iss` every JWT must carry.
pub(crate) const ISSUER: &str = "http://cylance.com";
/// Longest JWT lifetime (`exp - iat`) accepted, in seconds.
const MAX_JWT_LIFETIME: i64 = 1800;
/// How far in the future `iat` may be, in seconds.
const MAX_IAT_SKEW: i64 = 300;
pub(crate) const INVALID_JWT: &str = "Invalid JWT payload";
pub(crate) const EXPIRED_TOKEN: &str = "The access token has expired; request a new one";

struct TokenInfo {
    issued: Instant,
    /// The JWT's `exp` as an instant.
    jwt_exp: Instant,
    revoked: bool,
}

/// The application's credentials and every token and JWT seen.
pub(crate) struct Auth {
    pub creds: Credentials,
    tokens: HashMap<String, TokenInfo>,
    /// Every access token handed out, in order.
    pub issued: Vec<String>,
    /// Every `auth_token` received, in order.
    pub jwts: Vec<String>,
    seen_jti: HashSet<String>,
    pub token_lifetime: Option<Duration>,
    /// Privileges tokens lack.
    pub denied: HashSet<String>,
    /// Tenant ids accepted besides `creds.tenant_id`, see
    /// [`super::FakeApi::accept_tenant`].
    pub other_tenants: HashSet<String>,
}

impl Auth {
    pub fn new(creds: Credentials) -> Self {
        Auth {
            creds,
            tokens: HashMap::new(),
            issued: Vec::new(),
            jwts: Vec::new(),
            seen_jti: HashSet::new(),
            token_lifetime: None,
            denied: HashSet::new(),
            other_tenants: HashSet::new(),
        }
    }

    /// 403 when tokens lack `privilege` ([`super::FakeApi::deny_privilege`]).
    pub fn check_privilege(&self, privilege: &str) -> Result<(), Answer> {
        if self.denied.contains(privilege) {
            return Err(Answer::message(
                403,
                &format!("Forbidden: the token lacks the {privilege} privilege"),
            ));
        }
        Ok(())
    }

    /// Marks the bearer token of this request expired ([`super::Fault::ExpireToken`]).
    pub fn revoke(&mut self, authorization: Option<&str>) {
        if let Some(token) = bearer(authorization)
            && let Some(info) = self.tokens.get_mut(token)
        {
            info.revoked = true;
        }
    }

    /// Checks `Authorization: Bearer <token>`; returns the token.
    pub fn check_bearer<'a>(&self, authorization: Option<&'a str>) -> Result<&'a str, Answer> {
        let Some(token) = bearer(authorization) else {
            return Err(Answer::message(
                401,
                "Authorization header with a Bearer access token is required",
            ));
        };
        let Some(info) = self.tokens.get(token) else {
            return Err(Answer::message(401, "Invalid access token"));
        };
        let expiry = match self.token_lifetime {
            Some(life) => info
                .issued
                .checked_add(life)
                .map_or(info.jwt_exp, |t| t.min(info.jwt_exp)),
            None => info.jwt_exp,
        };
        if info.revoked || Instant::now() >= expiry {
            return Err(Answer::message(401, EXPIRED_TOKEN));
        }
        Ok(token)
    }

    /// Validates an `auth_token` JWT the way the real service does, then issues a token.
    pub fn exchange_jwt(&mut self, jwt: &str) -> Answer {
        let claims = match self.verify_jwt(jwt) {
            Ok(claims) => claims,
            Err(answer) => return answer,
        };
        self.seen_jti.insert(claims.jti);
        let remaining = (UNIX_EPOCH + Duration::from_secs(claims.exp.max(0) as u64))
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.tokens.insert(
            token.clone(),
            TokenInfo {
                issued: now,
                jwt_exp: now + remaining,
                revoked: false,
            },
        );
        self.issued.push(token.clone());
        Answer::json(200, json!({ "access_token": token }))
    }

    fn verify_jwt(&self, jwt: &str) -> Result<JwtClaims, Answer> {
        let invalid = || Answer::message(401, INVALID_JWT);
        let key =
            DecodingKey::from_secret(self.creds.app_secret.as_bytes()).map_err(|_| invalid())?;
        // Signature and algorithm only: every claim is checked below, with no leeway.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let claims = decode::<Map<String, Value>>(jwt, &key, &validation)
            .map_err(|_| invalid())?
            .claims;
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let int = |name: &str| claims.get(name).and_then(Value::as_i64);

        if text("iss") != Some(ISSUER)
            || text("sub") != Some(self.creds.app_id.as_str())
            || !text("tid")
                .is_some_and(|tid| tid == self.creds.tenant_id || self.other_tenants.contains(tid))
        {
            return Err(invalid());
        }
        let jti = text("jti").ok_or_else(invalid)?;
        let is_v4 =
            jti.len() == 36 && uuid::Uuid::try_parse(jti).is_ok_and(|u| u.get_version_num() == 4);
        if !is_v4 {
            return Err(invalid());
        }
        let (Some(iat), Some(exp)) = (int("iat"), int("exp")) else {
            return Err(invalid());
        };
        if exp <= iat {
            return Err(invalid());
        }
        if exp - iat > MAX_JWT_LIFETIME {
            return Err(Answer::message(400, "Token lifetime exceeds 30 minutes"));
        }
        let now = unix_now();
        if now >= exp {
            return Err(Answer::message(
                401,
                "Token expired: the JWT exp time is in the past (check the client clock)",
            ));
        }
        if iat > now + MAX_IAT_SKEW {
            return Err(Answer::message(
                401,
                "Token not yet valid: the JWT iat time is in the future (check the client clock)",
            ));
        }
        if self.seen_jti.contains(jti) {
            return Err(invalid());
        }
        Ok(JwtClaims {
            jti: jti.to_owned(),
            exp,
        })
    }
}

struct JwtClaims {
    jti: String,
    exp: i64,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}

/// `POST /auth/v2/token`.
pub(crate) fn token_request(shared: &Shared, req: &Req) -> Answer {
    if !is_json_content_type(req.content_type.as_deref()) {
        return Answer::message(
            415,
            "Unsupported media type: send Content-Type: application/json; charset=utf-8",
        );
    }
    let body = serde_json::from_slice::<Value>(&req.body).ok();
    let Some(jwt) = body
        .as_ref()
        .and_then(|b| b.get("auth_token"))
        .and_then(Value::as_str)
    else {
        return Answer::message(400, "The request body must be {\"auth_token\": \"<JWT>\"}");
    };
    lock(&shared.state).auth.exchange_jwt(jwt)
}
