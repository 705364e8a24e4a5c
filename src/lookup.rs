//! The lookups of a group of a page's new lines: a request per line (and
//! further pages of a long device list) whose answer the line carries at
//! its end.
//!
//! `run.rs` calls [`Lookups::answers`] with a group of the lines a page will
//! write (after the window filter and dedupe; a few per `--concurrency` slot,
//! so that the answers held at once stay few) and writes none of them until
//! every answer is in: a lookup that fails ends the page with that error
//! (the groups before it are written and counted), so no line is ever
//! written without its lookup. Up to `--concurrency` lookups run at once,
//! each holding one of the [`Slots`] the list pages hold too (so lists and
//! lookups together have at most `--concurrency` requests in
//! flight), each request paced by the client (`--max-rps`, shared with the
//! lists); the answers come back in the lines' order.
//!
//! Answers are kept as the API gave them (each device item's or the detail
//! object's own strings, numbers and key order), compact: the whitespace
//! between tokens of a pretty-printed answer is dropped (`push_compact`).
//! A 404 means the object is gone since the list was read: the line gets
//! `[]` (devices) or `null` (details), with one warning. An answer is checked
//! like an item (`readable_inside`), where it will sit in the line: a lone
//! surrogate escape is written as `\ufffd`; a device item or details that
//! strict readers refuse (a number beyond an f64, nesting too deep) would
//! make the whole line unreadable in the SIEM, so that device is left out,
//! or the details are `null`, with a warning.

use crate::api::{ApiClient, ListRequest, MAX_BODY, page_ignored, path_segment};
use crate::control::RunControl;
use crate::error::{ExitKind, fail};
use crate::pager::{Slots, Unnumbered, repeats};
use crate::sources::{Lookup, SourceKind, push_compact, readable_inside};
use crate::timefmt::parse_api_time;
use crate::untrusted::shown;
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Items per page of a threat's device list: the API notes give a default
/// of 10 and clients use up to 200 without complaint; fewer pages, fewer
/// requests.
const DEVICES_PAGE_SIZE: u32 = 200;

/// One line's lookup: the object its key names, and the line's time.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The key field's text as sent (a sha256, an Id).
    pub id: &'a str,
    /// The item's time (a threat's `last_found`): the sighting to keep.
    pub time: DateTime<Utc>,
}

/// The answers of one group's lookups.
#[derive(Debug, Default)]
pub struct Answers {
    /// Per ask, in order: the JSON text to add under the lookup's key.
    pub values: Vec<Vec<u8>>,
    /// Requests made (retries not counted): one per ask, plus further pages.
    pub requests: u64,
}

/// Runs lookups with the run's client, `--concurrency` at a time.
pub struct Lookups {
    client: Arc<ApiClient>,
    control: RunControl,
    slots: Arc<Slots>,
    concurrency: usize,
    /// A refused thread was warned about: once a run, not once a group.
    threads_refused: AtomicBool,
}

impl Lookups {
    pub fn new(
        client: Arc<ApiClient>,
        control: RunControl,
        slots: Arc<Slots>,
        concurrency: u32,
    ) -> Lookups {
        Lookups {
            client,
            control,
            slots,
            concurrency: concurrency.max(1) as usize,
            threads_refused: AtomicBool::new(false),
        }
    }

    /// The answers to `asks`, in their order; the first failure (by ask
    /// order) when any lookup fails. Workers stop taking asks once one
    /// failed: the group is not written, so the rest would be wasted.
    pub fn answers(&self, lookup: Lookup, source: SourceKind, asks: &[Ask<'_>]) -> Result<Answers> {
        let workers = self.concurrency.min(asks.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let done: Mutex<Vec<(usize, Result<Found>)>> = Mutex::new(Vec::with_capacity(asks.len()));
        let work = || {
            loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(&ask) = asks.get(at) else { return };
                let found = self.control.check().and_then(|()| {
                    // One slot for the whole lookup: a long device list's
                    // pages are read one after another.
                    let _slot = self.slots.hold();
                    // A panic must become this lookup's error, not the run's abort.
                    std::panic::catch_unwind(AssertUnwindSafe(|| self.one(lookup, source, ask)))
                        .unwrap_or_else(|_| {
                            Err(anyhow::anyhow!(
                                "{} lookup of {} failed (a bug: it panicked)",
                                lookup.name(),
                                shown(ask.id)
                            ))
                        })
                });
                if found.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                done.lock().expect("lookup results lock").push((at, found));
            }
        };
        if workers <= 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                // The system may refuse threads (a pids limit): the lookups
                // then run on the threads there are, at worst on this one.
                let mut started = 0;
                for _ in 0..workers {
                    match std::thread::Builder::new().spawn_scoped(scope, work) {
                        Ok(_) => started += 1,
                        Err(err) => {
                            if !self.threads_refused.swap(true, Ordering::Relaxed) {
                                crate::warn!(
                                    "cannot start more than {started} of {workers} lookup \
                                     threads: {err}; going on with those (said once a run)"
                                );
                            }
                            break;
                        }
                    }
                }
                if started == 0 {
                    work();
                }
            });
        }
        let mut done = done.into_inner().expect("lookup results lock");
        done.sort_by_key(|(at, _)| *at);
        let mut answers = Answers::default();
        for (_, found) in done {
            let found = found?;
            answers.requests += found.requests;
            answers.values.push(found.value);
        }
        // Only a failure stops a worker early, and it returned above.
        debug_assert_eq!(answers.values.len(), asks.len());
        Ok(answers)
    }

    fn one(&self, lookup: Lookup, source: SourceKind, ask: Ask<'_>) -> Result<Found> {
        let segment = match path_segment(ask.id) {
            Ok(segment) => segment,
            Err(why) => {
                crate::warn!(
                    "{}: cannot look up {} ({why}); the line is written with {}",
                    source.name,
                    lookup.added_key(),
                    empty_value(lookup)
                );
                return Ok(Found {
                    value: empty_value(lookup).into(),
                    requests: 0,
                });
            }
        };
        match lookup {
            Lookup::ThreatDevices => self.threat_devices(source, &segment, ask),
            Lookup::DetectionDetails => self.detection_details(source, &segment, ask),
        }
    }

    /// Every page of the threat's device list; the sightings at the line's time.
    fn threat_devices(&self, source: SourceKind, segment: &str, ask: Ask<'_>) -> Result<Found> {
        let path = format!("/threats/v2/{segment}/devices");
        let list = ListRequest {
            path: &path,
            privilege: Lookup::ThreatDevices.privilege(),
            page_size: DEVICES_PAGE_SIZE,
            filters: &[],
        };
        let mut value = b"[".to_vec();
        let mut requests = 0;
        // The page before, when it did not say its number (see `pager::repeats`).
        let mut previous: Option<Unnumbered> = None;
        // Said once per lookup, not once per device: a list of thousands of
        // such devices would otherwise flood the journal.
        let (mut repaired_devices, mut left_out_devices) = (0u64, 0u64);
        let mut left_out: Option<String> = None;
        for number in 1u32.. {
            if number > 1 {
                self.control.check()?;
            }
            requests += 1;
            let Some(page) = self.client.fetch_page_or_missing(&list, number)? else {
                crate::warn!(
                    "{}: threat {} is gone (HTTP 404 on {path}); its line is written with \
                     \"devices\":[]",
                    source.name,
                    shown(ask.id)
                );
                return Ok(Found {
                    value: b"[]".to_vec(),
                    requests,
                });
            };
            if repeats(previous.as_ref(), &page) {
                let message = page_ignored(&path, number, u64::from(number - 1));
                return Err(fail(ExitKind::Protocol, message));
            }
            for item in page.items().filter(|item| found_at(item, ask.time)) {
                // In the line, a device item is inside its object and `devices`.
                let item = match readable_inside(item, 2) {
                    Ok(None) => Cow::Borrowed(item),
                    Ok(Some(repaired)) => {
                        repaired_devices += 1;
                        Cow::Owned(repaired)
                    }
                    Err(why) => {
                        left_out.get_or_insert(why);
                        left_out_devices += 1;
                        continue;
                    }
                };
                let before = value.len();
                if value.len() > 1 {
                    value.push(b',');
                }
                push_compact(&mut value, item.as_bytes());
                // However many pages the list has, `devices` as written
                // (escapes make a device longer than in the answer) stays
                // within one answer's size: the bound of the longest line
                // that recovery and the recipes' shippers rely on.
                if value.len() + 1 > MAX_BODY as usize {
                    value.truncate(before);
                    left_out.get_or_insert_with(|| {
                        format!("\"devices\" would be longer than {} MiB", MAX_BODY >> 20)
                    });
                    left_out_devices += 1;
                    continue;
                }
            }
            let more = !page.is_empty()
                && page
                    .total_pages
                    .is_none_or(|total| u64::from(number) < total);
            previous = Unnumbered::of(&page);
            self.client.recycle(page);
            if !more {
                break;
            }
        }
        if repaired_devices > 0 {
            crate::warn!(
                "{}: {repaired_devices} device(s) of threat {} held lone surrogate escapes \
                 (\\ud800 to \\udfff alone), which readers refuse; they were written with \
                 \\ufffd (U+FFFD) in their place",
                source.name,
                shown(ask.id)
            );
        }
        if let Some(why) = left_out {
            crate::warn!(
                "{}: {left_out_devices} device(s) of threat {} are left out of its \"devices\" \
                 (the first: {why})",
                source.name,
                shown(ask.id)
            );
        }
        value.push(b']');
        Ok(Found { value, requests })
    }

    fn detection_details(&self, source: SourceKind, segment: &str, ask: Ask<'_>) -> Result<Found> {
        let path = format!("/detections/v2/{segment}/details");
        let value = match self
            .client
            .fetch_object_or_missing(&path, Lookup::DetectionDetails.privilege())?
        {
            Some(object) => {
                if object.replaced_invalid_utf8 {
                    crate::warn!(
                        "{}: the details of detection {} held bytes that are not UTF-8; they \
                         were written with U+FFFD in their place",
                        source.name,
                        shown(ask.id)
                    );
                }
                // In the line, the details are inside its object.
                match readable_inside(object.json(), 1) {
                    Ok(repaired) => {
                        if repaired.is_some() {
                            crate::warn!(
                                "{}: the details of detection {} held lone surrogate escapes \
                                 (\\ud800 to \\udfff alone), which readers refuse; they were \
                                 written with \\ufffd (U+FFFD) in their place",
                                source.name,
                                shown(ask.id)
                            );
                        }
                        let json = repaired.as_deref().unwrap_or(object.json());
                        let mut value = Vec::with_capacity(json.len());
                        push_compact(&mut value, json.as_bytes());
                        value
                    }
                    Err(why) => {
                        crate::warn!(
                            "{}: the details of detection {} cannot be written ({why}); its line \
                             is written with \"details\":null",
                            source.name,
                            shown(ask.id)
                        );
                        b"null".to_vec()
                    }
                }
            }
            None => {
                crate::warn!(
                    "{}: detection {} is gone (HTTP 404 on {path}); its line is written with \
                     \"details\":null",
                    source.name,
                    shown(ask.id)
                );
                b"null".to_vec()
            }
        };
        Ok(Found { value, requests: 1 })
    }
}

/// One lookup's answer.
struct Found {
    value: Vec<u8>,
    requests: u64,
}

/// What a line carries when its object cannot be looked up.
fn empty_value(lookup: Lookup) -> &'static str {
    match lookup {
        Lookup::ThreatDevices => "[]",
        Lookup::DetectionDetails => "null",
    }
}

/// Whether a device item's `date_found` is `time`, as an instant: the API
/// writes it with or without fraction and zone (`2024-05-14T10:00:00`,
/// `2024-05-14T10:00:00.000Z`). An item without a readable one matches no line.
fn found_at(item: &str, time: DateTime<Utc>) -> bool {
    #[derive(Deserialize)]
    struct Sighting<'a> {
        #[serde(borrow, default)]
        date_found: Option<Cow<'a, str>>,
    }
    serde_json::from_str::<Sighting<'_>>(item)
        .ok()
        .and_then(|sighting| sighting.date_found)
        .and_then(|text| parse_api_time(&text))
        == Some(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_api_time(text).unwrap()
    }

    #[test]
    fn a_sighting_matches_its_instant_in_any_spelling_and_nothing_else() {
        let time = at("2024-05-14T10:00:00");
        assert!(found_at(r#"{"date_found":"2024-05-14T10:00:00"}"#, time));
        assert!(found_at(
            r#"{"date_found":"2024-05-14T10:00:00.000Z"}"#,
            time
        ));
        assert!(found_at(
            r#"{"id":"x","date_found":"2024-05-14T10:00:00Z"}"#,
            time
        ));
        assert!(!found_at(r#"{"date_found":"2024-05-14T10:00:01"}"#, time));
        assert!(!found_at(r#"{"date_found":null}"#, time));
        assert!(!found_at(r#"{"date_found":"yesterday"}"#, time));
        assert!(!found_at(r#"{"id":"x"}"#, time));
        assert!(!found_at(
            r#"{"date_found":"2024-05-14T10:00:00\u005a"}"#,
            at("2024-05-14T09:00:00")
        ));
    }
}
