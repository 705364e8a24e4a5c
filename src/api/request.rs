//! The one path every request takes: [`ApiClient::request`] sends what a
//! [`RequestSpec`] describes, maps the status through one table
//! ([`outcome`]), reads a 200 with the caller's parser, and retries under one
//! budget per logical request (`crate::retry` decides what is transient, how
//! long to wait and when to give up).
//!
//! Each attempt waits for its `--max-rps` slot and has a timeout: the
//! smaller of `--timeout` and the time `--max-runtime` leaves, so no request
//! outlives the run. A body is read whole, up to `MAX_BODY`.
//!
//! Redirects are never followed: a 3xx is a protocol error (76) naming the
//! status and the Location, so no other origin (or plain http) ever gets the
//! JWT, the token or the chance to answer as this tenant. A refused TLS
//! handshake is a configuration error (78) at once.

use super::{ApiClient, MAX_BODY, Stats};
use crate::error::{ExitKind, fail};
use crate::retry::{Failure, GiveUp, is_transient};
use crate::untrusted::{shown, shown_bytes};
use serde::Deserialize;
use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Post,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
        })
    }
}

/// How a request proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Auth {
    /// The run's access token: a 401 renews it once, a 403 names the
    /// privilege the request needs.
    Bearer { privilege: &'static str },
    /// The token request itself: its body is a JWT signed for each attempt;
    /// a 400, 401 or 403 means the credentials are wrong.
    Credentials,
}

/// What a 404 answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotFound {
    /// The endpoint is wrong: a protocol error (76), like any unexpected
    /// status.
    Fails,
    /// The object the path names is gone: the request's outcome is `None`.
    IsGone,
}

/// One logical request: everything but the attempt.
#[derive(Debug)]
pub(super) struct RequestSpec<'a> {
    pub method: Method,
    /// Starts with `/`; segments from server data went through
    /// [`path_segment`].
    pub path: &'a str,
    /// In the order sent; values are percent-encoded when sent.
    pub query: &'a [(&'static str, String)],
    pub auth: Auth,
    pub not_found: NotFound,
}

/// Why the caller's parser cannot use a 200's body.
pub(super) enum Unusable {
    /// Not what the endpoint returns (an edge's HTML, a cut body): retried
    /// under the budget. The message names the request.
    Malformed(String),
    /// Well-formed but wrong in a way asking again cannot cure: fails at
    /// once with this error.
    Refused(anyhow::Error),
}

/// What the status of an answer means: the one table, [`outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 200: read the body.
    Success,
    /// 404 where the spec says the object may be gone.
    Gone,
    /// 3xx: never followed.
    Redirect,
    /// 400, 401 or 403 to the token request.
    CredentialsRejected,
    /// 401: the access token expired; renew it, once.
    Renew,
    /// 403: the application lacks this privilege.
    Denied(&'static str),
    /// 400: the request itself was refused (most often its page size).
    BadRequest,
    /// Retried under the budget (`retry::is_transient`).
    Transient,
    /// Anything else: a protocol error, not retried.
    Unexpected,
}

/// The one table from status to outcome.
fn outcome(status: u16, spec: &RequestSpec<'_>) -> Outcome {
    match (status, spec.auth) {
        (200, _) => Outcome::Success,
        (300..=399, _) => Outcome::Redirect,
        (400 | 401 | 403, Auth::Credentials) => Outcome::CredentialsRejected,
        (401, Auth::Bearer { .. }) => Outcome::Renew,
        (403, Auth::Bearer { privilege }) => Outcome::Denied(privilege),
        (400, Auth::Bearer { .. }) => Outcome::BadRequest,
        (404, _) if spec.not_found == NotFound::IsGone => Outcome::Gone,
        (status, _) if is_transient(status) => Outcome::Transient,
        _ => Outcome::Unexpected,
    }
}

/// Encodes one path segment built from server data (a sha256, an Id), so
/// that no value can change the path: everything but letters, digits and
/// `-._~` is percent-encoded (`/`, `?`, `#`, `%` included), and the dot
/// segments `.` and `..`, which a server or proxy would resolve, are
/// refused, as is an empty segment.
pub fn path_segment(value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(format!("'{}' cannot be a path segment", shown(value)));
    }
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

/// A response read whole: status, Retry-After, Location, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// Only for the message about a refused redirect.
    location: Option<String>,
    body: Vec<u8>,
}

/// What one attempt brought back.
enum Attempt {
    /// No answer: connection, timeout, a cut-off read.
    Transport(String),
    /// TLS refused (an untrusted certificate, most often): not retried.
    Tls(String),
    Answer(Answer),
    /// A body over `MAX_BODY`: refused, memory stays bounded.
    Oversize,
}

impl ApiClient {
    /// Sends the request `spec` describes until it succeeds or fails for
    /// good. `read` turns a 200's body into the result. `None` only when
    /// `spec.not_found` is [`NotFound::IsGone`] and the API answered 404.
    ///
    /// One retry budget for the whole request: transport errors, transient
    /// statuses, 429s and malformed bodies all draw on it.
    pub(super) fn request<T>(
        &self,
        spec: &RequestSpec<'_>,
        mut read: impl FnMut(Vec<u8>) -> Result<T, Unusable>,
    ) -> anyhow::Result<Option<T>> {
        let what = format!("{} {}", spec.method, spec.path);
        let mut budget = self.retry.budget();
        let mut renewed_after_401 = false;
        loop {
            let bearer = match spec.auth {
                Auth::Bearer { .. } => Some(self.bearer()?),
                Auth::Credentials => None,
            };
            let answer = match self.attempt(spec, bearer.as_deref())? {
                Attempt::Oversize => return Err(oversize(&what)),
                Attempt::Tls(why) => return Err(self.tls_failure(&what, &why)),
                Attempt::Transport(why) => {
                    let problem = format!("{what}: {why}");
                    self.wait_to_retry(&mut budget, Failure::Transient, &problem)?;
                    continue;
                }
                Attempt::Answer(answer) => answer,
            };
            match outcome(answer.status, spec) {
                Outcome::Success => match read(answer.body) {
                    Ok(value) => return Ok(Some(value)),
                    Err(Unusable::Refused(err)) => return Err(err),
                    Err(Unusable::Malformed(problem)) => {
                        self.wait_to_retry(&mut budget, Failure::Malformed, &problem)?;
                    }
                },
                Outcome::Gone => {
                    crate::debug!("{what}: HTTP 404, gone");
                    return Ok(None);
                }
                Outcome::Renew if !renewed_after_401 => {
                    crate::debug!("{what}: 401, getting a new token and retrying once");
                    if let Some(bearer) = &bearer {
                        self.discard_token(bearer);
                    }
                    renewed_after_401 = true;
                }
                Outcome::Transient => {
                    let failure = match answer.status {
                        429 => {
                            Stats::count(&self.stats.rate_limited);
                            Failure::RateLimited {
                                retry_after: answer.retry_after.as_deref(),
                            }
                        }
                        _ => Failure::Transient,
                    };
                    let problem = format!("{what}: {}", answer_why(&answer));
                    self.wait_to_retry(&mut budget, failure, &problem)?;
                }
                refused => return Err(self.refusal(refused, &what, spec, &answer)),
            }
        }
    }

    /// Asks the budget for the wait before the next attempt and sleeps it,
    /// or gives up: 76 when the answers were unusable every time, else 75.
    fn wait_to_retry(
        &self,
        budget: &mut crate::retry::Budget<'_>,
        failure: Failure<'_>,
        problem: &str,
    ) -> anyhow::Result<()> {
        match budget.next_wait(failure, self.control.remaining()) {
            Ok(wait) => {
                Stats::count(&self.stats.retries);
                crate::warn!("{problem}; retrying in {:.1}s", wait.as_secs_f64());
                self.control.sleep(wait)
            }
            Err(GiveUp::Malformed) => Err(fail(ExitKind::Protocol, problem)),
            Err(give_up) => {
                let next_run = if self.retry.again_next_run {
                    "; will try again next run"
                } else {
                    ""
                };
                Err(fail(
                    ExitKind::Temporary,
                    format!("{problem}; {give_up}{next_run}"),
                ))
            }
        }
    }

    /// The error for an outcome that ends the request at once.
    fn refusal(
        &self,
        outcome: Outcome,
        what: &str,
        spec: &RequestSpec<'_>,
        answer: &Answer,
    ) -> anyhow::Error {
        let status = answer.status;
        let message = server_message(&answer.body);
        match outcome {
            Outcome::Redirect => fail(
                ExitKind::Protocol,
                format!(
                    "{what}: the API answered a redirect (HTTP {status}, Location: {}); \
                     redirects are not followed: check --api-url or --region",
                    answer
                        .location
                        .as_deref()
                        .map_or("none".to_string(), |l| format!("'{}'", shown(l)))
                ),
            ),
            Outcome::CredentialsRejected => fail(
                ExitKind::Auth,
                format!(
                    "{what}: credentials rejected (HTTP {status}: {message}); check the app id, \
                     secret, tenant id and region ({}); the local clock reads {} UTC and \
                     must be right within minutes",
                    self.settings.base_url,
                    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
                ),
            ),
            Outcome::Renew => fail(
                ExitKind::Auth,
                format!(
                    "{what}: the API refused a fresh access token (HTTP 401: {message}); \
                     the application may have been disabled or its secret rotated"
                ),
            ),
            Outcome::Denied(privilege) => fail(
                ExitKind::Auth,
                format!(
                    "{what}: access denied (HTTP 403: {message}); the API application \
                     needs the {privilege} privilege"
                ),
            ),
            Outcome::BadRequest => {
                let page_size = spec
                    .query
                    .iter()
                    .find(|(name, _)| *name == "page_size")
                    .map_or("?", |(_, value)| value.as_str());
                fail(
                    ExitKind::Protocol,
                    format!(
                        "{what}: the API refused the request (HTTP 400: {message}); page_size sent: {page_size}"
                    ),
                )
            }
            // The token request's message never said "not retried".
            _ if spec.auth == Auth::Credentials => fail(
                ExitKind::Protocol,
                format!("{what}: unexpected answer (HTTP {status}: {message})"),
            ),
            _ => fail(
                ExitKind::Protocol,
                format!("{what}: unexpected answer (HTTP {status}: {message}); not retried"),
            ),
        }
    }

    /// A refused TLS handshake: configuration (78), since retrying cannot
    /// make a certificate trusted.
    fn tls_failure(&self, what: &str, why: &str) -> anyhow::Error {
        fail(
            ExitKind::Config,
            format!(
                "{what}: TLS with {} failed ({why}); if the certificate is not trusted because a \
                 TLS-inspecting proxy is in the way, give its CA certificate with --ca-file",
                self.settings.base_url
            ),
        )
    }

    /// Makes one attempt and reads its answer whole (bounded), logging it.
    fn attempt(&self, spec: &RequestSpec<'_>, bearer: Option<&str>) -> anyhow::Result<Attempt> {
        // Signed before the pacer's wait would make the JWT older, but that
        // is at most a second of its 30 minutes; signing first keeps a
        // signing error from costing a request slot.
        let body = match spec.auth {
            Auth::Credentials => Some(self.token_request_body()?),
            Auth::Bearer { .. } => None,
        };
        self.pacer.wait(&self.control)?;
        self.control.check()?;
        let (timeout, limit) = match self.control.remaining() {
            Some(left) if left < self.settings.timeout => (left, "--max-runtime"),
            _ => (self.settings.timeout, "--timeout"),
        };
        Stats::count(&self.stats.requests);
        let started = Instant::now();
        let url = format!("{}{}", self.settings.base_url, spec.path);
        let result = match spec.method {
            Method::Get => prepared(self.agent.get(&url), bearer, spec.query, timeout).call(),
            Method::Post => prepared(
                self.agent
                    .post(&url)
                    .header("Content-Type", "application/json; charset=utf-8"),
                bearer,
                spec.query,
                timeout,
            )
            .send(body.as_deref().unwrap_or_default().as_bytes()),
        };
        let attempt = match result {
            Err(err) => match tls_problem(&err) {
                Some(why) => Attempt::Tls(why),
                None => Attempt::Transport(describe_transport(&err, timeout, limit)),
            },
            Ok(mut response) => {
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                };
                let (retry_after, location) = (header("retry-after"), header("location"));
                let mut body = self.take_buffer();
                let read = response
                    .body_mut()
                    .as_reader()
                    .take(MAX_BODY + 1)
                    .read_to_end(&mut body);
                match read {
                    Ok(_) if body.len() as u64 > MAX_BODY => Attempt::Oversize,
                    Ok(_) => Attempt::Answer(Answer {
                        status,
                        retry_after,
                        location,
                        body,
                    }),
                    Err(err) => Attempt::Transport(format!(
                        "reading the answer (HTTP {status}) failed: {}",
                        describe_transport(&ureq::Error::from(err), timeout, limit)
                    )),
                }
            }
        };
        let elapsed = started.elapsed().as_millis();
        let target = shown_target(spec);
        let method = spec.method;
        match &attempt {
            Attempt::Answer(answer) => {
                crate::debug!("{method} {target} -> {} in {elapsed} ms", answer.status);
                crate::trace!(
                    "  {} bytes; request had Authorization: Bearer <redacted>",
                    answer.body.len()
                );
            }
            Attempt::Transport(why) | Attempt::Tls(why) => {
                crate::debug!("{method} {target} -> failed in {elapsed} ms: {why}")
            }
            Attempt::Oversize => crate::debug!("{method} {target} -> body over {MAX_BODY} bytes"),
        }
        Ok(attempt)
    }
}

/// The path and query, for the debug log.
fn shown_target(spec: &RequestSpec<'_>) -> String {
    let query = spec
        .query
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    if query.is_empty() {
        spec.path.to_string()
    } else {
        format!("{}?{query}", spec.path)
    }
}

/// What a retried answer was, for messages.
fn answer_why(answer: &Answer) -> String {
    format!("HTTP {}: {}", answer.status, server_message(&answer.body))
}

fn oversize(what: &str) -> anyhow::Error {
    fail(
        ExitKind::Protocol,
        format!(
            "{what}: the answer is larger than {} MiB; refused",
            MAX_BODY / (1024 * 1024)
        ),
    )
}

/// The TLS error inside a transport error, if that is what it is; shown
/// escaped and cut, since rustls quotes the names of the server's
/// certificate in it as they came (any bytes, any number of them).
fn tls_problem(err: &ureq::Error) -> Option<String> {
    let why = match err {
        ureq::Error::Rustls(tls) => Some(tls.to_string()),
        ureq::Error::Tls(tls) => Some(tls.to_string()),
        ureq::Error::Io(io) => io
            .get_ref()?
            .downcast_ref::<rustls::Error>()
            .map(|tls| tls.to_string()),
        _ => None,
    };
    why.map(|why| shown(&why))
}

/// `limit` names what set `timeout`: --timeout, or --max-runtime's time left.
fn describe_transport(err: &ureq::Error, timeout: Duration, limit: &str) -> String {
    match err {
        ureq::Error::Timeout(_) if limit == "--timeout" => {
            format!("no answer within --timeout {}s", timeout.as_secs())
        }
        ureq::Error::Timeout(_) => format!(
            "no answer within {:.1}s, the time {limit} left",
            timeout.as_secs_f64()
        ),
        ureq::Error::HostNotFound => "host not found (DNS)".to_string(),
        ureq::Error::ConnectionFailed => "connection refused or unreachable".to_string(),
        // May quote what the server sent (a malformed status line, a header).
        other => shown(&other.to_string()),
    }
}

/// The API's `{"message": ...}`, else the start of the body (HTML edge pages).
fn server_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(m) => shown(&m.message),
        Err(_) if body.is_empty() => "empty body".to_string(),
        Err(_) => excerpt(body),
    }
}

/// The start of a body, escaped, for error messages.
pub(super) fn excerpt(body: &[u8]) -> String {
    format!("'{}'", shown_bytes(body))
}

/// What every request carries, whatever its method: JSON wanted, the bearer
/// token (when the spec asks for one), the query and this attempt's timeout.
fn prepared<B>(
    mut request: ureq::RequestBuilder<B>,
    bearer: Option<&str>,
    query: &[(&'static str, String)],
    timeout: std::time::Duration,
) -> ureq::RequestBuilder<B> {
    request = request.header("Accept", "application/json");
    if let Some(bearer) = bearer {
        request = request.header("Authorization", &format!("Bearer {bearer}"));
    }
    for (name, value) in query {
        request = request.query(*name, value);
    }
    request.config().timeout_global(Some(timeout)).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(auth: Auth, not_found: NotFound) -> RequestSpec<'static> {
        RequestSpec {
            method: Method::Get,
            path: "/x",
            query: &[],
            auth,
            not_found,
        }
    }

    #[test]
    fn the_status_table() {
        let list = Auth::Bearer {
            privilege: "x:list",
        };
        let bearer = spec(list, NotFound::Fails);
        let lookup = spec(list, NotFound::IsGone);
        let token = spec(Auth::Credentials, NotFound::Fails);
        let cases = [
            (200, &bearer, Outcome::Success),
            (301, &bearer, Outcome::Redirect),
            (307, &token, Outcome::Redirect),
            (400, &bearer, Outcome::BadRequest),
            (401, &bearer, Outcome::Renew),
            (403, &bearer, Outcome::Denied("x:list")),
            (400, &token, Outcome::CredentialsRejected),
            (401, &token, Outcome::CredentialsRejected),
            (403, &token, Outcome::CredentialsRejected),
            (404, &bearer, Outcome::Unexpected),
            (404, &token, Outcome::Unexpected),
            (404, &lookup, Outcome::Gone),
            (409, &lookup, Outcome::Unexpected),
            (429, &bearer, Outcome::Transient),
            (429, &token, Outcome::Transient),
            (500, &bearer, Outcome::Transient),
            (501, &bearer, Outcome::Unexpected),
            (503, &lookup, Outcome::Transient),
            (204, &bearer, Outcome::Unexpected),
        ];
        for (status, spec, expected) in cases {
            assert_eq!(outcome(status, spec), expected, "{status} {:?}", spec.auth);
        }
    }

    #[test]
    fn a_path_segment_cannot_change_the_path() {
        let sha = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(path_segment(sha).as_deref(), Ok(sha));
        let guid = "9c7e2f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        assert_eq!(path_segment(guid).as_deref(), Ok(guid));
        for (hostile, encoded) in [
            ("../../auth/v2/token", "..%2F..%2Fauth%2Fv2%2Ftoken"),
            ("a?page=9", "a%3Fpage%3D9"),
            ("a#frag", "a%23frag"),
            ("a%2F", "a%252F"),
            ("a b\r\n", "a%20b%0D%0A"),
            ("é", "%C3%A9"),
            ("...", "..."),
        ] {
            assert_eq!(path_segment(hostile).as_deref(), Ok(encoded), "{hostile:?}");
        }
        for refused in ["", ".", ".."] {
            assert!(path_segment(refused).is_err(), "{refused:?}");
        }
    }
}
