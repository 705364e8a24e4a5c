//! The fake tenant's data: threats (with the devices each was found on),
//! detections (with their detail records), memory-protection events and
//! devices, each kept in the order its endpoint serves it, items
//! pre-serialized so that serving a page copies bytes.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};

use crate::sample;
use crate::time::{Zone, parse_timestamp};

/// Everything the tenant holds.
#[derive(Default)]
pub(crate) struct Store {
    pub threats: ThreatStore,
    pub detections: DetectionStore,
    pub memory: MemoryStore,
    pub devices: DeviceStore,
}

/// One stored threat: its sort key, its pre-serialized JSON and its sightings.
pub(crate) struct ThreatRec {
    pub last_found: NaiveDateTime,
    sha256: Arc<str>,
    pub json: Box<[u8]>,
    sightings: Sightings,
}

/// The devices a threat was found on. Generated on first use (a benchmark's
/// 100,000 threats never ask), from every `last_found` the threat had.
struct Sightings {
    /// Every `last_found` of the threat, oldest first, as given.
    founds: Vec<String>,
    /// The items, once generated or set.
    items: Option<Vec<Box<[u8]>>>,
}

impl ThreatRec {
    /// The file was found (again) at `at`: one more sighting.
    fn found(&mut self, at: &str) {
        self.sightings.founds.push(at.to_owned());
        if self.sightings.items.is_some() {
            // The generator's sighting for the latest find is its last item.
            let item = self.generate(&self.sightings.founds).pop();
            if let (Some(item), Some(items)) = (item, &mut self.sightings.items) {
                items.push(to_bytes(&item));
            }
        }
    }

    fn generate(&self, founds: &[String]) -> Vec<Value> {
        let item: Value = serde_json::from_slice(&self.json).unwrap_or(Value::Null);
        let name = item["name"].as_str().unwrap_or("sample.exe");
        sample::threat_sightings(&self.sha256, name, founds)
    }

    /// The sightings, generated now if they were not yet.
    pub fn sightings(&mut self) -> &mut Vec<Box<[u8]>> {
        if self.sightings.items.is_none() {
            let items = self.generate(&self.sightings.founds);
            self.sightings.items = Some(items.iter().map(to_bytes).collect());
        }
        self.sightings.items.get_or_insert_with(Vec::new)
    }
}

/// Threats kept sorted newest `last_found` first, ties by sha256; sorted lazily, and
/// `index` (sha256 -> position) is valid at all times.
#[derive(Default)]
pub(crate) struct ThreatStore {
    pub recs: Vec<ThreatRec>,
    index: HashMap<Arc<str>, usize>,
    sorted: bool,
}

impl ThreatStore {
    /// Adds or replaces a threat; a replacement with another `last_found` is a
    /// new sighting of the file.
    pub fn upsert(&mut self, item: Value) {
        let sha = item
            .get("sha256")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fake-cylance: a threat needs a string sha256: {item}"));
        let found = item
            .get("last_found")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let last_found = parse_timestamp(found, Zone::Optional)
            .unwrap_or_else(|| panic!("fake-cylance: a threat needs a last_found: {item}"));
        let json = to_bytes(&item);
        if let Some(&at) = self.index.get(sha) {
            let rec = &mut self.recs[at];
            rec.json = json;
            if rec.last_found != last_found {
                rec.last_found = last_found;
                rec.found(found);
            }
        } else {
            let sha: Arc<str> = Arc::from(sha);
            self.index.insert(Arc::clone(&sha), self.recs.len());
            self.recs.push(ThreatRec {
                last_found,
                sha256: sha,
                json,
                sightings: Sightings {
                    founds: vec![found.to_owned()],
                    items: None,
                },
            });
        }
        self.sorted = false;
    }

    pub fn refind(&mut self, sha256: &str, new_last_found: &str) {
        let rec = self
            .get_mut(sha256)
            .unwrap_or_else(|| panic!("FakeApi::refind_threat: unknown sha256 {sha256}"));
        let last_found = parse_timestamp(new_last_found, Zone::Optional)
            .unwrap_or_else(|| panic!("FakeApi::refind_threat: bad last_found {new_last_found:?}"));
        let mut item: Value = serde_json::from_slice(&rec.json).expect("stored threat is JSON");
        item["last_found"] = json!(new_last_found);
        rec.json = to_bytes(&item);
        rec.last_found = last_found;
        rec.found(new_last_found);
        self.sorted = false;
    }

    /// The threat with this sha256 (exact, as the list spells it).
    pub fn get_mut(&mut self, sha256: &str) -> Option<&mut ThreatRec> {
        let at = *self.index.get(sha256)?;
        self.recs.get_mut(at)
    }

    pub fn ensure_sorted(&mut self) {
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
    pub fn window(&self, start: NaiveDateTime, end: Option<NaiveDateTime>) -> (usize, usize) {
        let lo = end.map_or(0, |end| self.recs.partition_point(|r| r.last_found > end));
        let hi = self.recs.partition_point(|r| r.last_found >= start);
        (lo, hi.max(lo))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortField {
    Severity,
    OccurrenceTime,
    Status,
    Device,
    PhoneticId,
    Description,
    ReceivedTime,
}

impl SortField {
    pub fn parse(name: &str) -> Option<Self> {
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
pub(crate) struct DetRec {
    received: DateTime<Utc>,
    pub id: Arc<str>,
    severity: u8,
    occurred: Option<DateTime<Utc>>,
    status: Box<str>,
    device: Box<str>,
    phonetic: Box<str>,
    description: Box<str>,
    pub json: Box<[u8]>,
}

impl DetRec {
    fn new(item: &Value) -> Self {
        let id = item
            .get("Id")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fake-cylance: a detection needs a string Id: {item}"));
        let received = item
            .get("ReceivedTime")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .unwrap_or_else(|| {
                panic!("fake-cylance: a detection needs an RFC 3339 ReceivedTime: {item}")
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
pub(crate) struct DetectionStore {
    pub recs: Vec<DetRec>,
    index: HashMap<Arc<str>, usize>,
    sorted: bool,
    cache: Option<(SortField, bool, Vec<u32>)>,
    /// Detail records set by a test, by Id; the others are generated.
    details: HashMap<String, Value>,
}

impl DetectionStore {
    pub fn upsert(&mut self, item: Value) {
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

    pub fn get_mut(&mut self, id: &str) -> Option<&mut DetRec> {
        let at = *self.index.get(id)?;
        self.recs.get_mut(at)
    }

    pub fn remove(&mut self, id: &str) {
        let Some(at) = self.index.remove(id) else {
            return;
        };
        self.recs.swap_remove(at);
        if let Some(moved) = self.recs.get(at) {
            self.index.insert(Arc::clone(&moved.id), at);
        }
        self.sorted = false;
        self.cache = None;
        self.details.remove(id);
    }

    pub fn set_status(&mut self, id: &str, status: &str) {
        let at = *self
            .index
            .get(id)
            .unwrap_or_else(|| panic!("FakeApi::set_detection_status: unknown Id {id}"));
        let rec = &mut self.recs[at];
        let mut item: Value = serde_json::from_slice(&rec.json).expect("stored detection is JSON");
        item["Status"] = json!(status);
        rec.json = to_bytes(&item);
        rec.status = status.into();
        self.cache = None;
    }

    /// The detail record of detection `id`: the one set for it, else one
    /// generated from its list item as it is now; `None` for an unknown Id.
    pub fn details(&self, id: &str) -> Option<Value> {
        let rec = &self.recs[*self.index.get(id)?];
        if let Some(set) = self.details.get(id) {
            return Some(set.clone());
        }
        let item: Value = serde_json::from_slice(&rec.json).expect("stored detection is JSON");
        Some(sample::detection_details(&item))
    }

    /// Serves `details` for detection `id`. Panics on an unknown Id.
    pub fn set_details(&mut self, id: &str, details: Value) {
        assert!(
            self.index.contains_key(id),
            "FakeApi::set_detection_details: unknown Id {id}"
        );
        self.details.insert(id.to_owned(), details);
    }

    pub fn ensure_sorted(&mut self) {
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
    pub fn window(
        &self,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> (usize, usize) {
        let lo = end.map_or(0, |end| self.recs.partition_point(|r| r.received >= end));
        let hi = start.map_or(self.recs.len(), |start| {
            self.recs.partition_point(|r| r.received >= start)
        });
        (lo, hi.max(lo))
    }

    /// All positions in `field` order (descending if `desc`), ties in default order.
    pub fn order(&mut self, field: SortField, desc: bool) -> &[u32] {
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

/// One stored memory-protection event.
struct MemRec {
    created: NaiveDateTime,
    device_id: Box<str>,
    json: Box<[u8]>,
}

/// Memory-protection events in the order the fake serves them: by
/// `device_image_file_event_id`, which has nothing to do with `created` (the
/// real order is undocumented, so a client that stops early is caught).
#[derive(Default)]
pub(crate) struct MemoryStore {
    recs: std::collections::BTreeMap<String, MemRec>,
}

impl MemoryStore {
    pub fn upsert(&mut self, item: Value) {
        let id = item
            .get("device_image_file_event_id")
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!("fake-cylance: a memory-protection event needs a string device_image_file_event_id: {item}")
            });
        let created = item
            .get("created")
            .and_then(Value::as_str)
            .and_then(|s| parse_timestamp(s, Zone::Optional))
            .unwrap_or_else(|| {
                panic!("fake-cylance: a memory-protection event needs a created: {item}")
            });
        let device_id = item.get("device_id").and_then(Value::as_str).unwrap_or("");
        let rec = MemRec {
            created,
            device_id: device_id.into(),
            json: to_bytes(&item),
        };
        self.recs.insert(id.to_owned(), rec);
    }

    /// The events with `start <= created <= end` (no bound when `None`) of
    /// `device` (any when `None`), in serving order.
    pub fn select(
        &self,
        start: Option<NaiveDateTime>,
        end: Option<NaiveDateTime>,
        device: Option<&str>,
    ) -> Vec<&[u8]> {
        self.recs
            .values()
            .filter(|r| start.is_none_or(|s| r.created >= s) && end.is_none_or(|e| r.created <= e))
            .filter(|r| device.is_none_or(|d| *r.device_id == *d))
            .map(|r| &r.json[..])
            .collect()
    }
}

/// One device of the inventory.
struct DevRec {
    registered: NaiveDateTime,
    id: Box<str>,
    json: Box<[u8]>,
}

/// The device inventory, served newest registration first, ties by id.
#[derive(Default)]
pub(crate) struct DeviceStore {
    recs: Vec<DevRec>,
    index: HashMap<Box<str>, usize>,
}

impl DeviceStore {
    pub fn upsert(&mut self, item: Value) {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("fake-cylance: a device needs a string id: {item}"));
        let registered = item
            .get("date_first_registered")
            .and_then(Value::as_str)
            .and_then(|s| parse_timestamp(s, Zone::Optional))
            .unwrap_or_else(|| {
                panic!("fake-cylance: a device needs a date_first_registered: {item}")
            });
        let rec = DevRec {
            registered,
            id: id.into(),
            json: to_bytes(&item),
        };
        match self.index.get(id) {
            Some(&at) => self.recs[at] = rec,
            None => {
                self.index.insert(id.into(), self.recs.len());
                self.recs.push(rec);
            }
        }
    }

    /// Every device, in serving order.
    pub fn ordered(&self) -> Vec<&[u8]> {
        let mut order: Vec<&DevRec> = self.recs.iter().collect();
        order.sort_by(|a, b| {
            b.registered
                .cmp(&a.registered)
                .then_with(|| a.id.cmp(&b.id))
        });
        order.into_iter().map(|r| &r.json[..]).collect()
    }
}

pub(crate) fn to_bytes(item: &Value) -> Box<[u8]> {
    serde_json::to_vec(item)
        .expect("a JSON value serializes")
        .into_boxed_slice()
}
