//! The benchmark's scenarios, shared by the benchmark itself
//! (`benches/poller`: full sizes, release build, prints a table) and its
//! smoke test (`tests/it/bench_smoke.rs`: tiny sizes, asserts the exact
//! request counts, no timing).
//!
//! Each scenario runs the real binary against the fake API on loopback and
//! measures the whole process: wall time here, peak memory and CPU from the
//! `resources:` line the binary prints at `-v`.

use crate::env::TestEnv;
use crate::fake::{Credentials, FakeApi};
use crate::sample::{detection, memory_protection_event, threat};
use crate::time::{detection_time, threat_time};
use chrono::{DateTime, TimeDelta, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    /// Many tenants, one file: pollers started at once, tenants served by
    /// one fake, new events per tenant and poll.
    pub tenants: usize,
    pub tenants_per_fake: usize,
    pub tenant_events: u64,
    /// New threats of the lookup scenario, each with its `threat-devices` lookup.
    pub lookup_threats: u64,
    /// The cost table's backfill: threats, detections and memory-protection
    /// events over 30 days.
    pub backfill_cost: Events,
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
            tenants: 1_000,
            tenants_per_fake: 25,
            tenant_events: 6,
            lookup_threats: 100,
            backfill_cost: Events::BACKFILL,
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
            tenants: 200,
            tenants_per_fake: 25,
            tenant_events: 6,
            lookup_threats: 100,
            backfill_cost: Events::BACKFILL,
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
            tenants: 6,
            tenants_per_fake: 4,
            tenant_events: 4,
            lookup_threats: 5,
            backfill_cost: Events {
                threats: 400,
                detections: 200,
                memory_protection: 200,
            },
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
    /// Requests for list pages (threats, detections, memory protection, devices).
    pub list_requests: usize,
    /// Requests of the `--enrich` lookups (a threat's devices, a detection's details).
    pub lookup_requests: usize,
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
    // The scenarios measure the lists: no lookup (issue 12's `--enrich`)
    // unless a scenario asks for one.
    if !args.contains(&"--enrich") {
        args.extend(["--enrich", "none"]);
    }
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
        list_requests: new
            .iter()
            .filter(|r| r.path != "/auth/v2/token" && !is_lookup(&r.path))
            .count(),
        lookup_requests: new.iter().filter(|r| is_lookup(&r.path)).count(),
        events: summary_events(&stderr),
        peak_memory_kib: resource(&stderr, "peak memory ", " KiB").map(|v| v as u64),
        cpu_seconds: resource(&stderr, "CPU ", "s user")
            .zip(resource(&stderr, "user + ", "s system"))
            .map(|(user, system)| user + system),
    }
}

/// A lookup's path: `/threats/v2/{sha256}/devices`, `/detections/v2/{Id}/details`.
fn is_lookup(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (Some("threats"), Some("v2"), Some(_), Some("devices"), None)
            | (
                Some("detections"),
                Some("v2"),
                Some(_),
                Some("details"),
                None
            )
    )
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

/// Idle poll: the median run after a first poll, with nothing new; `enrich`
/// is the `--enrich` value of both polls.
pub fn idle_poll(bin: &Path, sizes: &Sizes, enrich: &str) -> Measured {
    let tenant = TestEnv::new(bin);
    seed(
        &tenant.fake,
        0,
        100,
        Utc::now() - TimeDelta::hours(2),
        TimeDelta::hours(1),
    );
    let args = ["poll", "--enrich", enrich];
    measure(&tenant, "idle", &args);
    let mut runs: Vec<Measured> = (0..sizes.idle_runs)
        .map(|_| measure(&tenant, "idle", &args))
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

/// Events of each windowed source, for the README's cost table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Events {
    pub threats: u64,
    pub detections: u64,
    pub memory_protection: u64,
}

impl Events {
    /// The cost table's busy minute.
    pub const BUSY_MINUTE: Events = Events {
        threats: 20,
        detections: 10,
        memory_protection: 10,
    };

    /// The cost table's 30-day backfill.
    pub const BACKFILL: Events = Events {
        threats: 10_000,
        detections: 5_000,
        memory_protection: 5_000,
    };

    /// Adds these events to `fake`, numbered from `first`, spread evenly over
    /// the `span` before `newest`.
    fn seed(&self, fake: &FakeApi, first: u64, newest: DateTime<Utc>, span: TimeDelta) {
        let at = |i: u64, n: u64| newest - span / (n.max(1) as i32) * i as i32;
        fake.add_threats(
            (0..self.threats)
                .map(|i| threat(first + i, &threat_time(at(i, self.threats))))
                .collect(),
        );
        fake.add_detections(
            (0..self.detections)
                .map(|i| detection(first + i, &detection_time(at(i, self.detections))))
                .collect(),
        );
        fake.add_memory_protection(
            (0..self.memory_protection)
                .map(|i| {
                    memory_protection_event(first + i, &threat_time(at(i, self.memory_protection)))
                })
                .collect(),
        );
    }
}

/// A busy minute: after a first poll that wrote as many events from the
/// minutes before, `events` arrive within a minute; returns the next poll
/// (the default sources, at the default `--max-rps`) with `--enrich enrich`.
/// That poll reads the earlier events again in its overlap, and must neither
/// write nor look them up again.
pub fn busy_minute(bin: &Path, events: Events, enrich: &str) -> Measured {
    let tenant = TestEnv::new(bin);
    let args = ["poll", "--enrich", enrich];
    events.seed(
        &tenant.fake,
        1_000_000,
        Utc::now() - TimeDelta::minutes(2),
        TimeDelta::minutes(3),
    );
    measure(&tenant, "busy", &args);
    events.seed(
        &tenant.fake,
        0,
        Utc::now() - TimeDelta::seconds(2),
        TimeDelta::minutes(1),
    );
    measure(&tenant, "busy", &args)
}

/// A 30-day backfill of `events` (the default sources) with `--enrich enrich`
/// and `extra` arguments (such as `--max-rps 0`).
pub fn backfill_30_days(bin: &Path, events: Events, enrich: &str, extra: &[&str]) -> Measured {
    let tenant = TestEnv::new(bin);
    events.seed(
        &tenant.fake,
        0,
        Utc::now() - TimeDelta::minutes(5),
        TimeDelta::days(30) - TimeDelta::hours(1),
    );
    let mut args = vec!["backfill", "--since", "30d", "--enrich", enrich];
    args.extend_from_slice(extra);
    measure(&tenant, "backfill-30d", &args)
}

/// Lookups: `count` new threats after an idle first poll, each looked up
/// (`--enrich threat-devices`, the default) at the default `--max-rps`.
/// Each threat's device list fits in one page, so the poll makes one lookup
/// per threat.
pub fn new_threats_with_lookups(bin: &Path, count: u64) -> Measured {
    let tenant = TestEnv::new(bin);
    let args = ["poll", "--enrich", "threat-devices"];
    measure(&tenant, "lookups", &args);
    Events {
        threats: count,
        detections: 0,
        memory_protection: 0,
    }
    .seed(
        &tenant.fake,
        0,
        Utc::now() - TimeDelta::seconds(2),
        TimeDelta::minutes(5),
    );
    measure(&tenant, "lookups", &args)
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

/// One round of `many_tenants`: every poller started at once.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// From the first start to the last exit.
    pub wall: Duration,
    /// All pollers' CPU (user + system) together, as the kernel summed it
    /// for this process's waited-for children: each poller's own
    /// `resources:` line counts whole 10 ms clock ticks, rounded down, which
    /// reads 0 for a poll of a few milliseconds.
    pub cpu_seconds: f64,
    /// Pollers that printed their `resources:` line at -v.
    pub resources_lines: usize,
    /// Each poller's events written, in tenant order.
    pub events: Vec<u64>,
    pub token_requests: usize,
    pub list_requests: usize,
}

impl Round {
    pub fn cpu_ms_per_poll(&self) -> f64 {
        self.cpu_seconds * 1000.0 / self.events.len().max(1) as f64
    }
}

/// What `many_tenants` measured, and the shared file at the end.
#[derive(Debug, Clone)]
pub struct ManyTenants {
    pub first: Round,
    pub second: Round,
    /// Lines in the shared output after both rounds.
    pub lines: usize,
    /// The same lines, each tenant's events counted once: equal to `lines`
    /// when no event was written twice.
    pub distinct: usize,
}

/// Many tenants, one file: `sizes.tenants` pollers, each its own tenant
/// and state directory, all appending to one output, started at once; then,
/// after `tenant_events` more events for everyone, all started again. Only
/// the second round reads a file that other tenants grew since the poller's
/// last commit.
pub fn many_tenants(bin: &Path, sizes: &Sizes) -> ManyTenants {
    let dir =
        std::env::temp_dir().join(format!("cylance-logs-bench-{}-tenants", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveOnDrop(dir.clone());
    let creds = Credentials::sample();
    let secret = dir.join("secret");
    std::fs::write(&secret, &creds.app_secret).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let tenant_ids: Vec<String> = (0..sizes.tenants)
        .map(|i| format!("{i:08x}-0000-4000-8000-{i:012x}"))
        .collect();
    let fakes: Vec<FakeApi> = tenant_ids
        .chunks(sizes.tenants_per_fake.max(1))
        .map(|ids| {
            let fake = FakeApi::start(creds.clone());
            for id in ids {
                fake.accept_tenant(id);
            }
            fake
        })
        .collect();
    let fake_of = |i: usize| &fakes[i / sizes.tenants_per_fake.max(1)];
    let seed_all = |first: u64, newest: DateTime<Utc>| {
        for fake in &fakes {
            seed(
                fake,
                first,
                sizes.tenant_events,
                newest,
                TimeDelta::seconds(30),
            );
        }
    };
    let output = dir.join("out.log");
    let round = |name: &str| {
        let before: Vec<(usize, usize)> = fakes.iter().map(requests_by_kind).collect();
        let cpu_before = children_cpu_seconds();
        let started = Instant::now();
        let children: Vec<_> = tenant_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                // stderr to a file: a pipe each would need 1,000 descriptors here.
                let log = std::fs::File::create(dir.join(format!("{name}-{i}.stderr"))).unwrap();
                Command::new(bin)
                    .env_clear()
                    .env("HOME", &dir)
                    .args([
                        "poll",
                        "-v",
                        "--enrich",
                        "none",
                        "--api-url",
                        &fake_of(i).url(),
                    ])
                    .args(["--app-id", &creds.app_id, "--tenant-id", id])
                    .arg("--app-secret-file")
                    .arg(&secret)
                    .arg("--state-dir")
                    .arg(dir.join(format!("state-{i}")))
                    .arg("--output")
                    .arg(&output)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("the binary starts")
            })
            .collect();
        let statuses: Vec<_> = children
            .into_iter()
            .map(|mut child| child.wait().expect("the binary runs"))
            .collect();
        let wall = started.elapsed();
        let mut measured = Round {
            wall,
            cpu_seconds: children_cpu_seconds() - cpu_before,
            ..Round::default()
        };
        for (i, status) in statuses.iter().enumerate() {
            let path = dir.join(format!("{name}-{i}.stderr"));
            let stderr = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(status.success(), "{name}: tenant {i} failed:\n{stderr}");
            measured.events.push(summary_events(&stderr));
            if resource(&stderr, "CPU ", "s user").is_some() {
                measured.resources_lines += 1;
            }
            let _ = std::fs::remove_file(path);
        }
        for (fake, (tokens, lists)) in fakes.iter().zip(before) {
            let (t, l) = requests_by_kind(fake);
            measured.token_requests += t - tokens;
            measured.list_requests += l - lists;
        }
        measured
    };
    seed_all(0, Utc::now() - TimeDelta::minutes(5));
    let first = round("first");
    seed_all(1_000_000, Utc::now() - TimeDelta::minutes(1));
    let second = round("second");
    let text = std::fs::read_to_string(&output).unwrap();
    let distinct: std::collections::HashSet<String> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
            format!(
                "{}|{}|{}|{}",
                v["tenant_id"], v["sha256"], v["last_found"], v["Id"]
            )
        })
        .collect();
    ManyTenants {
        first,
        second,
        lines: text.lines().count(),
        distinct: distinct.len(),
    }
}

/// The CPU time of this process's waited-for children so far: fields 16
/// and 17 of /proc/self/stat (cutime, cstime), in clock ticks of 1/100 s
/// (proc(5)); the kernel sums them exactly and rounds only the total.
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(13) + ticks(14)) / 100.0
}

/// (token requests, list requests) a fake has seen so far.
fn requests_by_kind(fake: &FakeApi) -> (usize, usize) {
    let tokens = fake.count("/auth/v2/token");
    (tokens, fake.requests().len() - tokens)
}

/// Removes a directory when dropped, also when a scenario panics.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
