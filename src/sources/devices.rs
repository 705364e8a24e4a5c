//! The device inventory: `GET /devices/v2`, every page, as a snapshot (see
//! [`Shape::Snapshot`]); one line per device and snapshot.

use super::{Key, Shape, Source};

pub static SOURCE: Source = Source {
    name: "devices",
    event_type: "device",
    path: "/devices/v2",
    privilege: "device:list",
    // A state, not events: asked for explicitly.
    default_on: false,
    // As for memory protection: no documented limit; 200 is the threats
    // list's documented one.
    page_size: 200,
    // The same device in another snapshot is another line.
    key: Key {
        field: "id",
        with_time: true,
    },
    shape: Shape::Snapshot,
    lookup: None,
};
