//! The Cylance API client: authentication, list pages, retries, pacing.
//!
//! One access token per run, reused for every page (and every thread),
//! renewed before it can expire and once after a 401. Every request waits for
//! its slot under `--max-rps`, so a concurrent backfill never causes a 429 by
//! itself. Each request has a timeout; transient failures
//! go through `retry::RetryPolicy`; every other status is turned into a
//! classified error naming the endpoint. Nothing here logs a header value: the
//! Authorization header appears as `Bearer <redacted>` at `-vv`.
//!
//! Redirects are never followed: a 3xx is a protocol error (76) naming the
//! status and the Location, so no other origin (or plain http) ever gets the
//! JWT, the token or the chance to answer as this tenant. No request may
//! outlive `--max-runtime`: its timeout is the smaller of `--timeout` and the
//! time left. Whatever the server says (messages, bodies, headers) is shown
//! only through `untrusted::shown`.

use crate::config::ApiSettings;
use crate::control::RunControl;
use crate::error::{ExitKind, fail};
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::sources::SourceKind;
use crate::untrusted::{shown, shown_bytes};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::io::Read;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest response body accepted; a page of 200 items is a few MiB at most.
/// Memory stays bounded across concurrent pages: at most `--concurrency`
/// (16 at most, see `config`) answers are read at once, plus the page being
/// written, each under this cap, and the buffer pool keeps at most 16
/// buffers of at most [`MAX_POOLED`] each: 17 x 16 + 16 x 4 = 336 MiB in the
/// worst case, about 10 MiB in a normal run.
const MAX_BODY: u64 = 16 * 1024 * 1024;
/// A buffer larger than this is freed rather than kept for the next answer.
const MAX_POOLED: usize = 4 * 1024 * 1024;
/// Longest access token accepted; real ones are about 1 KiB.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// JWT lifetime; the API refuses more than 30 minutes.
const JWT_LIFETIME_SECS: i64 = 1800;
/// An access token is replaced once it is this old, before it can expire.
const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(25 * 60);

/// Counters for the end-of-run summary line and the metrics; shared by the
/// threads of a concurrent fetch.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The envelope of a list page, borrowed from the response body.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    total_pages: Option<u64>,
    total_number_of_items: Option<u64>,
    #[serde(borrow)]
    page_items: Vec<&'a RawValue>,
}

/// One list page, owning its body: the items are byte ranges of it, so the
/// body is parsed once and no item is copied until it is written.
#[derive(Debug)]
pub struct Page {
    /// Checked UTF-8 once, so items are sliced out without checking again.
    body: String,
    items: Vec<Range<usize>>,
    pub total_pages: Option<u64>,
    pub total_number_of_items: Option<u64>,
    /// The answer held invalid UTF-8, replaced by U+FFFD: the caller says so.
    pub replaced_invalid_utf8: bool,
}

impl Page {
    /// Each item's JSON text, in the order the API sent them.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|range| &self.body[range.clone()])
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[derive(Clone)]
struct Token {
    bearer: String,
    obtained: Instant,
}

/// Shared by the threads of a run (`&self` everywhere).
pub struct ApiClient {
    agent: ureq::Agent,
    settings: ApiSettings,
    retry: RetryPolicy,
    control: RunControl,
    /// Held while a token is fetched, so concurrent requests wait for the one
    /// new token rather than each fetching their own.
    token: Mutex<Option<Token>>,
    pacer: Pacer,
    /// Response bodies are read into recycled buffers. Pages are read on the
    /// fetch threads and dropped on the main one; without reuse, that churn
    /// spreads freed memory over the allocator's per-thread arenas, and a
    /// long backfill ends up holding twice the memory of a short one.
    buffers: Mutex<Vec<Vec<u8>>>,
    pub stats: Stats,
}

/// Resolves each host once per run. ureq's default resolver looks the name up
/// again for every request, each time on a new thread (so that the lookup can
/// time out); a run talks to one host, so one lookup serves all its requests.
/// An IP address needs no lookup at all.
#[derive(Debug, Default)]
struct OncePerRunResolver {
    lookup: ureq::unversioned::resolver::DefaultResolver,
    known: Mutex<Vec<(String, ureq::unversioned::resolver::ResolvedSocketAddrs)>>,
}

impl ureq::unversioned::resolver::Resolver for OncePerRunResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        if let Some((_, addrs)) = self
            .known
            .lock()
            .expect("resolver lock")
            .iter()
            .find(|(a, _)| *a == authority)
        {
            return Ok(addrs.clone());
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let addrs = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                let mut addrs = self.empty();
                addrs.push(std::net::SocketAddr::new(ip, port));
                addrs
            }
            Err(_) => self.lookup.resolve(uri, config, timeout)?,
        };
        self.known
            .lock()
            .expect("resolver lock")
            .push((authority, addrs.clone()));
        Ok(addrs)
    }
}

/// At most `max_rps` requests in any one-second window, across threads: a
/// short run (an idle poll's three requests) goes out at once, a long one is
/// held to the rate. Keeps the start times of the last `max_rps` requests.
struct Pacer {
    max_rps: usize,
    recent: Mutex<VecDeque<Instant>>,
}

impl Pacer {
    fn new(max_rps: u32) -> Pacer {
        Pacer {
            max_rps: max_rps as usize,
            recent: Mutex::new(VecDeque::with_capacity(max_rps as usize)),
        }
    }

    /// Waits for this request's slot: a second after the request `max_rps`
    /// requests back.
    fn wait(&self, control: &RunControl) -> Result<()> {
        if self.max_rps == 0 {
            return Ok(());
        }
        let slot = {
            let mut recent = self.recent.lock().expect("pacer lock");
            let now = Instant::now();
            let slot = if recent.len() < self.max_rps {
                now
            } else {
                let oldest = recent.pop_front().expect("the queue is full");
                (oldest + Duration::from_secs(1)).max(now)
            };
            recent.push_back(slot);
            slot
        };
        control.sleep(slot.saturating_duration_since(Instant::now()))
    }
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

/// A response read whole: status, Retry-After, Location, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// Only for the message about a refused redirect.
    location: Option<String>,
    body: Vec<u8>,
}

/// What went wrong with one attempt, before the retry policy decides.
enum Attempt {
    Transport(String),
    /// TLS refused (an untrusted certificate, most often): not retried.
    Tls(String),
    Answer(Answer),
    /// A body over `MAX_BODY`: refused, memory stays bounded.
    Oversize,
}

impl ApiClient {
    pub fn new(
        settings: ApiSettings,
        retry: RetryPolicy,
        max_rps: u32,
        control: RunControl,
    ) -> Result<Self> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca_file) = &settings.ca_file {
            tls = tls.root_certs(load_ca_file(ca_file)?);
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // 0: a 3xx comes back as an answer, which is then refused.
            .max_redirects(0)
            .timeout_global(Some(settings.timeout))
            .user_agent(concat!("cylance-logs/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::new(),
            OncePerRunResolver::default(),
        );
        Ok(ApiClient {
            agent,
            settings,
            retry,
            control,
            token: Mutex::new(None),
            pacer: Pacer::new(max_rps),
            buffers: Mutex::new(Vec::new()),
            stats: Stats::default(),
        })
    }

    /// Gets an access token now, so that `check` can report it as a step.
    pub fn authenticate(&self) -> Result<()> {
        self.bearer().map(drop)
    }

    /// Gives a page's buffer back for the next answer to be read into.
    pub fn recycle(&self, page: Page) {
        let mut buffer = page.body.into_bytes();
        buffer.clear();
        let mut buffers = self.buffers.lock().expect("buffer pool lock");
        // More than the pages in flight is never needed at once, and an
        // unusually large answer's buffer is not worth holding on to.
        if buffers.len() < 16 && buffer.capacity() <= MAX_POOLED {
            buffers.push(buffer);
        }
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .lock()
            .expect("buffer pool lock")
            .pop()
            .unwrap_or_default()
    }

    /// Reads one page of a list (`window` adds the time filter).
    pub fn fetch_page(
        &self,
        kind: SourceKind,
        window: &[(&'static str, String)],
        page_number: u32,
    ) -> Result<Page> {
        let page_size = kind.page_size();
        let mut query: Vec<(&str, String)> = vec![
            ("page", page_number.to_string()),
            ("page_size", page_size.to_string()),
        ];
        query.extend(window.iter().cloned());
        let endpoint = kind.path();
        let mut malformed = 0;
        loop {
            let answer = self.get_json(kind, &query)?;
            match parse_page(answer.body) {
                Ok(page) => {
                    if page.len() > page_size as usize {
                        return Err(fail(
                            ExitKind::Protocol,
                            format!(
                                "GET {endpoint} page {page_number}: {} items in a page of page_size {page_size}",
                                page.len()
                            ),
                        ));
                    }
                    return Ok(page);
                }
                Err((err, body)) => {
                    malformed += 1;
                    let why = format!(
                        "GET {endpoint} page {page_number}: the answer is not a page ({}); body starts: {}",
                        shown(&err),
                        excerpt(&body)
                    );
                    if malformed >= self.retry.malformed_attempts {
                        return Err(fail(ExitKind::Protocol, why));
                    }
                    crate::warn!("{why}; retrying");
                    Stats::count(&self.stats.retries);
                    self.control.sleep(self.retry.backoff(malformed))?;
                }
            }
        }
    }

    /// GET with the token, retrying transient failures; returns a 200 answer or
    /// a classified error.
    fn get_json(&self, kind: SourceKind, query: &[(&str, String)]) -> Result<Answer> {
        let endpoint = kind.path();
        let url = format!("{}{endpoint}", self.settings.base_url);
        let mut renewed_after_401 = false;
        let mut waits = Waits::default();
        loop {
            let bearer = self.bearer()?;
            let agent = self.agent.clone();
            let attempt = self.send(endpoint, query, |timeout| {
                let mut request = agent
                    .get(&url)
                    .header("Accept", "application/json")
                    .header("Authorization", &format!("Bearer {bearer}"));
                for (name, value) in query {
                    request = request.query(*name, value);
                }
                request
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .call()
            })?;
            let answer = match attempt {
                Attempt::Oversize => return Err(oversize(&format!("GET {endpoint}"))),
                Attempt::Tls(why) => return Err(self.tls_failure(&format!("GET {endpoint}"), &why)),
                Attempt::Answer(answer) if answer.status == 200 => return Ok(answer),
                Attempt::Answer(answer) if is_redirect(answer.status) => {
                    return Err(redirect_refused(&format!("GET {endpoint}"), &answer));
                }
                Attempt::Answer(answer) if answer.status == 401 => {
                    if renewed_after_401 {
                        return Err(fail(
                            ExitKind::Auth,
                            format!(
                                "GET {endpoint}: the API refused a fresh access token (HTTP 401: {}); \
                                 the application may have been disabled or its secret rotated",
                                server_message(&answer.body)
                            ),
                        ));
                    }
                    crate::debug!("GET {endpoint}: 401, getting a new token and retrying once");
                    self.discard_token(&bearer);
                    renewed_after_401 = true;
                    continue;
                }
                Attempt::Answer(answer) if answer.status == 403 => {
                    return Err(fail(
                        ExitKind::Auth,
                        format!(
                            "GET {endpoint}: access denied (HTTP 403: {}); the API application \
                             needs the {} privilege",
                            server_message(&answer.body),
                            kind.privilege()
                        ),
                    ));
                }
                Attempt::Answer(answer) if answer.status == 400 => {
                    let page_size = query
                        .iter()
                        .find(|(name, _)| *name == "page_size")
                        .map_or("?", |(_, value)| value.as_str());
                    return Err(fail(
                        ExitKind::Protocol,
                        format!(
                            "GET {endpoint}: the API refused the request (HTTP 400: {}); page_size sent: {page_size}",
                            server_message(&answer.body)
                        ),
                    ));
                }
                Attempt::Answer(answer) if !is_transient(answer.status) => {
                    return Err(fail(
                        ExitKind::Protocol,
                        format!(
                            "GET {endpoint}: unexpected answer (HTTP {}: {}); not retried",
                            answer.status,
                            server_message(&answer.body)
                        ),
                    ));
                }
                transient => transient,
            };
            let why = answer.why();
            let wait = self.next_wait(&answer, &mut waits, &format!("GET {endpoint}"), &why)?;
            self.control.sleep(wait)?;
        }
    }

    /// Decides the wait before the next attempt, or gives up (exit 75).
    fn next_wait(
        &self,
        attempt: &Attempt,
        waits: &mut Waits,
        what: &str,
        why: &str,
    ) -> Result<Duration> {
        let next_run = if self.retry.again_next_run {
            "; will try again next run"
        } else {
            ""
        };
        let give_up = |detail: String| {
            fail(
                ExitKind::Temporary,
                format!("{what}: {why}; {detail}{next_run}"),
            )
        };
        let wait = match attempt {
            Attempt::Answer(answer) if answer.status == 429 => {
                Stats::count(&self.stats.rate_limited);
                waits.rate_limited += 1;
                let told = answer
                    .retry_after
                    .as_deref()
                    .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
                told.unwrap_or_else(|| self.retry.backoff(waits.rate_limited))
            }
            _ => {
                waits.failures += 1;
                if waits.failures >= self.retry.attempts {
                    return Err(give_up(format!(
                        "gave up after {} attempts",
                        waits.failures
                    )));
                }
                self.retry.backoff(waits.failures)
            }
        };
        // Saturating: a Retry-After of u64::MAX seconds must not overflow.
        if waits.total.saturating_add(wait) > self.retry.max_total_wait {
            return Err(give_up(format!(
                "waiting {}s more would exceed the retry budget of {}s",
                wait.as_secs(),
                self.retry.max_total_wait.as_secs()
            )));
        }
        if self.control.remaining().is_some_and(|left| wait >= left) {
            return Err(give_up(format!(
                "waiting {}s more would exceed --max-runtime",
                wait.as_secs()
            )));
        }
        waits.total += wait;
        Stats::count(&self.stats.retries);
        crate::warn!("{what}: {why}; retrying in {:.1}s", wait.as_secs_f64());
        Ok(wait)
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

    /// The current access token, fetching or renewing it when needed. The
    /// lock is held while fetching, so other threads wait for that token.
    fn bearer(&self) -> Result<String> {
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
    fn discard_token(&self, refused: &str) {
        let mut token = self.token.lock().expect("token lock");
        if token.as_ref().is_some_and(|t| t.bearer == refused) {
            *token = None;
        }
    }

    fn sign_jwt(&self) -> Result<String> {
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
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )
        .context("signing the authentication JWT")
    }

    fn fetch_token(&self) -> Result<String> {
        const ENDPOINT: &str = "/auth/v2/token";
        let url = format!("{}{ENDPOINT}", self.settings.base_url);
        let mut waits = Waits::default();
        loop {
            let jwt = self.sign_jwt()?;
            let body = serde_json::json!({ "auth_token": jwt }).to_string();
            let agent = self.agent.clone();
            let attempt = self.send(ENDPOINT, &[], |timeout| {
                agent
                    .post(&url)
                    .header("Content-Type", "application/json; charset=utf-8")
                    .header("Accept", "application/json")
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .send(body.as_bytes())
            })?;
            let why = match &attempt {
                Attempt::Oversize => return Err(oversize(&format!("POST {ENDPOINT}"))),
                Attempt::Tls(why) => return Err(self.tls_failure(&format!("POST {ENDPOINT}"), why)),
                Attempt::Answer(answer) if answer.status == 200 => {
                    #[derive(Deserialize)]
                    struct TokenAnswer {
                        access_token: String,
                    }
                    return match serde_json::from_slice::<TokenAnswer>(&answer.body) {
                        Ok(token) if is_usable_token(&token.access_token) => Ok(token.access_token),
                        Ok(token) if !token.access_token.is_empty() => Err(fail(
                            ExitKind::Protocol,
                            format!(
                                "POST {ENDPOINT}: the access_token is unusable ({} bytes; a token \
                                 is 1 to {MAX_TOKEN_LEN} bytes of visible ASCII); refused, not \
                                 shown, not retried",
                                token.access_token.len()
                            ),
                        )),
                        _ => Err(fail(
                            ExitKind::Protocol,
                            format!(
                                "POST {ENDPOINT}: the answer holds no access_token; body starts: {}",
                                excerpt_without_tokens(&answer.body)
                            ),
                        )),
                    };
                }
                Attempt::Answer(answer) if is_redirect(answer.status) => {
                    return Err(redirect_refused(&format!("POST {ENDPOINT}"), answer));
                }
                Attempt::Answer(answer) if matches!(answer.status, 400 | 401 | 403) => {
                    return Err(fail(
                        ExitKind::Auth,
                        format!(
                            "POST {ENDPOINT}: credentials rejected (HTTP {}: {}); check the app id, \
                             secret, tenant id and region ({}); the local clock reads {} UTC and \
                             must be right within minutes",
                            answer.status,
                            server_message(&answer.body),
                            self.settings.base_url,
                            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
                        ),
                    ));
                }
                Attempt::Answer(answer) if !is_transient(answer.status) => {
                    return Err(fail(
                        ExitKind::Protocol,
                        format!(
                            "POST {ENDPOINT}: unexpected answer (HTTP {}: {})",
                            answer.status,
                            server_message(&answer.body)
                        ),
                    ));
                }
                transient => transient.why(),
            };
            let wait = self.next_wait(&attempt, &mut waits, &format!("POST {ENDPOINT}"), &why)?;
            self.control.sleep(wait)?;
        }
    }

    /// Makes one attempt and reads its answer whole (bounded), logging it.
    /// `call` gets the attempt's timeout: `--timeout`, or less when
    /// `--max-runtime` leaves less, so that no request outlives the run.
    fn send(
        &self,
        endpoint: &str,
        query: &[(&str, String)],
        call: impl FnOnce(Duration) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Attempt> {
        self.pacer.wait(&self.control)?;
        self.control.check()?;
        let (timeout, limit) = match self.control.remaining() {
            Some(left) if left < self.settings.timeout => (left, "--max-runtime"),
            _ => (self.settings.timeout, "--timeout"),
        };
        Stats::count(&self.stats.requests);
        let started = Instant::now();
        let method = if query.is_empty() { "POST" } else { "GET" };
        let shown_query = query
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&");
        let target = if shown_query.is_empty() {
            endpoint.to_string()
        } else {
            format!("{endpoint}?{shown_query}")
        };
        let attempt = match call(timeout) {
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

impl Attempt {
    /// What went wrong, for messages.
    fn why(&self) -> String {
        match self {
            Attempt::Answer(answer) => {
                format!("HTTP {}: {}", answer.status, server_message(&answer.body))
            }
            Attempt::Transport(why) | Attempt::Tls(why) => why.clone(),
            Attempt::Oversize => format!("an answer over {} MiB", MAX_BODY >> 20),
        }
    }
}

#[derive(Default)]
struct Waits {
    failures: u32,
    rate_limited: u32,
    total: Duration,
}

/// Parses a list answer. The body is checked as UTF-8 once, whole, so items
/// are later sliced out as `&str` without checking again. Invalid UTF-8 (one
/// bad byte in one item) must not cost the page: it is replaced by U+FFFD,
/// copying the body only then. On failure, gives back why and the body, for
/// the message.
fn parse_page(body: Vec<u8>) -> Result<Page, (String, Vec<u8>)> {
    let (text, replaced_invalid_utf8) = match String::from_utf8(body) {
        Ok(text) => (text, false),
        Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), true),
    };
    let (items, total_pages, total_number_of_items) = match serde_json::from_str::<Envelope>(&text)
    {
        Ok(envelope) => {
            let base = text.as_ptr() as usize;
            let items = envelope
                .page_items
                .iter()
                .map(|item| {
                    let start = item.get().as_ptr() as usize - base;
                    start..start + item.get().len()
                })
                .collect();
            (items, envelope.total_pages, envelope.total_number_of_items)
        }
        Err(err) => return Err((err.to_string(), text.into_bytes())),
    };
    Ok(Page {
        body: text,
        items,
        total_pages,
        total_number_of_items,
        replaced_invalid_utf8,
    })
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

fn is_redirect(status: u16) -> bool {
    (300..400).contains(&status)
}

/// A redirect is never followed: it would send the JWT or the token to
/// wherever the answer points, and take that origin's pages as this tenant's.
fn redirect_refused(what: &str, answer: &Answer) -> anyhow::Error {
    fail(
        ExitKind::Protocol,
        format!(
            "{what}: the API answered a redirect (HTTP {}, Location: {}); redirects are not \
             followed: check --api-url or --region",
            answer.status,
            answer
                .location
                .as_deref()
                .map_or("none".to_string(), |l| format!("'{}'", shown(l)))
        ),
    )
}

/// A token goes into an HTTP header: visible ASCII only, and not absurdly
/// long. Anything else is refused at once; retrying would get the same.
fn is_usable_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// 5xx except 501 (not implemented: retrying cannot help), and 429.
fn is_transient(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && status != 501
}

/// The TLS error inside a transport error, if that is what it is.
fn tls_problem(err: &ureq::Error) -> Option<String> {
    match err {
        ureq::Error::Rustls(tls) => Some(tls.to_string()),
        ureq::Error::Tls(tls) => Some(tls.to_string()),
        ureq::Error::Io(io) => io
            .get_ref()?
            .downcast_ref::<rustls::Error>()
            .map(|tls| tls.to_string()),
        _ => None,
    }
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
fn excerpt(body: &[u8]) -> String {
    format!("'{}'", shown_bytes(body))
}

/// A token answer may carry a token even when it is malformed; never show it.
fn excerpt_without_tokens(body: &[u8]) -> String {
    format!("({} bytes, not shown: it may hold a token)", body.len())
}

fn load_ca_file(path: &std::path::Path) -> Result<ureq::tls::RootCerts> {
    let pem = std::fs::read(path).map_err(|err| {
        fail(
            ExitKind::Config,
            format!("cannot read --ca-file {}: {err}", path.display()),
        )
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(err) => {
                return Err(fail(
                    ExitKind::Config,
                    format!("--ca-file {}: not a PEM file: {err}", path.display()),
                ));
            }
        }
    }
    if certs.is_empty() {
        return Err(fail(
            ExitKind::Config,
            format!("--ca-file {}: no certificate in it", path.display()),
        ));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}
