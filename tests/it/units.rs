//! The files an administrator installs to run the poller every minute: the
//! systemd units in `systemd/` (service and timer, and the per-tenant
//! templates), the env file example, and the cron.d and logrotate.d examples
//! in `examples/etc/`.
//!
//! They are checked three ways: as text (unit syntax, only keys systemd knows,
//! and the settings the poller depends on: a oneshot `poll`, exit 75 counted as
//! success, the secret passed as a credential, one output path for everyone);
//! by `systemd-analyze verify` (skipped, and said so, when it is not installed;
//! never under `CI=true`); and by running the real
//! binary the way each file would run it: with the environment systemd gives
//! the service (env file, `$STATE_DIRECTORY`, `$LOGS_DIRECTORY`,
//! `$CREDENTIALS_DIRECTORY`), and through the cron line's own shell command.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SERVICE: &str = "systemd/cylance-logs.service";
const TIMER: &str = "systemd/cylance-logs.timer";
const TEMPLATE_SERVICE: &str = "systemd/cylance-logs@.service";
const TEMPLATE_TIMER: &str = "systemd/cylance-logs@.timer";
const ENV_EXAMPLE: &str = "systemd/cylance-logs.env.example";
const CRON: &str = "examples/etc/cron.d/cylance-logs";
const LOGROTATE: &str = "examples/etc/logrotate.d/cylance-logs";

/// Where the units install the binary; replaced by the one under test to run it.
const INSTALLED_BIN: &str = "/usr/bin/cylance-logs";
/// The file name the binary writes in `$LOGS_DIRECTORY` (the systemd run below
/// proves it).
const OUTPUT_NAME: &str = "cylance-protect.log";
/// The default `--max-runtime` of a poll: a run must fit in the timer's minute.
const MAX_RUNTIME_SECS: u64 = 50;

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// A fresh directory of this test's own (the `TestEnv` one holds the fake's files).
fn scratch(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------
// Unit files: a parser following systemd.syntax(7), and the keys systemd knows
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Entry {
    section: String,
    key: String,
    value: String,
    line: usize,
}

#[derive(Debug)]
struct UnitFile {
    name: String,
    entries: Vec<Entry>,
}

impl UnitFile {
    /// `[Section]` headers, `Key=Value` lines, `#` and `;` comments, and lines
    /// continued by a trailing backslash (comment lines inside a continuation
    /// are skipped, as systemd does).
    fn parse(name: &str, text: &str) -> Result<UnitFile, String> {
        let mut entries = Vec::new();
        let mut section: Option<String> = None;
        let mut pending: Option<(usize, String)> = None;
        let mut add = |line: usize, text: String, section: &Option<String>| {
            let Some(section) = section else {
                return Err(format!("{name}:{line}: '{text}' before any [Section]"));
            };
            let Some((key, value)) = text.split_once('=') else {
                return Err(format!("{name}:{line}: '{text}' is not Key=Value"));
            };
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("{name}:{line}: '{key}' is not a key name"));
            }
            entries.push(Entry {
                section: section.clone(),
                key: key.to_string(),
                value: value.trim().to_string(),
                line,
            });
            Ok(())
        };
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim();
            let comment = line.starts_with('#') || line.starts_with(';');
            if let Some((start, mut joined)) = pending.take() {
                if comment {
                    pending = Some((start, joined));
                } else if let Some(body) = line.strip_suffix('\\') {
                    joined.push(' ');
                    joined.push_str(body.trim());
                    pending = Some((start, joined));
                } else {
                    joined.push(' ');
                    joined.push_str(line);
                    add(start, joined, &section)?;
                }
                continue;
            }
            if line.is_empty() || comment {
                continue;
            }
            if line.starts_with('[') {
                let name_ok = |s: &&str| !s.is_empty() && !s.contains(['[', ']']);
                let header = line.strip_prefix('[').and_then(|l| l.strip_suffix(']'));
                match header.filter(name_ok) {
                    Some(header) => section = Some(header.to_string()),
                    None => return Err(format!("{name}:{number}: bad section header '{line}'")),
                }
                continue;
            }
            match line.strip_suffix('\\') {
                Some(body) => pending = Some((number, body.trim_end().to_string())),
                None => add(number, line.to_string(), &section)?,
            }
        }
        if let Some((start, _)) = pending {
            return Err(format!(
                "{name}:{start}: the file ends inside a continued line"
            ));
        }
        Ok(UnitFile {
            name: name.to_string(),
            entries,
        })
    }

    fn load(rel: &str) -> UnitFile {
        UnitFile::parse(rel, &read(rel)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every value given to `key` in `section`, in order.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
            .map(|e| e.value.as_str())
            .collect()
    }

    /// The value in effect (the last assignment), if any.
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }

    fn expect(&self, section: &str, key: &str) -> &str {
        self.get(section, key)
            .unwrap_or_else(|| panic!("{}: no {key}= in [{section}]", self.name))
    }

    /// Sections this kind of unit may have, and keys these sections may hold;
    /// one line per problem.
    fn unknown_keys(&self) -> Vec<String> {
        let own = if self.name.ends_with(".service") {
            "Service"
        } else if self.name.ends_with(".timer") {
            "Timer"
        } else {
            return vec![format!("{}: not a .service or .timer", self.name)];
        };
        let mut problems = Vec::new();
        for entry in &self.entries {
            let known: Vec<&[&str]> = match entry.section.as_str() {
                "Unit" => vec![UNIT_KEYS],
                "Install" => vec![INSTALL_KEYS],
                "Service" if own == "Service" => {
                    vec![SERVICE_KEYS, EXEC_KEYS, KILL_KEYS, RESOURCE_CONTROL_KEYS]
                }
                "Timer" if own == "Timer" => vec![TIMER_KEYS],
                other => {
                    problems.push(format!(
                        "{}:{}: section [{other}] does not belong in a {} unit",
                        self.name,
                        entry.line,
                        own.to_lowercase()
                    ));
                    continue;
                }
            };
            if !known.iter().any(|keys| keys.contains(&entry.key.as_str())) {
                problems.push(format!(
                    "{}:{}: unknown key '{}' in [{}]",
                    self.name, entry.line, entry.key, entry.section
                ));
            }
        }
        problems
    }

    /// `ExecStart=` as program and arguments.
    fn exec_start(&self) -> (String, Vec<String>) {
        let mut words = self.expect("Service", "ExecStart").split_whitespace();
        let program = words.next().unwrap_or_default().to_string();
        (program, words.map(str::to_string).collect())
    }
}

/// systemd's boolean "true" spellings.
fn truthy(value: Option<&str>) -> bool {
    matches!(value, Some("yes" | "true" | "on" | "1"))
}

/// A systemd time span of one unit (`10s`, `2min`, `120`) in seconds.
fn seconds(span: &str) -> u64 {
    let digits = span.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("time span '{span}' is not a number and one unit"));
    match &span[digits.len()..] {
        "" | "s" | "sec" => number,
        "m" | "min" => number * 60,
        "ms" | "msec" => number / 1000,
        other => panic!("time span '{span}': unit '{other}' not handled here"),
    }
}

/// Where the single service writes: `/var/log/` + its `LogsDirectory=` + the
/// binary's file name there. The template and the examples must agree.
fn units_output_path() -> String {
    let service = UnitFile::load(SERVICE);
    format!(
        "/var/log/{}/{OUTPUT_NAME}",
        service.expect("Service", "LogsDirectory")
    )
}

/// The four unit files in `systemd/`.
fn unit_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_path("systemd"))
        .expect("the systemd/ directory")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".service") || name.ends_with(".timer"))
        .map(|name| format!("systemd/{name}"))
        .collect();
    names.sort();
    names
}

/// `[Unit]`: systemd.unit(5).
const UNIT_KEYS: &[&str] = &[
    "After",
    "AllowIsolate",
    "AssertACPower",
    "AssertArchitecture",
    "AssertCPUFeature",
    "AssertCPUPressure",
    "AssertCPUs",
    "AssertCapability",
    "AssertControlGroupController",
    "AssertCredential",
    "AssertDirectoryNotEmpty",
    "AssertEnvironment",
    "AssertFileIsExecutable",
    "AssertFileNotEmpty",
    "AssertFirstBoot",
    "AssertGroup",
    "AssertHost",
    "AssertIOPressure",
    "AssertKernelCommandLine",
    "AssertKernelVersion",
    "AssertMemory",
    "AssertMemoryPressure",
    "AssertNeedsUpdate",
    "AssertOSRelease",
    "AssertPathExists",
    "AssertPathExistsGlob",
    "AssertPathIsDirectory",
    "AssertPathIsEncrypted",
    "AssertPathIsMountPoint",
    "AssertPathIsReadWrite",
    "AssertPathIsSymbolicLink",
    "AssertSecurity",
    "AssertUser",
    "AssertVirtualization",
    "Before",
    "BindsTo",
    "CollectMode",
    "ConditionACPower",
    "ConditionArchitecture",
    "ConditionCPUFeature",
    "ConditionCPUPressure",
    "ConditionCPUs",
    "ConditionCapability",
    "ConditionControlGroupController",
    "ConditionCredential",
    "ConditionDirectoryNotEmpty",
    "ConditionEnvironment",
    "ConditionFileIsExecutable",
    "ConditionFileNotEmpty",
    "ConditionFirmware",
    "ConditionFirstBoot",
    "ConditionGroup",
    "ConditionHost",
    "ConditionIOPressure",
    "ConditionKernelCommandLine",
    "ConditionKernelVersion",
    "ConditionMemory",
    "ConditionMemoryPressure",
    "ConditionNeedsUpdate",
    "ConditionOSRelease",
    "ConditionPathExists",
    "ConditionPathExistsGlob",
    "ConditionPathIsDirectory",
    "ConditionPathIsEncrypted",
    "ConditionPathIsMountPoint",
    "ConditionPathIsReadWrite",
    "ConditionPathIsSymbolicLink",
    "ConditionSecurity",
    "ConditionUser",
    "ConditionVirtualization",
    "Conflicts",
    "DefaultDependencies",
    "Description",
    "Documentation",
    "FailureAction",
    "FailureActionExitStatus",
    "IgnoreOnIsolate",
    "JobRunningTimeoutSec",
    "JobTimeoutAction",
    "JobTimeoutRebootArgument",
    "JobTimeoutSec",
    "JoinsNamespaceOf",
    "OnFailure",
    "OnFailureJobMode",
    "OnSuccess",
    "OnSuccessJobMode",
    "PartOf",
    "PropagatesReloadTo",
    "PropagatesStopTo",
    "RebootArgument",
    "RefuseManualStart",
    "RefuseManualStop",
    "ReloadPropagatedFrom",
    "Requires",
    "RequiresMountsFor",
    "Requisite",
    "SourcePath",
    "StartLimitAction",
    "StartLimitBurst",
    "StartLimitIntervalSec",
    "StopPropagatedFrom",
    "StopWhenUnneeded",
    "SuccessAction",
    "SuccessActionExitStatus",
    "Upholds",
    "Wants",
];

/// `[Install]`: systemd.unit(5).
const INSTALL_KEYS: &[&str] = &["Alias", "Also", "DefaultInstance", "RequiredBy", "WantedBy"];

/// `[Service]`: systemd.service(5).
const SERVICE_KEYS: &[&str] = &[
    "BusName",
    "ExecCondition",
    "ExecReload",
    "ExecStart",
    "ExecStartPost",
    "ExecStartPre",
    "ExecStop",
    "ExecStopPost",
    "ExitType",
    "FileDescriptorStoreMax",
    "GuessMainPID",
    "NonBlocking",
    "NotifyAccess",
    "OOMPolicy",
    "PIDFile",
    "RemainAfterExit",
    "Restart",
    "RestartForceExitStatus",
    "RestartPreventExitStatus",
    "RestartSec",
    "RootDirectoryStartOnly",
    "RuntimeMaxSec",
    "RuntimeRandomizedExtraSec",
    "Sockets",
    "SuccessExitStatus",
    "TimeoutAbortSec",
    "TimeoutSec",
    "TimeoutStartFailureMode",
    "TimeoutStartSec",
    "TimeoutStopFailureMode",
    "TimeoutStopSec",
    "Type",
    "USBFunctionDescriptors",
    "USBFunctionStrings",
    "WatchdogSec",
];

/// `[Service]`, shared with the other units that run processes: systemd.exec(5).
const EXEC_KEYS: &[&str] = &[
    "AmbientCapabilities",
    "AppArmorProfile",
    "BindPaths",
    "BindReadOnlyPaths",
    "CPUAffinity",
    "CPUSchedulingPolicy",
    "CPUSchedulingPriority",
    "CPUSchedulingResetOnFork",
    "CacheDirectory",
    "CacheDirectoryMode",
    "CapabilityBoundingSet",
    "ConfigurationDirectory",
    "ConfigurationDirectoryMode",
    "CoredumpFilter",
    "DynamicUser",
    "Environment",
    "EnvironmentFile",
    "ExecPaths",
    "ExecSearchPath",
    "ExtensionDirectories",
    "ExtensionImages",
    "Group",
    "IOSchedulingClass",
    "IOSchedulingPriority",
    "IPCNamespacePath",
    "IgnoreSIGPIPE",
    "InaccessiblePaths",
    "KeyringMode",
    "LimitAS",
    "LimitCORE",
    "LimitCPU",
    "LimitDATA",
    "LimitFSIZE",
    "LimitLOCKS",
    "LimitMEMLOCK",
    "LimitMSGQUEUE",
    "LimitNICE",
    "LimitNOFILE",
    "LimitNPROC",
    "LimitRSS",
    "LimitRTPRIO",
    "LimitRTTIME",
    "LimitSIGPENDING",
    "LimitSTACK",
    "LoadCredential",
    "LoadCredentialEncrypted",
    "LockPersonality",
    "LogExtraFields",
    "LogLevelMax",
    "LogNamespace",
    "LogRateLimitBurst",
    "LogRateLimitIntervalSec",
    "LogsDirectory",
    "LogsDirectoryMode",
    "MemoryDenyWriteExecute",
    "MountAPIVFS",
    "MountFlags",
    "MountImages",
    "NUMAMask",
    "NUMAPolicy",
    "NetworkNamespacePath",
    "Nice",
    "NoExecPaths",
    "NoNewPrivileges",
    "OOMScoreAdjust",
    "PAMName",
    "PassEnvironment",
    "Personality",
    "PrivateDevices",
    "PrivateIPC",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateTmp",
    "PrivateUsers",
    "ProcSubset",
    "ProtectClock",
    "ProtectControlGroups",
    "ProtectHome",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "ProtectProc",
    "ProtectSystem",
    "ReadOnlyPaths",
    "ReadWritePaths",
    "RemoveIPC",
    "RestrictAddressFamilies",
    "RestrictFileSystems",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RootDirectory",
    "RootHash",
    "RootHashSignature",
    "RootImage",
    "RootImageOptions",
    "RootVerity",
    "RuntimeDirectory",
    "RuntimeDirectoryMode",
    "RuntimeDirectoryPreserve",
    "SELinuxContext",
    "SecureBits",
    "SetCredential",
    "SetCredentialEncrypted",
    "SmackProcessLabel",
    "StandardError",
    "StandardInput",
    "StandardInputData",
    "StandardInputText",
    "StandardOutput",
    "StateDirectory",
    "StateDirectoryMode",
    "SupplementaryGroups",
    "SyslogFacility",
    "SyslogIdentifier",
    "SyslogLevel",
    "SyslogLevelPrefix",
    "SystemCallArchitectures",
    "SystemCallErrorNumber",
    "SystemCallFilter",
    "SystemCallLog",
    "TTYColumns",
    "TTYPath",
    "TTYReset",
    "TTYRows",
    "TTYVHangup",
    "TTYVTDisallocate",
    "TemporaryFileSystem",
    "TimeoutCleanSec",
    "TimerSlackNSec",
    "UMask",
    "UnsetEnvironment",
    "User",
    "UtmpIdentifier",
    "UtmpMode",
    "WorkingDirectory",
];

/// `[Service]`: systemd.kill(5).
const KILL_KEYS: &[&str] = &[
    "FinalKillSignal",
    "KillMode",
    "KillSignal",
    "RestartKillSignal",
    "SendSIGHUP",
    "SendSIGKILL",
    "WatchdogSignal",
];

/// `[Service]`: systemd.resource-control(5).
const RESOURCE_CONTROL_KEYS: &[&str] = &[
    "AllowedCPUs",
    "AllowedMemoryNodes",
    "BPFProgram",
    "CPUAccounting",
    "CPUQuota",
    "CPUQuotaPeriodSec",
    "CPUWeight",
    "Delegate",
    "DeviceAllow",
    "DevicePolicy",
    "DisableControllers",
    "IOAccounting",
    "IODeviceLatencyTargetSec",
    "IODeviceWeight",
    "IOReadBandwidthMax",
    "IOReadIOPSMax",
    "IOWeight",
    "IOWriteBandwidthMax",
    "IOWriteIOPSMax",
    "IPAccounting",
    "IPAddressAllow",
    "IPAddressDeny",
    "IPEgressFilterPath",
    "IPIngressFilterPath",
    "ManagedOOMMemoryPressure",
    "ManagedOOMMemoryPressureLimit",
    "ManagedOOMPreference",
    "ManagedOOMSwap",
    "MemoryAccounting",
    "MemoryHigh",
    "MemoryLow",
    "MemoryMax",
    "MemoryMin",
    "MemorySwapMax",
    "RestrictNetworkInterfaces",
    "Slice",
    "SocketBindAllow",
    "SocketBindDeny",
    "StartupAllowedCPUs",
    "StartupAllowedMemoryNodes",
    "StartupCPUWeight",
    "StartupIOWeight",
    "TasksAccounting",
    "TasksMax",
];

/// `[Timer]`: systemd.timer(5).
const TIMER_KEYS: &[&str] = &[
    "AccuracySec",
    "FixedRandomDelay",
    "OnActiveSec",
    "OnBootSec",
    "OnCalendar",
    "OnClockChange",
    "OnStartupSec",
    "OnTimezoneChange",
    "OnUnitActiveSec",
    "OnUnitInactiveSec",
    "Persistent",
    "RandomizedDelaySec",
    "RemainAfterElapse",
    "Unit",
    "WakeSystem",
];

// ---------------------------------------------------------------------------
// Running the binary the way the units and the cron line do
// ---------------------------------------------------------------------------

/// The assignments of an env file as systemd's `EnvironmentFile=` reads them
/// (`#` and `;` comments, blank lines, `NAME=value`), checked to mean the same
/// to /bin/sh, which the cron line uses to read the same file.
fn env_file_vars(rel: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for (index, line) in read(rel).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}:{}: '{line}' is not NAME=value", index + 1));
        let name_ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        assert!(
            name_ok,
            "{rel}:{}: '{name}' is not a variable name",
            index + 1
        );
        assert!(
            !value.contains(|c: char| c.is_whitespace() || "'\"$`\\;&|<>#".contains(c)),
            "{rel}:{}: the value of {name} would read differently in systemd and in sh",
            index + 1
        );
        vars.push((name.to_string(), value.to_string()));
    }
    vars
}

/// The environment a test poll needs on top of an env file: the fake tenant
/// instead of the example's IDs and region, and short retry backoffs.
fn fake_tenant_vars(env: &TestEnv) -> Vec<(&'static str, String)> {
    vec![
        ("CYLANCE_APP_ID", env.creds.app_id.clone()),
        ("CYLANCE_TENANT_ID", env.creds.tenant_id.clone()),
        ("CYLANCE_API_URL", env.fake.url()),
        ("CYLANCE_LOGS_BACKOFF_BASE", "10ms".to_string()),
    ]
}

/// Runs a service unit's `ExecStart=` (the binary under test in place of
/// /usr/bin/cylance-logs) with what systemd would give it: the env example's
/// variables, the unit's `Environment=`, and the directories and credential of
/// `StateDirectory=`, `LogsDirectory=` and `LoadCredential=`, with `root`
/// standing for `/`. Returns the outcome and `$LOGS_DIRECTORY`.
fn run_like_systemd(unit: &UnitFile, instance: &str, root: &Path, tenant: &TestEnv) -> Outcome {
    let spec = |s: &str| s.replace("%i", instance);
    let under_root = |s: &str| {
        let s = spec(s);
        root.join(s.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned()
    };
    let (program, args) = unit.exec_start();
    assert_eq!(program, INSTALLED_BIN, "{}: ExecStart= program", unit.name);

    let state = root
        .join("var/lib")
        .join(spec(unit.expect("Service", "StateDirectory")));
    let logs = root
        .join("var/log")
        .join(spec(unit.expect("Service", "LogsDirectory")));
    std::fs::create_dir_all(&state).unwrap();
    set_mode(&state, 0o700);
    std::fs::create_dir_all(&logs).unwrap();

    let credential = spec(unit.expect("Service", "LoadCredential"));
    let (id, _source) = credential.split_once(':').expect("LoadCredential=ID:PATH");
    let credentials = root.join("run/credentials").join(spec(&unit.name));
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join(id), &tenant.creds.app_secret).unwrap();
    set_mode(&credentials.join(id), 0o400);

    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .args(args.iter().map(|a| spec(a)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.envs(env_file_vars(ENV_EXAMPLE));
    for assignments in unit.all("Service", "Environment") {
        for assignment in assignments.split_whitespace() {
            let (name, value) = assignment.split_once('=').expect("Environment=NAME=value");
            let value = if value.starts_with('/') {
                under_root(value)
            } else {
                spec(value)
            };
            cmd.env(name, value);
        }
    }
    cmd.envs(fake_tenant_vars(tenant))
        .env("STATE_DIRECTORY", &state)
        .env("LOGS_DIRECTORY", &logs)
        .env("CREDENTIALS_DIRECTORY", &credentials);
    tenant.finish(cmd.spawn().expect("the binary starts"))
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn unit_files_parse_and_use_only_keys_systemd_knows() {
    let names = unit_files();
    for expected in [SERVICE, TIMER, TEMPLATE_SERVICE, TEMPLATE_TIMER] {
        assert!(names.iter().any(|n| n == expected), "{expected} is missing");
    }
    let problems: Vec<String> = names
        .iter()
        .flat_map(|name| UnitFile::load(name).unknown_keys())
        .collect();
    assert!(
        problems.is_empty(),
        "systemd would ignore these lines:\n{}",
        problems.join("\n")
    );
}

#[test]
fn unit_checker_catches_a_misspelled_key_and_a_key_outside_a_section() {
    let typo = UnitFile::parse("t.service", "[Service]\nProtectSytem=strict\n").unwrap();
    assert_eq!(typo.unknown_keys().len(), 1, "{:?}", typo.unknown_keys());
    let misplaced = UnitFile::parse("t.service", "[Timer]\nOnCalendar=minutely\n").unwrap();
    assert_eq!(misplaced.unknown_keys().len(), 1);
    assert!(UnitFile::parse("t.service", "ProtectSystem=strict\n").is_err());
    assert!(UnitFile::parse("t.service", "[Service]\nProtectSystem strict\n").is_err());
    let continued = "[Service]\n# c\nExecStart=/bin/true \\\n  # inside\n  --flag\nUMask=0027\n";
    let good = UnitFile::parse("t.service", continued).unwrap();
    assert!(good.unknown_keys().is_empty(), "{:?}", good.unknown_keys());
    assert_eq!(good.get("Service", "ExecStart"), Some("/bin/true --flag"));
    assert_eq!(good.get("Service", "UMask"), Some("0027"));
}

#[test]
fn services_run_a_oneshot_poll_and_count_exit_75_as_success() {
    for name in [SERVICE, TEMPLATE_SERVICE] {
        let unit = UnitFile::load(name);
        assert_eq!(unit.get("Service", "Type"), Some("oneshot"), "{name}");
        let (program, args) = unit.exec_start();
        assert_eq!(
            program, INSTALLED_BIN,
            "{name}: no '-' prefix, the installed path"
        );
        assert_eq!(
            args,
            ["poll"],
            "{name}: ExecStart= runs `cylance-logs poll`"
        );
        let success: Vec<&str> = unit
            .all("Service", "SuccessExitStatus")
            .into_iter()
            .flat_map(str::split_whitespace)
            .collect();
        assert!(
            success.contains(&"75"),
            "{name}: SuccessExitStatus= lacks 75"
        );
        let timeout = seconds(unit.expect("Service", "TimeoutStartSec"));
        assert!(
            timeout > MAX_RUNTIME_SECS,
            "{name}: TimeoutStartSec= {timeout}s would kill a poll before its own --max-runtime"
        );
    }
}

#[test]
fn secret_reaches_the_services_only_as_a_credential() {
    for name in [SERVICE, TEMPLATE_SERVICE] {
        let unit = UnitFile::load(name);
        let credential = unit.expect("Service", "LoadCredential");
        let (id, source) = credential.split_once(':').unwrap_or_default();
        assert_eq!(
            id, "cylance-app-secret",
            "{name}: the id the binary looks for"
        );
        assert!(source.starts_with("/etc/cylance-logs/"), "{name}: {source}");
        for entry in &unit.entries {
            assert!(
                !entry.value.contains("CYLANCE_APP_SECRET"),
                "{name}:{}: the secret goes through LoadCredential=, not {}=",
                entry.line,
                entry.key
            );
            assert!(
                !entry.key.starts_with("SetCredential"),
                "{name}:{}: a secret written into the unit",
                entry.line
            );
        }
    }
}

#[test]
fn sandbox_leaves_a_poll_its_network_state_and_logs() {
    // Syscall groups whose removal was checked against strace of real polls
    // (flock, fsync, rename, signals, sockets and DNS all stay allowed).
    let vetted = [
        "@privileged",
        "@resources",
        "@obsolete",
        "@debug",
        "@mount",
        "@module",
        "@reboot",
        "@swap",
        "@raw-io",
        "@clock",
        "@cpu-emulation",
    ];
    for name in [SERVICE, TEMPLATE_SERVICE] {
        let unit = UnitFile::load(name);
        let families = unit.expect("Service", "RestrictAddressFamilies");
        assert!(!families.starts_with('~'), "{name}: {families}");
        for family in ["AF_INET", "AF_INET6"] {
            assert!(
                families.split_whitespace().any(|f| f == family),
                "{name}: {family}"
            );
        }
        assert!(
            !truthy(unit.get("Service", "PrivateNetwork")),
            "{name}: PrivateNetwork="
        );
        assert!(
            unit.get("Service", "IPAddressDeny")
                .is_none_or(str::is_empty),
            "{name}: IPAddressDeny= would cut the API off"
        );
        assert_eq!(
            unit.get("Service", "ProtectSystem"),
            Some("strict"),
            "{name}"
        );
        for (key, mode) in [("StateDirectory", "0700"), ("LogsDirectory", "0750")] {
            assert!(
                unit.get("Service", key).is_some(),
                "{name}: {key}= is its only writable place"
            );
            assert_eq!(
                unit.get("Service", &format!("{key}Mode")),
                Some(mode),
                "{name}"
            );
        }
        let umask = u32::from_str_radix(unit.expect("Service", "UMask"), 8).unwrap();
        assert_eq!(
            umask & 0o040,
            0,
            "{name}: UMask= hides the output from the shipper's group"
        );
        let filters = unit.all("Service", "SystemCallFilter");
        assert!(
            filters
                .iter()
                .any(|f| f.split_whitespace().any(|g| g == "@system-service")),
            "{name}: the allow list is @system-service"
        );
        for denied in filters.iter().filter_map(|f| f.strip_prefix('~')) {
            for group in denied.split_whitespace() {
                assert!(
                    vetted.contains(&group),
                    "{name}: {group} was not checked against a poll"
                );
            }
        }
    }
}

#[test]
fn timers_fire_every_minute_catch_up_and_fit_a_run_in_the_minute() {
    for (timer, service) in [(TIMER, SERVICE), (TEMPLATE_TIMER, TEMPLATE_SERVICE)] {
        let unit = UnitFile::load(timer);
        assert_eq!(unit.get("Timer", "OnCalendar"), Some("minutely"), "{timer}");
        assert!(
            truthy(unit.get("Timer", "Persistent")),
            "{timer}: Persistent=true"
        );
        let delay = seconds(unit.get("Timer", "RandomizedDelaySec").unwrap_or("0"));
        assert!(
            delay + MAX_RUNTIME_SECS <= 60,
            "{timer}: a {delay}s random delay + the {MAX_RUNTIME_SECS}s runtime overrun the minute"
        );
        let accuracy = seconds(unit.expect("Timer", "AccuracySec"));
        assert!(
            accuracy <= 10,
            "{timer}: AccuracySec={accuracy}s shifts runs"
        );
        assert_eq!(
            unit.get("Install", "WantedBy"),
            Some("timers.target"),
            "{timer}"
        );
        // No Unit=: the timer starts the service of the same name.
        assert_eq!(unit.get("Timer", "Unit"), None, "{timer}");
        assert!(repo_path(service).is_file(), "{timer} starts {service}");
    }
}

#[test]
fn template_instances_keep_their_own_settings_and_state_and_share_one_output() {
    let template = UnitFile::load(TEMPLATE_SERVICE);
    for key in ["EnvironmentFile", "LoadCredential", "StateDirectory"] {
        assert!(
            template.expect("Service", key).contains("%i"),
            "{key}= must be per tenant"
        );
    }
    let output = units_output_path();
    assert!(
        template
            .all("Service", "Environment")
            .contains(&format!("CYLANCE_LOGS_OUTPUT={output}").as_str()),
        "every instance writes {output}"
    );
    let service = UnitFile::load(SERVICE);
    assert_eq!(
        template.get("Service", "LogsDirectory"),
        service.get("Service", "LogsDirectory")
    );
    // Instances with different UIDs could not append to one 0640 file.
    assert!(
        !truthy(template.get("Service", "DynamicUser")),
        "one fixed user for all"
    );
    assert!(template.get("Service", "User").is_some());

    // Two tenants, each its own instance: one file, each line tagged, two checkpoints.
    let acme = TestEnv::new();
    acme.fake.add_threats(threats(0, 3, 5));
    let mut other = Credentials::sample();
    other.tenant_id = "99999999-8888-7777-6666-555555555555".to_string();
    let globex = TestEnv::with_credentials(other);
    globex.fake.add_detections(detections(0, 2, 5));
    let root = scratch(&acme, "root");
    run_like_systemd(&template, "acme", &root, &acme).expect(0);
    run_like_systemd(&template, "globex", &root, &globex).expect(0);

    let lines = read_lines(&root.join(output.trim_start_matches('/')));
    assert_eq!(lines.len(), 5);
    assert_each_once(&lines);
    let tenant_of = |t: &str| lines.iter().filter(|l| l["tenant_id"] == t).count();
    assert_eq!(tenant_of(&acme.creds.tenant_id), 3);
    assert_eq!(tenant_of(&globex.creds.tenant_id), 2);
    for instance in ["acme", "globex"] {
        let state = template
            .expect("Service", "StateDirectory")
            .replace("%i", instance);
        let dir = root.join("var/lib").join(state);
        assert!(
            dir.join("lock").exists(),
            "{} has no run lock",
            dir.display()
        );
    }
}

#[test]
fn service_with_the_env_example_polls_into_the_logs_directory() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 4, 5));
    env.fake.add_detections(detections(0, 3, 5));
    let service = UnitFile::load(SERVICE);
    assert_eq!(
        service.get("Service", "EnvironmentFile"),
        Some("/etc/cylance-logs/cylance-logs.env")
    );
    let root = scratch(&env, "root");
    run_like_systemd(&service, "", &root, &env).expect(0);

    let output = root.join(units_output_path().trim_start_matches('/'));
    let lines = read_lines(&output);
    assert_eq!(lines.len(), 7, "the poll wrote to {}", output.display());
    assert_each_once(&lines);
    env.assert_no_secret_in(&std::fs::read_to_string(&output).unwrap(), "the output");
}

#[test]
fn env_example_sets_only_variables_the_binary_reads_and_no_secret() {
    let text = read(ENV_EXAMPLE);
    // The source text, src/ and its module folders.
    let mut sources = String::new();
    let mut dirs = vec![repo_path("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                sources += &std::fs::read_to_string(path).unwrap();
            }
        }
    }
    // Every CYLANCE_* name, commented out or not: a misspelt one is silently ignored.
    let mut rest = text.as_str();
    let mut names = Vec::new();
    while let Some(at) = rest.find("CYLANCE_") {
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        names.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    for name in ["CYLANCE_APP_ID", "CYLANCE_TENANT_ID", "CYLANCE_REGION"] {
        assert!(
            names.iter().any(|n| n == name),
            "{ENV_EXAMPLE} lacks {name}"
        );
    }
    for name in &names {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "{ENV_EXAMPLE} names {name}, which the binary does not read"
        );
    }
    let vars = env_file_vars(ENV_EXAMPLE);
    let region = vars
        .iter()
        .find(|(n, _)| n == "CYLANCE_REGION")
        .map(|(_, v)| v.as_str());
    assert!(
        matches!(
            region,
            Some("na" | "us-gov" | "apne1" | "au" | "euc1" | "sae1")
        ),
        "CYLANCE_REGION={region:?}"
    );
    for (index, line) in text.lines().enumerate() {
        assert!(
            !line.contains("CYLANCE_APP_SECRET="),
            "{ENV_EXAMPLE}:{}: the secret never goes in the env file",
            index + 1
        );
    }
}

/// `(environment lines, the one job line)` of the cron.d example.
fn cron_parts() -> (Vec<(String, String)>, String) {
    let mut vars = Vec::new();
    let mut jobs = Vec::new();
    for line in read(CRON).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap();
        match first.split_once('=') {
            Some((name, value)) if !name.is_empty() && !name.contains(['*', '/']) => {
                vars.push((name.to_string(), value.to_string()))
            }
            _ => jobs.push(line.to_string()),
        }
    }
    assert_eq!(jobs.len(), 1, "{CRON}: one job line: {jobs:?}");
    (vars, jobs.remove(0))
}

#[test]
fn cron_example_polls_every_minute_as_an_unprivileged_user() {
    let (vars, job) = cron_parts();
    let fields: Vec<&str> = job.split_whitespace().collect();
    assert!(
        fields.len() >= 7,
        "{CRON}: 5 schedule fields, a user, a command: {job}"
    );
    assert_eq!(fields[..5], ["*"; 5], "{CRON}: every minute");
    assert_eq!(fields[5], "cylance-logs", "{CRON}: the user field");
    let command = fields[6..].join(" ");
    assert!(command.contains("cylance-logs poll"), "{command}");
    assert!(
        command.contains(". /etc/cylance-logs/cylance-logs.env"),
        "{command}"
    );
    assert!(
        command.contains("set -a"),
        "{command}: sourced variables must be exported"
    );
    assert!(
        !command.contains("flock"),
        "{command}: the binary locks by itself"
    );

    let var = |name: &str| {
        vars.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{CRON}: no {name}="))
    };
    let output = units_output_path();
    assert_eq!(var("CYLANCE_LOGS_OUTPUT"), output);
    assert_eq!(var("CYLANCE_LOGS_STATE_DIR"), "/var/lib/cylance-logs");
    let service = UnitFile::load(SERVICE);
    let credential = service.expect("Service", "LoadCredential");
    assert_eq!(
        Some(var("CYLANCE_APP_SECRET_FILE").as_str()),
        credential.split_once(':').map(|(_, path)| path),
        "cron reads the same secret file systemd loads"
    );
    let stderr = command
        .split_once("2>>")
        .map(|(_, target)| target.split_whitespace().next().unwrap_or_default())
        .unwrap_or_else(|| panic!("{command}: stderr is appended to a diagnostics file"));
    assert_ne!(stderr, output, "diagnostics never go into the output file");
    assert!(!command.contains(&format!(">{output}")) && !command.contains(&format!("> {output}")));
    for line in read(CRON).lines() {
        assert!(
            !line.contains("CYLANCE_APP_SECRET="),
            "{CRON}: a secret value: {line}"
        );
    }
}

#[test]
fn cron_command_polls_with_the_env_example_sourced_by_sh() {
    let env = TestEnv::new();
    env.fake.add_threats(threats(0, 2, 5));
    env.fake.add_detections(detections(0, 2, 5));
    let root = scratch(&env, "root");
    let relocate = |s: &str| {
        s.replace(INSTALLED_BIN, BIN)
            .replace("/etc/", &format!("{}/etc/", root.display()))
            .replace("/var/", &format!("{}/var/", root.display()))
    };
    std::fs::create_dir_all(root.join("etc/cylance-logs")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/cylance-logs")).unwrap();
    std::fs::create_dir_all(root.join("var/log/cylance-logs")).unwrap();
    let mut env_file = read(ENV_EXAMPLE);
    for (name, value) in fake_tenant_vars(&env) {
        env_file += &format!("{name}={value}\n");
    }
    std::fs::write(root.join("etc/cylance-logs/cylance-logs.env"), env_file).unwrap();
    let secret = root.join("etc/cylance-logs/app-secret");
    std::fs::write(&secret, format!("{}\n", env.creds.app_secret)).unwrap();
    set_mode(&secret, 0o600);

    let (vars, job) = cron_parts();
    let command = job.split_whitespace().skip(6).collect::<Vec<_>>().join(" ");
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(relocate(&command))
        .env_clear()
        .env("HOME", &root)
        .envs(vars.iter().map(|(n, v)| (n, relocate(v))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let outcome = env.finish(child).expect(0);
    assert_eq!(outcome.stdout, "", "cron would mail anything on stdout");

    let (_, stderr_file) = command.split_once("2>>").unwrap();
    let diagnostics = std::fs::read_to_string(relocate(stderr_file.trim())).unwrap();
    assert!(
        !diagnostics.is_empty(),
        "the run's stderr went to the diagnostics file"
    );
    env.assert_no_secret_in(&diagnostics, "the diagnostics file");
    let lines = read_lines(&root.join(units_output_path().trim_start_matches('/')));
    assert_eq!(lines.len(), 4);
    assert!(root.join("var/lib/cylance-logs/lock").exists());
}

#[test]
fn logrotate_recreates_the_output_file_the_units_write() {
    let text = read(LOGROTATE);
    let output = units_output_path();
    let start = text
        .lines()
        .position(|l| !l.trim_start().starts_with('#') && l.split_whitespace().any(|w| w == output))
        .unwrap_or_else(|| panic!("{LOGROTATE} does not name {output}"));
    let block: Vec<Vec<&str>> = text
        .lines()
        .skip(start + 1)
        .take_while(|l| l.trim() != "}")
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|words| !words.is_empty() && !words[0].starts_with('#'))
        .collect();
    let directive = |name: &str| block.iter().find(|w| w[0] == name);
    let create = directive("create").unwrap_or_else(|| panic!("{LOGROTATE}: no create"));
    assert_eq!(create[1..], ["0640", "cylance-logs", "cylance-logs"]);
    for unwanted in ["copytruncate", "postrotate", "nocreate"] {
        assert!(directive(unwanted).is_none(), "{LOGROTATE}: {unwanted}");
    }
    for wanted in ["delaycompress", "missingok", "notifempty"] {
        assert!(directive(wanted).is_some(), "{LOGROTATE}: no {wanted}");
    }

    // And logrotate itself, when installed, rotates it that way.
    let Some(logrotate) = require_tool("logrotate") else {
        return;
    };
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let dir = std::env::temp_dir().join(format!("cylance-logs-logrotate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("var/log/cylance-logs")).unwrap();
    let config = text
        .replace(
            "cylance-logs cylance-logs",
            &format!("{} {}", id("-un"), id("-gn")),
        )
        .replace("/var/log/", &format!("{}/var/log/", dir.display()));
    std::fs::write(dir.join("logrotate.conf"), config).unwrap();
    let file = dir.join(output.trim_start_matches('/'));
    std::fs::write(&file, "{\"event_type\":\"threat\"}\n").unwrap();
    let run = Command::new(logrotate)
        .arg("--force")
        .arg("--state")
        .arg(dir.join("state"))
        .arg(dir.join("logrotate.conf"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let created = std::fs::metadata(&file).expect("logrotate created a new file");
    assert_eq!(created.len(), 0);
    assert_eq!(created.permissions().mode() & 0o777, 0o640);
    let rotated = std::fs::read_to_string(format!("{}.1", file.display())).unwrap();
    assert_eq!(
        rotated, "{\"event_type\":\"threat\"}\n",
        "delaycompress: .1 stays plain"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let Some(systemd_analyze) = require_tool("systemd-analyze") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("cylance-logs-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    // The files the units load, so that verify sees them there.
    for file in [
        "cylance-logs.env",
        "app-secret",
        "acme.env",
        "acme.app-secret",
    ] {
        std::fs::write(dir.join("etc").join(file), "").unwrap();
    }
    let etc = format!("{}/etc/", dir.display());
    for name in unit_files() {
        let text = read(&name)
            .replace(INSTALLED_BIN, BIN)
            .replace("/etc/cylance-logs/", &etc);
        std::fs::write(dir.join(name.trim_start_matches("systemd/")), text).unwrap();
    }
    let units = [
        "cylance-logs.service",
        "cylance-logs.timer",
        "cylance-logs@acme.service",
        "cylance-logs@acme.timer",
    ];
    let run = Command::new(&systemd_analyze)
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.join(u)))
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // Without systemd as PID 1, or with other broken units on the host, verify
    // may talk about things that are not ours: only lines about our units count.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("cylance-logs") || l.contains(&*dir.to_string_lossy()))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify:\n{}",
        ours.join("\n")
    );
    if !run.status.success() || !said.trim().is_empty() {
        eprintln!(
            "note: systemd-analyze verify ({}) said, about other things:\n{said}",
            run.status
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
