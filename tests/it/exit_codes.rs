//! Every documented exit code, with the one-line message that names the cause.

use crate::support::*;

#[test]
fn usage_error_is_2() {
    let env = TestEnv::new();
    env.run(&["poll", "--no-such-flag"]).expect(2);
    let out = env.run(&["backfill", "--since", "last tuesday"]).expect(2);
    assert!(
        out.error_line()
            .contains("--since: 'last tuesday' is not a time")
    );
}

#[test]
fn missing_required_setting_is_78_naming_flag_and_variable() {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("CYLANCE_APP_SECRET", "x")
        .args(["poll", "--tenant-id", "t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "cylance-logs: error: missing --app-id (or $CYLANCE_APP_ID): it is required"
    );
}

#[test]
fn invalid_duration_is_78_naming_the_flag() {
    let env = TestEnv::new();
    let out = env.run(&["poll", "--overlap", "ten minutes"]).expect(78);
    assert!(
        out.error_line()
            .contains("--overlap: 'ten minutes' is not a duration")
    );
    assert!(!env.output().exists(), "nothing written");
}

#[test]
fn corrupt_checkpoint_is_65_and_left_byte_for_byte() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    env.run(&["poll"]).expect(0);
    let path = env.checkpoint_path();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    env.fake.add_threats(threats(10, 3, 0));
    let out = env.run(&["poll"]).expect(65);
    assert!(
        out.error_line().contains("is corrupt or truncated"),
        "{}",
        out.stderr
    );
    assert!(
        out.error_line()
            .contains("move it away and run `cylance-logs backfill")
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(env.lines().len(), 3, "nothing written without a checkpoint");
}

#[test]
fn checkpoint_of_a_newer_format_is_65_and_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let newer = r#"{"format": 9, "tenant_id": "x", "future": true}"#;
    std::fs::write(env.checkpoint_path(), newer).unwrap();
    let out = env.run(&["poll"]).expect(65);
    assert!(
        out.error_line()
            .contains("has format 9, written by a newer cylance-logs")
    );
    assert_eq!(
        std::fs::read_to_string(env.checkpoint_path()).unwrap(),
        newer
    );
}

#[test]
fn output_that_is_a_directory_is_74_and_the_checkpoint_does_not_move() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    std::fs::create_dir_all(env.output()).unwrap();
    let out = env.run(&["poll"]).expect(74);
    assert!(
        out.error_line()
            .contains(&env.output().display().to_string())
    );
    assert!(!env.checkpoint_path().exists());
    // Once the output is writable, everything is written once.
    std::fs::remove_dir(env.output()).unwrap();
    env.run(&["poll"]).expect(0);
    assert_eq!(env.lines().len(), 3);
}

#[test]
fn unwritable_state_dir_is_74_naming_it() {
    let env = TestEnv::new();
    let blocker = env.dir.join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let state_dir = blocker.join("state").display().to_string();
    let out = env.run(&["poll", "--state-dir", &state_dir]).expect(74);
    assert!(
        out.error_line()
            .contains("cannot create the state directory")
    );
    assert!(out.error_line().contains("not-a-dir/state"));
}

#[test]
fn checkpoint_that_cannot_be_replaced_is_74_naming_it() {
    // Every failure to write is classified where it happens: nothing is 74
    // by being an I/O error alone (an unclassified failure is 70).
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 3, 5));
    env.run(&["poll"]).expect(0);
    let before = std::fs::read(env.checkpoint_path()).unwrap();
    // A directory where the temp file goes: it cannot be removed or created.
    std::fs::create_dir(env.state_dir().join("checkpoint.json.tmp")).unwrap();
    env.fake.add_threats(threats(10, 2, 1));
    let out = env.run(&["poll"]).expect(74);
    assert!(
        out.error_line().contains(&format!(
            "cannot write the checkpoint {}",
            env.checkpoint_path().display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(env.checkpoint_path()).unwrap(), before);
}

#[test]
fn missing_state_dir_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.run(&["poll"]).expect(0);
    let mode = std::fs::metadata(env.state_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn held_lock_is_75_naming_the_lock_file() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let lock_path = env.state_dir().join("lock");
    let holder = std::fs::File::create(&lock_path).unwrap();
    holder.lock().unwrap();
    let out = env.run(&["poll"]).expect(75);
    assert!(out.error_line().contains("another run holds the lock file"));
    assert!(out.error_line().contains(&lock_path.display().to_string()));
    assert_eq!(env.fake.requests().len(), 0, "no request while locked out");
    // With --lock-wait the run waits for the holder to finish.
    let waiting = env.spawn(&["poll", "--lock-wait", "20s"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(holder);
    env.finish(waiting).expect(0);
}

#[test]
fn server_errors_after_retries_are_75() {
    let env = TestEnv::new();
    for _ in 0..5 {
        env.fake.push_fault(
            "/threats/v2",
            Fault::Status {
                status: 503,
                body: "<html>busy</html>".into(),
                headers: vec![],
            },
        );
    }
    let out = env.run(&["poll"]).expect(75);
    assert!(
        out.error_line().contains("GET /threats/v2: HTTP 503"),
        "{}",
        out.stderr
    );
    assert!(out.error_line().contains("gave up after 5 attempts"));
    assert_eq!(env.fake.count("/threats/v2"), 5);
}

#[test]
fn not_found_endpoint_is_76_without_retry() {
    let env = TestEnv::new();
    env.fake.push_fault(
        "/detections/v2",
        Fault::Status {
            status: 404,
            body: r#"{"message":"Not found"}"#.into(),
            headers: vec![],
        },
    );
    let out = env.run(&["poll"]).expect(76);
    assert!(out.error_line().contains("GET /detections/v2"));
    assert_eq!(env.fake.count("/detections/v2"), 1);
}

#[test]
fn garbage_answer_is_76_naming_endpoint_page_and_body() {
    let env = TestEnv::new();
    for _ in 0..3 {
        env.fake.push_fault("/threats/v2", Fault::NotJson);
    }
    let out = env.run(&["poll"]).expect(76);
    let line = out.error_line();
    assert!(line.contains("GET /threats/v2 page 1"), "{line}");
    assert!(line.contains("'this is not json'"), "{line}");
}

#[test]
fn wrong_secret_is_77_and_says_what_to_check() {
    let env = TestEnv::new();
    std::fs::write(env.secret_file(), "not-the-secret").unwrap();
    let out = env.run(&["poll"]).expect(77);
    let line = out.error_line();
    assert!(
        line.contains("POST /auth/v2/token: credentials rejected (HTTP 401"),
        "{line}"
    );
    assert!(line.contains("local clock reads"), "{line}");
    assert!(!line.contains("not-the-secret"));
}

#[test]
fn missing_privilege_is_77_naming_it() {
    let env = TestEnv::new();
    env.fake.deny_privilege("opticsdetect:list");
    let out = env.run(&["poll"]).expect(77);
    assert!(
        out.error_line()
            .contains("GET /detections/v2: access denied (HTTP 403")
    );
    assert!(
        out.error_line()
            .contains("needs the opticsdetect:list privilege")
    );
}
