//! The benchmark's scenarios, shared by the benchmark itself
//! (`benches/poller`: full sizes, release build, prints a table) and its
//! smoke test (`tests/it/bench_smoke.rs`: tiny sizes, asserts the exact
//! request counts, no timing).
//!
//! Each scenario runs the real binary against the fake API on loopback and
//! measures the whole process: wall time here, peak memory and CPU from the
//! `resources:` line the binary prints at `-v`.

use crate::env::TestEnv;
use crate::fake::FakeApi;
use crate::sample::{detection, threat};
use crate::time::{detection_time, threat_time};
use chrono::{DateTime, TimeDelta, Utc};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Scenario sizes; `BENCH_SIZE=tiny|small|full` picks one (default full).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub name: &'static str,
    pub idle_runs: usize,
    pub economy_threats: u64,
    pub throughput_events: u64,
    pub latency_events: u64,
    pub latency: Duration,
    pub memory_small: u64,
    pub memory_large: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            name: "full",
            idle_runs: 21,
            economy_threats: 10_000,
            throughput_events: 200_000,
            latency_events: 100_000,
            latency: Duration::from_millis(100),
            memory_small: 10_000,
            memory_large: 1_000_000,
        }
    }

    pub fn small() -> Sizes {
        Sizes {
            name: "small",
            idle_runs: 11,
            economy_threats: 10_000,
            throughput_events: 50_000,
            latency_events: 10_000,
            latency: Duration::from_millis(100),
            memory_small: 10_000,
            memory_large: 100_000,
        }
    }

    /// Few enough pages that no window is split, so request counts are exact.
    pub fn tiny() -> Sizes {
        Sizes {
            name: "tiny",
            idle_runs: 3,
            economy_threats: 2_000,
            throughput_events: 2_000,
            latency_events: 1_000,
            latency: Duration::from_millis(5),
            memory_small: 300,
            memory_large: 3_000,
        }
    }

    pub fn from_env() -> Sizes {
        match std::env::var("BENCH_SIZE").as_deref() {
            Ok("tiny") => Sizes::tiny(),
            Ok("small") => Sizes::small(),
            _ => Sizes::full(),
        }
    }
}

/// What one run of the binary cost.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub wall: Duration,
    pub token_requests: usize,
    pub list_requests: usize,
    pub events: u64,
    pub peak_memory_kib: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl Measured {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn cpu_ms_per_1000_events(&self) -> Option<f64> {
        self.cpu_seconds
            .map(|cpu| cpu * 1000.0 * 1000.0 / self.events.max(1) as f64)
    }
}

/// Runs the binary as deployed (default pacing and backoff) with `-v`, under
/// `BENCH_WRAPPER` if set (e.g. `perf record -g -o /tmp/perf.data --`);
/// panics (naming the scenario) unless it exits 0.
fn measure(tenant: &TestEnv, scenario: &str, args: &[&str]) -> Measured {
    let before = tenant.fake.requests().len();
    let started = Instant::now();
    let wrapper = std::env::var("BENCH_WRAPPER").unwrap_or_default();
    let wrapper: Vec<&str> = wrapper.split_whitespace().collect();
    let mut args = args.to_vec();
    args.push("-v");
    let out = tenant
        .deployed_command(&wrapper, &args)
        .output()
        .expect("the binary runs");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{scenario}: {args:?} failed:\n{stderr}"
    );
    let requests = tenant.fake.requests();
    let new = &requests[before..];
    Measured {
        wall,
        token_requests: new.iter().filter(|r| r.path == "/auth/v2/token").count(),
        list_requests: new.iter().filter(|r| r.path != "/auth/v2/token").count(),
        events: summary_events(&stderr),
        peak_memory_kib: resource(&stderr, "peak memory ", " KiB").map(|v| v as u64),
        cpu_seconds: resource(&stderr, "CPU ", "s user")
            .zip(resource(&stderr, "user + ", "s system"))
            .map(|(user, system)| user + system),
    }
}

/// Events written, from the summary line ("threats 5 new (1 pages), ...").
fn summary_events(stderr: &str) -> u64 {
    let Some(line) = stderr.lines().find(|l| l.contains(" done: ")) else {
        return 0;
    };
    line.split(" new (")
        .filter_map(|part| part.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn resource(stderr: &str, before: &str, after: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains("resources: "))?;
    let start = line.find(before)? + before.len();
    let rest = &line[start..];
    rest[..rest.find(after)?].trim().parse().ok()
}

/// `count` events, half threats and half detections, spread evenly over the
/// `span` before `newest`.
pub fn seed(fake: &FakeApi, first: u64, count: u64, newest: DateTime<Utc>, span: TimeDelta) {
    let threats = count / 2;
    let detections = count - threats;
    let step = |n: u64| span / (n.max(1) as i32);
    let (t_step, d_step) = (step(threats), step(detections));
    fake.add_threats(
        (0..threats)
            .map(|i| threat(first + i, &threat_time(newest - t_step * i as i32)))
            .collect(),
    );
    fake.add_detections(
        (0..detections)
            .map(|i| detection(first + i, &detection_time(newest - d_step * i as i32)))
            .collect(),
    );
}

/// Idle poll: the median run after a first poll, with nothing new.
pub fn idle_poll(bin: &Path, sizes: &Sizes) -> Measured {
    let tenant = TestEnv::new(bin);
    seed(
        &tenant.fake,
        0,
        100,
        Utc::now() - TimeDelta::hours(2),
        TimeDelta::hours(1),
    );
    measure(&tenant, "idle", &["poll"]);
    let mut runs: Vec<Measured> = (0..sizes.idle_runs)
        .map(|_| measure(&tenant, "idle", &["poll"]))
        .collect();
    runs.sort_by_key(|m| m.wall);
    runs.swap_remove(runs.len() / 2)
}

/// Request economy: a tenant with many threats, 5 of them new, and a server
/// that ignores the time filter. Returns the poll after the new ones came.
pub fn request_economy(bin: &Path, sizes: &Sizes) -> Measured {
    let tenant = TestEnv::new(bin);
    tenant.fake.set_honour_time_filters(false);
    let old = Utc::now() - TimeDelta::days(2);
    tenant.fake.add_threats(
        (0..sizes.economy_threats)
            .map(|i| threat(i, &threat_time(old - TimeDelta::seconds(i as i64))))
            .collect(),
    );
    measure(
        &tenant,
        "economy",
        &["poll", "--sources", "threats", "--initial-lookback", "1h"],
    );
    let now = Utc::now();
    tenant.fake.add_threats(
        (0..5)
            .map(|i| {
                threat(
                    1_000_000 + i,
                    &threat_time(now - TimeDelta::seconds(i as i64)),
                )
            })
            .collect(),
    );
    measure(&tenant, "economy", &["poll", "--sources", "threats"])
}

/// A tenant with `events` over the last 20 hours and `latency` per answer:
/// the data of both backfill scenarios.
fn backfill_tenant(bin: &Path, events: u64, latency: Duration) -> TestEnv {
    let tenant = TestEnv::new(bin);
    let newest = Utc::now() - TimeDelta::minutes(5);
    seed(&tenant.fake, 0, events, newest, TimeDelta::hours(20));
    tenant.fake.set_delay(latency);
    tenant
}

/// A backfill of `events` over the last 20 hours, with `latency` per answer.
pub fn backfill(
    bin: &Path,
    name: &str,
    events: u64,
    latency: Duration,
    extra: &[&str],
) -> Measured {
    let tenant = backfill_tenant(bin, events, latency);
    let mut args = vec!["backfill", "--since", "1d"];
    args.extend_from_slice(extra);
    measure(&tenant, name, &args)
}

/// The simplest sequential implementation, for comparison: one request at a
/// time, every item parsed into a `serde_json::Value`, the two keys inserted,
/// the object serialized again, a HashSet for dedupe, one fsync at the end.
pub fn naive_backfill(bin: &Path, name: &str, events: u64, latency: Duration) -> Measured {
    let tenant = backfill_tenant(bin, events, latency);
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let now = Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "http://cylance.com", "sub": tenant.creds.app_id, "tid": tenant.creds.tenant_id,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 1800,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(tenant.creds.app_secret.as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let answer: serde_json::Value = agent
        .post(format!("{}/auth/v2/token", tenant.fake.url()))
        .header("Content-Type", "application/json; charset=utf-8")
        .send_json(serde_json::json!({ "auth_token": jwt }))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let bearer = format!("Bearer {}", answer["access_token"].as_str().unwrap());
    let mut out = std::io::BufWriter::new(std::fs::File::create(tenant.output()).unwrap());
    let mut seen = std::collections::HashSet::new();
    let mut written = 0;
    let since = Utc::now() - TimeDelta::days(1);
    for (path, event_type, page_size, query) in [
        (
            "/threats/v2",
            "threat",
            200,
            vec![("start_time", threat_time(since))],
        ),
        (
            "/detections/v2",
            "detection",
            100,
            vec![("start", detection_time(since))],
        ),
    ] {
        let mut page = 1;
        loop {
            let mut request = agent
                .get(format!("{}{path}", tenant.fake.url()))
                .header("Authorization", &bearer)
                .header("Accept", "application/json")
                .query("page", page.to_string())
                .query("page_size", page_size.to_string());
            for (name, value) in &query {
                request = request.query(*name, value);
            }
            let body: serde_json::Value = request
                .call()
                .unwrap_or_else(|e| panic!("{name}: page {page} of {path}: {e}"))
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_json()
                .unwrap();
            let items = body["page_items"].as_array().cloned().unwrap_or_default();
            for item in &items {
                let key = format!("{}{}{}", item["sha256"], item["last_found"], item["Id"]);
                if !seen.insert(key) {
                    continue;
                }
                let mut line = serde_json::Map::new();
                line.insert("event_type".into(), event_type.into());
                line.insert("tenant_id".into(), tenant.creds.tenant_id.clone().into());
                line.extend(item.as_object().unwrap().clone());
                serde_json::to_writer(&mut out, &line).unwrap();
                out.write_all(b"\n").unwrap();
                written += 1;
            }
            if items.is_empty() || page >= body["total_pages"].as_u64().unwrap_or(0) {
                break;
            }
            page += 1;
        }
    }
    out.into_inner().unwrap().sync_data().unwrap();
    Measured {
        wall: started.elapsed(),
        events: written,
        list_requests: tenant.fake.requests().len() - 1,
        token_requests: 1,
        ..Measured::default()
    }
}
