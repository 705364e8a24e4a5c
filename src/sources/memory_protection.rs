//! Memory protection: `GET /memoryprotection/v2`, the exploit and injection
//! attempts the agent saw, one event per `device_image_file_event_id`.

use super::{Key, Order, QueryTime, Shape, Source, Windowed};
use crate::timefmt::parse_api_time;

pub static SOURCE: Source = Source {
    name: "memory-protection",
    event_type: "memory_protection",
    path: "/memoryprotection/v2",
    privilege: "memoryprotection:list",
    default_on: true,
    // The API notes give no limit; 200 is the documented maximum of the
    // threats list, and lists that take less refuse it (the test fake's
    // strictest plausible limit is 200 for every list).
    page_size: 200,
    // Read as text; a number is taken as its digits (the notes do not say
    // which the API sends).
    key: Key {
        field: "device_image_file_event_id",
        with_time: false,
    },
    shape: Shape::Windowed(Windowed {
        start_param: "start_time",
        end_param: "end_time",
        query_time: QueryTime::ZoneLess,
        extra: &[],
        // Zone-less UTC in the notes; a fraction or a `Z` is read as well.
        time_field: "created",
        parse_time: parse_api_time,
        // Not documented: every page is read and the window kept on the client.
        order: Order::Unknown,
    }),
    lookup: None,
};
