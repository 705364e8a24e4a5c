//! CylanceOPTICS detections: `GET /detections/v2`, one event per `Id`.

use super::{Key, Lookup, Order, QueryTime, Shape, Source, Windowed};
use crate::timefmt::parse_api_time;

pub static SOURCE: Source = Source {
    name: "detections",
    event_type: "detection",
    path: "/detections/v2",
    privilege: "opticsdetect:list",
    default_on: true,
    // The maximum is undocumented; 100 is what existing clients use without
    // complaint.
    page_size: 100,
    key: Key {
        field: "Id",
        with_time: false,
    },
    shape: Shape::Windowed(Windowed {
        start_param: "start",
        end_param: "end",
        query_time: QueryTime::Millis,
        extra: &[("sort", "-ReceivedTime")],
        time_field: "ReceivedTime",
        parse_time: parse_api_time,
        // Newest first is only the sort we ask for, not a documented
        // promise: every page is read.
        order: Order::Unknown,
    }),
    lookup: Some(Lookup::DetectionDetails),
};
