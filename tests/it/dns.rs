//! Whether looking the API host up for every request costs anything worth a
//! resolver of our own (ureq resolves before it reuses a pooled connection,
//! on a thread of its own when a timeout is set, as ours always is).
//!
//! A measurement, not a check, so ignored; run it with
//! `cargo test --release --test it dns:: -- --ignored --nocapture`. With no
//! network here, `localhost` is the real name: it goes through getaddrinfo
//! (and /etc/hosts), `127.0.0.1` skips the lookup.

use crate::support::*;
use std::time::{Duration, Instant};

/// `requests` GETs in a row with an agent configured like the binary's.
fn requests(base: &str, requests: u32) -> Duration {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    let url = format!("{base}/threats/v2");
    let started = Instant::now();
    for _ in 0..requests {
        let mut response = agent.get(&url).call().expect("the fake answers");
        // Unauthorized, cheaply: the same work for both names but the lookup.
        assert_eq!(response.status().as_u16(), 401);
        response.body_mut().read_to_vec().unwrap();
    }
    started.elapsed()
}

/// One poll of `pages` pages, one request at a time, from an empty state,
/// with the fake named by its address or by `localhost`.
fn poll(by_name: bool, pages: u64) -> Duration {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, pages * 200, 5));
    let base = match by_name {
        true => env.fake.url().replace("127.0.0.1", "localhost"),
        false => env.fake.url(),
    };
    let started = Instant::now();
    env.run(&[
        "poll",
        "--sources",
        "threats",
        "--concurrency",
        "1",
        "--api-url",
        &base,
    ])
    .expect(0);
    let elapsed = started.elapsed();
    assert_eq!(env.lines().len() as u64, pages * 200);
    elapsed
}

fn per_request(total: Duration, requests: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(requests))
}

#[test]
#[ignore = "a measurement: prints figures, asserts none"]
fn lookups_cost_per_request() {
    let env = TestEnv::new();
    let ip = env.fake.url();
    let name = ip.replace("127.0.0.1", "localhost");
    const N: u32 = 200;
    // Alternating rounds, the first as warm-up, so that neither name gets
    // the cold caches.
    let (mut by_ip, mut by_name) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        by_ip.push(requests(&ip, N));
        by_name.push(requests(&name, N));
    }
    by_ip.sort();
    by_name.sort();
    println!(
        "{N} requests in a row, median of 5: {ip}: {:?} ({} each); {name}: {:?} ({} each)",
        by_ip[3],
        per_request(by_ip[3], N),
        by_name[3],
        per_request(by_name[3], N)
    );
    // The same through the binary: 100 pages (101 requests with the token).
    let (mut by_ip, mut by_name) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        by_ip.push(poll(false, 100));
        by_name.push(poll(true, 100));
    }
    by_ip.sort();
    by_name.sort();
    println!(
        "poll of 100 pages, median of 3: 127.0.0.1: {:?}; localhost: {:?}",
        by_ip[2], by_name[2]
    );
}
