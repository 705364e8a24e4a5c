//! Threats: `GET /threats/v2`, newest first, one event per file and sighting.

use super::{Key, Lookup, Order, QueryTime, Shape, Source, Windowed};
use crate::timefmt::parse_api_time;

pub static SOURCE: Source = Source {
    name: "threats",
    event_type: "threat",
    path: "/threats/v2",
    privilege: "threat:list",
    default_on: true,
    // The documented maximum.
    page_size: 200,
    // A file found again later is a new event.
    key: Key {
        field: "sha256",
        with_time: true,
    },
    shape: Shape::Windowed(Windowed {
        start_param: "start_time",
        end_param: "end_time",
        query_time: QueryTime::ZoneLess,
        extra: &[],
        time_field: "last_found",
        parse_time: parse_api_time,
        order: Order::NewestFirst,
    }),
    lookup: Some(Lookup::ThreatDevices),
};
