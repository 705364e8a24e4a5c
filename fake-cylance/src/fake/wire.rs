//! The fake on the wire: a `tiny_http` server with four worker threads behind a
//! thin TCP relay on the public port, each request recorded, faulted or handed to
//! its endpoint, and the answer written by hand.
//!
//! The relay exists only so that [`Fault::Reset`] can really close a connection
//! without an answer, which `tiny_http` cannot do itself.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::auth::EXPIRED_TOKEN;
use super::endpoints::{self, AUTH_PATH};
use super::store::to_bytes;
use super::{FakeApi, Fault, Recorded, Shared, State, lock};

/// Number of threads answering requests.
const WORKERS: usize = 4;
/// Longest request body read (the token request is the only one with a body).
const MAX_BODY: u64 = 64 * 1024;
pub(crate) const JSON: &str = "application/json; charset=utf-8";

/// Binds 127.0.0.1 on two free ports (tiny_http's and the relay's) and starts
/// serving `state`.
pub(super) fn start(state: State) -> FakeApi {
    let server = Arc::new(
        tiny_http::Server::http("127.0.0.1:0").expect("fake-cylance: cannot bind 127.0.0.1"),
    );
    let upstream = server
        .server_addr()
        .to_ip()
        .expect("fake-cylance: tiny_http is not on an IP address");
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("fake-cylance: cannot bind the relay port");
    let relay_addr = listener.local_addr().expect("fake-cylance: relay address");
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        relay: Relay::default(),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });

    let workers = (0..WORKERS)
        .map(|i| {
            let server = Arc::clone(&server);
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fake-api-worker-{i}"))
                .spawn(move || worker(&server, &shared))
                .expect("fake-cylance: cannot spawn a worker")
        })
        .collect();
    let acceptor = {
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("fake-api-relay".to_owned())
            .spawn(move || relay_accept(&listener, upstream, &shared))
            .expect("fake-cylance: cannot spawn the relay")
    };

    FakeApi {
        shared,
        server,
        relay_addr,
        workers,
        acceptor: Some(acceptor),
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the relay's accept() so that it sees the stop flag.
        drop(TcpStream::connect(self.relay_addr));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.relay.kill_all();
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let pumps = std::mem::take(&mut *lock(&self.shared.relay.pumps));
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

/// What the handlers need from a request.
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

pub(crate) enum Body {
    Bytes(Vec<u8>),
    /// That many bytes: an envelope's start, then spaces.
    Padded(usize),
}

pub(crate) struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Answer {
    pub fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Answer {
            status,
            content_type: Some(content_type.to_owned()),
            headers: Vec::new(),
            body: Body::Bytes(body),
        }
    }

    pub fn json(status: u16, value: Value) -> Self {
        Self::raw(status, JSON, to_bytes(&value).into_vec())
    }

    pub fn message(status: u16, message: &str) -> Self {
        Self::json(status, json!({ "message": message }))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

enum Outcome {
    Answer(Answer),
    Reset,
}

pub(crate) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Form-style decoding: `+` is a space, `%XX` a byte; malformed escapes stay as sent.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(hi), Some(lo)) = (hex_at(i + 1), hex_at(i + 2)) {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Accept` lists `application/json` (parameters allowed).
pub(crate) fn accepts_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
    })
}

/// `Content-Type` is `application/json`, with or without parameters such as `charset`.
pub(crate) fn is_json_content_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// The page a request asks for, for page-bound faults: 1 without `page`, `None` if
/// `page` is not a positive number.
fn requested_page(query: &[(String, String)]) -> Option<u64> {
    match param(query, "page") {
        None => Some(1),
        Some(p) => p.parse::<u64>().ok().filter(|&p| p >= 1),
    }
}

fn worker(server: &tiny_http::Server, shared: &Shared) {
    loop {
        match server.recv() {
            Ok(request) => {
                // A bug in a handler must not take a worker down with it.
                let _ = catch_unwind(AssertUnwindSafe(|| serve(shared, request)));
            }
            Err(_) if shared.stop.load(Ordering::SeqCst) => break,
            Err(_) => {}
        }
    }
}

/// Counts a request as in flight until `leave` (or drop).
struct InFlight<'a> {
    shared: &'a Shared,
    inside: bool,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            shared,
            inside: true,
        }
    }

    fn leave(&mut self) {
        if std::mem::replace(&mut self.inside, false) {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Sleeps `d`, waking early when the fake is being dropped.
fn pause(shared: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn serve(shared: &Shared, mut request: tiny_http::Request) {
    let at = Instant::now();
    let mut flight = InFlight::enter(shared);

    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let (authorization, accept, content_type) = (
        header("Authorization"),
        header("Accept"),
        header("Content-Type"),
    );
    let url = request.url().to_owned();
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path.to_owned(), parse_query(query)),
        None => (url, Vec::new()),
    };
    let mut body = Vec::new();
    let _ = request.as_reader().take(MAX_BODY).read_to_end(&mut body);
    let req = Req {
        method: request.method().as_str().to_owned(),
        path,
        query,
        authorization,
        accept,
        content_type,
        body,
    };

    let (slot, fault, delay) = {
        let mut st = lock(&shared.state);
        let slot = st.requests.len();
        st.requests.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            status: 0,
            authorization: req.authorization.clone(),
            accept: req.accept.clone(),
            at,
        });
        if req.path == AUTH_PATH
            && let Some(jwt) = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .as_ref()
                .and_then(|b| b.get("auth_token"))
                .and_then(Value::as_str)
        {
            st.auth.jwts.push(jwt.to_owned());
        }
        let fault = st.take_fault(&req.path, requested_page(&req.query));
        (slot, fault, st.delay)
    };
    pause(shared, delay);

    let outcome = match fault {
        None => Outcome::Answer(endpoints::handle(shared, &req)),
        Some(fault) => apply_fault(shared, &req, fault),
    };
    let status = match &outcome {
        Outcome::Answer(answer) => answer.status,
        Outcome::Reset => 0,
    };
    if let Some(recorded) = lock(&shared.state).requests.get_mut(slot) {
        recorded.status = status;
    }
    // Leave before answering: once the client has its answer it may send the next
    // request, which must not see this one as still in flight.
    flight.leave();
    send(shared, request, outcome);
}

fn apply_fault(shared: &Shared, req: &Req, fault: Fault) -> Outcome {
    let answer = match fault {
        Fault::Status {
            status,
            body,
            headers,
        } => {
            let has_type = headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("Content-Type"));
            let content_type = if has_type {
                None
            } else if serde_json::from_str::<Value>(&body).is_ok() {
                Some(JSON.to_owned())
            } else {
                Some("text/plain; charset=utf-8".to_owned())
            };
            Answer {
                status,
                content_type,
                headers,
                body: Body::Bytes(body.into_bytes()),
            }
        }
        Fault::Html(status) => {
            let title = format!(
                "{status} {}",
                tiny_http::StatusCode(status).default_reason_phrase()
            );
            let page = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>cloudfront</center>\r\n</body>\r\n</html>\r\n"
            );
            Answer::raw(status, "text/html", page.into_bytes())
        }
        Fault::Truncated => {
            let mut answer = endpoints::handle(shared, req);
            if let Body::Bytes(bytes) = &mut answer.body {
                bytes.truncate(bytes.len() / 2);
            }
            answer.status = 200;
            answer
        }
        Fault::NotJson => Answer::raw(200, JSON, b"this is not json".to_vec()),
        Fault::MissingPageItems => {
            let answer = endpoints::handle(shared, req);
            let envelope = match &answer.body {
                Body::Bytes(bytes) if answer.status == 200 => {
                    serde_json::from_slice::<Map<String, Value>>(bytes).ok()
                }
                _ => None,
            };
            let mut envelope = envelope.unwrap_or_else(|| {
                let mut m = Map::new();
                m.insert("page_number".into(), json!(1));
                m.insert("page_size".into(), json!(10));
                m.insert("total_pages".into(), json!(0));
                m.insert("total_number_of_items".into(), json!(0));
                m
            });
            envelope.remove("page_items");
            Answer::json(200, Value::Object(envelope))
        }
        Fault::PageOne => endpoints::handle(shared, &page_one(req)),
        Fault::PageOneUnnumbered => {
            let mut answer = endpoints::handle(shared, &page_one(req));
            // The envelope is written with `page_number` first, and page 1 is
            // never pretty-printed: the items stay byte for byte.
            if let Body::Bytes(bytes) = &mut answer.body
                && let Some(rest) = bytes.strip_prefix(b"{\"page_number\":1,")
            {
                *bytes = [b"{".as_slice(), rest].concat();
            }
            answer
        }
        Fault::Oversize(len) => Answer {
            status: 200,
            content_type: Some(JSON.to_owned()),
            headers: Vec::new(),
            body: Body::Padded(len),
        },
        Fault::Delay(d) => {
            pause(shared, d);
            endpoints::handle(shared, req)
        }
        Fault::Reset => return Outcome::Reset,
        Fault::ExpireToken => {
            lock(&shared.state)
                .auth
                .revoke(req.authorization.as_deref());
            Answer::message(401, EXPIRED_TOKEN)
        }
    };
    Outcome::Answer(answer)
}

/// `req` asking for page 1: the rest of its query as it came.
fn page_one(req: &Req) -> Req {
    let query = req
        .query
        .iter()
        .filter(|(name, _)| name != "page")
        .cloned()
        .chain([("page".to_owned(), "1".to_owned())])
        .collect();
    Req {
        method: req.method.clone(),
        path: req.path.clone(),
        query,
        authorization: req.authorization.clone(),
        accept: req.accept.clone(),
        content_type: req.content_type.clone(),
        body: req.body.clone(),
    }
}

const PADDING_PREFIX: &[u8] = b"{\"page_number\":1,\"page_size\":200,\"total_pages\":1,\"total_number_of_items\":1,\"page_items\":[";

fn send(shared: &Shared, request: tiny_http::Request, outcome: Outcome) {
    let answer = match outcome {
        Outcome::Answer(answer) => answer,
        Outcome::Reset => {
            if let Some(peer) = request.remote_addr().copied() {
                shared.relay.kill(&peer);
            }
            // Take the writer so that tiny_http does not send its own 500.
            drop(request.into_writer());
            return;
        }
    };
    let head_only = *request.method() == tiny_http::Method::Head;
    // The answer is written by hand, head and body in one write: tiny_http would write
    // it in 8 KiB pieces on a socket without TCP_NODELAY, and Nagle's algorithm against
    // delayed ACKs then costs tens of milliseconds per page.
    let mut writer = request.into_writer();
    let _ = write_answer(&mut writer, answer, head_only).and_then(|()| writer.flush());
}

fn write_answer(writer: &mut dyn Write, answer: Answer, head_only: bool) -> std::io::Result<()> {
    let status = answer.status;
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\n",
        tiny_http::StatusCode(status).default_reason_phrase(),
        Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
    );
    if let Some(content_type) = &answer.content_type {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    for (name, value) in &answer.headers {
        let framing = ["Content-Length", "Transfer-Encoding"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f));
        let clean = |s: &str| !s.contains(['\r', '\n']);
        if !framing && clean(name) && clean(value) {
            let _ = write!(head, "{name}: {value}\r\n");
        }
    }
    let no_body = head_only || matches!(status, 100..=199 | 204 | 304);
    match answer.body {
        Body::Bytes(body) => {
            if !matches!(status, 100..=199 | 204 | 304) {
                let _ = write!(head, "Content-Length: {}\r\n", body.len());
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            if !no_body {
                out.extend_from_slice(&body);
            }
            writer.write_all(&out)
        }
        Body::Padded(len) => {
            // Chunked, so that a client cannot rely on Content-Length to refuse it.
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            writer.write_all(head.as_bytes())?;
            if !no_body {
                write_padding(writer, len)?;
            }
            Ok(())
        }
    }
}

/// The body of [`Fault::Oversize`], chunked: the start of an envelope, then spaces,
/// `len` bytes in all, never more than 256 KiB in memory.
fn write_padding(writer: &mut dyn Write, len: usize) -> std::io::Result<()> {
    const CHUNK: usize = 256 * 1024;
    let mut chunk = Vec::with_capacity(CHUNK + 32);
    let mut sent = 0;
    while sent < len {
        let n = CHUNK.min(len - sent);
        chunk.clear();
        let _ = write!(chunk, "{n:x}\r\n");
        let prefix = PADDING_PREFIX.get(sent..).unwrap_or_default();
        let from_prefix = prefix.len().min(n);
        chunk.extend_from_slice(&prefix[..from_prefix]);
        chunk.resize(chunk.len() + n - from_prefix, b' ');
        chunk.extend_from_slice(b"\r\n");
        writer.write_all(&chunk)?;
        sent += n;
    }
    writer.write_all(b"0\r\n\r\n")
}

// ---------------------------------------------------------------------------
// The relay in front of tiny_http
// ---------------------------------------------------------------------------

/// Live relayed connections, keyed by the local address of the relay's connection to
/// tiny_http (which tiny_http reports as the request's remote address).
#[derive(Default)]
pub(crate) struct Relay {
    conns: Mutex<HashMap<SocketAddr, RelayConn>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

/// Handles on both sockets of one relayed connection.
struct RelayConn {
    /// Tells a reused address apart from the connection that had it before.
    serial: u64,
    client: TcpStream,
    upstream: TcpStream,
}

impl RelayConn {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

impl Relay {
    /// Closes both sides of one relayed connection.
    fn kill(&self, upstream_local: &SocketAddr) {
        if let Some(conn) = lock(&self.conns).remove(upstream_local) {
            conn.close();
        }
    }

    fn kill_all(&self) {
        for (_, conn) in lock(&self.conns).drain() {
            conn.close();
        }
    }

    /// Forgets a connection that ended by itself.
    fn forget(&self, upstream_local: &SocketAddr, serial: u64) {
        let mut conns = lock(&self.conns);
        if conns
            .get(upstream_local)
            .is_some_and(|c| c.serial == serial)
        {
            conns.remove(upstream_local);
        }
    }
}

fn relay_accept(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for (serial, client) in (0u64..).zip(listener.incoming()) {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(key), Ok(client_w), Ok(server_r), Ok(client_kept), Ok(server_kept)) = (
            server.local_addr(),
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        lock(&shared.relay.conns).insert(
            key,
            RelayConn {
                serial,
                client: client_kept,
                upstream: server_kept,
            },
        );

        let to_server = thread::spawn(move || {
            pump(&client, &server);
            let _ = server.shutdown(Shutdown::Write);
        });
        let relay_shared = Arc::clone(shared);
        let to_client = thread::spawn(move || {
            pump(&server_r, &client_w);
            let _ = client_w.shutdown(Shutdown::Write);
            relay_shared.relay.forget(&key, serial);
        });
        let mut pumps = lock(&shared.relay.pumps);
        pumps.retain(|p| !p.is_finished());
        pumps.push(to_server);
        pumps.push(to_client);
    }
}

/// Copies until end of stream or an error.
fn pump(mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
