//! The endpoints: routing, the checks every endpoint makes (token, `Accept`,
//! privilege), one handler per endpoint, and the paging and envelope they share.

use std::io::Write as _;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::auth;
use super::store::SortField;
use super::wire::{Answer, JSON, Req, accepts_json, param};
use super::{Shared, State, lock};
use crate::time::{Zone, parse_timestamp};

pub(crate) const AUTH_PATH: &str = "/auth/v2/token";
const THREATS_PATH: &str = "/threats/v2";
const DETECTIONS_PATH: &str = "/detections/v2";
const MEMORY_PATH: &str = "/memoryprotection/v2";
const DEVICES_PATH: &str = "/devices/v2";
const PAGE_SIZE_MESSAGE: &str = "The page size requested is not supported.";
const PAGE_NUMBER_MESSAGE: &str = "The page number requested is not supported.";
/// The largest `page_size` any list takes (the documented one for threats; the
/// strictest plausible one where it is undocumented).
const MAX_PAGE_SIZE: u64 = 200;

type Query = [(String, String)];

/// A GET endpoint, with the path parameter it names.
enum Endpoint<'a> {
    Threats,
    Detections,
    MemoryProtection,
    Devices,
    /// `/threats/v2/{sha256}/devices`
    ThreatDevices(&'a str),
    /// `/detections/v2/{Id}/details`
    DetectionDetails(&'a str),
}

impl<'a> Endpoint<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let inner = |prefix: &str, suffix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .filter(|id| !id.is_empty() && !id.contains('/'))
        };
        Some(match path {
            THREATS_PATH => Self::Threats,
            DETECTIONS_PATH => Self::Detections,
            MEMORY_PATH => Self::MemoryProtection,
            DEVICES_PATH => Self::Devices,
            _ => {
                if let Some(sha256) = inner("/threats/v2/", "/devices") {
                    Self::ThreatDevices(sha256)
                } else {
                    Self::DetectionDetails(inner("/detections/v2/", "/details")?)
                }
            }
        })
    }

    fn privilege(&self) -> &'static str {
        match self {
            Self::Threats => "threat:list",
            Self::Detections => "opticsdetect:list",
            Self::MemoryProtection => "memoryprotection:list",
            Self::Devices => "device:list",
            Self::ThreatDevices(_) => "threat:devicelist",
            Self::DetectionDetails(_) => "opticsdetect:read",
        }
    }
}

/// Answers one request (faults aside).
pub(crate) fn handle(shared: &Shared, req: &Req) -> Answer {
    if req.path == AUTH_PATH {
        if req.method != "POST" {
            return Answer::message(405, "The requested resource does not support this method")
                .with_header("Allow", "POST");
        }
        return auth::token_request(shared, req);
    }
    let Some(endpoint) = Endpoint::parse(&req.path) else {
        return Answer::message(404, "Not found");
    };
    if req.method != "GET" {
        return Answer::message(405, "The requested resource does not support this method")
            .with_header("Allow", "GET");
    }
    let mut st = lock(&shared.state);
    let answer = check(&st, req, endpoint.privilege()).and_then(|()| {
        let q = &req.query;
        match endpoint {
            Endpoint::Threats => threats(&mut st, q),
            Endpoint::Detections => detections(&mut st, q),
            Endpoint::MemoryProtection => memory_protection(&st, q),
            Endpoint::Devices => devices(&st, q),
            Endpoint::ThreatDevices(sha256) => threat_devices(&mut st, q, sha256),
            Endpoint::DetectionDetails(id) => detection_details(&st, id),
        }
    });
    answer.unwrap_or_else(|refused| refused)
}

/// What every endpoint checks, in the real service's order: 401, 406, 403.
fn check(st: &State, req: &Req, privilege: &str) -> Result<(), Answer> {
    st.auth.check_bearer(req.authorization.as_deref())?;
    if !accepts_json(req.accept.as_deref()) {
        return Err(Answer::message(
            406,
            "Not acceptable: send Accept: application/json",
        ));
    }
    st.auth.check_privilege(privilege)
}

/// `GET /threats/v2`: newest `last_found` first, window inclusive at both ends.
fn threats(st: &mut State, q: &Query) -> Result<Answer, Answer> {
    let paging = Paging::parse(q, 10)?;
    let (start, end) = zoneless_window(q)?;
    let honour = st.honour_time_filters;
    let threats = &mut st.store.threats;
    threats.ensure_sorted();
    let (lo, hi) = match start {
        Some(start) if honour => threats.window(start, end),
        _ => (0, threats.recs.len()),
    };
    let items = threats.recs[lo..hi].iter().map(|r| &r.json[..]);
    Ok(paging.answer(hi - lo, items, false))
}

/// `GET /detections/v2`: newest `ReceivedTime` first unless `sort` says otherwise;
/// `start` inclusive, `end` exclusive, both with `Z`.
fn detections(st: &mut State, q: &Query) -> Result<Answer, Answer> {
    let paging = Paging::parse(q, 20)?;
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
    let detections = &mut st.store.detections;
    detections.ensure_sorted();
    let (lo, hi) = detections.window(start, end);
    let total = hi - lo;
    let window = &detections.recs[lo..hi];
    Ok(match sort {
        None | Some((SortField::ReceivedTime, true)) => {
            paging.answer(total, window.iter().map(|r| &r.json[..]), false)
        }
        Some((SortField::ReceivedTime, false)) => {
            paging.answer(total, window.iter().rev().map(|r| &r.json[..]), false)
        }
        Some((field, desc)) => {
            let picked: Vec<usize> = detections
                .order(field, desc)
                .iter()
                .map(|&i| i as usize)
                .filter(|i| (lo..hi).contains(i))
                .collect();
            let recs = &detections.recs;
            paging.answer(total, picked.iter().map(|&i| &recs[i].json[..]), false)
        }
    })
}

/// `GET /memoryprotection/v2`: `start_time`/`end_time` like threats (on `created`),
/// `device_id`; served in an order unrelated to time (see [`super::store::MemoryStore`]).
fn memory_protection(st: &State, q: &Query) -> Result<Answer, Answer> {
    let paging = Paging::parse(q, 10)?;
    let (start, end) = zoneless_window(q)?;
    let (start, end) = if st.honour_memory_time_filters {
        (start, end)
    } else {
        (None, None)
    };
    let items = st.store.memory.select(start, end, param(q, "device_id"));
    Ok(paging.answer(items.len(), items.into_iter(), true))
}

/// `GET /devices/v2`: the inventory, newest registration first, no filter.
fn devices(st: &State, q: &Query) -> Result<Answer, Answer> {
    let paging = Paging::parse(q, 100)?;
    let items = st.store.devices.ordered();
    Ok(paging.answer(items.len(), items.into_iter(), true))
}

/// `GET /threats/v2/{sha256}/devices`: where the file was found; 404 for a sha256
/// the tenant does not know.
fn threat_devices(st: &mut State, q: &Query, sha256: &str) -> Result<Answer, Answer> {
    let paging = Paging::parse(q, 10)?;
    let Some(threat) = st.store.threats.get_mut(sha256) else {
        return Err(Answer::message(
            404,
            &format!("Threat {sha256} was not found"),
        ));
    };
    let items = threat.sightings();
    Ok(paging.answer(items.len(), items.iter().map(|b| &b[..]), true))
}

/// `GET /detections/v2/{Id}/details`: the full record; 404 for an unknown (or
/// deleted) Id. Pretty-printed for about half the detections.
fn detection_details(st: &State, id: &str) -> Result<Answer, Answer> {
    let details = st
        .store
        .detections
        .details(id)
        .ok_or_else(|| Answer::message(404, &format!("Detection {id} was not found")))?;
    let pretty = id.bytes().map(u64::from).sum::<u64>().is_multiple_of(2);
    let body = if pretty {
        serde_json::to_vec_pretty(&details)
    } else {
        serde_json::to_vec(&details)
    };
    Ok(Answer::raw(
        200,
        JSON,
        body.expect("a JSON value serializes"),
    ))
}

/// `start_time` and `end_time` as threats and memory protection take them:
/// zone-less or with `Z`, fraction optional; `end_time` needs `start_time`.
fn zoneless_window(q: &Query) -> Result<(Option<NaiveDateTime>, Option<NaiveDateTime>), Answer> {
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
    Ok((start, end))
}

/// `page` and `page_size` of a list request, validated.
struct Paging {
    page: u64,
    size: u64,
}

impl Paging {
    fn parse(q: &Query, default_size: u64) -> Result<Paging, Answer> {
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
                .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
                .ok_or_else(|| Answer::message(400, PAGE_SIZE_MESSAGE))?,
        };
        Ok(Paging { page, size })
    }

    /// The page of `items` (all `total` of the list, in order) this request asks
    /// for, in the envelope; pretty-printed on even pages if `varied`.
    fn answer<'a>(
        &self,
        total: usize,
        items: impl Iterator<Item = &'a [u8]>,
        varied: bool,
    ) -> Answer {
        // Offset of the page's first item; beyond any list when it overflows.
        let skip = usize::try_from((self.page - 1).saturating_mul(self.size)).unwrap_or(usize::MAX);
        let items = items.skip(skip).take(self.size as usize);
        let body = write_page(self.page, self.size, total, items);
        let body = if varied && self.page.is_multiple_of(2) {
            pretty(&body)
        } else {
            body
        };
        Answer::raw(200, JSON, body)
    }
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

/// Compact JSON re-indented, keys in their order (serde_json's pretty printer
/// would sort them): the same document spread over many lines, items included.
fn pretty(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    };
    for (i, &b) in compact.iter().enumerate() {
        if in_string {
            out.push(b);
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                let empty = matches!(compact.get(i + 1), Some(b'}' | b']'));
                depth += 1;
                if !empty {
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if !matches!(compact.get(i.wrapping_sub(1)), Some(b'{' | b'[')) {
                    newline(&mut out, depth);
                }
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn pretty_keeps_the_document_and_its_key_order() {
        let compact = br#"{"b":1,"a":[{"s":"x,\"y\":[]"},[],{}],"e":{}}"#;
        let spread = pretty(compact);
        let text = String::from_utf8(spread.clone()).unwrap();
        assert!(text.lines().count() > 5, "{text}");
        assert!(text.find("\"b\"").unwrap() < text.find("\"a\"").unwrap());
        let parsed: Value = serde_json::from_slice(&spread).unwrap();
        assert_eq!(parsed, serde_json::from_slice::<Value>(compact).unwrap());
    }
}
