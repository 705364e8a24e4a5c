//! Sample data: deterministic, realistic items for every endpoint (threats,
//! detections and their details, memory-protection events, devices, the devices
//! a threat was found on) and [`sample_tenant`], a small varied tenant for the
//! demo and the tests.
//!
//! Items vary where the API notes are unsure (spellings of a device's state,
//! `username` or `user_name`, a `date_found` with or without fraction and zone,
//! null policy ids, names outside ASCII), so that a client passing against the
//! fake does not depend on one form.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::fake::FakeApi;
use crate::time::{Zone, detection_time, parse_timestamp, threat_time};

/// A realistic threat list item with every field the API notes name. Deterministic in
/// `seed`; `last_found` is used as given (zone-less, like `2024-05-14T09:00:00`).
pub fn threat(seed: u64, last_found: &str) -> Value {
    let r = mix(seed ^ 0x7468_7265_6174);
    json!({
        "name": format!("sample-{seed}.exe"),
        "sha256": hex(seed, 0x5348_4132_3536, 64).to_uppercase(),
        "md5": hex(seed, 0x004d_4435, 32).to_uppercase(),
        "cylance_score": -((50 + r % 50) as f64) / 100.0,
        "av_industry": null,
        "classification": "Malware",
        "sub_classification": "Trojan",
        "global_quarantined": false,
        "safelisted": false,
        "unique_to_cylance": true,
        "file_size": 20_000 + (r >> 8) % 5_000_000,
        "last_found": last_found,
    })
}

/// A realistic CylanceOPTICS detection list item. Deterministic in `seed`;
/// `received_time` is used as given (RFC 3339 with `Z` and milliseconds, e.g.
/// `2024-05-14T09:00:00.123Z`) and `OccurrenceTime` is a few seconds to minutes earlier.
pub fn detection(seed: u64, received_time: &str) -> Value {
    let received = DateTime::parse_from_rfc3339(received_time)
        .unwrap_or_else(|e| {
            panic!("fake_cylance::detection: bad received_time {received_time:?}: {e}")
        })
        .with_timezone(&Utc);
    let r = mix(seed ^ 0x6465_7465_6374);
    let lag = TimeDelta::milliseconds((5_000 + r % 295_000) as i64);
    let device = (seed % DETECTION_DEVICES) as usize;
    let severity = ["High", "Medium", "Low"][(seed % 3) as usize];
    json!({
        "Id": guid(seed, 0x4944),
        "PhoneticId": phonetic_id(seed),
        "Severity": severity,
        "Status": "New",
        "OccurrenceTime": detection_time(received - lag),
        "ReceivedTime": received_time,
        "DetectionDescription": DESCRIPTIONS[(seed % DESCRIPTIONS.len() as u64) as usize],
        "Device": {
            "CylanceId": guid(device as u64, 0x4445_5649_4345),
            "Name": FLEET[device],
        },
    })
}

/// A memory-protection event (an exploit or injection attempt the agent saw),
/// with the fields the API notes name. Deterministic in `seed`; `created` is
/// used as given (zone-less, like `2024-05-14T09:00:00`). One in five spells
/// the user field `user_name`, as one source says the API does.
pub fn memory_protection_event(seed: u64, created: &str) -> Value {
    let r = mix(seed ^ 0x6d65_6d6f_7279);
    let device = seed % FLEET.len() as u64;
    let (violation, image) = VIOLATIONS[(r % VIOLATIONS.len() as u64) as usize];
    let user = if seed % 5 == 3 {
        "user_name"
    } else {
        "username"
    };
    // 0 none, 1 warning, 2 block, 3 terminate; mostly blocks.
    let action = [2, 3, 2, 1, 0, 2][(r >> 8) as usize % 6];
    let mut item = json!({
        "device_image_file_event_id": guid(seed, 0x004d_454d_4556),
        "agent_event_id": guid(seed, 0x0041_4745_4e54),
        "device_id": device_id(device),
        "action": action,
        "violation_type": violation,
        "image_name": image,
        "file_hash_id": hex(seed, 0x004d_4841_5348, 64).to_uppercase(),
        "file_version": format!("10.0.{}.{}", 17_000 + (r >> 12) % 5_000, (r >> 20) % 900),
        "dll_version": if seed % 4 == 1 { Value::Null } else { json!("10.0.19041.1") },
        "process_id": 1_000 + (r >> 24) % 60_000,
        user: format!("CORP\\{}", USERS[(seed % USERS.len() as u64) as usize]),
        "sid": format!("S-1-5-21-3623811015-3361044348-30300820-{}", 1_000 + seed % 9_000),
        "groups": "CORP\\Domain Users, BUILTIN\\Users",
        "created": created,
    });
    if seed % 7 == 6 {
        // Seen in the wild: an event without a process id.
        item["process_id"] = Value::Null;
    }
    item
}

/// A device of the inventory (`/devices/v2` item). Deterministic in `seed`;
/// devices `0..12` are the fleet the other generators use (detections,
/// memory protection and threat sightings name them by the same `id`).
/// `date_first_registered` is used as given (zone-less).
pub fn device(seed: u64, date_first_registered: &str) -> Value {
    let r = mix(seed ^ 0x6465_7669_6365);
    let policy = if seed % 5 == 2 {
        json!({ "id": Value::Null, "name": "Default" })
    } else {
        json!({ "id": guid(seed % 3, 0x504f_4c49_4359), "name": POLICIES[(seed % 3) as usize] })
    };
    json!({
        "id": device_id(seed),
        "name": device_name(seed),
        "state": STATES[(r % STATES.len() as u64) as usize],
        "agent_version": agent_version(seed),
        "policy": policy,
        "date_first_registered": date_first_registered,
        "ip_addresses": ip_addresses(seed),
        "mac_addresses": mac_addresses(seed),
    })
}

/// One sighting of a threat's file on a device (`/threats/v2/{sha256}/devices`
/// item): the device `device_seed` (see [`device`]) found it at `file_path` at
/// `date_found` (used as given).
pub fn threat_device(device_seed: u64, date_found: &str, file_path: &str) -> Value {
    let r = mix(device_seed ^ mix(file_path.len() as u64) ^ 0x0073_6967_6874);
    json!({
        "id": device_id(device_seed),
        "name": device_name(device_seed),
        "state": STATES[(r % STATES.len() as u64) as usize],
        "agent_version": agent_version(device_seed),
        "policy_id": if device_seed % 5 == 2 { Value::Null } else { json!(guid(device_seed % 3, 0x504f_4c49_4359)) },
        "ip_addresses": ip_addresses(device_seed),
        "mac_addresses": mac_addresses(device_seed),
        "date_found": date_found,
        "file_path": file_path,
        "file_status": FILE_STATUSES[((r >> 8) % FILE_STATUSES.len() as u64) as usize],
    })
}

/// The sightings the fake serves for a threat whose file was found at each
/// time of `founds` (zone-less, oldest first: the first `last_found`, then
/// each re-find). The first find brings 1 to 4 sightings: the latest with
/// `date_found` = that time, older ones on other devices, and for one threat
/// in three the same device again with a second file path; every later find
/// brings one sighting at its time. One threat in four writes `date_found`
/// with a fraction and `Z` (the same instant, another spelling).
pub(crate) fn threat_sightings(sha256: &str, name: &str, founds: &[String]) -> Vec<Value> {
    let r = mix(fnv(sha256));
    let spelled = |at: &str| -> String {
        if r % 4 == 1 && !at.contains(['.', 'Z']) {
            format!("{at}.000Z")
        } else {
            at.to_owned()
        }
    };
    let fleet = FLEET.len() as u64;
    let first_device = (r >> 8) % fleet;
    let mut out = Vec::new();
    let Some((first, later)) = founds.split_first() else {
        return out;
    };
    if let Some(at) = parse_timestamp(first, Zone::Optional) {
        for i in 0..(r >> 16) % 3 {
            let older = at - TimeDelta::minutes(90 * (i as i64 + 1) + (r >> 20) as i64 % 600);
            let device = (first_device + 1 + i) % fleet;
            out.push(threat_device(
                device,
                &spelled(&older.format("%Y-%m-%dT%H:%M:%S").to_string()),
                &file_path(device + i, name),
            ));
        }
    }
    out.push(threat_device(
        first_device,
        &spelled(first),
        &file_path(first_device, name),
    ));
    if (r >> 28).is_multiple_of(3) {
        out.push(threat_device(
            first_device,
            &spelled(first),
            &file_path(first_device + 1, name),
        ));
    }
    for (k, at) in (1u64..).zip(later) {
        let device = (first_device + 3 * k) % fleet;
        out.push(threat_device(
            device,
            &spelled(at),
            &file_path(device, name),
        ));
    }
    out
}

/// The full record of `GET /detections/v2/{Id}/details` for a stored list
/// item: the item's own fields, then those only the detail record has.
pub(crate) fn detection_details(item: &Value) -> Value {
    let id = item["Id"].as_str().unwrap_or_default();
    let r = mix(fnv(id));
    let description = item["DetectionDescription"].as_str().unwrap_or("Detection");
    let device_name = item["Device"]["Name"].as_str().unwrap_or_default();
    let seed = FLEET
        .iter()
        .position(|&n| n == device_name)
        .map_or(r % FLEET.len() as u64, |i| i as u64);
    let mut device = device(seed, "2023-11-02T08:15:00");
    device["CylanceId"] = item["Device"]["CylanceId"].clone();
    device["Name"] = json!(device_name);
    let process = |pid: u64, image: &str| {
        json!({ "Type": "Process", "ProcessId": pid, "Path": image,
                "CommandLine": format!("\"{image}\" -nop -w hidden -enc SQBFAFgA") })
    };
    let category = [
        "Execution",
        "Persistence",
        "Credential Access",
        "Defense Evasion",
    ];
    let mut details = json!({
        "Id": id,
        "PhoneticId": item["PhoneticId"],
        "Name": description,
        "Severity": item["Severity"],
        "Status": item["Status"],
        "OccurrenceTime": item["OccurrenceTime"],
        "ReceivedTime": item["ReceivedTime"],
        "ActivationTime": item["OccurrenceTime"],
        "Product": "CylanceOPTICS",
        "SchemaVersion": "1.0",
        "ObjectType": "Detection",
        "Comment": if r.is_multiple_of(3) { Value::Null } else { json!("") },
        "Context": { "Entity": { "Type": "Process", "Path": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe" } },
        "DetectionRule": {
            "Id": guid(r % 40, 0x5255_4c45),
            "Name": description,
            "Category": category[(r % 4) as usize],
            "Description": format!("Detects: {description}"),
            "Version": 1 + (r >> 8) % 5,
        },
        "Detector": { "Name": "Context Analysis Engine", "Version": "3.0.1003.400" },
        "Device": device,
        "ArtifactsOfInterest": [process(4_000 + r % 1_000, "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe")],
        "AssociatedArtifacts": [],
        "InvolvedArtifacts": [
            process(4_000 + r % 1_000, "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"),
            { "Type": "File", "Path": "C:\\Users\\Public\\update.ps1", "Sha256": hex(r, 0x4641, 64).to_uppercase() },
        ],
        "AppliedExceptions": [],
        "Responses": if r.is_multiple_of(2) { json!([]) } else { json!([{ "Type": "Kill", "Status": "Succeeded" }]) },
    });
    if r % 5 == 4 {
        // Unknown fields come and go; a client keeps what it does not know.
        details["RiskScore"] = json!(r % 100);
    }
    details
}

/// Seeds a small, varied tenant for the demo: 25 threats and 15 detections
/// spread over the 20 hours before `now` (three threats share one `last_found`
/// second), 12 memory-protection events, the 12 devices of the fleet, and one
/// threat (`wcry.exe`) found on 23 more devices over the day before its last
/// sighting (three pages at the default page size).
pub fn sample_tenant(fake: &FakeApi, now: DateTime<Utc>) {
    let threats: Vec<Value> = SAMPLE_THREATS
        .iter()
        .enumerate()
        .map(|(i, &(name, class, sub, score, av))| {
            // Threats 10, 11 and 12 share one second.
            let slot = if (10..=12).contains(&i) { 10 } else { i as i64 };
            let when = now - TimeDelta::minutes(3 + 47 * slot) - TimeDelta::seconds(slot % 7);
            let mut t = threat(1000 + i as u64, &threat_time(when));
            t["name"] = json!(name);
            t["classification"] = json!(class);
            t["sub_classification"] = json!(sub);
            t["cylance_score"] = json!(score);
            t["av_industry"] = av.map_or(Value::Null, |n| json!(n));
            t["global_quarantined"] = json!(i % 9 == 4);
            t["unique_to_cylance"] = json!(av.is_none());
            t
        })
        .collect();
    let wcry = threats[22].clone();
    fake.add_threats(threats);
    let last_found = wcry["last_found"].as_str().unwrap_or_default();
    let wcry_found =
        NaiveDateTime::parse_from_str(last_found, "%Y-%m-%dT%H:%M:%S").map_or(now, |t| t.and_utc());
    let spread = (0..23u64)
        .map(|i| {
            let at = wcry_found - TimeDelta::minutes(60 + 61 * i as i64);
            threat_device(100 + i, &threat_time(at), "C:\\Users\\Public\\wcry.exe")
        })
        .collect();
    fake.add_threat_devices(wcry["sha256"].as_str().unwrap_or_default(), spread);

    let statuses = [
        "New",
        "New",
        "In Progress",
        "New",
        "Reviewed",
        "False Positive",
    ];
    let detections = (0..15u64)
        .map(|i| {
            let when = now - TimeDelta::minutes(7 + 79 * i as i64)
                + TimeDelta::milliseconds(((i * 137) % 1000) as i64);
            let mut d = detection(2000 + i, &detection_time(when));
            d["Status"] = json!(statuses[(i % statuses.len() as u64) as usize]);
            d
        })
        .collect();
    fake.add_detections(detections);

    fake.add_memory_protection(
        (0..12u64)
            .map(|i| {
                let when = now - TimeDelta::minutes(11 + 97 * i as i64);
                memory_protection_event(3000 + i, &threat_time(when))
            })
            .collect(),
    );
    fake.add_devices(
        (0..FLEET.len() as u64)
            .map(|i| device(i, &threat_time(now - TimeDelta::days(400 - 31 * i as i64))))
            .collect(),
    );
}

/// The devices the generators name; detections use the first seven
/// (`seed % 7`), everything else all twelve. Two names are not ASCII.
const FLEET: [&str; 12] = [
    "WS-FIN-014",
    "WS-HR-007",
    "LT-JSMITH",
    "SRV-DC-01",
    "SRV-FILE-02",
    "LT-MGARCIA",
    "WS-DEV-221",
    "LT-MÜLLER",
    "WS-LAB-\u{7814}\u{7a76}-3",
    "SRV-SQL-01",
    "LT-AOKAFOR",
    "VDI-POOL-0417",
];
/// How many devices of [`FLEET`] detections name.
const DETECTION_DEVICES: u64 = 7;

/// `Online`/`Offline`, also seen spelled `OnLine`.
const STATES: [&str; 4] = ["Online", "Offline", "OnLine", "Online"];

const FILE_STATUSES: [&str; 6] = [
    "Quarantined",
    "Default",
    "Quarantined",
    "Suspicious",
    "FileRemoved",
    "Whitelisted",
];

const POLICIES: [&str; 3] = [
    "Servers - Block",
    "Workstations - Auto Quarantine",
    "Laptops",
];

const USERS: [&str; 5] = ["jsmith", "mgarcia", "svc_backup", "aokafor", "SYSTEM"];

/// (violation type, image name): 12 is an LSASS read.
const VIOLATIONS: [(u64, &str); 6] = [
    (12, "C:\\Users\\jsmith\\AppData\\Local\\Temp\\pd64.exe"),
    (9, "C:\\Windows\\System32\\rundll32.exe"),
    (
        7,
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
    ),
    (
        1,
        "C:\\Program Files (x86)\\Adobe\\Acrobat Reader DC\\Reader\\AcroRd32.exe",
    ),
    (
        14,
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
    ),
    (5, "C:\\Windows\\SysWOW64\\mshta.exe"),
];

const DESCRIPTIONS: [&str; 15] = [
    "Suspicious PowerShell download cradle",
    "LSASS memory read by an unsigned process",
    "Office application spawned a command shell",
    "Ransomware-like mass file renaming",
    "Persistence via Run registry key",
    "Credential dumping via comsvcs.dll MiniDump",
    "Suspicious scheduled task creation",
    "Remote service creation via PsExec",
    "Encoded PowerShell command line",
    "Unusual outbound connection from rundll32",
    "Volume shadow copy deletion",
    "WMI event subscription persistence",
    "Browser credential store accessed",
    "Lateral movement via WinRM",
    "Windows Defender disabled via registry",
];

type SampleThreat = (&'static str, &'static str, &'static str, f64, Option<u32>);

#[rustfmt::skip]
const SAMPLE_THREATS: [SampleThreat; 25] = [
    ("invoice_2024-05.pdf.exe", "Malware", "Trojan", -0.98, Some(41)),
    ("svch0st.exe", "Malware", "Backdoor", -1.0, Some(55)),
    ("mimikatz.exe", "Dual Use", "Hacking Tool", -0.74, Some(60)),
    ("PsExec64.exe", "Dual Use", "Remote Access", -0.31, None),
    ("update_flash_player.exe", "Malware", "Downloader", -0.93, Some(23)),
    ("WinRAR_keygen.exe", "PUP", "Generic", -0.45, Some(12)),
    ("toolbar_setup.exe", "PUP", "Toolbar", -0.52, Some(8)),
    ("free_pdf_converter.msi", "PUP", "Adware", -0.61, None),
    ("locky_payload.dll", "Malware", "Ransom", -1.0, Some(62)),
    ("kbd_logger.exe", "Malware", "Infostealer", -0.96, None),
    ("nc.exe", "Dual Use", "Tool", -0.38, Some(31)),
    ("xmrig.exe", "PUP", "Cryptominer", -0.67, Some(44)),
    ("autorun_usb.exe", "Malware", "Worm", -0.99, Some(38)),
    ("Q2_payroll.doc.scr", "Malware", "Dropper", -0.97, None),
    ("TeamViewer_portable.exe", "Dual Use", "Remote Access", -0.22, None),
    ("chrome_updater.exe", "Malware", "Downloader", -0.91, Some(17)),
    ("setup_free_vpn.exe", "PUP", "Adware", -0.58, Some(5)),
    ("rundll_helper.dll", "Malware", "Backdoor", -0.95, None),
    ("beacon_x64.exe", "Malware", "Backdoor", -1.0, Some(49)),
    ("netscan.exe", "Dual Use", "Tool", -0.41, Some(9)),
    ("emotet_loader.exe", "Malware", "Trojan", -1.0, Some(58)),
    ("driver_booster_setup.exe", "PUP", "Generic", -0.35, Some(3)),
    ("wcry.exe", "Malware", "Ransom", -1.0, Some(66)),
    ("procdump64.exe", "Dual Use", "Tool", -0.27, None),
    ("AnyDesk_silent.exe", "Dual Use", "Remote Access", -0.33, Some(2)),
];

/// splitmix64: a deterministic, well-spread function of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `chars` lowercase hex digits derived from `seed` and `salt`.
fn hex(seed: u64, salt: u64, chars: usize) -> String {
    let mut out = String::with_capacity(chars + 16);
    let mut i = 0u64;
    while out.len() < chars {
        let _ = write!(out, "{:016x}", mix(seed ^ mix(salt.wrapping_add(i))));
        i += 1;
    }
    out.truncate(chars);
    out
}

/// A version-4-shaped GUID derived from `seed` and `salt`.
fn guid(seed: u64, salt: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix(seed ^ mix(salt)).to_be_bytes());
    bytes[8..].copy_from_slice(&mix(seed ^ mix(salt + 1)).to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Something like `KOBA-4821`.
fn phonetic_id(seed: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "BA", "KO", "MI", "TU", "RE", "SA", "LO", "VI", "DE", "NU", "PA", "ZO", "FI", "GA", "HE",
        "JU",
    ];
    let r = mix(seed ^ 0x5048_4f4e);
    format!(
        "{}{}-{:04}",
        SYLLABLES[(r & 15) as usize],
        SYLLABLES[((r >> 4) & 15) as usize],
        (r >> 8) % 10_000
    )
}

/// FNV-1a: a stable hash of a text key (sha256, Id) to seed generators with.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `id` of fleet device `seed` (detections' `Device.CylanceId` too).
fn device_id(seed: u64) -> String {
    guid(seed, 0x4445_5649_4345)
}

fn device_name(seed: u64) -> String {
    FLEET
        .get(seed as usize)
        .map_or_else(|| format!("WS-{seed:04}"), |&name| name.to_owned())
}

fn agent_version(seed: u64) -> String {
    format!(
        "3.{}.{}.{}",
        1 + seed % 2,
        1000 + seed % 3,
        400 + mix(seed) % 200
    )
}

/// One IPv4 address, for some devices an IPv6 one too, for a few none.
fn ip_addresses(seed: u64) -> Value {
    match seed % 6 {
        5 => json!([]),
        2 => json!([
            format!("10.20.{}.{}", seed % 250, 10 + seed % 200),
            "fe80::1c2b:3d4e:5f60:7a8b"
        ]),
        _ => json!([format!("10.20.{}.{}", seed % 250, 10 + seed % 200)]),
    }
}

fn mac_addresses(seed: u64) -> Value {
    let r = mix(seed ^ 0x004d_4143);
    let octets: Vec<String> = (0..6)
        .map(|i| format!("{:02X}", (r >> (8 * i)) & 0xff))
        .collect();
    json!([octets.join("-")])
}

/// Where device `seed` kept the file `name`.
fn file_path(seed: u64, name: &str) -> String {
    let user = USERS[(seed % USERS.len() as u64) as usize];
    match seed % 4 {
        0 => format!("C:\\Users\\{user}\\Downloads\\{name}"),
        1 => format!("C:\\ProgramData\\{name}"),
        2 => format!("C:\\Users\\{user}\\AppData\\Local\\Temp\\{name}"),
        _ => format!("C:\\Windows\\Temp\\{name}"),
    }
}
