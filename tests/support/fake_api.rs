//! A strict, stateful fake of the Cylance PROTECT User API v2 on loopback.
//!
//! It fakes what `/work/shared/docs/cylance-api.md` describes: `POST /auth/v2/token`
//! (HS256 JWT signed with the application secret, in exchange for an opaque bearer
//! token), and the paged lists `GET /threats/v2`, `GET /detections/v2` and
//! `GET /memoryprotection/v2`.
//!
//! It is deliberately as strict as the real service is known to be, and stricter where
//! the sources disagree, so that a client that passes against it does not depend on
//! leniency: the JWT signature, `iss`, `sub`, `tid`, a never-seen UUID v4 `jti`, integer
//! `iat`/`exp`, a lifetime of at most 30 minutes and the clock are all checked with no
//! leeway; every list needs a bearer token this fake issued and that has not expired,
//! `Accept: application/json` and the endpoint's privilege; `page`, `page_size` and the
//! time filters are validated and answer 400 when malformed; unknown paths answer 404 and
//! wrong methods 405. Every request is recorded with the status answered.
//!
//! Tests inject trouble with [`Fault`]s (per path prefix, FIFO, optionally for one page
//! number), delays, denied privileges, short token lifetimes and a server that ignores the
//! threat time filters (one source claims the real one does).
//!
//! Layout: a `tiny_http` server with four worker threads sits behind a thin TCP relay on
//! the public port. The relay exists only so that [`Fault::Reset`] can really close a
//! connection without an answer, which `tiny_http` cannot do itself.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Map, Value, json};

/// Number of threads answering requests.
const WORKERS: usize = 4;
/// Longest request body read (the token request is the only one with a body).
const MAX_BODY: u64 = 64 * 1024;
/// The `iss` every JWT must carry.
const ISSUER: &str = "http://cylance.com";
/// Longest JWT lifetime (`exp - iat`) accepted, in seconds.
const MAX_JWT_LIFETIME: i64 = 1800;
/// How far in the future `iat` may be, in seconds.
const MAX_IAT_SKEW: i64 = 300;
const PAGE_SIZE_MESSAGE: &str = "The page size requested is not supported.";
const PAGE_NUMBER_MESSAGE: &str = "The page number requested is not supported.";
const INVALID_JWT: &str = "Invalid JWT payload";
const EXPIRED_TOKEN: &str = "The access token has expired; request a new one";
const JSON: &str = "application/json; charset=utf-8";

const AUTH_PATH: &str = "/auth/v2/token";
const THREATS_PATH: &str = "/threats/v2";
const DETECTIONS_PATH: &str = "/detections/v2";
const MEMORY_PATH: &str = "/memoryprotection/v2";

// ---------------------------------------------------------------------------
// Public interface
// ---------------------------------------------------------------------------

/// The application credentials the fake accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub app_id: String,
    pub tenant_id: String,
    pub app_secret: String,
}

impl Credentials {
    /// Fixed, obviously fake values.
    pub fn sample() -> Self {
        Credentials {
            app_id: "11111111-2222-3333-4444-555555555555".to_owned(),
            tenant_id: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".to_owned(),
            app_secret: "fake-app-secret-do-not-use-9f8e7d".to_owned(),
        }
    }
}

/// Trouble to answer one request with, instead of (or around) the real answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status, body and headers verbatim (a `Retry-After` is sent as given).
    /// Without a `Content-Type` header the body is labelled JSON if it parses as JSON,
    /// plain text otherwise.
    Status {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// An edge error page: this status, an `<html>` body, `Content-Type: text/html`.
    Html(u16),
    /// 200 with the real body cut in half (the real answer is still computed, so a token
    /// request does issue a token that the client never sees).
    Truncated,
    /// 200, `Content-Type: application/json`, body `this is not json`.
    NotJson,
    /// 200 with the real envelope minus `page_items`.
    MissingPageItems,
    /// 200 with a body of exactly this many bytes: the start of a valid envelope, then
    /// spaces. Streamed, never allocated; large bodies go out chunked.
    Oversize(usize),
    /// Sleep this long (not holding any lock), then answer normally.
    Delay(Duration),
    /// Close the connection without any answer (recorded with status 0).
    Reset,
    /// Mark the bearer token of this request expired, then answer 401 like an expired
    /// token gets.
    ExpireToken,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Percent-decoded query parameters, in the order sent.
    pub query: Vec<(String, String)>,
    /// The status answered; 0 for [`Fault::Reset`] and while still being answered.
    pub status: u16,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    /// When the request reached a worker.
    pub at: Instant,
}

impl Recorded {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        param(&self.query, name)
    }
}

/// A running fake. Dropping it stops every thread it started.
pub struct FakeApi {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    relay_addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start(creds: Credentials) -> FakeApi {
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0").expect("fake_api: cannot bind 127.0.0.1"),
        );
        let upstream = server
            .server_addr()
            .to_ip()
            .expect("fake_api: tiny_http is not on an IP address");
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("fake_api: cannot bind the relay port");
        let relay_addr = listener.local_addr().expect("fake_api: relay address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(creds)),
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
                    .expect("fake_api: cannot spawn a worker")
            })
            .collect();
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fake-api-relay".to_owned())
                .spawn(move || relay_accept(&listener, upstream, &shared))
                .expect("fake_api: cannot spawn the relay")
        };

        FakeApi {
            shared,
            server,
            relay_addr,
            workers,
            acceptor: Some(acceptor),
        }
    }

    /// Base URL, `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.relay_addr)
    }

    /// The credentials this fake accepts.
    pub fn credentials(&self) -> Credentials {
        self.state().creds.clone()
    }

    /// Adds threats; one whose `sha256` is already known replaces the old record.
    /// Panics on an item without a string `sha256` or a parseable `last_found`.
    pub fn add_threats(&self, items: Vec<Value>) {
        let mut st = self.state();
        for item in items {
            st.threats.upsert(item);
        }
    }

    /// Adds detections; one whose `Id` is already known replaces the old record.
    /// Panics on an item without a string `Id` or an RFC 3339 `ReceivedTime`.
    pub fn add_detections(&self, items: Vec<Value>) {
        let mut st = self.state();
        for item in items {
            st.detections.upsert(item);
        }
    }

    /// Adds a threat served as exactly these bytes (not an object, no key, bad UTF-8,
    /// ...); the server files it under `sha256` at `last_found` (zone-less) for its own
    /// windows and order, whatever the bytes say.
    pub fn add_raw_threat(&self, sha256: &str, last_found: &str, raw: &[u8]) {
        let mut st = self.state();
        st.threats
            .upsert(json!({"sha256": sha256, "last_found": last_found}));
        let at = st.threats.index[sha256];
        st.threats.recs[at].json = raw.into();
    }

    /// Adds a detection served as exactly these bytes; the server files it under `id`
    /// at `received_time` (RFC 3339) for its own windows and order.
    pub fn add_raw_detection(&self, id: &str, received_time: &str, raw: &[u8]) {
        let mut st = self.state();
        st.detections
            .upsert(json!({"Id": id, "ReceivedTime": received_time}));
        let at = st.detections.index[id];
        st.detections.recs[at].json = raw.into();
    }

    /// The file was found again: its `last_found` moves to `new_last_found` (zone-less,
    /// like `2024-05-14T09:00:00`). Panics on an unknown sha256.
    pub fn refind_threat(&self, sha256: &str, new_last_found: &str) {
        self.state().threats.refind(sha256, new_last_found);
    }

    /// Deletes a detection (the real service can). Unknown ids are ignored.
    pub fn remove_detection(&self, id: &str) {
        self.state().detections.remove(id);
    }

    /// Changes a detection's `Status` in place (no timestamp changes, as in the real
    /// service). Panics on an unknown id.
    pub fn set_detection_status(&self, id: &str, status: &str) {
        self.state().detections.set_status(id, status);
    }

    /// `false`: `/threats/v2` ignores `start_time`/`end_time` (still validating them).
    pub fn set_honour_time_filters(&self, yes: bool) {
        self.state().honour_time_filters = yes;
    }

    /// Sleep this long before every answer (faulted ones too).
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Access tokens expire at min(JWT `exp`, issue time + `d`). Applies to tokens
    /// already issued too, at their next use.
    pub fn set_token_lifetime(&self, d: Duration) {
        self.state().token_lifetime = Some(d);
    }

    /// Also accepts JWTs for this tenant id (same application id and secret),
    /// serving it the same threats and detections: many pollers, each its own
    /// tenant, against one fake (the benchmark's 1,000 tenants into one file).
    pub fn accept_tenant(&self, tenant_id: &str) {
        self.state().other_tenants.insert(tenant_id.to_owned());
    }

    /// Tokens lack this privilege from now on: its endpoint answers 403.
    pub fn deny_privilege(&self, privilege: &str) {
        self.state().denied.insert(privilege.to_owned());
    }

    /// Undoes [`FakeApi::deny_privilege`].
    pub fn allow_privilege(&self, privilege: &str) {
        self.state().denied.remove(privilege);
    }

    /// Queues a fault for the next request whose path starts with `path_prefix`.
    /// When several queued faults match a request, the earliest pushed wins.
    pub fn push_fault(&self, path_prefix: &str, fault: Fault) {
        self.state().faults.push(PendingFault {
            prefix: path_prefix.to_owned(),
            page: None,
            fault,
        });
    }

    /// Queues a fault for the next request under `path_prefix` for exactly page `page`
    /// (a request without `page` asks for page 1).
    pub fn push_fault_at(&self, path_prefix: &str, page: u32, fault: Fault) {
        self.state().faults.push(PendingFault {
            prefix: path_prefix.to_owned(),
            page: Some(page),
            fault,
        });
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// How many recorded requests had exactly this path.
    pub fn count(&self, path: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Every access token handed out, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// Every `auth_token` received on the token endpoint (valid or not), in order.
    pub fn received_jwts(&self) -> Vec<String> {
        self.state().jwts.clone()
    }

    /// The highest number of requests being handled at once so far.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
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

/// A realistic threat list item with every field the API notes name. Deterministic in
/// `seed`; `last_found` is used as given (zone-less, like `2024-05-14T09:00:00`).
pub fn threat(seed: u64, last_found: &str) -> Value {
    let r = mix(seed ^ 0x7468_7265_6174);
    json!({
        "name": format!("sample-{seed}.exe"),
        "sha256": hex(seed, 0x5348_4132_3536, 64).to_uppercase(),
        "md5": hex(seed, 0x004d_4435, 32).to_uppercase(),
        "cylance_score": -((50 + r % 50) as f64) / 100.0,
        "av_industry": null,
        "classification": "Malware",
        "sub_classification": "Trojan",
        "global_quarantined": false,
        "safelisted": false,
        "unique_to_cylance": true,
        "file_size": 20_000 + (r >> 8) % 5_000_000,
        "last_found": last_found,
    })
}

/// A realistic CylanceOPTICS detection list item. Deterministic in `seed`;
/// `received_time` is used as given (RFC 3339 with `Z` and milliseconds, e.g.
/// `2024-05-14T09:00:00.123Z`) and `OccurrenceTime` is a few seconds to minutes earlier.
pub fn detection(seed: u64, received_time: &str) -> Value {
    let received = DateTime::parse_from_rfc3339(received_time)
        .unwrap_or_else(|e| panic!("fake_api::detection: bad received_time {received_time:?}: {e}"))
        .with_timezone(&Utc);
    let r = mix(seed ^ 0x6465_7465_6374);
    let lag = TimeDelta::milliseconds((5_000 + r % 295_000) as i64);
    let device = (seed % DEVICES.len() as u64) as usize;
    let severity = ["High", "Medium", "Low"][(seed % 3) as usize];
    json!({
        "Id": guid(seed, 0x4944),
        "PhoneticId": phonetic_id(seed),
        "Severity": severity,
        "Status": "New",
        "OccurrenceTime": rfc3339_millis(received - lag),
        "ReceivedTime": received_time,
        "DetectionDescription": DESCRIPTIONS[(seed % DESCRIPTIONS.len() as u64) as usize],
        "Device": {
            "CylanceId": guid(device as u64, 0x4445_5649_4345),
            "Name": DEVICES[device],
        },
    })
}

/// Seeds a small, varied tenant for the demo: 25 threats and 15 detections spread over
/// the 20 hours before `now` (three threats share one `last_found` second).
pub fn sample_tenant(fake: &FakeApi, now: DateTime<Utc>) {
    let threats = SAMPLE_THREATS
        .iter()
        .enumerate()
        .map(|(i, &(name, class, sub, score, av))| {
            // Threats 10, 11 and 12 share one second.
            let slot = if (10..=12).contains(&i) { 10 } else { i as i64 };
            let when = now - TimeDelta::minutes(3 + 47 * slot) - TimeDelta::seconds(slot % 7);
            let mut t = threat(
                1000 + i as u64,
                &when.format("%Y-%m-%dT%H:%M:%S").to_string(),
            );
            t["name"] = json!(name);
            t["classification"] = json!(class);
            t["sub_classification"] = json!(sub);
            t["cylance_score"] = json!(score);
            t["av_industry"] = av.map_or(Value::Null, |n| json!(n));
            t["global_quarantined"] = json!(i % 9 == 4);
            t["unique_to_cylance"] = json!(av.is_none());
            t
        })
        .collect();
    fake.add_threats(threats);

    let statuses = [
        "New",
        "New",
        "In Progress",
        "New",
        "Reviewed",
        "False Positive",
    ];
    let detections = (0..15u64)
        .map(|i| {
            let when = now - TimeDelta::minutes(7 + 79 * i as i64)
                + TimeDelta::milliseconds(((i * 137) % 1000) as i64);
            let mut d = detection(2000 + i, &rfc3339_millis(when));
            d["Status"] = json!(statuses[(i % statuses.len() as u64) as usize]);
            d
        })
        .collect();
    fake.add_detections(detections);
}

// ---------------------------------------------------------------------------
// Sample data
// ---------------------------------------------------------------------------

const DEVICES: [&str; 7] = [
    "WS-FIN-014",
    "WS-HR-007",
    "LT-JSMITH",
    "SRV-DC-01",
    "SRV-FILE-02",
    "LT-MGARCIA",
    "WS-DEV-221",
];

const DESCRIPTIONS: [&str; 15] = [
    "Suspicious PowerShell download cradle",
    "LSASS memory read by an unsigned process",
    "Office application spawned a command shell",
    "Ransomware-like mass file renaming",
    "Persistence via Run registry key",
    "Credential dumping via comsvcs.dll MiniDump",
    "Suspicious scheduled task creation",
    "Remote service creation via PsExec",
    "Encoded PowerShell command line",
    "Unusual outbound connection from rundll32",
    "Volume shadow copy deletion",
    "WMI event subscription persistence",
    "Browser credential store accessed",
    "Lateral movement via WinRM",
    "Windows Defender disabled via registry",
];

type SampleThreat = (&'static str, &'static str, &'static str, f64, Option<u32>);

#[rustfmt::skip]
const SAMPLE_THREATS: [SampleThreat; 25] = [
    ("invoice_2024-05.pdf.exe", "Malware", "Trojan", -0.98, Some(41)),
    ("svch0st.exe", "Malware", "Backdoor", -1.0, Some(55)),
    ("mimikatz.exe", "Dual Use", "Hacking Tool", -0.74, Some(60)),
    ("PsExec64.exe", "Dual Use", "Remote Access", -0.31, None),
    ("update_flash_player.exe", "Malware", "Downloader", -0.93, Some(23)),
    ("WinRAR_keygen.exe", "PUP", "Generic", -0.45, Some(12)),
    ("toolbar_setup.exe", "PUP", "Toolbar", -0.52, Some(8)),
    ("free_pdf_converter.msi", "PUP", "Adware", -0.61, None),
    ("locky_payload.dll", "Malware", "Ransom", -1.0, Some(62)),
    ("kbd_logger.exe", "Malware", "Infostealer", -0.96, None),
    ("nc.exe", "Dual Use", "Tool", -0.38, Some(31)),
    ("xmrig.exe", "PUP", "Cryptominer", -0.67, Some(44)),
    ("autorun_usb.exe", "Malware", "Worm", -0.99, Some(38)),
    ("Q2_payroll.doc.scr", "Malware", "Dropper", -0.97, None),
    ("TeamViewer_portable.exe", "Dual Use", "Remote Access", -0.22, None),
    ("chrome_updater.exe", "Malware", "Downloader", -0.91, Some(17)),
    ("setup_free_vpn.exe", "PUP", "Adware", -0.58, Some(5)),
    ("rundll_helper.dll", "Malware", "Backdoor", -0.95, None),
    ("beacon_x64.exe", "Malware", "Backdoor", -1.0, Some(49)),
    ("netscan.exe", "Dual Use", "Tool", -0.41, Some(9)),
    ("emotet_loader.exe", "Malware", "Trojan", -1.0, Some(58)),
    ("driver_booster_setup.exe", "PUP", "Generic", -0.35, Some(3)),
    ("wcry.exe", "Malware", "Ransom", -1.0, Some(66)),
    ("procdump64.exe", "Dual Use", "Tool", -0.27, None),
    ("AnyDesk_silent.exe", "Dual Use", "Remote Access", -0.33, Some(2)),
];

/// splitmix64: a deterministic, well-spread function of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `chars` lowercase hex digits derived from `seed` and `salt`.
fn hex(seed: u64, salt: u64, chars: usize) -> String {
    let mut out = String::with_capacity(chars + 16);
    let mut i = 0u64;
    while out.len() < chars {
        let _ = write!(out, "{:016x}", mix(seed ^ mix(salt.wrapping_add(i))));
        i += 1;
    }
    out.truncate(chars);
    out
}

/// A version-4-shaped GUID derived from `seed` and `salt`.
fn guid(seed: u64, salt: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix(seed ^ mix(salt)).to_be_bytes());
    bytes[8..].copy_from_slice(&mix(seed ^ mix(salt + 1)).to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Something like `KOBA-4821`.
fn phonetic_id(seed: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "BA", "KO", "MI", "TU", "RE", "SA", "LO", "VI", "DE", "NU", "PA", "ZO", "FI", "GA", "HE",
        "JU",
    ];
    let r = mix(seed ^ 0x5048_4f4e);
    format!(
        "{}{}-{:04}",
        SYLLABLES[(r & 15) as usize],
        SYLLABLES[((r >> 4) & 15) as usize],
        (r >> 8) % 10_000
    )
}

fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

struct Shared {
    state: Mutex<State>,
    relay: Relay,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

struct PendingFault {
    prefix: String,
    page: Option<u32>,
    fault: Fault,
}

struct TokenInfo {
    issued: Instant,
    /// The JWT's `exp` as an instant.
    jwt_exp: Instant,
    revoked: bool,
}

struct State {
    creds: Credentials,
    /// Tenant ids accepted besides `creds.tenant_id`, see [`FakeApi::accept_tenant`].
    other_tenants: HashSet<String>,
    threats: ThreatStore,
    detections: DetectionStore,
    honour_time_filters: bool,
    delay: Duration,
    token_lifetime: Option<Duration>,
    denied: HashSet<String>,
    faults: Vec<PendingFault>,
    requests: Vec<Recorded>,
    tokens: HashMap<String, TokenInfo>,
    issued: Vec<String>,
    jwts: Vec<String>,
    seen_jti: HashSet<String>,
}

impl State {
    fn new(creds: Credentials) -> Self {
        State {
            creds,
            other_tenants: HashSet::new(),
            threats: ThreatStore::default(),
            detections: DetectionStore::default(),
            honour_time_filters: true,
            delay: Duration::ZERO,
            token_lifetime: None,
            denied: HashSet::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            tokens: HashMap::new(),
            issued: Vec::new(),
            jwts: Vec::new(),
            seen_jti: HashSet::new(),
        }
    }

    fn take_fault(&mut self, path: &str, page: Option<u64>) -> Option<Fault> {
        let at = self.faults.iter().position(|f| {
            path.starts_with(&f.prefix) && f.page.is_none_or(|p| Some(u64::from(p)) == page)
        })?;
        Some(self.faults.remove(at).fault)
    }

    /// Checks `Authorization: Bearer <token>`; returns the token.
    fn check_bearer<'a>(&self, authorization: Option<&'a str>) -> Result<&'a str, Answer> {
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
    fn exchange_jwt(&mut self, jwt: &str) -> Answer {
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

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("Bearer") && !token.is_empty()).then_some(token)
}

/// One stored threat: its sort key and its pre-serialized JSON.
struct ThreatRec {
    last_found: NaiveDateTime,
    sha256: Arc<str>,
    json: Box<[u8]>,
}

/// Threats kept sorted newest `last_found` first, ties by sha256; sorted lazily, and
/// `index` (sha256 -> position) is valid at all times.
#[derive(Default)]
struct ThreatStore {
    recs: Vec<ThreatRec>,
    index: HashMap<Arc<str>, usize>,
    sorted: bool,
}

impl ThreatStore {
    fn upsert(&mut self, item: Value) {
        let sha = item
            .get("sha256")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fake_api: a threat needs a string sha256: {item}"));
        let last_found = item
            .get("last_found")
            .and_then(Value::as_str)
            .and_then(|s| parse_timestamp(s, Zone::Optional))
            .unwrap_or_else(|| panic!("fake_api: a threat needs a last_found: {item}"));
        let json = to_bytes(&item);
        if let Some(&at) = self.index.get(sha) {
            self.recs[at].last_found = last_found;
            self.recs[at].json = json;
        } else {
            let sha: Arc<str> = Arc::from(sha);
            self.index.insert(Arc::clone(&sha), self.recs.len());
            self.recs.push(ThreatRec {
                last_found,
                sha256: sha,
                json,
            });
        }
        self.sorted = false;
    }

    fn refind(&mut self, sha256: &str, new_last_found: &str) {
        let at = *self
            .index
            .get(sha256)
            .unwrap_or_else(|| panic!("fake_api::refind_threat: unknown sha256 {sha256}"));
        let last_found = parse_timestamp(new_last_found, Zone::Optional).unwrap_or_else(|| {
            panic!("fake_api::refind_threat: bad last_found {new_last_found:?}")
        });
        let rec = &mut self.recs[at];
        let mut item: Value = serde_json::from_slice(&rec.json).expect("stored threat is JSON");
        item["last_found"] = json!(new_last_found);
        rec.json = to_bytes(&item);
        rec.last_found = last_found;
        self.sorted = false;
    }

    fn ensure_sorted(&mut self) {
        if self.sorted {
            return;
        }
        // Stable sort: cheap on a sorted prefix followed by new items.
        self.recs.sort_by(|a, b| {
            b.last_found
                .cmp(&a.last_found)
                .then_with(|| a.sha256.cmp(&b.sha256))
        });
        self.index.clear();
        for (i, rec) in self.recs.iter().enumerate() {
            self.index.insert(Arc::clone(&rec.sha256), i);
        }
        self.sorted = true;
    }

    /// Positions `[lo, hi)` of the threats with `start <= last_found <= end`.
    fn window(&self, start: NaiveDateTime, end: Option<NaiveDateTime>) -> (usize, usize) {
        let lo = end.map_or(0, |end| self.recs.partition_point(|r| r.last_found > end));
        let hi = self.recs.partition_point(|r| r.last_found >= start);
        (lo, hi.max(lo))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortField {
    Severity,
    OccurrenceTime,
    Status,
    Device,
    PhoneticId,
    Description,
    ReceivedTime,
}

impl SortField {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "Severity" => Self::Severity,
            "OccurrenceTime" => Self::OccurrenceTime,
            "Status" => Self::Status,
            "Device" => Self::Device,
            "PhoneticId" => Self::PhoneticId,
            "Description" => Self::Description,
            "ReceivedTime" => Self::ReceivedTime,
            _ => return None,
        })
    }
}

/// One stored detection: its sort keys and its pre-serialized JSON.
struct DetRec {
    received: DateTime<Utc>,
    id: Arc<str>,
    severity: u8,
    occurred: Option<DateTime<Utc>>,
    status: Box<str>,
    device: Box<str>,
    phonetic: Box<str>,
    description: Box<str>,
    json: Box<[u8]>,
}

impl DetRec {
    fn new(item: &Value) -> Self {
        let id = item
            .get("Id")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fake_api: a detection needs a string Id: {item}"));
        let received = item
            .get("ReceivedTime")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .unwrap_or_else(|| {
                panic!("fake_api: a detection needs an RFC 3339 ReceivedTime: {item}")
            })
            .with_timezone(&Utc);
        let text =
            |v: Option<&Value>| -> Box<str> { v.and_then(Value::as_str).unwrap_or("").into() };
        DetRec {
            received,
            id: Arc::from(id),
            severity: match item.get("Severity").and_then(Value::as_str) {
                Some("High") => 3,
                Some("Medium") => 2,
                Some("Low") => 1,
                _ => 0,
            },
            occurred: item
                .get("OccurrenceTime")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
            status: text(item.get("Status")),
            device: text(item.get("Device").and_then(|d| d.get("Name"))),
            phonetic: text(item.get("PhoneticId")),
            description: text(item.get("DetectionDescription")),
            json: to_bytes(item),
        }
    }

    fn cmp_by(&self, other: &Self, field: SortField) -> std::cmp::Ordering {
        match field {
            SortField::Severity => self.severity.cmp(&other.severity),
            SortField::OccurrenceTime => self.occurred.cmp(&other.occurred),
            SortField::Status => self.status.cmp(&other.status),
            SortField::Device => self.device.cmp(&other.device),
            SortField::PhoneticId => self.phonetic.cmp(&other.phonetic),
            SortField::Description => self.description.cmp(&other.description),
            SortField::ReceivedTime => self.received.cmp(&other.received),
        }
    }
}

/// Detections kept sorted newest `ReceivedTime` first, ties by Id (lazily); other sort
/// orders are computed once and cached until the next change.
#[derive(Default)]
struct DetectionStore {
    recs: Vec<DetRec>,
    index: HashMap<Arc<str>, usize>,
    sorted: bool,
    cache: Option<(SortField, bool, Vec<u32>)>,
}

impl DetectionStore {
    fn upsert(&mut self, item: Value) {
        let rec = DetRec::new(&item);
        if let Some(&at) = self.index.get(&rec.id) {
            self.recs[at] = rec;
        } else {
            self.index.insert(Arc::clone(&rec.id), self.recs.len());
            self.recs.push(rec);
        }
        self.sorted = false;
        self.cache = None;
    }

    fn remove(&mut self, id: &str) {
        let Some(at) = self.index.remove(id) else {
            return;
        };
        self.recs.swap_remove(at);
        if let Some(moved) = self.recs.get(at) {
            self.index.insert(Arc::clone(&moved.id), at);
        }
        self.sorted = false;
        self.cache = None;
    }

    fn set_status(&mut self, id: &str, status: &str) {
        let at = *self
            .index
            .get(id)
            .unwrap_or_else(|| panic!("fake_api::set_detection_status: unknown Id {id}"));
        let rec = &mut self.recs[at];
        let mut item: Value = serde_json::from_slice(&rec.json).expect("stored detection is JSON");
        item["Status"] = json!(status);
        rec.json = to_bytes(&item);
        rec.status = status.into();
        self.cache = None;
    }

    fn ensure_sorted(&mut self) {
        if self.sorted {
            return;
        }
        self.recs
            .sort_by(|a, b| b.received.cmp(&a.received).then_with(|| a.id.cmp(&b.id)));
        self.index.clear();
        for (i, rec) in self.recs.iter().enumerate() {
            self.index.insert(Arc::clone(&rec.id), i);
        }
        self.sorted = true;
        self.cache = None;
    }

    /// Positions `[lo, hi)` (in the default order) with `start <= ReceivedTime < end`.
    fn window(&self, start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> (usize, usize) {
        let lo = end.map_or(0, |end| self.recs.partition_point(|r| r.received >= end));
        let hi = start.map_or(self.recs.len(), |start| {
            self.recs.partition_point(|r| r.received >= start)
        });
        (lo, hi.max(lo))
    }

    /// All positions in `field` order (descending if `desc`), ties in default order.
    fn order(&mut self, field: SortField, desc: bool) -> &[u32] {
        let fresh = matches!(&self.cache, Some((f, d, _)) if *f == field && *d == desc);
        if !fresh {
            let recs = &self.recs;
            let mut order: Vec<u32> = (0..recs.len() as u32).collect();
            order.sort_by(|&a, &b| {
                let o = recs[a as usize].cmp_by(&recs[b as usize], field);
                if desc { o.reverse() } else { o }
            });
            self.cache = Some((field, desc, order));
        }
        self.cache
            .as_ref()
            .map_or(&[], |(_, _, order)| order.as_slice())
    }
}

fn to_bytes(item: &Value) -> Box<[u8]> {
    serde_json::to_vec(item)
        .expect("a JSON value serializes")
        .into_boxed_slice()
}

// ---------------------------------------------------------------------------
// Time parsing
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// `2024-05-14T09:00:00`, optional fraction, optional `Z`.
    Optional,
    /// `2024-05-14T09:00:00Z`, optional fraction, `Z` required.
    Required,
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction][Z]` strictly (exact digit counts, 1-9
/// fraction digits), as UTC.
fn parse_timestamp(s: &str, zone: Zone) -> Option<NaiveDateTime> {
    let s = match (zone, s.strip_suffix('Z')) {
        (_, Some(bare)) => bare,
        (Zone::Optional, None) => s,
        (Zone::Required, None) => return None,
    };
    let bytes = s.as_bytes();
    if bytes.len() < 19 {
        return None;
    }
    let shape_ok = bytes[..19].iter().enumerate().all(|(i, &b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    let fraction = &bytes[19..];
    let fraction_ok = fraction.is_empty()
        || (fraction[0] == b'.'
            && (2..=10).contains(&fraction.len())
            && fraction[1..].iter().all(u8::is_ascii_digit));
    if !(shape_ok && fraction_ok) {
        return None;
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

// ---------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------

/// What the handlers need from a request.
struct Req {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    accept: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

enum Body {
    Bytes(Vec<u8>),
    /// That many bytes: an envelope's start, then spaces.
    Padded(usize),
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Answer {
    fn raw(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Answer {
            status,
            content_type: Some(content_type.to_owned()),
            headers: Vec::new(),
            body: Body::Bytes(body),
        }
    }

    fn json(status: u16, value: Value) -> Self {
        Self::raw(status, JSON, to_bytes(&value).into_vec())
    }

    fn message(status: u16, message: &str) -> Self {
        Self::json(status, json!({ "message": message }))
    }

    fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

enum Outcome {
    Answer(Answer),
    Reset,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
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
fn accepts_json(accept: Option<&str>) -> bool {
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
fn is_json_content_type(content_type: Option<&str>) -> bool {
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
            st.jwts.push(jwt.to_owned());
        }
        let fault = st.take_fault(&req.path, requested_page(&req.query));
        (slot, fault, st.delay)
    };
    pause(shared, delay);

    let outcome = match fault {
        None => Outcome::Answer(handle(shared, &req)),
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
            let mut answer = handle(shared, req);
            if let Body::Bytes(bytes) = &mut answer.body {
                bytes.truncate(bytes.len() / 2);
            }
            answer.status = 200;
            answer
        }
        Fault::NotJson => Answer::raw(200, JSON, b"this is not json".to_vec()),
        Fault::MissingPageItems => {
            let answer = handle(shared, req);
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
        Fault::Oversize(len) => Answer {
            status: 200,
            content_type: Some(JSON.to_owned()),
            headers: Vec::new(),
            body: Body::Padded(len),
        },
        Fault::Delay(d) => {
            pause(shared, d);
            handle(shared, req)
        }
        Fault::Reset => return Outcome::Reset,
        Fault::ExpireToken => {
            let mut st = lock(&shared.state);
            if let Some(token) = bearer(req.authorization.as_deref())
                && let Some(info) = st.tokens.get_mut(token)
            {
                info.revoked = true;
            }
            Answer::message(401, EXPIRED_TOKEN)
        }
    };
    Outcome::Answer(answer)
}

#[derive(Clone, Copy)]
enum List {
    Threats,
    Detections,
    Memory,
}

fn handle(shared: &Shared, req: &Req) -> Answer {
    let list = match req.path.as_str() {
        AUTH_PATH => {
            if req.method != "POST" {
                return Answer::message(405, "The requested resource does not support this method")
                    .with_header("Allow", "POST");
            }
            return token_request(shared, req);
        }
        THREATS_PATH => List::Threats,
        DETECTIONS_PATH => List::Detections,
        MEMORY_PATH => List::Memory,
        _ => return Answer::message(404, "Not found"),
    };
    if req.method != "GET" {
        return Answer::message(405, "The requested resource does not support this method")
            .with_header("Allow", "GET");
    }
    match list_request(shared, req, list) {
        Ok(answer) | Err(answer) => answer,
    }
}

fn token_request(shared: &Shared, req: &Req) -> Answer {
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
    lock(&shared.state).exchange_jwt(jwt)
}

fn list_request(shared: &Shared, req: &Req, list: List) -> Result<Answer, Answer> {
    let mut st = lock(&shared.state);
    st.check_bearer(req.authorization.as_deref())?;
    if !accepts_json(req.accept.as_deref()) {
        return Err(Answer::message(
            406,
            "Not acceptable: send Accept: application/json",
        ));
    }
    let (privilege, default_size) = match list {
        List::Threats => ("threat:list", 10),
        List::Detections => ("opticsdetect:list", 20),
        List::Memory => ("memoryprotection:list", 10),
    };
    if st.denied.contains(privilege) {
        return Err(Answer::message(
            403,
            &format!("Forbidden: the token lacks the {privilege} privilege"),
        ));
    }
    let q = &req.query;
    let page = match param(q, "page") {
        None => 1,
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| Answer::message(400, PAGE_NUMBER_MESSAGE))?,
    };
    let size = match param(q, "page_size") {
        None => default_size,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=200).contains(s))
            .ok_or_else(|| Answer::message(400, PAGE_SIZE_MESSAGE))?,
    };
    // Offset of the page's first item; `None` when it is beyond any list.
    let offset = usize::try_from((page - 1).saturating_mul(size)).ok();
    let take = size as usize;

    let body = match list {
        List::Threats => {
            let time = |name: &str| -> Result<Option<NaiveDateTime>, Answer> {
                param(q, name)
                    .map(|v| {
                        parse_timestamp(v, Zone::Optional).ok_or_else(|| {
                            Answer::message(
                                400,
                                &format!(
                                    "Invalid {name}: expected a UTC date and time like 2024-05-14T09:00:00"
                                ),
                            )
                        })
                    })
                    .transpose()
            };
            let (start, end) = (time("start_time")?, time("end_time")?);
            if end.is_some() && start.is_none() {
                return Err(Answer::message(
                    400,
                    "start_time is required when end_time is given",
                ));
            }
            let honour = st.honour_time_filters;
            let threats = &mut st.threats;
            threats.ensure_sorted();
            let (lo, hi) = match start {
                Some(start) if honour => threats.window(start, end),
                _ => (0, threats.recs.len()),
            };
            let items = &threats.recs[lo..hi];
            let page_items = offset.map_or(&[][..], |o| &items[o.min(items.len())..]);
            write_page(
                page,
                size,
                items.len(),
                page_items.iter().take(take).map(|r| &r.json[..]),
            )
        }
        List::Detections => {
            let time = |name: &str| -> Result<Option<DateTime<Utc>>, Answer> {
                param(q, name)
                    .map(|v| {
                        parse_timestamp(v, Zone::Required)
                            .map(|t| t.and_utc())
                            .ok_or_else(|| {
                                Answer::message(
                                    400,
                                    &format!(
                                        "Invalid {name}: expected an ISO 8601 UTC date and time like 2024-05-14T09:00:00.000Z"
                                    ),
                                )
                            })
                    })
                    .transpose()
            };
            let (start, end) = (time("start")?, time("end")?);
            let sort = match param(q, "sort") {
                None => None,
                Some(s) => {
                    let (desc, name) = match s.strip_prefix('-') {
                        Some(name) => (true, name),
                        None => (false, s),
                    };
                    let field = SortField::parse(name)
                        .ok_or_else(|| Answer::message(400, &format!("Invalid sort field: {s}")))?;
                    Some((field, desc))
                }
            };
            let detections = &mut st.detections;
            detections.ensure_sorted();
            let (lo, hi) = detections.window(start, end);
            let total = hi - lo;
            let skip = offset.unwrap_or(usize::MAX);
            match sort {
                None | Some((SortField::ReceivedTime, true)) => write_page(
                    page,
                    size,
                    total,
                    detections.recs[lo..hi]
                        .iter()
                        .skip(skip)
                        .take(take)
                        .map(|r| &r.json[..]),
                ),
                Some((SortField::ReceivedTime, false)) => write_page(
                    page,
                    size,
                    total,
                    detections.recs[lo..hi]
                        .iter()
                        .rev()
                        .skip(skip)
                        .take(take)
                        .map(|r| &r.json[..]),
                ),
                Some((field, desc)) => {
                    let picked: Vec<usize> = detections
                        .order(field, desc)
                        .iter()
                        .map(|&i| i as usize)
                        .filter(|i| (lo..hi).contains(i))
                        .skip(skip)
                        .take(take)
                        .collect();
                    let recs = &detections.recs;
                    write_page(page, size, total, picked.iter().map(|&i| &recs[i].json[..]))
                }
            }
        }
        List::Memory => write_page(page, size, 0, std::iter::empty()),
    };
    Ok(Answer::raw(200, JSON, body))
}

/// The list envelope, fields in the documented order, items pre-serialized.
fn write_page<'a>(
    page: u64,
    size: u64,
    total: usize,
    items: impl Iterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let total_pages = (total as u64).div_ceil(size);
    let mut out = Vec::with_capacity(128 + size as usize * 512);
    let _ = write!(
        out,
        "{{\"page_number\":{page},\"page_size\":{size},\"total_pages\":{total_pages},\"total_number_of_items\":{total},\"page_items\":["
    );
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    out
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
struct Relay {
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    fn jwt_with(creds: &Credentials, secret: &str, iat: i64, exp: i64, jti: &str) -> String {
        let claims = json!({
            "iss": ISSUER,
            "sub": creds.app_id,
            "tid": creds.tenant_id,
            "jti": jti,
            "iat": iat,
            "exp": exp,
        });
        let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn jwt(creds: &Credentials) -> String {
        let now = unix_now();
        let jti = uuid::Uuid::new_v4().to_string();
        jwt_with(creds, &creds.app_secret, now, now + 1800, &jti)
    }

    fn post_jwt(agent: &ureq::Agent, fake: &FakeApi, jwt: &str) -> (u16, Value) {
        let mut resp = agent
            .post(format!("{}/auth/v2/token", fake.url()))
            .header("Content-Type", "application/json; charset=utf-8")
            .send(json!({ "auth_token": jwt }).to_string())
            .unwrap();
        let body = resp.body_mut().read_to_string().unwrap();
        (resp.status().as_u16(), serde_json::from_str(&body).unwrap())
    }

    fn token(agent: &ureq::Agent, fake: &FakeApi) -> String {
        let (status, body) = post_jwt(agent, fake, &jwt(&fake.credentials()));
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// GET with the token and `Accept: application/json`; status and raw body.
    fn get(agent: &ureq::Agent, fake: &FakeApi, token: &str, path: &str) -> (u16, String) {
        let mut resp = agent
            .get(format!("{}{path}", fake.url()))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/json")
            .call()
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    fn get_json(agent: &ureq::Agent, fake: &FakeApi, token: &str, path: &str) -> (u16, Value) {
        let (status, body) = get(agent, fake, token, path);
        (status, serde_json::from_str(&body).unwrap())
    }

    fn field<'a>(page: &'a Value, name: &str) -> Vec<&'a str> {
        page["page_items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[name].as_str().unwrap())
            .collect()
    }

    #[test]
    fn token_lists_threats_newest_first_in_the_envelope() {
        let fake = FakeApi::start(Credentials::sample());
        let agent = agent();
        let times = [
            "2024-05-14T09:00:00",
            "2024-05-14T10:00:00",
            "2024-05-14T10:00:00",
            "2024-05-14T08:00:00",
            "2024-05-14T11:00:00",
        ];
        let threats: Vec<Value> = (0..5u64).map(|i| threat(i, times[i as usize])).collect();
        let mut expected: Vec<(String, String)> = threats
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap().to_owned();
                (s("last_found"), s("sha256"))
            })
            .collect();
        expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        fake.add_threats(threats);

        let token = token(&agent, &fake);
        assert_eq!(fake.issued_tokens(), vec![token.clone()]);
        assert_eq!(fake.received_jwts().len(), 1);

        let (status, body) = get(&agent, &fake, &token, "/threats/v2?page_size=2");
        assert_eq!(status, 200);
        assert!(body.starts_with(
            r#"{"page_number":1,"page_size":2,"total_pages":3,"total_number_of_items":5,"page_items":["#
        ));
        let mut seen = Vec::new();
        for page in 1..=4 {
            let (status, body) = get_json(
                &agent,
                &fake,
                &token,
                &format!("/threats/v2?page_size=2&page={page}&unknown=x"),
            );
            assert_eq!(status, 200);
            assert_eq!(body["page_number"], page);
            seen.extend(field(&body, "sha256").into_iter().map(str::to_owned));
        }
        let expected: Vec<String> = expected.into_iter().map(|(_, sha)| sha).collect();
        assert_eq!(seen, expected);

        // The default page size, and the fields of an item.
        let (_, body) = get_json(&agent, &fake, &token, "/threats/v2");
        assert_eq!(body["page_size"], 10);
        let item = &body["page_items"][0];
        assert_eq!(item["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(item["md5"].as_str().unwrap().len(), 32);
        assert!(item["av_industry"].is_null());

        // Header checks.
        let resp = agent
            .get(format!("{}/threats/v2", fake.url()))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 406);
        assert_eq!(get(&agent, &fake, "not-issued", "/threats/v2").0, 401);
        assert_eq!(get(&agent, &fake, &token, "/threats/v2/x/devices").0, 404);
        fake.deny_privilege("threat:list");
        assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 403);
        assert_eq!(get(&agent, &fake, &token, "/detections/v2").0, 200);
        assert_eq!(fake.count("/threats/v2"), 9);
    }

    #[test]
    fn another_tenant_is_refused_until_accepted() {
        let creds = Credentials::sample();
        let fake = FakeApi::start(creds.clone());
        let agent = agent();
        let other = Credentials {
            tenant_id: "bbbbbbbb-0000-4000-8000-000000000001".to_owned(),
            ..creds.clone()
        };
        assert_eq!(post_jwt(&agent, &fake, &jwt(&other)).0, 401);
        fake.accept_tenant(&other.tenant_id);
        assert_eq!(post_jwt(&agent, &fake, &jwt(&other)).0, 200);
        assert_eq!(post_jwt(&agent, &fake, &jwt(&creds)).0, 200);
    }

    #[test]
    fn bad_jwts_are_refused() {
        let creds = Credentials::sample();
        let fake = FakeApi::start(creds.clone());
        let agent = agent();
        let now = unix_now();
        let jti = || uuid::Uuid::new_v4().to_string();
        let invalid = json!({ "message": INVALID_JWT });

        let wrong_secret = jwt_with(&creds, "another-secret", now, now + 600, &jti());
        assert_eq!(
            post_jwt(&agent, &fake, &wrong_secret),
            (401, invalid.clone())
        );

        let good = jwt(&creds);
        assert_eq!(post_jwt(&agent, &fake, &good).0, 200);
        assert_eq!(post_jwt(&agent, &fake, &good), (401, invalid.clone()));

        let too_long = jwt_with(&creds, &creds.app_secret, now, now + 31 * 60, &jti());
        assert_eq!(post_jwt(&agent, &fake, &too_long).0, 400);

        let expired = jwt_with(&creds, &creds.app_secret, now - 900, now - 60, &jti());
        let (status, body) = post_jwt(&agent, &fake, &expired);
        assert_eq!(status, 401);
        assert!(body["message"].as_str().unwrap().contains("clock"));

        let not_v4 = jwt_with(&creds, &creds.app_secret, now, now + 600, "jti-1");
        assert_eq!(post_jwt(&agent, &fake, &not_v4), (401, invalid));

        let resp = agent
            .post(format!("{}/auth/v2/token", fake.url()))
            .header("Content-Type", "text/plain")
            .send(json!({ "auth_token": jwt(&creds) }).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 415);
        let resp = agent
            .get(format!("{}/auth/v2/token", fake.url()))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405);

        assert_eq!(fake.issued_tokens().len(), 1);
        assert_eq!(fake.received_jwts().len(), 7);
    }

    #[test]
    fn page_parameters_are_validated() {
        let fake = FakeApi::start(Credentials::sample());
        let agent = agent();
        let token = token(&agent, &fake);
        let message = r#"{"message":"The page size requested is not supported."}"#;
        for path in [
            "/threats/v2?page_size=0",
            "/threats/v2?page_size=201",
            "/threats/v2?page_size=ten",
            "/detections/v2?page_size=201",
        ] {
            assert_eq!(get(&agent, &fake, &token, path), (400, message.to_owned()));
        }
        for path in ["/threats/v2?page=0", "/detections/v2?page=-1"] {
            assert_eq!(get(&agent, &fake, &token, path).0, 400, "{path}");
        }
        let (status, body) = get_json(&agent, &fake, &token, "/detections/v2");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"page_number": 1, "page_size": 20, "total_pages": 0,
                   "total_number_of_items": 0, "page_items": []})
        );
        let (status, body) = get_json(&agent, &fake, &token, "/memoryprotection/v2?page_size=200");
        assert_eq!((status, &body["total_pages"]), (200, &json!(0)));
    }

    #[test]
    fn time_filters_select_the_window_unless_ignored() {
        let fake = FakeApi::start(Credentials::sample());
        let agent = agent();
        let token = token(&agent, &fake);
        fake.add_threats(
            ["08:00:00", "09:00:00", "10:00:00", "11:00:00"]
                .iter()
                .zip(1u64..)
                .map(|(t, seed)| threat(seed, &format!("2024-05-14T{t}")))
                .collect(),
        );
        let window = "/threats/v2?start_time=2024-05-14T09:00:00&end_time=2024-05-14T10:00:00.000Z";
        let (status, body) = get_json(&agent, &fake, &token, window);
        assert_eq!(status, 200);
        assert_eq!(
            field(&body, "last_found"),
            ["2024-05-14T10:00:00", "2024-05-14T09:00:00"]
        );
        fake.set_honour_time_filters(false);
        let (_, body) = get_json(&agent, &fake, &token, window);
        assert_eq!(body["total_number_of_items"], 4);
        assert_eq!(
            get(
                &agent,
                &fake,
                &token,
                "/threats/v2?end_time=2024-05-14T10:00:00"
            )
            .0,
            400
        );
        let (status, body) = get(&agent, &fake, &token, "/threats/v2?start_time=14/05/2024");
        assert_eq!(status, 400);
        assert!(body.contains("start_time"));

        // Detections: inclusive start, exclusive end, `Z` required, sortable.
        fake.add_detections(
            ["09:00:00.000", "09:30:00.250", "10:00:00.000"]
                .iter()
                .zip(1u64..)
                .map(|(t, seed)| detection(seed, &format!("2024-05-14T{t}Z")))
                .collect(),
        );
        let window = "/detections/v2?start=2024-05-14T09:00:00.000Z&end=2024-05-14T10:00:00Z";
        let (_, body) = get_json(&agent, &fake, &token, window);
        assert_eq!(
            field(&body, "ReceivedTime"),
            ["2024-05-14T09:30:00.250Z", "2024-05-14T09:00:00.000Z"]
        );
        let (_, body) = get_json(
            &agent,
            &fake,
            &token,
            &format!("{window}&sort=ReceivedTime"),
        );
        assert_eq!(
            field(&body, "ReceivedTime"),
            ["2024-05-14T09:00:00.000Z", "2024-05-14T09:30:00.250Z"]
        );
        let bad = "/detections/v2?start=2024-05-14T09:00:00";
        assert_eq!(get(&agent, &fake, &token, bad).0, 400);
        assert_eq!(get(&agent, &fake, &token, "/detections/v2?sort=Id").0, 400);
        fake.remove_detection(body["page_items"][0]["Id"].as_str().unwrap());
        let (_, body) = get_json(&agent, &fake, &token, "/detections/v2?sort=-Severity");
        assert_eq!(body["total_number_of_items"], 2);
    }

    #[test]
    fn faults_are_consumed_once() {
        let fake = FakeApi::start(Credentials::sample());
        let agent = agent();
        let token = token(&agent, &fake);
        fake.add_threats((0..30).map(|i| threat(i, "2024-05-14T09:00:00")).collect());

        fake.push_fault(
            "/threats/v2",
            Fault::Status {
                status: 429,
                body: r#"{"message":"slow down"}"#.to_owned(),
                headers: vec![("Retry-After".to_owned(), "7".to_owned())],
            },
        );
        fake.push_fault_at("/threats/v2", 2, Fault::Html(502));
        let mut resp = agent
            .get(format!("{}/threats/v2", fake.url()))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/json")
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(
            resp.body_mut().read_to_string().unwrap(),
            r#"{"message":"slow down"}"#
        );
        assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 200);
        let (status, body) = get(&agent, &fake, &token, "/threats/v2?page=2");
        assert_eq!(status, 502);
        assert!(body.starts_with("<html>"));
        assert_eq!(get(&agent, &fake, &token, "/threats/v2?page=2").0, 200);

        fake.push_fault("/threats/v2", Fault::Reset);
        assert!(
            agent
                .get(format!("{}/threats/v2", fake.url()))
                .header("Authorization", format!("Bearer {token}"))
                .header("Accept", "application/json")
                .call()
                .is_err()
        );
        assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 200);

        fake.push_fault("/threats/v2", Fault::Oversize(100_000));
        let (status, body) = get(&agent, &fake, &token, "/threats/v2");
        assert_eq!((status, body.len()), (200, 100_000));
        assert!(body.starts_with(r#"{"page_number":1,"#));

        fake.push_fault("/threats/v2", Fault::Truncated);
        let (status, body) = get(&agent, &fake, &token, "/threats/v2");
        assert_eq!(status, 200);
        assert!(serde_json::from_str::<Value>(&body).is_err());

        fake.push_fault("/detections/v2", Fault::ExpireToken);
        assert_eq!(get(&agent, &fake, &token, "/detections/v2").0, 401);
        assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 401);

        let statuses: Vec<u16> = fake
            .requests()
            .iter()
            .filter(|r| r.path == "/threats/v2")
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [429, 200, 502, 200, 0, 200, 200, 200, 401]);
        assert_eq!(fake.requests()[3].param("page"), Some("2"));
    }

    #[test]
    fn delays_do_not_block_other_workers_and_tokens_expire() {
        let fake = FakeApi::start(Credentials::sample());
        let token = token(&agent(), &fake);
        fake.push_fault("/threats/v2", Fault::Delay(Duration::from_millis(400)));
        fake.push_fault("/threats/v2", Fault::Delay(Duration::from_millis(400)));
        let started = Instant::now();
        let fake = Arc::new(fake);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (fake, token) = (Arc::clone(&fake), token.clone());
                thread::spawn(move || get(&agent(), &fake, &token, "/threats/v2").0)
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 200);
        }
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "served one after the other"
        );
        assert_eq!(fake.max_concurrent(), 2);

        fake.set_token_lifetime(Duration::from_millis(150));
        thread::sleep(Duration::from_millis(200));
        assert_eq!(get(&agent(), &fake, &token, "/threats/v2").0, 401);
    }

    #[test]
    fn sample_tenant_is_varied() {
        let fake = FakeApi::start(Credentials::sample());
        let agent = agent();
        let token = token(&agent, &fake);
        sample_tenant(&fake, Utc::now());
        let (_, threats) = get_json(&agent, &fake, &token, "/threats/v2?page_size=200");
        let (_, detections) = get_json(&agent, &fake, &token, "/detections/v2?page_size=200");
        assert_eq!(threats["total_number_of_items"], 25);
        assert_eq!(detections["total_number_of_items"], 15);
        let classes: HashSet<&str> = field(&threats, "classification").into_iter().collect();
        assert!(classes.len() >= 3);
    }
}
