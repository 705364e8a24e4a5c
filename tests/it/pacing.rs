//! Concurrent page fetches and the client-side rate limit.

use crate::support::*;
use std::time::{Duration, Instant};

fn ten_pages_of_detections(env: &TestEnv) {
    let newest = minutes_ago(30);
    let items = (0..1000)
        .map(|i| {
            detection(
                i,
                &detection_time(newest - chrono::TimeDelta::seconds(i as i64)),
            )
        })
        .collect();
    env.fake.add_detections(items);
}

#[test]
fn concurrent_fetches_overlap_yet_write_the_same_file_in_page_order() {
    let concurrent = TestEnv::new();
    let sequential = TestEnv::new();
    for env in [&concurrent, &sequential] {
        ten_pages_of_detections(env);
        env.fake.set_delay(Duration::from_millis(60));
    }
    let args = [
        "backfill",
        "--since",
        "1d",
        "--until",
        "1m",
        "--sources",
        "detections",
    ];
    concurrent
        .run(&[&args[..], &["--concurrency", "4"]].concat())
        .expect(0);
    sequential
        .run(&[&args[..], &["--concurrency", "1"]].concat())
        .expect(0);
    assert!(
        concurrent.fake.max_concurrent() >= 3,
        "requests did not overlap"
    );
    assert_eq!(sequential.fake.max_concurrent(), 1);
    let (a, b) = (concurrent.lines(), sequential.lines());
    assert_eq!(a.len(), 1000);
    let ids =
        |lines: &[serde_json::Value]| lines.iter().map(|l| l["Id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "same lines in the same order");
    assert_eq!(
        concurrent.fake.count("/detections/v2"),
        10,
        "no page fetched twice"
    );
}

#[test]
fn max_rps_allows_no_more_than_that_many_requests_in_any_second() {
    let env = TestEnv::new();
    ten_pages_of_detections(&env);
    let started = Instant::now();
    env.run(&[
        "poll",
        "--sources",
        "detections",
        "--max-rps",
        "5",
        "--concurrency",
        "4",
    ])
    .expect(0);
    let elapsed = started.elapsed();
    // 11 requests (token + 10 pages), at most 5 in any second: the 11th
    // starts at least 2 s after the first.
    assert!(
        elapsed >= Duration::from_millis(1950),
        "took only {elapsed:?}"
    );
    let mut times: Vec<Instant> = env.fake.requests().iter().map(|r| r.at).collect();
    times.sort();
    for window in times.windows(6) {
        let span = window[5].saturating_duration_since(window[0]);
        assert!(
            span >= Duration::from_millis(950),
            "6 requests within {span:?}"
        );
    }
}

#[test]
fn a_short_run_is_not_slowed_by_the_rate_limit() {
    let env = TestEnv::new();
    env.run(&["poll", "--max-rps", "10"]).expect(0);
    let times: Vec<Instant> = env.fake.requests().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 4);
    // Spaced at 10 a second they would take 300 ms; a loaded machine gets
    // some slack below that.
    let span = times[3].saturating_duration_since(times[0]);
    assert!(
        span < Duration::from_millis(250),
        "four requests took {span:?}"
    );
}

#[test]
fn stopped_run_discards_pages_fetched_ahead_and_loses_nothing() {
    let env = TestEnv::new();
    ten_pages_of_detections(&env);
    env.fake.push_fault_at(
        "/detections/v2",
        4,
        Fault::Status {
            status: 501,
            body: "{}".into(),
            headers: vec![],
        },
    );
    env.run(&["poll", "--sources", "detections", "--concurrency", "4"])
        .expect(76);
    assert_eq!(
        env.lines().len(),
        300,
        "pages 1-3 written, nothing after the failed page"
    );
    env.run(&["poll", "--sources", "detections"]).expect(0);
    assert_eq!(env.lines().len(), 1000);
    assert_each_once(&env.lines());
}
