//! The real `cylance-logs poll` against a bundled fake tenant: no credentials,
//! no network. `cargo run --example demo`
//!
//! Starts the tests' fake Cylance API on loopback, seeded with threats and
//! detections like the API notes' samples, runs a poll through the same code as
//! the binary, prints the lines it wrote, then shows a second poll writing
//! nothing new, and `status`.

use fake_cylance::{Credentials, FakeApi, sample_tenant};
use std::process::ExitCode;

fn main() -> ExitCode {
    let creds = Credentials::sample();
    let fake = FakeApi::start(creds.clone());
    sample_tenant(&fake, chrono::Utc::now());

    let dir = std::env::temp_dir().join(format!("cylance-logs-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp directory");
    let secret_file = dir.join("app-secret");
    std::fs::write(&secret_file, &creds.app_secret).expect("the secret file");
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&secret_file, private).expect("chmod the secret file");
    }
    let output = dir.join("cylance-protect.log");
    let url = fake.url();
    let args = |command: &str| {
        vec![
            "cylance-logs".to_string(),
            command.to_string(),
            format!("--api-url={url}"),
            format!("--app-id={}", creds.app_id),
            format!("--tenant-id={}", creds.tenant_id),
            format!("--app-secret-file={}", secret_file.display()),
            format!("--state-dir={}", dir.join("state").display()),
            format!("--output={}", output.display()),
        ]
    };

    eprintln!("== cylance-logs poll (fake tenant at {url})");
    let code = cylance_logs::main_with_args(args("poll"));
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
    let code = cylance_logs::main_with_args(args("poll"));
    if code != ExitCode::SUCCESS {
        return code;
    }
    eprintln!("== cylance-logs status");
    let code = cylance_logs::main_with_args(args("status"));
    let _ = std::fs::remove_dir_all(&dir);
    code
}
