//! The test environment: a fresh directory and fake tenant per test, and a
//! runner for the real binary with a scrubbed environment.
//!
//! Every run is also a secrets check: after it, stdout, stderr, the output
//! file, the checkpoint and the lock file are scanned for the app secret, every
//! JWT the fake received and every access token it issued.

use chrono::TimeDelta;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::fake::{Credentials, FakeApi};
use crate::sample::{detection, device, memory_protection_event, threat};
use crate::time::{detection_time, minutes_ago, threat_time};

/// What a finished run left for an operator to see.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect(self, code: i32) -> Outcome {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// The one `error:` line of a failed run.
    pub fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .find(|line| line.contains("error: "))
            .unwrap_or_else(|| panic!("no error line in stderr:\n{}", self.stderr))
    }
}

/// A fresh directory with a secret file, a fake tenant, and the binary to run
/// against them. Dropping it removes the directory (kept when a test fails).
pub struct TestEnv {
    pub dir: PathBuf,
    pub fake: FakeApi,
    pub creds: Credentials,
    bin: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestEnv {
    /// The sample credentials; `bin` is the cylance-logs binary.
    pub fn new(bin: &Path) -> TestEnv {
        Self::with_credentials(bin, Credentials::sample())
    }

    pub fn with_credentials(bin: &Path, creds: Credentials) -> TestEnv {
        let dir = std::env::temp_dir().join(format!(
            "cylance-logs-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("app-secret");
        std::fs::write(&secret, format!("{}\n", creds.app_secret)).unwrap();
        set_mode(&secret, 0o600);
        let fake = FakeApi::start(creds.clone());
        TestEnv {
            dir,
            fake,
            creds,
            bin: bin.to_path_buf(),
        }
    }

    /// The binary this environment runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn output(&self) -> PathBuf {
        self.dir.join("out.log")
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.state_dir().join("checkpoint.json")
    }

    pub fn secret_file(&self) -> PathBuf {
        self.dir.join("app-secret")
    }

    /// The binary with nothing inherited but what a test sets, and the flags
    /// that point it at this test's fake tenant and directory (unless `args`
    /// gives one of them itself); retries wait 10 ms and requests are unpaced,
    /// so many-page tests stay fast (pacing has its own tests).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.deployed_command(&[], args);
        cmd.env("CYLANCE_LOGS_BACKOFF_BASE", "10ms")
            .env("CYLANCE_LOGS_MAX_RPS", "0");
        cmd
    }

    /// Like [`TestEnv::command`] but with the binary's own defaults for
    /// backoff and pacing, as deployed, and run by `wrapper` (a profiler, say:
    /// `["perf", "record", "--"]`) unless that is empty.
    pub fn deployed_command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.env_clear()
            .env("HOME", &self.dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let defaults = [
            ("--api-url", self.fake.url()),
            ("--app-id", self.creds.app_id.clone()),
            ("--tenant-id", self.creds.tenant_id.clone()),
            (
                "--app-secret-file",
                self.secret_file().display().to_string(),
            ),
            ("--state-dir", self.state_dir().display().to_string()),
            ("--output", self.output().display().to_string()),
        ];
        for (flag, value) in defaults {
            if !args.contains(&flag) {
                cmd.arg(flag).arg(value);
            }
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        self.finish(self.command(args).spawn().expect("the binary starts"))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().expect("the binary starts")
    }

    /// Waits for a spawned run and checks it for secrets like `run` does.
    pub fn finish(&self, child: Child) -> Outcome {
        let out = child.wait_with_output().expect("the binary runs");
        let outcome = Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.assert_no_secret_in(&outcome.stdout, "stdout");
        self.assert_no_secret_in(&outcome.stderr, "stderr");
        for path in [
            self.output(),
            self.checkpoint_path(),
            self.state_dir().join("lock"),
        ] {
            self.assert_no_secret_in_file(&path);
        }
        outcome
    }

    /// [`TestEnv::assert_no_secret_in`] for a file, read in chunks: a test
    /// may leave gigabytes in the output (a sparse hole), which must not be
    /// held in memory at once. Chunks overlap by the longest secret, so none
    /// is missed at a boundary (secrets are ASCII: a split character cannot
    /// hide one).
    fn assert_no_secret_in_file(&self, path: &Path) {
        use std::io::Read;
        // What cannot be read as a file (missing, a directory) holds no secret.
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        let longest = self.secrets().iter().map(String::len).max().unwrap_or(0);
        let (mut chunk, mut buf) = (Vec::new(), vec![0u8; 16 << 20]);
        loop {
            let read = match file.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            chunk.extend_from_slice(&buf[..read]);
            self.assert_no_secret_in(
                &String::from_utf8_lossy(&chunk),
                &path.display().to_string(),
            );
            chunk.drain(..chunk.len().saturating_sub(longest));
        }
    }

    /// The app secret and every token and JWT of the fake so far.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.creds.app_secret.clone()];
        secrets.extend(self.fake.issued_tokens());
        secrets.extend(self.fake.received_jwts());
        secrets
    }

    pub fn assert_no_secret_in(&self, text: &str, what: &str) {
        for secret in self.secrets() {
            assert!(
                !text.contains(&secret),
                "a secret or token appears in {what}"
            );
        }
    }

    /// Every line of the output file, each parsed (a torn line fails the test).
    pub fn lines(&self) -> Vec<Value> {
        read_lines(&self.output())
    }

    pub fn checkpoint(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.checkpoint_path()).unwrap()).unwrap()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the output ends in a partial line"
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("torn line {line:?}: {e}"))
        })
        .collect()
}

/// Threats `first..first+count`, spread one second apart ending `minutes` ago.
pub fn threats(first: u64, count: u64, minutes: i64) -> Vec<Value> {
    let end = minutes_ago(minutes);
    (0..count)
        .map(|i| threat(first + i, &threat_time(end - TimeDelta::seconds(i as i64))))
        .collect()
}

pub fn detections(first: u64, count: u64, minutes: i64) -> Vec<Value> {
    let end = minutes_ago(minutes);
    (0..count)
        .map(|i| {
            detection(
                first + i,
                &detection_time(end - TimeDelta::seconds(i as i64)),
            )
        })
        .collect()
}

/// Memory-protection events `first..first+count`, `created` one second apart
/// ending `minutes` ago (served in an order unrelated to that).
pub fn memory_protection_events(first: u64, count: u64, minutes: i64) -> Vec<Value> {
    let end = minutes_ago(minutes);
    (0..count)
        .map(|i| {
            memory_protection_event(first + i, &threat_time(end - TimeDelta::seconds(i as i64)))
        })
        .collect()
}

/// Devices `first..first+count` (`0..12` is the fleet the other generators
/// name), registered a day apart, the last `days` ago.
pub fn devices(first: u64, count: u64, days: i64) -> Vec<Value> {
    let newest = minutes_ago(days * 24 * 60);
    (0..count)
        .map(|i| device(first + i, &threat_time(newest - TimeDelta::days(i as i64))))
        .collect()
}

/// How many lines have this `event_type`.
pub fn count_type(lines: &[Value], event_type: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["event_type"] == event_type)
        .count()
}

/// Asserts that no event appears twice within its tenant: threats by sha256 +
/// last_found, detections by Id, memory protection by
/// device_image_file_event_id, devices by id within their snapshot
/// (`snapshot_time`, issue 12's names).
pub fn assert_each_once(lines: &[Value]) {
    let mut keys = std::collections::HashSet::new();
    for line in lines {
        let tenant = &line["tenant_id"];
        let key = match line["event_type"].as_str() {
            Some("threat") => format!("threat|{tenant}|{}|{}", line["sha256"], line["last_found"]),
            Some("detection") => format!("detection|{tenant}|{}", line["Id"]),
            Some("memory_protection") => {
                format!("memory|{tenant}|{}", line["device_image_file_event_id"])
            }
            Some("device") => format!("device|{tenant}|{}|{}", line["snapshot_time"], line["id"]),
            other => panic!("unexpected event_type {other:?}"),
        };
        assert!(keys.insert(key.clone()), "written twice: {key}");
    }
}

/// Where an outside tool the test needs is installed, looked up on `PATH`
/// and in the sbin directories (logrotate lives there, often off `PATH`);
/// `None` after [`skip`] when it is missing.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        skip(&format!("{tool} is not installed"));
    }
    found
}

/// A test that cannot run here must not pass silently. Under `CI=true` this
/// panics (CI installs every tool, see `.ci/run`, so this is a broken run);
/// elsewhere it writes a note straight to the process's stderr, which the
/// test harness does not capture (it captures only `eprintln!`), so a
/// developer sees what did not run. The caller then returns.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{test}: {why}, and under CI=true no test may skip");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (test {test}): {why}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_once_tells_events_apart_by_their_keys() {
        let line = |event_type: &str, extra: Value| {
            let mut line = json!({ "event_type": event_type, "tenant_id": "t" });
            line.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            line
        };
        let memory = line(
            "memory_protection",
            json!({ "device_image_file_event_id": "m1" }),
        );
        let device = |at: &str| line("device", json!({ "id": "d1", "snapshot_time": at }));
        let distinct = vec![
            line(
                "threat",
                json!({ "sha256": "A", "last_found": "2024-05-14T09:00:00" }),
            ),
            line(
                "threat",
                json!({ "sha256": "A", "last_found": "2024-05-14T10:00:00" }),
            ),
            line("detection", json!({ "Id": "m1" })),
            memory.clone(),
            device("2024-05-14T09:00:00Z"),
            device("2024-05-15T09:00:00Z"),
        ];
        assert_each_once(&distinct);
        for twice in [memory, device("2024-05-14T09:00:00Z")] {
            let mut lines = distinct.clone();
            lines.push(twice);
            let caught = std::panic::catch_unwind(|| assert_each_once(&lines));
            assert!(caught.is_err(), "a repeat goes unnoticed");
        }
    }
}
