//! The benchmark's scenarios at tiny sizes: they run, and the request counts
//! (which, unlike timings, are exact) meet the targets. Timings are printed by
//! `cargo bench --bench poller`, never asserted.

use fake_cylance::scenarios::{self, Sizes};
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

#[test]
fn idle_poll_makes_exactly_one_token_and_one_list_request_per_source() {
    let idle = scenarios::idle_poll(Path::new(BIN), &Sizes::tiny());
    // threats, detections, memory-protection: the default sources.
    assert_eq!((idle.token_requests, idle.list_requests), (1, 3));
    assert_eq!(idle.events, 0);
    assert!(
        idle.peak_memory_kib.is_some(),
        "the binary reports its resources at -v"
    );
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
