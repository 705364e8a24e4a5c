//! Configuration as an operator meets it: flags, variables, help.

use crate::support::*;

#[test]
fn options_work_before_and_after_the_subcommand() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 5));
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear()
        .env("HOME", &env.dir)
        .args(["--api-url", &env.fake.url(), "--app-id", &env.creds.app_id])
        .arg("--state-dir")
        .arg(env.state_dir())
        .arg("poll")
        .args(["--tenant-id", &env.creds.tenant_id, "--sources", "threats"])
        .arg("--app-secret-file")
        .arg(env.secret_file())
        .arg("--output")
        .arg(env.output());
    let out = env.finish(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    out.expect(0);
    assert_eq!(env.lines().len(), 2);
}

#[test]
fn environment_variables_configure_a_run_without_flags() {
    let env = TestEnv::new();
    env.fake.add_detections(detections(0, 3, 5));
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear()
        .env("HOME", &env.dir)
        .env("CYLANCE_API_URL", env.fake.url())
        .env("CYLANCE_APP_ID", &env.creds.app_id)
        .env("CYLANCE_TENANT_ID", &env.creds.tenant_id)
        .env("CYLANCE_APP_SECRET", &env.creds.app_secret)
        .env("CYLANCE_LOGS_STATE_DIR", env.state_dir())
        .env("CYLANCE_LOGS_OUTPUT", env.output())
        .env("CYLANCE_LOGS_SOURCES", "detections")
        .arg("poll")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    env.finish(cmd.spawn().unwrap()).expect(0);
    assert_eq!(env.lines().len(), 3);
}

#[test]
fn help_never_shows_the_secret_from_the_environment() {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("CYLANCE_APP_SECRET", "super-secret-value-123")
        .env("CYLANCE_APP_ID", "visible-app")
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("CYLANCE_APP_SECRET"),
        "help names the variable"
    );
    assert!(!help.contains("super-secret-value-123"));
    assert!(
        !help.contains("--app-secret "),
        "the secret is never a flag"
    );
}

#[test]
fn systemd_credential_directory_supplies_the_secret() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 1, 5));
    let creds = env.dir.join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("cylance-app-secret"), &env.creds.app_secret).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear()
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("HOME", &env.dir)
        .args([
            "poll",
            "--api-url",
            &env.fake.url(),
            "--app-id",
            &env.creds.app_id,
        ])
        .args(["--tenant-id", &env.creds.tenant_id, "--sources", "threats"])
        .arg("--state-dir")
        .arg(env.state_dir())
        .arg("--output")
        .arg(env.output())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    env.finish(cmd.spawn().unwrap()).expect(0);
    assert_eq!(env.lines().len(), 1);
}

#[test]
fn secret_file_readable_by_others_gets_a_warning() {
    let env = TestEnv::new();
    set_mode(&env.secret_file(), 0o644);
    let out = env.run(&["poll"]).expect(0);
    assert!(
        out.stderr.contains("warning: the secret file"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("readable by group or others"));
}

#[test]
fn unreadable_or_empty_ca_file_is_78_naming_it() {
    let env = TestEnv::new();
    let missing = env.dir.join("no-such-ca.pem").display().to_string();
    let out = env.run(&["poll", "--ca-file", &missing]).expect(78);
    assert!(
        out.error_line().contains("cannot read --ca-file"),
        "{}",
        out.stderr
    );
    assert!(out.error_line().contains("no-such-ca.pem"));
    let not_pem = env.dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let out = env
        .run(&["poll", "--ca-file", &not_pem.display().to_string()])
        .expect(78);
    assert!(
        out.error_line().contains("no certificate in it"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.fake.requests().len(),
        0,
        "nothing sent without the trust it was told to use"
    );
}

/// A minimal HTTP CONNECT proxy on loopback; counts the tunnels it opened.
fn connect_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tunnels = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut client = client;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let Ok(upstream) = TcpStream::connect(&target) else {
                    return;
                };
                if !head.starts_with("CONNECT ") {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut from_client, mut to_upstream) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_upstream);
                    let _ = to_upstream.shutdown(Shutdown::Write);
                });
                let (mut from_upstream, mut to_client) = (upstream, client);
                let _ = std::io::copy(&mut from_upstream, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Write);
            });
        }
    });
    (url, tunnels)
}

#[test]
fn https_proxy_is_used_and_no_proxy_bypasses_it() {
    use std::sync::atomic::Ordering;
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    let (proxy, tunnels) = connect_proxy();
    let mut cmd = env.command(&["poll", "--sources", "threats"]);
    cmd.env("HTTPS_PROXY", &proxy);
    env.finish(cmd.spawn().unwrap()).expect(0);
    assert!(
        tunnels.load(Ordering::SeqCst) >= 1,
        "the requests did not go through the proxy"
    );
    assert_eq!(env.lines().len(), 3);
    let before = tunnels.load(Ordering::SeqCst);
    let mut cmd = env.command(&["poll", "--sources", "threats"]);
    cmd.env("HTTPS_PROXY", &proxy).env("NO_PROXY", "127.0.0.1");
    env.finish(cmd.spawn().unwrap()).expect(0);
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        before,
        "NO_PROXY was not honoured"
    );
}

/// The `-v` lines that describe settings: `setting NAME = VALUE (from ORIGIN)`.
fn setting_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("cylance-logs: debug: setting "))
        .collect()
}

#[test]
fn verbose_shows_each_setting_with_where_it_came_from() {
    let env = TestEnv::new();
    let out = env
        .finish(
            env.command(&["poll", "-v", "--overlap", "5m"])
                .env("CYLANCE_LOGS_TIMEOUT", "20s")
                .spawn()
                .unwrap(),
        )
        .expect(0);
    let lines = setting_lines(&out.stderr);
    let secret_file = env.secret_file().display().to_string();
    for want in [
        "--overlap = 5m (from --overlap)".to_string(),
        "--timeout = 20s (from $CYLANCE_LOGS_TIMEOUT)".to_string(),
        "--initial-lookback = 1d (from default)".to_string(),
        "--max-runtime = 50s (from default)".to_string(),
        "$CYLANCE_LOGS_BACKOFF_BASE = 10ms (from $CYLANCE_LOGS_BACKOFF_BASE)".to_string(),
        format!("--tenant-id = {} (from --tenant-id)", env.creds.tenant_id),
        format!("--api-url = {} (from --api-url)", env.fake.url()),
        format!(
            "--state-dir = {} (from --state-dir)",
            env.state_dir().display()
        ),
        format!("--output = {} (from --output)", env.output().display()),
        "--metrics-file = none (from default)".to_string(),
        "--ca-file = none, the bundled roots (from default)".to_string(),
        "--sources = threats,detections,memory-protection (from default)".to_string(),
        "--devices-every = 1d (from default)".to_string(),
        "--enrich = threat-devices (from default)".to_string(),
        format!(
            "application secret = (not shown) (from the file {secret_file}, given by \
             --app-secret-file)"
        ),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "no {want:?} in\n{}",
            out.stderr
        );
    }
    // Without -v, none of it.
    let quiet = env.run(&["poll"]).expect(0);
    assert!(setting_lines(&quiet.stderr).is_empty(), "{}", quiet.stderr);
}

#[test]
fn verbose_names_systemd_directories_and_a_secret_variable_never_its_value() {
    let env = TestEnv::new();
    let state = env.dir.join("systemd-state");
    let logs = env.dir.join("systemd-logs");
    // systemd creates both before starting the service.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear()
        .env("HOME", &env.dir)
        .env("STATE_DIRECTORY", &state)
        .env("LOGS_DIRECTORY", &logs)
        .env("CYLANCE_API_URL", env.fake.url())
        .env("CYLANCE_APP_ID", &env.creds.app_id)
        .env("CYLANCE_TENANT_ID", &env.creds.tenant_id)
        .env("CYLANCE_APP_SECRET", &env.creds.app_secret)
        .env("CYLANCE_LOGS_MAX_RPS", "0")
        .args(["poll", "-v"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // `finish` fails the test if the secret appears anywhere.
    let out = env.finish(cmd.spawn().unwrap()).expect(0);
    let lines = setting_lines(&out.stderr);
    for want in [
        format!("--state-dir = {} (from $STATE_DIRECTORY)", state.display()),
        format!(
            "--output = {}/cylance-protect.log (from $LOGS_DIRECTORY)",
            logs.display()
        ),
        "application secret = (not shown) (from $CYLANCE_APP_SECRET)".to_string(),
        format!("--app-id = {} (from $CYLANCE_APP_ID)", env.creds.app_id),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "no {want:?} in\n{}",
            out.stderr
        );
    }
}

#[test]
fn command_settings_are_shown_and_checked_like_the_others() {
    let env = TestEnv::new();
    let out = env.run(&["status", "-v", "--max-age", "15m"]).expect(2);
    let lines = setting_lines(&out.stderr);
    assert!(
        lines.contains(&"--max-age = 15m (from --max-age)")
            && lines.contains(&"--overlap = 10m (from default)"),
        "{}",
        out.stderr
    );
    let out = env
        .run(&[
            "backfill",
            "-v",
            "--since",
            "2024-05-01",
            "--sources",
            "threats",
        ])
        .expect(0);
    assert!(
        setting_lines(&out.stderr).contains(&"--since = 2024-05-01T00:00:00Z (from --since)"),
        "{}",
        out.stderr
    );
    // The backoff knob takes the common durations, and milliseconds.
    let env = TestEnv::new();
    for (value, why) in [
        (
            "fast",
            "$CYLANCE_LOGS_BACKOFF_BASE: 'fast' is not a duration",
        ),
        ("", "$CYLANCE_LOGS_BACKOFF_BASE is set but empty"),
        (
            "90s",
            "$CYLANCE_LOGS_BACKOFF_BASE: '90s' is more than the largest accepted, 1m",
        ),
    ] {
        let out = env
            .finish(
                env.command(&["poll"])
                    .env("CYLANCE_LOGS_BACKOFF_BASE", value)
                    .spawn()
                    .unwrap(),
            )
            .expect(78);
        assert!(out.error_line().contains(why), "{}", out.stderr);
    }
    assert!(env.fake.requests().is_empty());
}

#[test]
fn an_unknown_source_is_78_naming_it_and_every_known_source() {
    let env = TestEnv::new();
    let out = env.run(&["poll", "--sources", "threats,memory"]).expect(78);
    assert!(
        out.error_line()
            .contains("--sources: unknown source 'memory' (known: threats, detections, memory-protection, devices)"),
        "{}",
        out.stderr
    );
    assert!(env.fake.requests().is_empty());
    assert!(env.lines().is_empty());
}

#[test]
fn enrich_names_its_origin_and_an_unknown_lookup_is_78_naming_every_known_one() {
    let env = TestEnv::new();
    let out = env
        .finish(
            env.command(&["poll", "-v"])
                .env("CYLANCE_LOGS_ENRICH", "detection-details, THREAT-devices")
                .spawn()
                .unwrap(),
        )
        .expect(0);
    assert!(
        setting_lines(&out.stderr)
            .contains(&"--enrich = threat-devices,detection-details (from $CYLANCE_LOGS_ENRICH)"),
        "{}",
        out.stderr
    );
    let none = env.run(&["poll", "-v", "--enrich", "none"]).expect(0);
    assert!(
        setting_lines(&none.stderr).contains(&"--enrich = none (from --enrich)"),
        "{}",
        none.stderr
    );
    let requests = env.fake.requests().len();
    let unknown = env
        .finish(
            env.command(&["poll"])
                .env("CYLANCE_LOGS_ENRICH", "threat-devices,devices")
                .spawn()
                .unwrap(),
        )
        .expect(78);
    assert!(
        unknown.error_line().contains(
            "$CYLANCE_LOGS_ENRICH: unknown lookup 'devices' (known: threat-devices, \
             detection-details, or none)"
        ),
        "{}",
        unknown.stderr
    );
    let mixed = env
        .run(&["poll", "--enrich", "none,threat-devices"])
        .expect(78);
    assert!(
        mixed
            .error_line()
            .contains("--enrich: 'none' cannot be combined with lookups"),
        "{}",
        mixed.stderr
    );
    assert_eq!(
        env.fake.requests().len(),
        requests,
        "nothing asked of the API"
    );
}
