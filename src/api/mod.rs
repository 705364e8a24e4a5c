//! The Cylance API client: one shared client per run, what it counts, and the
//! calls the rest of the program makes (pages of a list, one object).
//!
//! Submodules: `token` (the JWT, the access token, its reuse and renewal),
//! `request` (the one path every request takes: pacing, timeout, the status
//! table, one retry budget), `envelope` (a list page and the one object of a
//! lookup, parsed once) and `pacer` (`--max-rps`). The retry policy itself
//! is `crate::retry`.
//!
//! Nothing here logs a header value: the Authorization header appears as
//! `Bearer <redacted>` at `-vv`. Whatever the server says (messages, bodies,
//! headers) is shown only through `untrusted::shown`.

mod envelope;
mod pacer;
mod request;
mod token;

pub use envelope::{Object, Page};
pub use request::path_segment;

use crate::config::ApiSettings;
use crate::control::RunControl;
use crate::error::{ExitKind, fail};
use crate::retry::RetryPolicy;
use anyhow::Result;
use pacer::Pacer;
use request::{Auth, Method, NotFound, RequestSpec};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest response body accepted; a page of 200 items is a few MiB at most.
/// Memory stays bounded across concurrent pages: at most `--concurrency`
/// (16 at most, see `config`) answers are read at once, plus the page being
/// written, each under this cap, and the buffer pool keeps at most 16
/// buffers of at most [`MAX_POOLED`] each: 17 x 16 + 16 x 4 = 336 MiB in the
/// worst case, about 10 MiB in a normal run.
pub const MAX_BODY: u64 = 16 * 1024 * 1024;
/// A buffer larger than this is freed rather than kept for the next answer.
const MAX_POOLED: usize = 4 * 1024 * 1024;

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

/// A list endpoint and the filters of one walk through it: everything but the
/// page number.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest<'a> {
    /// Starts with `/`; a segment built from server data goes through
    /// [`path_segment`].
    pub path: &'a str,
    /// Named in the message of a 403.
    pub privilege: &'static str,
    pub page_size: u32,
    /// Sent after `page` and `page_size`, in this order.
    pub filters: &'a [(&'static str, String)],
}

/// Shared by the threads of a run (`&self` everywhere).
pub struct ApiClient {
    agent: ureq::Agent,
    settings: ApiSettings,
    retry: RetryPolicy,
    control: RunControl,
    /// The access token of the run; see `token`.
    token: Mutex<Option<token::Token>>,
    pacer: Pacer,
    /// Response bodies are read into recycled buffers. Pages are read on the
    /// fetch threads and dropped on the main one; without reuse, that churn
    /// spreads freed memory over the allocator's per-thread arenas, and a
    /// long backfill ends up holding twice the memory of a short one.
    buffers: Mutex<Vec<Vec<u8>>>,
    pub stats: Stats,
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
        // ureq's own resolver looks the host up for every request (on a
        // thread of its own, so that the lookup can time out). Measured
        // against the test fake (the ignored test
        // `it::dns::lookups_cost_per_request`, release build, 2 busy cores):
        // 200 requests took 34-42 ms to `127.0.0.1` and 46-52 ms to
        // `localhost` (getaddrinfo through /etc/hosts), about 50 us per
        // lookup; a 100-page poll 171-209 ms against 196-240 ms. A real
        // request is tens of milliseconds at least, and --max-rps 10 spaces
        // them 100 ms apart: the lookup is well under 1% of that, so no
        // resolver of our own (ureq's resolver trait is outside its semver
        // promise), and a host whose address changes is followed mid-run.
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // 0: a 3xx comes back as an answer, which is then refused.
            .max_redirects(0)
            .timeout_global(Some(settings.timeout))
            .user_agent(concat!("cylance-logs/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        Ok(ApiClient {
            agent: ureq::Agent::new_with_config(config),
            settings,
            retry,
            control,
            token: Mutex::new(None),
            pacer: Pacer::new(max_rps),
            buffers: Mutex::new(Vec::new()),
            stats: Stats::default(),
        })
    }

    /// Reads one page of a list. A 404 is a protocol error (76): the list
    /// endpoint itself is missing.
    pub fn fetch_page(&self, list: &ListRequest<'_>, page_number: u32) -> Result<Page> {
        let page = self.page(list, page_number, NotFound::Fails)?;
        Ok(page.expect("NotFound::Fails never gives None"))
    }

    /// Reads one page of a list that belongs to an object (the devices of a
    /// threat): `None` when the API answers 404, the object is gone.
    pub fn fetch_page_or_missing(
        &self,
        list: &ListRequest<'_>,
        page_number: u32,
    ) -> Result<Option<Page>> {
        self.page(list, page_number, NotFound::IsGone)
    }

    /// Reads one object (the details of a detection): `None` when the API
    /// answers 404, the object is gone. The answer must be a JSON object.
    pub fn fetch_object_or_missing(
        &self,
        path: &str,
        privilege: &'static str,
    ) -> Result<Option<Object>> {
        let spec = RequestSpec {
            method: Method::Get,
            path,
            query: &[],
            auth: Auth::Bearer { privilege },
            not_found: NotFound::IsGone,
        };
        self.request(&spec, |body| {
            envelope::parse_object(body).map_err(|(why, body)| {
                request::Unusable::Malformed(format!(
                    "GET {path}: the answer is not an object ({why}); body starts: {}",
                    request::excerpt(&body)
                ))
            })
        })
    }

    fn page(
        &self,
        list: &ListRequest<'_>,
        page_number: u32,
        not_found: NotFound,
    ) -> Result<Option<Page>> {
        let page_size = list.page_size;
        let mut query: Vec<(&'static str, String)> = vec![
            ("page", page_number.to_string()),
            ("page_size", page_size.to_string()),
        ];
        query.extend(list.filters.iter().cloned());
        let spec = RequestSpec {
            method: Method::Get,
            path: list.path,
            query: &query,
            auth: Auth::Bearer {
                privilege: list.privilege,
            },
            not_found,
        };
        let what = format!("GET {} page {page_number}", list.path);
        self.request(&spec, |body| match envelope::parse_page(body) {
            Ok(page) if page.len() > page_size as usize => Err(request::Unusable::Refused(fail(
                ExitKind::Protocol,
                format!(
                    "{what}: {} items in a page of page_size {page_size}",
                    page.len()
                ),
            ))),
            Ok(page) => {
                // A proxy or API bug that drops `page` answers page 1 every
                // time: paging on would spend the run re-reading it and never
                // reach the rest. Malformed, so retried like any unusable
                // answer. An empty page is not checked: it ends the paging,
                // whatever it claims to be.
                let asked = u64::from(page_number);
                if let Some(answered) = page.page_number.filter(|&n| n != asked)
                    && !page.is_empty()
                {
                    let why = page_ignored(list.path, page_number, answered);
                    return Err(request::Unusable::Malformed(why));
                }
                if page.escaped_controls > 0 {
                    crate::warn!(
                        "{what}: the answer held {} raw control character(s) inside strings, \
                         which JSON does not allow; read them as their \\u escapes",
                        page.escaped_controls
                    );
                }
                Ok(page)
            }
            Err((why, body)) => Err(request::Unusable::Malformed(format!(
                "{what}: the answer is not a page ({}); body starts: {}",
                crate::untrusted::shown(&why),
                request::excerpt(&body)
            ))),
        })
    }

    /// Gives a page's buffer back for the next answer to be read into.
    pub fn recycle(&self, page: Page) {
        let mut buffer = page.into_buffer();
        buffer.clear();
        let mut buffers = self.buffers.lock().expect("buffer pool lock");
        // More than the pages in flight is never needed at once, and an
        // unusually large answer's buffer is not worth holding on to.
        if buffers.len() < 16 && buffer.capacity() <= MAX_POOLED {
            buffers.push(buffer);
        }
    }

    /// Buffers in the pool now: how tests see that no page is held.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.buffers.lock().expect("buffer pool lock").len()
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .lock()
            .expect("buffer pool lock")
            .pop()
            .unwrap_or_default()
    }
}

/// Why a list page is refused when it is not the page asked for: the server,
/// or a proxy before it, ignored the `page` parameter.
pub fn page_ignored(path: &str, asked: u32, answered: u64) -> String {
    format!(
        "GET {path} page {asked}: the answer is page {answered} (the server ignored the page parameter)"
    )
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;
    use std::ffi::OsString;
    use std::sync::Arc;
    use std::time::Duration;

    /// A loopback server that answers by `route(method, url)` and records
    /// each request as `METHOD url`.
    pub(crate) struct Server {
        server: Arc<tiny_http::Server>,
        seen: Arc<Mutex<Vec<String>>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        pub(crate) fn start(
            route: impl Fn(&str, &str) -> (u16, &'static str) + Send + 'static,
        ) -> Server {
            let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (server2, seen2) = (Arc::clone(&server), Arc::clone(&seen));
            let thread = std::thread::spawn(move || {
                for request in server2.incoming_requests() {
                    let method = request.method().to_string();
                    let url = request.url().to_string();
                    seen2.lock().unwrap().push(format!("{method} {url}"));
                    let (status, body) = route(&method, &url);
                    let _ = request
                        .respond(tiny_http::Response::from_string(body).with_status_code(status));
                }
            });
            Server {
                server,
                seen,
                thread: Some(thread),
            }
        }

        pub(crate) fn client(&self) -> ApiClient {
            let url = format!("http://{}", self.server.server_addr());
            let cli = crate::cli::Cli::try_parse_from(["cylance-logs", "check", "--api-url", &url])
                .unwrap();
            let env = |name: &str| {
                [
                    ("CYLANCE_APP_ID", "app"),
                    ("CYLANCE_TENANT_ID", "tenant"),
                    ("CYLANCE_APP_SECRET", "secret"),
                ]
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
            };
            let crate::config::CommandSettings::Check { api: settings, .. } =
                crate::config::Settings::resolve(&cli, &env)
                    .unwrap()
                    .command
            else {
                unreachable!("the command is check")
            };
            let control = RunControl::install(None).unwrap();
            ApiClient::new(
                settings,
                RetryPolicy::new(Duration::from_millis(1)),
                0,
                control,
            )
            .unwrap()
        }

        pub(crate) fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.server.unblock();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// A token, then `status` and `body` for everything else.
    fn answering(status: u16, body: &'static str) -> Server {
        Server::start(move |method, _| match method {
            "POST" => (200, r#"{"access_token":"token"}"#),
            _ => (status, body),
        })
    }

    fn list(path: &str) -> ListRequest<'_> {
        ListRequest {
            path,
            privilege: "threat:devicelist",
            page_size: 200,
            filters: &[],
        }
    }

    #[test]
    fn a_lookup_of_a_gone_object_is_none_and_its_hostile_id_stays_one_segment() {
        let server = answering(404, r#"{"message":"Not found"}"#);
        let client = server.client();
        let id = path_segment("x/../../threats/v2?page=1#").unwrap();
        let path = format!("/detections/v2/{id}/details");
        let found = client
            .fetch_object_or_missing(&path, "opticsdetect:read")
            .unwrap();
        assert!(found.is_none());
        assert_eq!(
            server.seen(),
            [
                "POST /auth/v2/token",
                "GET /detections/v2/x%2F..%2F..%2Fthreats%2Fv2%3Fpage%3D1%23/details"
            ]
        );
    }

    #[test]
    fn a_lookup_gives_the_object_as_sent() {
        let server = answering(200, "{\"Id\": \"a\", \"Device\": {}}\n");
        let object = server
            .client()
            .fetch_object_or_missing("/detections/v2/a/details", "opticsdetect:read")
            .unwrap()
            .unwrap();
        assert_eq!(object.json(), r#"{"Id": "a", "Device": {}}"#);
    }

    #[test]
    fn a_lookup_denied_names_its_privilege() {
        let server = answering(403, r#"{"message":"Forbidden"}"#);
        let err = server
            .client()
            .fetch_object_or_missing("/detections/v2/a/details", "opticsdetect:read")
            .unwrap_err();
        assert_eq!(crate::error::exit_code_of(&err), 77);
        assert!(
            format!("{err:#}").contains("needs the opticsdetect:read privilege"),
            "{err:#}"
        );
    }

    #[test]
    fn a_paged_lookup_of_a_gone_threat_is_none_but_a_missing_list_is_76() {
        let server = answering(404, r#"{"message":"Not found"}"#);
        let client = server.client();
        let devices = list("/threats/v2/ab12/devices");
        assert!(client.fetch_page_or_missing(&devices, 1).unwrap().is_none());
        let err = client.fetch_page(&devices, 1).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&err), 76);
        assert!(
            format!("{err:#}")
                .contains("GET /threats/v2/ab12/devices: unexpected answer (HTTP 404: Not found)"),
            "{err:#}"
        );
        assert_eq!(
            server.seen()[1..],
            [
                "GET /threats/v2/ab12/devices?page=1&page_size=200",
                "GET /threats/v2/ab12/devices?page=1&page_size=200"
            ]
        );
    }

    #[test]
    fn a_page_that_says_it_is_another_is_retried_then_76_unless_it_is_empty() {
        let server = answering(200, r#"{"page_number":1,"page_items":[{"id":"a"}]}"#);
        let err = server
            .client()
            .fetch_page(&list("/threats/v2"), 2)
            .unwrap_err();
        assert_eq!(crate::error::exit_code_of(&err), 76);
        assert_eq!(
            format!("{err:#}"),
            "GET /threats/v2 page 2: the answer is page 1 (the server ignored the page parameter)"
        );
        assert_eq!(server.seen().len(), 1 + 3, "{:?}", server.seen());
        // An empty page ends the paging whatever number it claims.
        let server = answering(200, r#"{"page_number":1,"total_pages":1,"page_items":[]}"#);
        let page = server.client().fetch_page(&list("/threats/v2"), 2).unwrap();
        assert!(page.is_empty());
    }

    #[test]
    fn a_paged_lookup_that_exists_is_read_like_any_list() {
        let server = answering(200, r#"{"total_pages":1,"page_items":[{"id":"d1"}]}"#);
        let page = server
            .client()
            .fetch_page_or_missing(&list("/threats/v2/ab12/devices"), 1)
            .unwrap()
            .unwrap();
        assert_eq!(page.items().collect::<Vec<_>>(), [r#"{"id":"d1"}"#]);
    }
}
