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
