//! The benchmark: `cargo bench --bench poller` (sizes: `BENCH_SIZE=tiny|small|full`,
//! default full; a full run takes several minutes, most of it the rate-limited
//! latency scenario). Prints one table: each scenario's figure, its target, and
//! the same scenario with `--concurrency 1` and with the simplest sequential
//! implementation, as ratios. `BENCH_ONLY=cost` prints the rows of README's
//! cost table (requests and time per case and `--enrich`). Figures from
//! shared machines are noisy: compare within one run, not across runs.
//!
//! The scenarios live in `fake_cylance::scenarios`, where the smoke test
//! (`tests/it/bench_smoke.rs`) runs them too.

use fake_cylance::scenarios::{self, Events, Measured, Sizes};
use std::path::Path;
use std::time::Duration;

/// One row group of the table.
type Scenario = fn(&Path, &Sizes, &mut Table);

const BIN: &str = env!("CARGO_BIN_EXE_cylance-logs");

fn main() {
    // `cargo bench` passes --bench; nothing else is taken. BENCH_ONLY=NAME runs
    // one scenario: idle, economy, throughput, latency, distant, memory,
    // tenants, lookups or cost.
    let sizes = Sizes::from_env();
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let bin = Path::new(BIN);
    let mut table = Table::default();
    println!(
        "cylance-logs benchmark, sizes: {} ({} cores)",
        sizes.name,
        cores()
    );
    let scenarios: [(&str, Scenario); 9] = [
        ("idle", idle),
        ("lookups", lookups),
        ("economy", economy),
        ("throughput", throughput),
        ("latency", latency),
        ("distant", distant),
        ("memory", memory),
        ("tenants", tenants),
        ("cost", cost),
    ];
    for (name, scenario) in scenarios {
        if wanted(name) {
            scenario(bin, &sizes, &mut table);
        }
    }
    table.print();
    println!(
        "ratios: how many times better than --concurrency 1 / the naive implementation (>1 = this is better)"
    );
}

/// An idle poll with the default sources and the default `--enrich`.
fn idle(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let idle = scenarios::idle_poll(bin, sizes, "threat-devices");
    table.row(
        "idle poll, default sources and lookups: requests",
        format!(
            "{} token + {} list + {} lookup",
            idle.token_requests, idle.list_requests, idle.lookup_requests
        ),
        "1 + 1 per source, no lookup",
        None,
        None,
    );
    table.row("idle poll: wall time", ms(idle.wall), "< 20 ms", None, None);
    table.row("idle poll: peak RSS", mib(&idle), "< 10 MiB", None, None);
}

/// N new threats, each with its `threat-devices` lookup, at the default
/// `--max-rps`: the lookups share the limit with the lists, so the poll
/// should take about N / max-rps.
fn lookups(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let rps = 10.0;
    let n = sizes.lookup_threats;
    let run = scenarios::new_threats_with_lookups(bin, n);
    table.row(
        &format!("{n} new threats, threat-devices lookups: time / (N / max-rps)"),
        format!(
            "{:.2}x ({:.1} s; {} lookups, {} requests in all)",
            run.wall.as_secs_f64() / (n as f64 / rps),
            run.wall.as_secs_f64(),
            run.lookup_requests,
            run.token_requests + run.list_requests + run.lookup_requests
        ),
        "<= 1.3x",
        None,
        None,
    );
}

/// The README's cost table: requests and time per case and `--enrich`, at
/// the default `--max-rps` 10; the backfill runs at `--max-rps 0` and its
/// time is stated as requests / 10 (what the limit allows), not measured.
fn cost(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let enrich = ["none", "threat-devices", "threat-devices,detection-details"];
    let requests = |m: &Measured| m.token_requests + m.list_requests + m.lookup_requests;
    let figure = |m: &Measured, time: String| {
        format!(
            "{} requests ({} token + {} list + {} lookup), {time}",
            requests(m),
            m.token_requests,
            m.list_requests,
            m.lookup_requests
        )
    };
    for e in enrich {
        let idle = scenarios::idle_poll(bin, sizes, e);
        table.row(
            &format!("cost: idle poll, --enrich {e}"),
            figure(&idle, ms(idle.wall)),
            "(reported)",
            None,
            None,
        );
    }
    let busy = Events::BUSY_MINUTE;
    for e in enrich {
        let run = scenarios::busy_minute(bin, busy, e);
        table.row(
            &format!(
                "cost: busy minute ({} threats, {} detections, {} memory protection), --enrich {e}",
                busy.threats, busy.detections, busy.memory_protection
            ),
            figure(&run, seconds(run.wall)),
            "(reported)",
            None,
            None,
        );
    }
    let backfill = sizes.backfill_cost;
    for e in enrich {
        let run = scenarios::backfill_30_days(bin, backfill, e, &["--max-rps", "0"]);
        table.row(
            &format!(
                "cost: 30-day backfill ({} threats, {} detections, {} memory protection), --enrich {e}",
                backfill.threats, backfill.detections, backfill.memory_protection
            ),
            figure(
                &run,
                format!(
                    "{:.0} s at --max-rps 10 (requests / 10; {:.1} s at --max-rps 0)",
                    requests(&run) as f64 / 10.0,
                    run.wall.as_secs_f64()
                ),
            ),
            "(reported)",
            None,
            None,
        );
    }
}

fn economy(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let economy = scenarios::request_economy(bin, sizes);
    table.row(
        &format!(
            "{} threats, 5 new, filter ignored: threat pages",
            sizes.economy_threats
        ),
        economy.list_requests.to_string(),
        "1",
        None,
        None,
    );
}

fn throughput(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let events = sizes.throughput_events;
    let fast = scenarios::backfill(
        bin,
        "throughput",
        events,
        Duration::ZERO,
        &["--max-rps", "0"],
    );
    let fast_one = scenarios::backfill(
        bin,
        "throughput-1",
        events,
        Duration::ZERO,
        &["--max-rps", "0", "--concurrency", "1"],
    );
    let fast_naive = scenarios::naive_backfill(bin, "throughput-naive", events, Duration::ZERO);
    table.row(
        &format!("throughput, {events} events: events/s"),
        format!("{:.0}", fast.events_per_second()),
        ">= 200000",
        Some(fast.events_per_second() / fast_one.events_per_second()),
        Some(fast.events_per_second() / fast_naive.events_per_second()),
    );
    table.row(
        "throughput: CPU per 1000 events",
        fast.cpu_ms_per_1000_events()
            .map_or("?".into(), |v| format!("{v:.2} ms")),
        "(reported)",
        None,
        None,
    );
}

fn latency(bin: &Path, sizes: &Sizes, table: &mut Table) {
    latency_row(bin, table, "latency", sizes.latency_events, sizes.latency);
}

/// A distant region: when a request takes longer than 1 / max-rps, only
/// requests in flight together can keep to the rate limit.
fn distant(bin: &Path, sizes: &Sizes, table: &mut Table) {
    latency_row(
        bin,
        table,
        "distant",
        sizes.latency_events / 10,
        sizes.latency * 3,
    );
}

fn latency_row(bin: &Path, table: &mut Table, name: &str, events: u64, latency: Duration) {
    let rps = 10.0;
    let slow = scenarios::backfill(bin, name, events, latency, &[]);
    let slow_one = scenarios::backfill(
        bin,
        &format!("{name}-1"),
        events,
        latency,
        &["--concurrency", "1"],
    );
    let slow_naive = scenarios::naive_backfill(bin, &format!("{name}-naive"), events, latency);
    let allowed = (slow.list_requests + slow.token_requests) as f64 / rps;
    table.row(
        &format!(
            "{events} events, {} ms per request: time / (requests / max-rps)",
            latency.as_millis()
        ),
        format!(
            "{:.2}x ({:.1} s for {} requests)",
            slow.wall.as_secs_f64() / allowed,
            slow.wall.as_secs_f64(),
            slow.list_requests + 1
        ),
        "<= 1.3x",
        Some(slow_one.wall.as_secs_f64() / slow.wall.as_secs_f64()),
        Some(slow_naive.wall.as_secs_f64() / slow.wall.as_secs_f64()),
    );
}

fn memory(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let small = scenarios::backfill(
        bin,
        "memory-small",
        sizes.memory_small,
        Duration::ZERO,
        &["--max-rps", "0"],
    );
    let large = scenarios::backfill(
        bin,
        "memory-large",
        sizes.memory_large,
        Duration::ZERO,
        &["--max-rps", "0"],
    );
    let ratio = large.peak_memory_kib.unwrap_or(0) as f64
        / small.peak_memory_kib.unwrap_or(1).max(1) as f64;
    table.row(
        &format!(
            "peak RSS {} vs {} events",
            sizes.memory_large, sizes.memory_small
        ),
        format!("{:.2}x ({} vs {})", ratio, mib(&large), mib(&small)),
        "<= 2x",
        None,
        None,
    );
}

/// Many tenants, one file: 1,000 pollers at once, twice. The second round
/// must cost each poller about what the first did, whatever the others
/// appended in between.
fn tenants(bin: &Path, sizes: &Sizes, table: &mut Table) {
    let run = scenarios::many_tenants(bin, sizes);
    let (first, second) = (&run.first, &run.second);
    let round = |r: &scenarios::Round| {
        format!(
            "{:.1} s, CPU {:.1} ms per poll",
            r.wall.as_secs_f64(),
            r.cpu_ms_per_poll()
        )
    };
    let name = format!(
        "{} tenants into one file, {} new events each",
        sizes.tenants, sizes.tenant_events
    );
    table.row(
        &format!("{name}: first polls"),
        round(first),
        "(baseline)",
        None,
        None,
    );
    table.row(
        &format!("{name}: second polls"),
        round(second),
        "< 60 s",
        None,
        None,
    );
    table.row(
        "tenants: second-poll CPU / first-poll CPU",
        format!(
            "{:.2}x",
            second.cpu_ms_per_poll() / first.cpu_ms_per_poll().max(1e-9)
        ),
        "<= 1.5x",
        None,
        None,
    );
    if run.distinct != run.lines {
        println!(
            "tenants: {} lines but {} distinct events: written twice",
            run.lines, run.distinct
        );
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(
        &mut self,
        name: &str,
        figure: String,
        target: &str,
        vs_one: Option<f64>,
        vs_naive: Option<f64>,
    ) {
        let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
        self.rows.push([
            name.into(),
            figure,
            target.into(),
            ratio(vs_one),
            ratio(vs_naive),
        ]);
    }

    fn print(&self) {
        let header = [
            "scenario",
            "figure",
            "target",
            "vs --concurrency 1",
            "vs naive",
        ]
        .map(String::from);
        let all: Vec<&[String; 5]> = std::iter::once(&header).chain(&self.rows).collect();
        let widths: Vec<usize> = (0..5)
            .map(|c| all.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for (i, row) in all.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("| {} |", cells.join(" | "));
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                println!("| {} |", rule.join(" | "));
            }
        }
    }
}

/// Seconds, or milliseconds under one.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        ms(d)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(m: &Measured) -> String {
    m.peak_memory_kib
        .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
