//! What a source says about itself, and the list of all sources.
//!
//! A source is one small module (`threats.rs`, `detections.rs`) holding one
//! [`Source`]: its name, endpoint, privilege, page size, how its list is
//! asked for and read ([`Shape`]), which items are one event ([`Key`]) and
//! its per-item [`Lookup`]. Everything else (paging, windows, dedupe,
//! writing, checkpoint, metrics, help text) works from that description and
//! from [`ALL`], so adding a source is its module plus one line in [`ALL`].
//!
//! `item.rs` reads an item once for its key and time; `line.rs` turns it
//! into an output line. Both take their field names from the description.

mod detections;
mod devices;
mod item;
mod line;
mod memory_protection;
mod threats;

pub use item::readable_inside;
pub use line::{
    line_prefix, push_compact, push_line, push_line_adding, push_one_line, rename_reserved,
};

use crate::api::ListRequest;
use crate::timefmt::{detection_query_time, threat_query_time};
use chrono::{DateTime, TimeDelta, Utc};

/// Every source, in the order of the default `--sources` (those marked
/// `default_on`), then the others.
pub static ALL: &[SourceKind] = &[
    &threats::SOURCE,
    &detections::SOURCE,
    &memory_protection::SOURCE,
    &devices::SOURCE,
];

/// The added key of a snapshot source's lines holding the snapshot's time.
pub const SNAPSHOT_TIME_KEY: &str = "snapshot_time";

/// The handle the rest of the code passes around: the source's description.
pub type SourceKind = &'static Source;

/// The source named `name` in `--sources` or the checkpoint (any case).
pub fn from_name(name: &str) -> Option<SourceKind> {
    ALL.iter()
        .copied()
        .find(|source| source.name.eq_ignore_ascii_case(name))
}

/// The names of all sources, for help text and errors: `threats, detections`.
pub fn names(separator: &str) -> String {
    let names: Vec<&str> = ALL.iter().map(|source| source.name).collect();
    names.join(separator)
}

/// The sources fetched when `--sources` is not given.
pub fn defaults() -> Vec<SourceKind> {
    ALL.iter()
        .copied()
        .filter(|source| source.default_on)
        .collect()
}

/// The names of [`defaults`], for help text.
pub fn default_names(separator: &str) -> String {
    let names: Vec<&str> = defaults().iter().map(|source| source.name).collect();
    names.join(separator)
}

/// How much wider than our window we ask the server for: its bounds may be
/// inclusive or exclusive and its clock is not ours. We keep exactly our
/// half-open window on the client.
pub const SERVER_WINDOW_PAD: TimeDelta = TimeDelta::seconds(60);

/// One source, as the rest of the program needs to know it.
#[derive(Debug)]
pub struct Source {
    /// The name in `--sources`, the checkpoint, metrics and messages.
    pub name: &'static str,
    /// The `event_type` of its output lines.
    pub event_type: &'static str,
    /// The list endpoint, paged with `page` and `page_size`.
    pub path: &'static str,
    /// The privilege the API application needs for the list.
    pub privilege: &'static str,
    /// Fetched when `--sources` is not given.
    pub default_on: bool,
    /// Items asked for per page.
    pub page_size: u32,
    pub key: Key,
    pub shape: Shape,
    /// A request per new item whose answer its line carries (when
    /// `--enrich` names it); the item's key field names the object.
    pub lookup: Option<Lookup>,
}

/// Sources are one each: the same name is the same source.
impl PartialEq for Source {
    fn eq(&self, other: &Source) -> bool {
        self.name == other.name
    }
}

impl Eq for Source {}

/// How a source's list is asked for and read. Each variant is a different
/// run policy in `run.rs`.
#[derive(Debug)]
pub enum Shape {
    /// Events in time: each run asks for a window of the time field.
    Windowed(Windowed),
    /// A state, not events (the device inventory): no window, every page, at
    /// most once per `--devices-every`. Each line gets the added key
    /// [`SNAPSHOT_TIME_KEY`], the same for the whole snapshot; the key of an
    /// item includes that time, so each snapshot writes each item once.
    Snapshot,
}

/// How a windowed list is asked for and read.
#[derive(Debug)]
pub struct Windowed {
    /// The query parameters that carry the window's start and end.
    pub start_param: &'static str,
    pub end_param: &'static str,
    /// How the endpoint wants those times written.
    pub query_time: QueryTime,
    /// Further fixed query parameters, after the window's.
    pub extra: &'static [(&'static str, &'static str)],
    /// The item field the window applies to.
    pub time_field: &'static str,
    /// How that field's text is read.
    pub parse_time: fn(&str) -> Option<DateTime<Utc>>,
    pub order: Order,
}

/// The time formats endpoints accept in a query.
#[derive(Debug, Clone, Copy)]
pub enum QueryTime {
    /// `2024-05-14T09:00:00`, UTC, whole seconds.
    ZoneLess,
    /// `2024-05-14T09:00:00.000Z`.
    Millis,
}

impl QueryTime {
    fn format(self, time: DateTime<Utc>) -> String {
        match self {
            QueryTime::ZoneLess => threat_query_time(time),
            QueryTime::Millis => detection_query_time(time),
        }
    }
}

/// What a list's order promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Documented newest first: paging may stop at the first page wholly
    /// older than the window.
    NewestFirst,
    /// Not documented (or only a default): every page is read.
    Unknown,
}

/// Which items are one event, for dedupe.
#[derive(Debug)]
pub struct Key {
    /// The item field holding its identity (a string, compared without case).
    pub field: &'static str,
    /// The same identity at another time is another event (a threat found
    /// again later): the key includes the item's time.
    pub with_time: bool,
}

/// A request per new item whose answer its line carries under an added key
/// (the devices a threat was found on, a detection's details). `run.rs`
/// performs it (`lookup.rs`) for the lines a page will write, before they
/// are written; `--enrich` names the ones that are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `GET /threats/v2/{sha256}/devices`, every page: the sightings whose
    /// `date_found` is the line's `last_found`, as an array under `devices`.
    ThreatDevices,
    /// `GET /detections/v2/{Id}/details`: the object under `details`.
    DetectionDetails,
}

impl Lookup {
    /// The name in `--enrich`, metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Lookup::ThreatDevices => "threat-devices",
            Lookup::DetectionDetails => "detection-details",
        }
    }

    /// The key its answer is added under, at the end of the line.
    pub fn added_key(self) -> &'static str {
        match self {
            Lookup::ThreatDevices => "devices",
            Lookup::DetectionDetails => "details",
        }
    }

    /// The privilege the API application needs for it.
    pub fn privilege(self) -> &'static str {
        match self {
            Lookup::ThreatDevices => "threat:devicelist",
            Lookup::DetectionDetails => "opticsdetect:read",
        }
    }

    /// On without `--enrich`: the devices a threat was found on are what
    /// makes a threat line actionable; details cost a request per detection
    /// for fields the list mostly has.
    pub fn on_by_default(self) -> bool {
        match self {
            Lookup::ThreatDevices => true,
            Lookup::DetectionDetails => false,
        }
    }
}

/// Every lookup, from the sources' descriptions, in the order of [`ALL`].
pub fn lookups() -> impl Iterator<Item = Lookup> {
    ALL.iter().filter_map(|source| source.lookup)
}

/// The lookup named `name` in `--enrich` (any case).
pub fn lookup_from_name(name: &str) -> Option<Lookup> {
    lookups().find(|lookup| lookup.name().eq_ignore_ascii_case(name))
}

/// The names of all lookups, joined by `separator`, for help text and errors.
pub fn lookup_names(separator: &str) -> String {
    lookups()
        .map(Lookup::name)
        .collect::<Vec<_>>()
        .join(separator)
}

/// The names of the lookups on by default, joined by `separator`.
pub fn default_lookup_names(separator: &str) -> String {
    lookups()
        .filter(|lookup| lookup.on_by_default())
        .map(Lookup::name)
        .collect::<Vec<_>>()
        .join(separator)
}

impl Source {
    /// The query parameters asking for `[from, to)`, padded on both sides by
    /// [`SERVER_WINDOW_PAD`].
    /// A snapshot source has no window: no parameters.
    pub fn window_query(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(&'static str, String)> {
        let Shape::Windowed(windowed) = &self.shape else {
            return Vec::new();
        };
        let (start, end) = (from - SERVER_WINDOW_PAD, to + SERVER_WINDOW_PAD);
        let mut query = vec![
            (windowed.start_param, windowed.query_time.format(start)),
            (windowed.end_param, windowed.query_time.format(end)),
        ];
        query.extend(
            windowed
                .extra
                .iter()
                .map(|(name, value)| (*name, value.to_string())),
        );
        query
    }

    /// The field whose time the window applies to (a snapshot source: the
    /// added key with the snapshot's time), for messages and for reading our
    /// own lines back.
    pub fn time_field(&self) -> &'static str {
        match &self.shape {
            Shape::Windowed(windowed) => windowed.time_field,
            Shape::Snapshot => SNAPSHOT_TIME_KEY,
        }
    }

    /// Whether paging may stop once the items are older than the window.
    pub fn newest_first(&self) -> bool {
        match &self.shape {
            Shape::Windowed(windowed) => windowed.order == Order::NewestFirst,
            Shape::Snapshot => false,
        }
    }

    pub fn is_snapshot(&self) -> bool {
        matches!(self.shape, Shape::Snapshot)
    }

    /// The request for one of this source's list pages, with `filters` (the
    /// window, or none for `check`).
    pub fn list_request<'a>(&self, filters: &'a [(&'static str, String)]) -> ListRequest<'a> {
        ListRequest {
            path: self.path,
            privilege: self.privilege,
            page_size: self.page_size,
            filters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_in_any_case() {
        for source in ALL {
            assert_eq!(from_name(&source.name.to_uppercase()), Some(*source));
            assert_eq!(ALL.iter().filter(|s| s.name == source.name).count(), 1);
        }
        assert_eq!(from_name("memory"), None);
    }

    #[test]
    fn the_default_sources_are_those_marked_default_on_devices_off() {
        assert_eq!(default_names(","), "threats,detections,memory-protection");
        assert_eq!(names(","), "threats,detections,memory-protection,devices");
    }

    #[test]
    fn window_query_pads_both_ends_and_adds_the_fixed_parameters() {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let (from, to) = (at("2024-05-14T09:00:00Z"), at("2024-05-14T10:00:00Z"));
        assert_eq!(
            threats::SOURCE.window_query(from, to),
            [
                ("start_time", "2024-05-14T08:59:00".to_string()),
                ("end_time", "2024-05-14T10:01:00".to_string())
            ]
        );
        assert_eq!(
            detections::SOURCE.window_query(from, to),
            [
                ("start", "2024-05-14T08:59:00.000Z".to_string()),
                ("end", "2024-05-14T10:01:00.000Z".to_string()),
                ("sort", "-ReceivedTime".to_string())
            ]
        );
    }

    #[test]
    fn lookups_come_from_the_descriptions_one_per_source_at_most() {
        assert_eq!(lookup_names(", "), "threat-devices, detection-details");
        assert_eq!(default_lookup_names(","), "threat-devices");
        assert_eq!(threats::SOURCE.lookup, Some(Lookup::ThreatDevices));
        assert_eq!(detections::SOURCE.lookup, Some(Lookup::DetectionDetails));
        assert_eq!(
            lookup_from_name("Threat-Devices"),
            Some(Lookup::ThreatDevices)
        );
        assert_eq!(lookup_from_name("devices"), None);
        for lookup in lookups() {
            assert_eq!(lookups().filter(|l| l.name() == lookup.name()).count(), 1);
        }
    }
}
