//! The real `cylance-logs poll` against a bundled fake tenant: no credentials,
//! no network. `cargo run --example demo [-- --keep-serving]`
//!
//! Starts the tests' fake Cylance API on loopback, seeded with threats and
//! detections like the API notes' samples, runs a poll through the same code as
//! the binary, prints the lines it wrote, then shows a second poll writing
//! nothing new, and `status`.
//!
//! Its files stay in one fixed directory under the system temp dir
//! (`cylance-logs-demo`, replaced by each demo run), and it ends by saying
//! how to look at them. The fake lives only as long as this process, so
//! polling it again by hand needs `--keep-serving`: the fake then stays up
//! until Ctrl-C, adds a threat and a detection every 30 s, and the demo
//! prints the full `poll` command to run in another terminal. The secret
//! file holds the fake's sample secret; only its path is ever printed.

use fake_cylance::{
    Credentials, FakeApi, detection, detection_time, sample_tenant, threat, threat_time,
};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often `--keep-serving` adds a new threat and a new detection.
const NEW_EVENTS_EVERY: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let keep_serving = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => false,
        [flag] if flag == "--keep-serving" => true,
        _ => {
            eprintln!("usage: cargo run --example demo [-- --keep-serving]");
            return ExitCode::from(2);
        }
    };
    let creds = Credentials::sample();
    let fake = FakeApi::start(creds.clone());
    sample_tenant(&fake, chrono::Utc::now());

    let dir = std::env::temp_dir().join("cylance-logs-demo");
    if let Err(why) = fresh_dir(&dir) {
        eprintln!("demo: cannot make a fresh {}: {why}", dir.display());
        return ExitCode::from(74);
    }
    let secret_file = dir.join("app-secret");
    let state_dir = dir.join("state");
    let output = dir.join("cylance-protect.log");
    if let Err(why) = write_private(&secret_file, &creds.app_secret) {
        eprintln!("demo: cannot write {}: {why}", secret_file.display());
        return ExitCode::from(74);
    }
    let url = fake.url();
    let store = [
        format!("--state-dir={}", state_dir.display()),
        format!("--output={}", output.display()),
    ];
    let api = [
        format!("--api-url={url}"),
        format!("--app-id={}", creds.app_id),
        format!("--tenant-id={}", creds.tenant_id),
        format!("--app-secret-file={}", secret_file.display()),
    ];
    let poll: Vec<String> = ["poll".to_string()]
        .into_iter()
        .chain(api.iter().cloned())
        .chain(store.iter().cloned())
        .collect();
    let status: Vec<String> = ["status".to_string()]
        .into_iter()
        .chain(store.iter().cloned())
        .collect();
    let run = |args: &[String]| {
        cylance_logs::main_with_args(
            std::iter::once("cylance-logs".to_string()).chain(args.iter().cloned()),
        )
    };

    eprintln!("== cylance-logs poll (fake tenant at {url})");
    let code = run(&poll);
    if code != ExitCode::SUCCESS {
        return code;
    }
    let written = std::fs::read_to_string(&output).unwrap_or_default();
    eprintln!(
        "== {} lines in {}:",
        written.lines().count(),
        output.display()
    );
    print!("{written}");

    eprintln!("== a second poll finds nothing new");
    let code = run(&poll);
    if code != ExitCode::SUCCESS {
        return code;
    }
    eprintln!("== cylance-logs status");
    let code = run(&status);
    if code != ExitCode::SUCCESS {
        return code;
    }

    eprintln!();
    eprintln!(
        "== Kept in {} (replaced by the next demo run):",
        dir.display()
    );
    eprintln!("   the log         {}", output.display());
    eprintln!(
        "   the checkpoint  {}",
        state_dir.join("checkpoint.json").display()
    );
    eprintln!(
        "   the secret      {} (the fake's sample secret)",
        secret_file.display()
    );
    eprintln!("== Look at the log, and at what is written:");
    eprintln!("   less {}", quoted(&output.display().to_string()));
    eprintln!("   cargo run -q -- {}", command_line(&status));
    if !keep_serving {
        eprintln!("== The fake tenant stopped with the demo. To keep it up and poll it by hand:");
        eprintln!("   cargo run --example demo -- --keep-serving");
        return ExitCode::SUCCESS;
    }

    // The polls above made SIGINT only set the library's flag; a flag of our
    // own lets Ctrl-C end this loop.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(why) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("demo: cannot handle Ctrl-C: {why}");
            return ExitCode::from(70);
        }
    }
    eprintln!(
        "== The fake tenant keeps serving at {url} until Ctrl-C; a new threat and a new \
         detection arrive every {}s.",
        NEW_EVENTS_EVERY.as_secs()
    );
    eprintln!("   In another terminal, in this directory, poll it and see what was written:");
    eprintln!("   cargo run -q -- {}", command_line(&poll));
    eprintln!("   cargo run -q -- {}", command_line(&status));
    let mut next = Instant::now() + NEW_EVENTS_EVERY;
    let mut seed = 9000;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next {
            // A second in the past: inside the window of a poll started now.
            let at = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
            fake.add_threats(vec![threat(seed, &threat_time(at))]);
            fake.add_detections(vec![detection(seed, &detection_time(at))]);
            seed += 1;
            next += NEW_EVENTS_EVERY;
        }
    }
    eprintln!("== Stopped; the files stay in {}", dir.display());
    ExitCode::SUCCESS
}

/// Removes what an earlier demo left at `dir` (a symlink there is removed,
/// never followed) and makes it anew, owner-only.
fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dir)?,
        Ok(_) => std::fs::remove_file(dir)?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Writes `text` to a new file of mode 0600.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(text.as_bytes())
}

/// The arguments as one shell command line, each quoted where needed.
fn command_line(args: &[String]) -> String {
    args.iter().map(|a| quoted(a)).collect::<Vec<_>>().join(" ")
}

/// `text` as one shell word: as it is when that is safe, else in single quotes.
fn quoted(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
