//! A strict, stateful fake of the Cylance PROTECT User API v2 on loopback.
//!
//! It fakes what `/work/shared/docs/cylance-api.md` describes: `POST /auth/v2/token`
//! (HS256 JWT signed with the application secret, in exchange for an opaque bearer
//! token), the paged lists `GET /threats/v2`, `/detections/v2`, `/memoryprotection/v2`,
//! `/devices/v2` and `/threats/v2/{sha256}/devices`, and `GET
//! /detections/v2/{Id}/details`.
//!
//! It is deliberately as strict as the real service is known to be, and stricter where
//! the sources disagree, so that a client that passes against it does not depend on
//! leniency: the JWT signature, `iss`, `sub`, `tid`, a never-seen UUID v4 `jti`, integer
//! `iat`/`exp`, a lifetime of at most 30 minutes and the clock are all checked with no
//! leeway; every endpoint needs a bearer token this fake issued and that has not
//! expired, `Accept: application/json` and the endpoint's privilege; `page`, `page_size`
//! and the time filters are validated and answer 400 when malformed; unknown paths
//! answer 404 and wrong methods 405. Where the real service is unknown it varies:
//! memory protection is served in an order unrelated to time, pages of the newer
//! endpoints are pretty-printed on even page numbers, and so are the detail records
//! of about half the detections. Every request is recorded with the status answered.
//!
//! Tests inject trouble with [`Fault`]s (per path or folder of paths, FIFO, optionally
//! for one page number), delays, denied privileges, short token lifetimes and a server
//! that ignores the time filters (one source claims the real one does for threats).
//!
//! The parts: `auth` (JWTs, tokens, privileges), `store` (the tenant's data),
//! `endpoints` (one handler per endpoint, shared paging), `wire` (HTTP serving, faults,
//! the relay); sample items come from [`crate::sample`].

mod auth;
mod endpoints;
mod store;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use auth::Auth;
use store::{Store, to_bytes};

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
    /// The answer to page 1, whatever page was asked, `page_number` 1 included:
    /// a proxy or API bug that drops the `page` parameter.
    PageOne,
    /// Like [`Fault::PageOne`], without `page_number` in the envelope: nothing
    /// but the repeated items shows that the page is not the one asked for.
    PageOneUnnumbered,
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
        wire::param(&self.query, name)
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
        wire::start(State::new(creds))
    }

    /// Base URL, `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.relay_addr)
    }

    /// The credentials this fake accepts.
    pub fn credentials(&self) -> Credentials {
        self.state().auth.creds.clone()
    }

    /// Adds threats; one whose `sha256` is already known replaces the old record
    /// (with another `last_found`, that is a new sighting, as [`FakeApi::refind_threat`]).
    /// Each new threat is found on one to four devices (see [`FakeApi::threat_devices`]).
    /// Panics on an item without a string `sha256` or a parseable `last_found`.
    pub fn add_threats(&self, items: Vec<Value>) {
        let mut st = self.state();
        for item in items {
            st.store.threats.upsert(item);
        }
    }

    /// Adds detections; one whose `Id` is already known replaces the old record.
    /// Panics on an item without a string `Id` or an RFC 3339 `ReceivedTime`.
    pub fn add_detections(&self, items: Vec<Value>) {
        let mut st = self.state();
        for item in items {
            st.store.detections.upsert(item);
        }
    }

    /// Adds memory-protection events; one whose `device_image_file_event_id` is
    /// already known replaces the old record. Panics on an item without a string
    /// `device_image_file_event_id` or a parseable `created`.
    pub fn add_memory_protection(&self, items: Vec<Value>) {
        let mut st = self.state();
        for item in items {
            st.store.memory.upsert(item);
        }
    }

    /// Adds devices to the inventory; one whose `id` is already known replaces the
    /// old record. Panics on an item without a string `id` or a parseable
    /// `date_first_registered`.
    pub fn add_devices(&self, items: Vec<Value>) {
        let mut st = self.state();
        for item in items {
            st.store.devices.upsert(item);
        }
    }

    /// Adds a threat served as exactly these bytes (not an object, no key, bad UTF-8,
    /// ...); the server files it under `sha256` at `last_found` (zone-less) for its own
    /// windows and order, whatever the bytes say.
    pub fn add_raw_threat(&self, sha256: &str, last_found: &str, raw: &[u8]) {
        let mut st = self.state();
        let threats = &mut st.store.threats;
        threats.upsert(json!({"sha256": sha256, "last_found": last_found}));
        threats.get_mut(sha256).expect("just added").json = raw.into();
    }

    /// Adds a detection served as exactly these bytes; the server files it under `id`
    /// at `received_time` (RFC 3339) for its own windows and order.
    pub fn add_raw_detection(&self, id: &str, received_time: &str, raw: &[u8]) {
        let mut st = self.state();
        let detections = &mut st.store.detections;
        detections.upsert(json!({"Id": id, "ReceivedTime": received_time}));
        detections.get_mut(id).expect("just added").json = raw.into();
    }

    /// The file was found again: its `last_found` moves to `new_last_found` (zone-less,
    /// like `2024-05-14T09:00:00`), and its device list gets one sighting with that
    /// `date_found`. Panics on an unknown sha256.
    pub fn refind_threat(&self, sha256: &str, new_last_found: &str) {
        self.state().store.threats.refind(sha256, new_last_found);
    }

    /// Appends sightings (items like [`crate::threat_device`]) to a threat's device
    /// list, after the ones it has. Panics on an unknown sha256.
    pub fn add_threat_devices(&self, sha256: &str, items: Vec<Value>) {
        let mut st = self.state();
        let rec = st
            .store
            .threats
            .get_mut(sha256)
            .unwrap_or_else(|| panic!("FakeApi::add_threat_devices: unknown sha256 {sha256}"));
        rec.sightings().extend(items.iter().map(to_bytes));
    }

    /// Replaces a threat's whole device list with `items` (later re-finds still add
    /// theirs). Panics on an unknown sha256.
    pub fn set_threat_devices(&self, sha256: &str, items: Vec<Value>) {
        let mut st = self.state();
        let rec = st
            .store
            .threats
            .get_mut(sha256)
            .unwrap_or_else(|| panic!("FakeApi::set_threat_devices: unknown sha256 {sha256}"));
        *rec.sightings() = items.iter().map(to_bytes).collect();
    }

    /// Every item `GET /threats/v2/{sha256}/devices` serves now, in its order;
    /// `None` for an unknown sha256.
    pub fn threat_devices(&self, sha256: &str) -> Option<Vec<Value>> {
        let mut st = self.state();
        let rec = st.store.threats.get_mut(sha256)?;
        let items = rec.sightings().iter();
        Some(
            items
                .map(|b| serde_json::from_slice(b).expect("stored sighting is JSON"))
                .collect(),
        )
    }

    /// Deletes a detection (the real service can); its details answer 404 from now
    /// on. Unknown ids are ignored.
    pub fn remove_detection(&self, id: &str) {
        self.state().store.detections.remove(id);
    }

    /// Changes a detection's `Status` in place (no timestamp changes, as in the real
    /// service). Panics on an unknown id.
    pub fn set_detection_status(&self, id: &str, status: &str) {
        self.state().store.detections.set_status(id, status);
    }

    /// What `GET /detections/v2/{Id}/details` serves now; `None` for an unknown Id.
    /// Unless set, a detail record is generated from the list item as it is now.
    pub fn detection_details(&self, id: &str) -> Option<Value> {
        self.state().store.detections.details(id)
    }

    /// Serves `details` as detection `id`'s detail record. Panics on an unknown Id.
    pub fn set_detection_details(&self, id: &str, details: Value) {
        self.state().store.detections.set_details(id, details);
    }

    /// `false`: `/threats/v2` ignores `start_time`/`end_time` (still validating them).
    pub fn set_honour_time_filters(&self, yes: bool) {
        self.state().honour_time_filters = yes;
    }

    /// `false`: `/memoryprotection/v2` ignores `start_time`/`end_time` (still
    /// validating them).
    pub fn set_honour_memory_protection_time_filters(&self, yes: bool) {
        self.state().honour_memory_time_filters = yes;
    }

    /// Sleep this long before every answer (faulted ones too).
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Access tokens expire at min(JWT `exp`, issue time + `d`). Applies to tokens
    /// already issued too, at their next use.
    pub fn set_token_lifetime(&self, d: Duration) {
        self.state().auth.token_lifetime = Some(d);
    }

    /// Also accepts JWTs for this tenant id (same application id and secret),
    /// serving it the same data: many pollers, each its own tenant, against one
    /// fake (the benchmark's 1,000 tenants into one file).
    pub fn accept_tenant(&self, tenant_id: &str) {
        self.state().auth.other_tenants.insert(tenant_id.to_owned());
    }

    /// Tokens lack this privilege from now on: its endpoint answers 403. The
    /// privileges: `threat:list`, `threat:devicelist`, `opticsdetect:list`,
    /// `opticsdetect:read`, `memoryprotection:list`, `device:list`.
    pub fn deny_privilege(&self, privilege: &str) {
        self.state().auth.denied.insert(privilege.to_owned());
    }

    /// Undoes [`FakeApi::deny_privilege`].
    pub fn allow_privilege(&self, privilege: &str) {
        self.state().auth.denied.remove(privilege);
    }

    /// Queues a fault for the next request to `path`, or below it when `path` ends
    /// with `/`: `/threats/v2` is the threat list only, `/threats/v2/` every
    /// `/threats/v2/{sha256}/devices` lookup, `/detections/v2/` every details
    /// lookup. (Lookups run between list pages; a fault meant for the list must
    /// not be taken by one.) When several queued faults match a request, the
    /// earliest pushed wins.
    pub fn push_fault(&self, path: &str, fault: Fault) {
        self.state().faults.push(PendingFault {
            target: path.to_owned(),
            page: None,
            fault,
        });
    }

    /// Queues a fault like [`FakeApi::push_fault`] for exactly page `page` (a
    /// request without `page` asks for page 1).
    pub fn push_fault_at(&self, path: &str, page: u32, fault: Fault) {
        self.state().faults.push(PendingFault {
            target: path.to_owned(),
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
        self.state().auth.issued.clone()
    }

    /// Every `auth_token` received on the token endpoint (valid or not), in order.
    pub fn received_jwts(&self) -> Vec<String> {
        self.state().auth.jwts.clone()
    }

    /// The highest number of requests being handled at once so far.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }
}

/// What the server threads share with the handle.
struct Shared {
    state: Mutex<State>,
    relay: wire::Relay,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    stop: AtomicBool,
}

struct PendingFault {
    /// A path, or a folder of paths when it ends with `/`.
    target: String,
    page: Option<u32>,
    fault: Fault,
}

/// Everything behind the lock: the tenant, the tokens, the settings tests
/// change, the queued faults and the request log.
struct State {
    auth: Auth,
    store: Store,
    honour_time_filters: bool,
    honour_memory_time_filters: bool,
    delay: Duration,
    faults: Vec<PendingFault>,
    requests: Vec<Recorded>,
}

impl State {
    fn new(creds: Credentials) -> Self {
        State {
            auth: Auth::new(creds),
            store: Store::default(),
            honour_time_filters: true,
            honour_memory_time_filters: true,
            delay: Duration::ZERO,
            faults: Vec::new(),
            requests: Vec::new(),
        }
    }

    fn take_fault(&mut self, path: &str, page: Option<u64>) -> Option<Fault> {
        let at = self.faults.iter().position(|f| {
            let hits = path == f.target || (f.target.ends_with('/') && path.starts_with(&f.target));
            hits && f.page.is_none_or(|p| Some(u64::from(p)) == page)
        })?;
        Some(self.faults.remove(at).fault)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
