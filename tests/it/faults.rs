//! A misbehaving API: each fault gets its documented behaviour, nothing is
//! lost or written twice, and no secret leaks at any verbosity.

use crate::support::*;
use std::time::{Duration, Instant};

fn status(status: u16, body: &str) -> Fault {
    Fault::Status {
        status,
        body: body.into(),
        headers: vec![],
    }
}

fn rate_limited(retry_after: Option<&str>) -> Fault {
    Fault::Status {
        status: 429,
        body: r#"{"message":"Too many requests"}"#.into(),
        headers: retry_after
            .map(|v| vec![("Retry-After".to_string(), v.to_string())])
            .unwrap_or_default(),
    }
}

/// 450 threats: three pages.
fn three_pages(env: &TestEnv) {
    env.fake.add_threats(threats(0, 450, 5));
}

#[test]
fn rate_limit_with_retry_after_seconds_waits_as_told() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake
        .push_fault_at("/threats/v2", 2, rate_limited(Some("1")));
    let started = Instant::now();
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "did not wait for Retry-After"
    );
    assert!(
        out.stderr.contains("1 retries, 1 rate-limited"),
        "{}",
        out.stderr
    );
    assert_eq!(env.lines().len(), 450);
}

#[test]
fn rate_limit_with_retry_after_http_date_waits_until_then() {
    let env = TestEnv::new();
    three_pages(&env);
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(2);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    env.fake
        .push_fault_at("/threats/v2", 2, rate_limited(Some(&date)));
    let started = Instant::now();
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "did not wait for the date"
    );
    assert_eq!(env.lines().len(), 450);
}

#[test]
fn rate_limit_without_retry_after_backs_off_and_succeeds() {
    let env = TestEnv::new();
    three_pages(&env);
    for _ in 0..3 {
        env.fake.push_fault("/threats/v2", rate_limited(None));
    }
    let out = env.run(&["poll", "--sources", "threats"]).expect(0);
    assert!(out.stderr.contains("3 rate-limited"), "{}", out.stderr);
    assert_eq!(env.lines().len(), 450);
    assert_each_once(&env.lines());
}

#[test]
fn rate_limit_beyond_the_wait_budget_exits_75_keeping_what_was_fetched() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake
        .push_fault_at("/threats/v2", 2, rate_limited(Some("3600")));
    let started = Instant::now();
    let out = env.run(&["poll", "--sources", "threats"]).expect(75);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited instead of giving up"
    );
    assert!(
        out.error_line().contains("GET /threats/v2: HTTP 429"),
        "{}",
        out.stderr
    );
    assert!(out.error_line().contains("retry budget"), "{}", out.stderr);
    assert_eq!(env.lines().len(), 200, "page 1 kept");
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.lines().len(), 450);
    assert_each_once(&env.lines());
}

#[test]
fn backoff_wait_ends_early_on_sigterm_with_75() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake
        .push_fault_at("/threats/v2", 2, rate_limited(Some("30")));
    let child = env.spawn(&["poll", "--sources", "threats"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.fake.requests().iter().all(|r| r.status != 429) {
        assert!(Instant::now() < deadline, "no 429 answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = env.finish(child).expect(75);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the wait was not interrupted"
    );
    assert!(
        out.error_line().contains("interrupted by a signal"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("poll stopped: threats 200 new"),
        "{}",
        out.stderr
    );
}

#[test]
fn reset_connections_and_timeouts_are_retried() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake.push_fault_at("/threats/v2", 1, Fault::Reset);
    env.fake
        .push_fault_at("/threats/v2", 2, Fault::Delay(Duration::from_secs(3)));
    env.fake
        .push_fault("/auth/v2/token", status(503, "<html>busy</html>"));
    let out = env
        .run(&["poll", "--sources", "threats", "--timeout", "1s"])
        .expect(0);
    assert!(
        out.stderr.contains("no answer within --timeout 1s"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("POST /auth/v2/token: HTTP 503"),
        "{}",
        out.stderr
    );
    assert_eq!(env.lines().len(), 450);
}

#[test]
fn unreachable_api_exits_75_after_retries() {
    let env = TestEnv::new();
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = env.run(&["poll", "--api-url", &url]).expect(75);
    assert!(
        out.error_line().contains("POST /auth/v2/token"),
        "{}",
        out.stderr
    );
    assert!(out.error_line().contains("gave up after 5 attempts"));
}

#[test]
fn not_implemented_is_76_without_retry() {
    let env = TestEnv::new();
    env.fake.push_fault(
        "/threats/v2",
        status(501, r#"{"message":"Not implemented"}"#),
    );
    let out = env.run(&["poll"]).expect(76);
    assert!(out.error_line().contains("GET /threats/v2"));
    assert!(out.error_line().contains("HTTP 501: Not implemented"));
    assert_eq!(env.fake.count("/threats/v2"), 1);
}

#[test]
fn expired_token_mid_run_is_renewed_once() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake.push_fault_at("/threats/v2", 2, Fault::ExpireToken);
    env.run(&["poll", "--sources", "threats"]).expect(0);
    assert_eq!(env.fake.count("/auth/v2/token"), 2);
    assert_eq!(env.lines().len(), 450);
    assert_each_once(&env.lines());
}

#[test]
fn second_401_in_a_row_is_77() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake.push_fault_at("/threats/v2", 2, Fault::ExpireToken);
    env.fake.push_fault_at(
        "/threats/v2",
        2,
        status(401, r#"{"message":"Unauthorized"}"#),
    );
    let out = env.run(&["poll", "--sources", "threats"]).expect(77);
    assert!(
        out.error_line()
            .contains("refused a fresh access token (HTTP 401: Unauthorized)")
    );
    assert_eq!(env.lines().len(), 200, "page 1 kept");
}

#[test]
fn page_size_refused_is_76_with_the_message_and_the_size_sent() {
    let env = TestEnv::new();
    env.fake.push_fault(
        "/detections/v2",
        status(
            400,
            r#"{"message":"The page size requested is not supported."}"#,
        ),
    );
    let out = env.run(&["poll"]).expect(76);
    let line = out.error_line();
    assert!(
        line.contains("The page size requested is not supported."),
        "{line}"
    );
    assert!(line.contains("page_size sent: 100"), "{line}");
}

#[test]
fn html_truncated_and_envelope_less_bodies_are_retried_then_76() {
    for fault in [Fault::Html(200), Fault::Truncated, Fault::MissingPageItems] {
        let env = TestEnv::new();
        three_pages(&env);
        // Once: retried, then the run succeeds.
        env.fake.push_fault_at("/threats/v2", 2, fault.clone());
        env.run(&["poll", "--sources", "threats"]).expect(0);
        assert_eq!(env.lines().len(), 450, "{fault:?}");
        // Every time: 76 naming endpoint and page, with the body's first bytes.
        env.fake.add_threats(threats(1000, 300, 0));
        for _ in 0..3 {
            env.fake.push_fault_at("/threats/v2", 2, fault.clone());
        }
        let out = env.run(&["poll", "--sources", "threats"]).expect(76);
        assert!(
            out.error_line()
                .contains("GET /threats/v2 page 2: the answer is not a page"),
            "{fault:?}: {}",
            out.stderr
        );
        assert!(
            out.error_line().contains("body starts: '"),
            "{}",
            out.stderr
        );
        assert!(!out.error_line().to_lowercase().contains("bearer"));
        env.run(&["poll", "--sources", "threats"]).expect(0);
        assert_eq!(env.lines().len(), 750, "{fault:?}");
        assert_each_once(&env.lines());
    }
}

#[test]
fn oversized_body_is_refused_with_76() {
    let env = TestEnv::new();
    env.fake
        .push_fault("/threats/v2", Fault::Oversize(17 * 1024 * 1024));
    let out = env.run(&["poll"]).expect(76);
    assert!(
        out.error_line()
            .contains("GET /threats/v2: the answer is larger than 16 MiB"),
        "{}",
        out.stderr
    );
}

#[test]
fn page_with_more_items_than_page_size_is_76() {
    let env = TestEnv::new();
    let items: Vec<_> = (0..101)
        .map(|i| detection(i, &detection_time(minutes_ago(1))))
        .collect();
    let body = serde_json::json!({
        "page_number": 1, "page_size": 100, "total_pages": 2,
        "total_number_of_items": 101, "page_items": items,
    });
    env.fake
        .push_fault("/detections/v2", status(200, &body.to_string()));
    let out = env.run(&["poll"]).expect(76);
    assert!(
        out.error_line()
            .contains("101 items in a page of page_size 100"),
        "{}",
        out.stderr
    );
}

#[test]
fn shifting_pages_and_repeated_items_are_still_written_once() {
    let env = TestEnv::new();
    let items: Vec<_> = (0..150)
        .map(|i| {
            detection(
                i,
                &detection_time(minutes_ago(2) - chrono::TimeDelta::seconds(i as i64)),
            )
        })
        .collect();
    env.fake.add_detections(items.clone());
    // Page 2 answers with items already on page 1, out of order, and claims
    // more pages than there are; page 3 comes back empty.
    let mut repeated: Vec<_> = items[40..100].to_vec();
    repeated.reverse();
    let body = serde_json::json!({
        "page_number": 2, "page_size": 100, "total_pages": 5,
        "total_number_of_items": 500, "page_items": repeated,
    });
    env.fake
        .push_fault_at("/detections/v2", 2, status(200, &body.to_string()));
    env.run(&["poll", "--sources", "detections"]).expect(0);
    let first = env.lines().len();
    assert_eq!(first, 100, "page 1 once; page 2's repeats skipped");
    assert!(env.fake.count("/detections/v2") <= 5, "no endless paging");
    // The next poll picks up what the broken page hid.
    env.run(&["poll", "--sources", "detections"]).expect(0);
    assert_eq!(env.lines().len(), 150);
    assert_each_once(&env.lines());
}

#[test]
fn verbose_logs_show_requests_but_never_credentials() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake.push_fault_at("/threats/v2", 2, Fault::ExpireToken);
    env.fake
        .push_fault("/detections/v2", rate_limited(Some("0")));
    let out = env.run(&["poll", "-vv"]).expect(0);
    assert!(
        out.stderr
            .contains("debug: GET /threats/v2?page=1&page_size=200&start_time="),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("-> 200 in "), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("bytes; request had Authorization: Bearer <redacted>")
    );
    assert!(env.fake.issued_tokens().len() >= 2);
    // `finish` has already scanned stdout, stderr, the output and the
    // checkpoint for the secret, both JWTs and both access tokens.
}

#[test]
fn under_systemd_lines_carry_sd_daemon_priorities() {
    let env = TestEnv::new();
    set_mode(&env.secret_file(), 0o644);
    let mut cmd = env.command(&["poll"]);
    cmd.env("JOURNAL_STREAM", "8:12345");
    let out = env.finish(cmd.spawn().unwrap()).expect(0);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("<4>the secret file")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().any(|l| l.starts_with("<6>poll done:")),
        "{}",
        out.stderr
    );
    let mut cmd = env.command(&["poll", "--overlap", "x"]);
    cmd.env("JOURNAL_STREAM", "8:12345");
    let out = env.finish(cmd.spawn().unwrap()).expect(78);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("<3>--overlap: 'x'")),
        "{}",
        out.stderr
    );
}

#[test]
fn envelope_without_total_pages_is_paged_until_an_empty_page() {
    let env = TestEnv::new();
    let items: Vec<_> = (0..250)
        .map(|i| {
            detection(
                i,
                &detection_time(minutes_ago(2) - chrono::TimeDelta::seconds(i as i64)),
            )
        })
        .collect();
    env.fake.add_detections(items.clone());
    let first_page = serde_json::json!({ "page_items": items[..100] });
    env.fake
        .push_fault_at("/detections/v2", 1, status(200, &first_page.to_string()));
    env.run(&["poll", "--sources", "detections"]).expect(0);
    assert_eq!(env.lines().len(), 250);
    assert_eq!(env.fake.count("/detections/v2"), 3);
}

/// How many requests the fake saw for page `page` of `path`.
fn page_requests(env: &TestEnv, path: &str, page: &str) -> usize {
    env.fake
        .requests()
        .iter()
        .filter(|r| r.path == path && r.param("page") == Some(page))
        .count()
}

#[test]
fn a_page_answered_malformed_again_and_again_costs_three_requests_then_76() {
    let env = TestEnv::new();
    three_pages(&env);
    for _ in 0..20 {
        env.fake.push_fault_at("/threats/v2", 2, Fault::NotJson);
    }
    let out = env.run(&["poll", "--sources", "threats"]).expect(76);
    assert!(
        out.error_line()
            .contains("GET /threats/v2 page 2: the answer is not a page"),
        "{}",
        out.stderr
    );
    assert_eq!(page_requests(&env, "/threats/v2", "2"), 3);
    assert_eq!(env.lines().len(), 200, "page 1 kept");
}

#[test]
fn failures_of_every_kind_share_one_budget_per_page() {
    // Four 503s then a malformed body, three times over: with a fresh budget
    // per malformed body this was 15 requests for one page; one budget
    // allows 5 attempts in all.
    let env = TestEnv::new();
    three_pages(&env);
    for _ in 0..3 {
        for _ in 0..4 {
            env.fake
                .push_fault_at("/threats/v2", 2, status(503, "<html>busy</html>"));
        }
        env.fake.push_fault_at("/threats/v2", 2, Fault::NotJson);
    }
    let out = env.run(&["poll", "--sources", "threats"]).expect(75);
    assert!(
        out.error_line()
            .contains("GET /threats/v2 page 2: the answer is not a page"),
        "{}",
        out.stderr
    );
    assert!(
        out.error_line().contains("gave up after 5 attempts"),
        "{}",
        out.stderr
    );
    assert_eq!(page_requests(&env, "/threats/v2", "2"), 5);
    assert_eq!(env.lines().len(), 200, "page 1 kept");
}

#[test]
fn rate_limits_and_server_errors_share_one_budget() {
    // 429s used to be bounded by waiting time alone: a Retry-After of 0
    // could keep a page retrying forever.
    let env = TestEnv::new();
    three_pages(&env);
    for _ in 0..3 {
        env.fake
            .push_fault_at("/threats/v2", 2, rate_limited(Some("0")));
        env.fake
            .push_fault_at("/threats/v2", 2, status(502, "<html>bad gateway</html>"));
    }
    let out = env.run(&["poll", "--sources", "threats"]).expect(75);
    assert!(
        out.error_line().contains("gave up after 5 attempts"),
        "{}",
        out.stderr
    );
    assert_eq!(page_requests(&env, "/threats/v2", "2"), 5);
}

#[test]
fn a_wait_longer_than_the_run_has_left_gives_up_at_once_with_75() {
    let env = TestEnv::new();
    three_pages(&env);
    env.fake
        .push_fault_at("/threats/v2", 2, rate_limited(Some("30")));
    let started = Instant::now();
    let out = env
        .run(&["poll", "--sources", "threats", "--max-runtime", "20s"])
        .expect(75);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited instead of giving up"
    );
    assert!(
        out.error_line()
            .contains("GET /threats/v2: HTTP 429: Too many requests; waiting 30s more would exceed --max-runtime"),
        "{}",
        out.stderr
    );
    assert_eq!(env.lines().len(), 200, "page 1 kept");
}

/// A proxy or API bug that drops `page` answers page 1 every time. Either
/// way it shows (a `page_number` that is not the page asked for, or no
/// number and page 1's items again), the poll ends with 76 instead of
/// re-reading page 1 until --max-runtime; the window is not committed, so
/// the next poll asks for it again and nothing is lost or written twice.
#[test]
fn a_server_that_ignores_page_is_76_within_a_few_requests_and_loses_nothing() {
    // --concurrency 1 asks for one page at a time: the counts are exact.
    // Numbered: page 1, then page 2 three times (a malformed answer is
    // retried, three attempts at most); unnumbered: pages 1 and 2, whose
    // repeat is seen only once both are in.
    for (fault, requests) in [(Fault::PageOne, 4), (Fault::PageOneUnnumbered, 2)] {
        let env = TestEnv::new();
        three_pages(&env);
        env.run(&["poll", "--sources", "threats"]).expect(0);
        let cursor = env.checkpoint()["sources"]["threats"]["cursor"].clone();
        env.fake.add_threats(threats(1000, 450, 0));
        let before = env.fake.count("/threats/v2");
        for _ in 0..requests {
            env.fake.push_fault("/threats/v2", fault.clone());
        }
        let poll = ["poll", "--sources", "threats", "--concurrency", "1"];
        let out = env.run(&poll).expect(76);
        assert!(
            out.error_line().ends_with(
                "GET /threats/v2 page 2: the answer is page 1 (the server ignored the page parameter)"
            ),
            "{fault:?}: {}",
            out.stderr
        );
        assert_eq!(
            env.fake.count("/threats/v2") - before,
            requests,
            "{fault:?}"
        );
        assert_eq!(
            env.checkpoint()["sources"]["threats"]["cursor"],
            cursor,
            "{fault:?}: the window was committed"
        );
        assert_eq!(env.lines().len(), 450 + 200, "{fault:?}: page 1 kept");
        assert_no_line_twice(&env);
        env.run(&poll).expect(0);
        assert_eq!(env.lines().len(), 900, "{fault:?}");
        assert_each_once(&env.lines());
        assert_no_line_twice(&env);
    }
}

/// No two lines of the output are the same bytes.
fn assert_no_line_twice(env: &TestEnv) {
    let output = std::fs::read_to_string(env.output()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for line in output.lines() {
        assert!(seen.insert(line), "written twice: {line}");
    }
}
