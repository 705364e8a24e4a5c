//! The benchmark's scenarios at tiny sizes: they run, and the request counts
//! (which, unlike timings, are exact) meet the targets. Timings are printed by
//! `cargo bench --bench poller`, never asserted.

use fake_cylance::scenarios::{self, Events, Sizes};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cylance-logs");

/// Pages the fake serves for `events` seeded half threats (200 a page) and
/// half detections (100 a page).
fn pages_for(events: u64) -> usize {
    let (threats, detections) = (events / 2, events - events / 2);
    (threats.div_ceil(200) + detections.div_ceil(100)) as usize
}

/// The list requests of a backfill of those with the default sources: their
/// pages, and the one empty page of memory protection (not seeded).
fn backfill_requests_for(events: u64) -> usize {
    pages_for(events) + 1
}

/// The `--enrich` values of README's cost table.
const ENRICH: [&str; 3] = ["none", "threat-devices", "threat-devices,detection-details"];

/// README's cost table, from the page sizes: list pages per windowed source
/// (threats 200 a page, detections 100, memory protection 200; an empty list
/// is one page too).
fn list_pages(events: Events) -> usize {
    let pages = |n: u64, size: u64| n.div_ceil(size).max(1) as usize;
    pages(events.threats, 200)
        + pages(events.detections, 100)
        + pages(events.memory_protection, 200)
}

/// ... and one lookup per new line of a looked-up source (every threat's
/// device list in these scenarios fits in one page).
fn lookups(events: Events, enrich: &str) -> usize {
    let per = |lookup: &str, n: u64| {
        if enrich.split(',').any(|e| e == lookup) {
            n as usize
        } else {
            0
        }
    };
    per("threat-devices", events.threats) + per("detection-details", events.detections)
}

#[test]
fn idle_poll_makes_exactly_one_token_and_one_list_request_per_source_and_no_lookup() {
    for enrich in ENRICH {
        let idle = scenarios::idle_poll(Path::new(BIN), &Sizes::tiny(), enrich);
        // threats, detections, memory-protection: the default sources.
        assert_eq!(
            (
                idle.token_requests,
                idle.list_requests,
                idle.lookup_requests
            ),
            (1, 3, 0),
            "--enrich {enrich}"
        );
        assert_eq!(idle.events, 0);
        assert!(
            idle.peak_memory_kib.is_some(),
            "the binary reports its resources at -v"
        );
    }
}

#[test]
fn a_busy_minute_costs_one_page_per_source_and_one_lookup_per_new_line() {
    let busy = Events::BUSY_MINUTE;
    let cost: Vec<(usize, usize, usize)> = ENRICH
        .iter()
        .map(|enrich| {
            let run = scenarios::busy_minute(Path::new(BIN), busy, enrich);
            assert_eq!(run.events, 40, "--enrich {enrich}");
            (run.token_requests, run.list_requests, run.lookup_requests)
        })
        .collect();
    // README's cost table: 4, 24 and 34 requests.
    assert_eq!(cost, [(1, 3, 0), (1, 3, 20), (1, 3, 30)]);
    for (enrich, (_, lists, looked)) in ENRICH.iter().zip(&cost) {
        assert_eq!(*lists, list_pages(busy), "--enrich {enrich}");
        assert_eq!(*looked, lookups(busy, enrich), "--enrich {enrich}");
    }
}

#[test]
fn new_threats_cost_one_lookup_each() {
    let sizes = Sizes::tiny();
    let run = scenarios::new_threats_with_lookups(Path::new(BIN), sizes.lookup_threats);
    assert_eq!(run.events, sizes.lookup_threats);
    assert_eq!(
        (run.token_requests, run.list_requests, run.lookup_requests),
        (1, 3, sizes.lookup_threats as usize)
    );
}

#[test]
fn a_backfill_costs_its_pages_and_one_lookup_per_line() {
    let events = Sizes::tiny().backfill_cost;
    for enrich in ENRICH {
        let run = scenarios::backfill_30_days(Path::new(BIN), events, enrich, &["--max-rps", "0"]);
        assert_eq!(
            run.events,
            events.threats + events.detections + events.memory_protection,
            "--enrich {enrich}"
        );
        assert_eq!(
            (run.token_requests, run.list_requests, run.lookup_requests),
            (1, list_pages(events), lookups(events, enrich)),
            "--enrich {enrich}"
        );
    }
}

#[test]
fn five_new_threats_among_thousands_cost_one_page_even_unfiltered() {
    let economy = scenarios::request_economy(Path::new(BIN), &Sizes::tiny());
    assert_eq!(economy.list_requests, 1);
    assert_eq!(economy.events, 5);
}

#[test]
fn backfill_reads_each_page_once_at_any_concurrency() {
    let sizes = Sizes::tiny();
    let events = sizes.throughput_events;
    for concurrency in ["1", "4"] {
        let run = scenarios::backfill(
            Path::new(BIN),
            &format!("smoke-{concurrency}"),
            events,
            Duration::ZERO,
            &["--max-rps", "0", "--concurrency", concurrency],
        );
        assert_eq!(run.events, events);
        assert_eq!(
            run.list_requests,
            backfill_requests_for(events),
            "concurrency {concurrency}"
        );
        assert_eq!(run.token_requests, 1);
    }
    let naive = scenarios::naive_backfill(Path::new(BIN), "smoke-naive", events, Duration::ZERO);
    assert_eq!(naive.events, events);
    assert_eq!(naive.list_requests, pages_for(events));
}

#[test]
fn latency_scenario_stays_within_the_rate_limit() {
    let sizes = Sizes::tiny();
    let run = scenarios::backfill(
        Path::new(BIN),
        "smoke-latency",
        sizes.latency_events,
        sizes.latency,
        &[],
    );
    let requests = run.list_requests + run.token_requests;
    assert_eq!(
        run.list_requests,
        backfill_requests_for(sizes.latency_events)
    );
    // At the default --max-rps 10 (at most 10 in any second), request n
    // (from 0) starts at least n / 10 whole seconds after the first.
    let floor = Duration::from_secs((requests as u64 - 1) / 10);
    assert!(
        run.wall >= floor,
        "{requests} requests in {:?}: faster than --max-rps allows",
        run.wall
    );
}

#[test]
fn many_tenants_into_one_file_poll_with_four_requests_each_and_write_each_event_once() {
    let sizes = Sizes::tiny();
    let run = scenarios::many_tenants(Path::new(BIN), &sizes);
    let (tenants, events) = (sizes.tenants, sizes.tenant_events);
    for (name, round) in [("first", &run.first), ("second", &run.second)] {
        assert_eq!(
            (round.token_requests, round.list_requests),
            (tenants, 3 * tenants),
            "{name} round: one token and one page per source and tenant"
        );
        assert_eq!(round.events, vec![events; tenants], "{name} round");
        assert_eq!(
            round.resources_lines, tenants,
            "every poller reports its resources at -v"
        );
    }
    assert_eq!(run.lines, 2 * tenants * events as usize);
    assert_eq!(run.distinct, run.lines, "an event written twice");
}
