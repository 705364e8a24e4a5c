//! The fake's own tests: it is as strict as documented, serves every endpoint,
//! and injects the trouble tests ask for.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::auth::{INVALID_JWT, ISSUER, unix_now};
use super::{Credentials, FakeApi, Fault};
use crate::sample::{
    detection, device, memory_protection_event, sample_tenant, threat, threat_device,
};
use crate::time::threat_time;
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn jwt_with(creds: &Credentials, secret: &str, iat: i64, exp: i64, jti: &str) -> String {
    let claims = json!({
        "iss": ISSUER,
        "sub": creds.app_id,
        "tid": creds.tenant_id,
        "jti": jti,
        "iat": iat,
        "exp": exp,
    });
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn jwt(creds: &Credentials) -> String {
    let now = unix_now();
    let jti = uuid::Uuid::new_v4().to_string();
    jwt_with(creds, &creds.app_secret, now, now + 1800, &jti)
}

fn post_jwt(agent: &ureq::Agent, fake: &FakeApi, jwt: &str) -> (u16, Value) {
    let mut resp = agent
        .post(format!("{}/auth/v2/token", fake.url()))
        .header("Content-Type", "application/json; charset=utf-8")
        .send(json!({ "auth_token": jwt }).to_string())
        .unwrap();
    let body = resp.body_mut().read_to_string().unwrap();
    (resp.status().as_u16(), serde_json::from_str(&body).unwrap())
}

fn token(agent: &ureq::Agent, fake: &FakeApi) -> String {
    let (status, body) = post_jwt(agent, fake, &jwt(&fake.credentials()));
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// GET with the token and `Accept: application/json`; status and raw body.
fn get(agent: &ureq::Agent, fake: &FakeApi, token: &str, path: &str) -> (u16, String) {
    let mut resp = agent
        .get(format!("{}{path}", fake.url()))
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/json")
        .call()
        .unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

fn get_json(agent: &ureq::Agent, fake: &FakeApi, token: &str, path: &str) -> (u16, Value) {
    let (status, body) = get(agent, fake, token, path);
    (status, serde_json::from_str(&body).unwrap())
}

fn field<'a>(page: &'a Value, name: &str) -> Vec<&'a str> {
    page["page_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[name].as_str().unwrap())
        .collect()
}

#[test]
fn token_lists_threats_newest_first_in_the_envelope() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let times = [
        "2024-05-14T09:00:00",
        "2024-05-14T10:00:00",
        "2024-05-14T10:00:00",
        "2024-05-14T08:00:00",
        "2024-05-14T11:00:00",
    ];
    let threats: Vec<Value> = (0..5u64).map(|i| threat(i, times[i as usize])).collect();
    let mut expected: Vec<(String, String)> = threats
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap().to_owned();
            (s("last_found"), s("sha256"))
        })
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    fake.add_threats(threats);

    let token = token(&agent, &fake);
    assert_eq!(fake.issued_tokens(), vec![token.clone()]);
    assert_eq!(fake.received_jwts().len(), 1);

    let (status, body) = get(&agent, &fake, &token, "/threats/v2?page_size=2");
    assert_eq!(status, 200);
    assert!(body.starts_with(
        r#"{"page_number":1,"page_size":2,"total_pages":3,"total_number_of_items":5,"page_items":["#
    ));
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (status, body) = get_json(
            &agent,
            &fake,
            &token,
            &format!("/threats/v2?page_size=2&page={page}&unknown=x"),
        );
        assert_eq!(status, 200);
        assert_eq!(body["page_number"], page);
        seen.extend(field(&body, "sha256").into_iter().map(str::to_owned));
    }
    let expected: Vec<String> = expected.into_iter().map(|(_, sha)| sha).collect();
    assert_eq!(seen, expected);

    // The default page size, and the fields of an item.
    let (_, body) = get_json(&agent, &fake, &token, "/threats/v2");
    assert_eq!(body["page_size"], 10);
    let item = &body["page_items"][0];
    assert_eq!(item["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(item["md5"].as_str().unwrap().len(), 32);
    assert!(item["av_industry"].is_null());

    // Header checks.
    let resp = agent
        .get(format!("{}/threats/v2", fake.url()))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    assert_eq!(get(&agent, &fake, "not-issued", "/threats/v2").0, 401);
    assert_eq!(get(&agent, &fake, &token, "/threats/v2/x/devices").0, 404);
    fake.deny_privilege("threat:list");
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 403);
    assert_eq!(get(&agent, &fake, &token, "/detections/v2").0, 200);
    assert_eq!(fake.count("/threats/v2"), 9);
}

#[test]
fn another_tenant_is_refused_until_accepted() {
    let creds = Credentials::sample();
    let fake = FakeApi::start(creds.clone());
    let agent = agent();
    let other = Credentials {
        tenant_id: "bbbbbbbb-0000-4000-8000-000000000001".to_owned(),
        ..creds.clone()
    };
    assert_eq!(post_jwt(&agent, &fake, &jwt(&other)).0, 401);
    fake.accept_tenant(&other.tenant_id);
    assert_eq!(post_jwt(&agent, &fake, &jwt(&other)).0, 200);
    assert_eq!(post_jwt(&agent, &fake, &jwt(&creds)).0, 200);
}

#[test]
fn bad_jwts_are_refused() {
    let creds = Credentials::sample();
    let fake = FakeApi::start(creds.clone());
    let agent = agent();
    let now = unix_now();
    let jti = || uuid::Uuid::new_v4().to_string();
    let invalid = json!({ "message": INVALID_JWT });

    let wrong_secret = jwt_with(&creds, "another-secret", now, now + 600, &jti());
    assert_eq!(
        post_jwt(&agent, &fake, &wrong_secret),
        (401, invalid.clone())
    );

    let good = jwt(&creds);
    assert_eq!(post_jwt(&agent, &fake, &good).0, 200);
    assert_eq!(post_jwt(&agent, &fake, &good), (401, invalid.clone()));

    let too_long = jwt_with(&creds, &creds.app_secret, now, now + 31 * 60, &jti());
    assert_eq!(post_jwt(&agent, &fake, &too_long).0, 400);

    let expired = jwt_with(&creds, &creds.app_secret, now - 900, now - 60, &jti());
    let (status, body) = post_jwt(&agent, &fake, &expired);
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("clock"));

    let not_v4 = jwt_with(&creds, &creds.app_secret, now, now + 600, "jti-1");
    assert_eq!(post_jwt(&agent, &fake, &not_v4), (401, invalid));

    let resp = agent
        .post(format!("{}/auth/v2/token", fake.url()))
        .header("Content-Type", "text/plain")
        .send(json!({ "auth_token": jwt(&creds) }).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let resp = agent
        .get(format!("{}/auth/v2/token", fake.url()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    assert_eq!(fake.issued_tokens().len(), 1);
    assert_eq!(fake.received_jwts().len(), 7);
}

#[test]
fn page_parameters_are_validated() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    let message = r#"{"message":"The page size requested is not supported."}"#;
    for path in [
        "/threats/v2?page_size=0",
        "/threats/v2?page_size=201",
        "/threats/v2?page_size=ten",
        "/detections/v2?page_size=201",
    ] {
        assert_eq!(get(&agent, &fake, &token, path), (400, message.to_owned()));
    }
    for path in ["/threats/v2?page=0", "/detections/v2?page=-1"] {
        assert_eq!(get(&agent, &fake, &token, path).0, 400, "{path}");
    }
    let (status, body) = get_json(&agent, &fake, &token, "/detections/v2");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"page_number": 1, "page_size": 20, "total_pages": 0,
               "total_number_of_items": 0, "page_items": []})
    );
    let (status, body) = get_json(&agent, &fake, &token, "/memoryprotection/v2?page_size=200");
    assert_eq!((status, &body["total_pages"]), (200, &json!(0)));
}

#[test]
fn time_filters_select_the_window_unless_ignored() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    fake.add_threats(
        ["08:00:00", "09:00:00", "10:00:00", "11:00:00"]
            .iter()
            .zip(1u64..)
            .map(|(t, seed)| threat(seed, &format!("2024-05-14T{t}")))
            .collect(),
    );
    let window = "/threats/v2?start_time=2024-05-14T09:00:00&end_time=2024-05-14T10:00:00.000Z";
    let (status, body) = get_json(&agent, &fake, &token, window);
    assert_eq!(status, 200);
    assert_eq!(
        field(&body, "last_found"),
        ["2024-05-14T10:00:00", "2024-05-14T09:00:00"]
    );
    fake.set_honour_time_filters(false);
    let (_, body) = get_json(&agent, &fake, &token, window);
    assert_eq!(body["total_number_of_items"], 4);
    assert_eq!(
        get(
            &agent,
            &fake,
            &token,
            "/threats/v2?end_time=2024-05-14T10:00:00"
        )
        .0,
        400
    );
    let (status, body) = get(&agent, &fake, &token, "/threats/v2?start_time=14/05/2024");
    assert_eq!(status, 400);
    assert!(body.contains("start_time"));

    // Detections: inclusive start, exclusive end, `Z` required, sortable.
    fake.add_detections(
        ["09:00:00.000", "09:30:00.250", "10:00:00.000"]
            .iter()
            .zip(1u64..)
            .map(|(t, seed)| detection(seed, &format!("2024-05-14T{t}Z")))
            .collect(),
    );
    let window = "/detections/v2?start=2024-05-14T09:00:00.000Z&end=2024-05-14T10:00:00Z";
    let (_, body) = get_json(&agent, &fake, &token, window);
    assert_eq!(
        field(&body, "ReceivedTime"),
        ["2024-05-14T09:30:00.250Z", "2024-05-14T09:00:00.000Z"]
    );
    let (_, body) = get_json(
        &agent,
        &fake,
        &token,
        &format!("{window}&sort=ReceivedTime"),
    );
    assert_eq!(
        field(&body, "ReceivedTime"),
        ["2024-05-14T09:00:00.000Z", "2024-05-14T09:30:00.250Z"]
    );
    let bad = "/detections/v2?start=2024-05-14T09:00:00";
    assert_eq!(get(&agent, &fake, &token, bad).0, 400);
    assert_eq!(get(&agent, &fake, &token, "/detections/v2?sort=Id").0, 400);
    fake.remove_detection(body["page_items"][0]["Id"].as_str().unwrap());
    let (_, body) = get_json(&agent, &fake, &token, "/detections/v2?sort=-Severity");
    assert_eq!(body["total_number_of_items"], 2);
}

#[test]
fn faults_are_consumed_once() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    fake.add_threats((0..30).map(|i| threat(i, "2024-05-14T09:00:00")).collect());

    fake.push_fault(
        "/threats/v2",
        Fault::Status {
            status: 429,
            body: r#"{"message":"slow down"}"#.to_owned(),
            headers: vec![("Retry-After".to_owned(), "7".to_owned())],
        },
    );
    fake.push_fault_at("/threats/v2", 2, Fault::Html(502));
    let mut resp = agent
        .get(format!("{}/threats/v2", fake.url()))
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/json")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(
        resp.body_mut().read_to_string().unwrap(),
        r#"{"message":"slow down"}"#
    );
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 200);
    let (status, body) = get(&agent, &fake, &token, "/threats/v2?page=2");
    assert_eq!(status, 502);
    assert!(body.starts_with("<html>"));
    assert_eq!(get(&agent, &fake, &token, "/threats/v2?page=2").0, 200);

    fake.push_fault("/threats/v2", Fault::Reset);
    assert!(
        agent
            .get(format!("{}/threats/v2", fake.url()))
            .header("Authorization", format!("Bearer {token}"))
            .header("Accept", "application/json")
            .call()
            .is_err()
    );
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 200);

    fake.push_fault("/threats/v2", Fault::Oversize(100_000));
    let (status, body) = get(&agent, &fake, &token, "/threats/v2");
    assert_eq!((status, body.len()), (200, 100_000));
    assert!(body.starts_with(r#"{"page_number":1,"#));

    fake.push_fault("/threats/v2", Fault::Truncated);
    let (status, body) = get(&agent, &fake, &token, "/threats/v2");
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());

    fake.push_fault("/detections/v2", Fault::ExpireToken);
    assert_eq!(get(&agent, &fake, &token, "/detections/v2").0, 401);
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 401);

    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/threats/v2")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 200, 502, 200, 0, 200, 200, 200, 401]);
    assert_eq!(fake.requests()[3].param("page"), Some("2"));
}

#[test]
fn page_one_faults_answer_page_one_whatever_page_is_asked() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    fake.add_threats((0..5).map(|i| threat(i, "2024-05-14T09:00:00")).collect());
    let query = "page_size=2&start_time=2024-05-14T08:00:00";
    let (_, page_one) = get(&agent, &fake, &token, &format!("/threats/v2?{query}"));
    assert!(page_one.starts_with(r#"{"page_number":1,"#), "{page_one}");

    fake.push_fault("/threats/v2", Fault::PageOne);
    fake.push_fault("/threats/v2", Fault::PageOneUnnumbered);
    let page = |n: u32| {
        get(
            &agent,
            &fake,
            &token,
            &format!("/threats/v2?page={n}&{query}"),
        )
    };
    assert_eq!(page(2), (200, page_one.clone()));
    let (status, unnumbered) = page(3);
    assert_eq!(status, 200);
    assert_eq!(
        unnumbered,
        page_one.replacen(r#""page_number":1,"#, "", 1),
        "the same items, byte for byte, without page_number"
    );
    // Consumed: the next request gets its own page.
    let (_, real) = page(2);
    let real: Value = serde_json::from_str(&real).unwrap();
    assert_eq!(real["page_number"], 2);
}

#[test]
fn delays_do_not_block_other_workers_and_tokens_expire() {
    let fake = FakeApi::start(Credentials::sample());
    let token = token(&agent(), &fake);
    fake.push_fault("/threats/v2", Fault::Delay(Duration::from_millis(400)));
    fake.push_fault("/threats/v2", Fault::Delay(Duration::from_millis(400)));
    let started = Instant::now();
    let fake = Arc::new(fake);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (fake, token) = (Arc::clone(&fake), token.clone());
            thread::spawn(move || get(&agent(), &fake, &token, "/threats/v2").0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "served one after the other"
    );
    assert_eq!(fake.max_concurrent(), 2);

    fake.set_token_lifetime(Duration::from_millis(150));
    thread::sleep(Duration::from_millis(200));
    assert_eq!(get(&agent(), &fake, &token, "/threats/v2").0, 401);
}

#[test]
fn sample_tenant_is_varied() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    sample_tenant(&fake, Utc::now());
    let (_, threats) = get_json(&agent, &fake, &token, "/threats/v2?page_size=200");
    let (_, detections) = get_json(&agent, &fake, &token, "/detections/v2?page_size=200");
    assert_eq!(threats["total_number_of_items"], 25);
    assert_eq!(detections["total_number_of_items"], 15);
    let classes: HashSet<&str> = field(&threats, "classification").into_iter().collect();
    assert!(classes.len() >= 3);

    let (_, memory) = get_json(&agent, &fake, &token, "/memoryprotection/v2?page_size=200");
    let (_, devices) = get_json(&agent, &fake, &token, "/devices/v2");
    assert_eq!(memory["total_number_of_items"], 12);
    assert_eq!(devices["total_number_of_items"], 12);
    let user_fields: HashSet<bool> = memory["page_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.get("user_name").is_some())
        .collect();
    assert_eq!(user_fields.len(), 2, "both spellings of the user field");
    // wcry.exe was found on 23 devices more than its own sightings.
    let wcry = threats["page_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "wcry.exe")
        .unwrap();
    let path = format!("/threats/v2/{}/devices", wcry["sha256"].as_str().unwrap());
    let (_, sightings) = get_json(&agent, &fake, &token, &path);
    assert!(
        sightings["total_pages"].as_u64().unwrap() >= 3,
        "{sightings}"
    );
}

/// Zone-less API times (with or without fraction and `Z`) as instants.
fn instant(text: &str) -> chrono::NaiveDateTime {
    crate::time::parse_timestamp(text, crate::time::Zone::Optional)
        .unwrap_or_else(|| panic!("not an API time: {text}"))
}

/// Every item of every page of `path` (which has no query), walked by
/// `total_pages` with `page_size`, and whether some page came pretty-printed.
fn all_pages(
    agent: &ureq::Agent,
    fake: &FakeApi,
    token: &str,
    path: &str,
    page_size: u32,
) -> (Vec<Value>, bool) {
    let (mut items, mut pretty, mut page) = (Vec::new(), false, 1);
    loop {
        let url = format!("{path}?page={page}&page_size={page_size}");
        let (status, body) = get(agent, fake, token, &url);
        assert_eq!(status, 200, "{url}: {body}");
        pretty |= body.contains('\n');
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["page_number"], page);
        items.extend(body["page_items"].as_array().unwrap().iter().cloned());
        if page >= body["total_pages"].as_u64().unwrap() {
            return (items, pretty);
        }
        page += 1;
    }
}

#[test]
fn memory_protection_is_paged_filtered_and_not_in_time_order() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    // 25 events a minute apart, 09:00 to 09:24, added oldest first.
    let events: Vec<Value> = (0..25u64)
        .map(|i| memory_protection_event(i, &format!("2024-05-14T09:{i:02}:00")))
        .collect();
    fake.add_memory_protection(events.clone());
    let key = |v: &Value| v["device_image_file_event_id"].as_str().unwrap().to_owned();

    let (items, pretty) = all_pages(&agent, &fake, &token, "/memoryprotection/v2", 10);
    assert!(pretty, "even pages come pretty-printed");
    let served: Vec<String> = items.iter().map(key).collect();
    let mut expected: Vec<String> = events.iter().map(key).collect();
    expected.sort();
    assert_eq!(served, expected, "every event once, by id");
    let created: Vec<_> = items
        .iter()
        .map(|i| instant(i["created"].as_str().unwrap()))
        .collect();
    assert!(
        !created.is_sorted() && !created.iter().rev().is_sorted(),
        "served in time order: a client stopping early would pass"
    );
    let (_, first) = get_json(&agent, &fake, &token, "/memoryprotection/v2");
    assert_eq!(
        (&first["page_size"], &first["total_pages"]),
        (&json!(10), &json!(3))
    );

    // The window is inclusive at both ends, zone-less or with `Z`.
    let window = "/memoryprotection/v2?page_size=200&start_time=2024-05-14T09:05:00&end_time=2024-05-14T09:09:00.000Z";
    let (_, body) = get_json(&agent, &fake, &token, window);
    let mut minutes: Vec<&str> = field(&body, "created");
    minutes.sort();
    assert_eq!(
        minutes,
        ["05", "06", "07", "08", "09"].map(|m| format!("2024-05-14T09:{m}:00"))
    );
    let device = events[3]["device_id"].as_str().unwrap();
    let (_, body) = get_json(
        &agent,
        &fake,
        &token,
        &format!("/memoryprotection/v2?page_size=200&device_id={device}"),
    );
    let n = body["total_number_of_items"].as_u64().unwrap();
    assert!((1..25).contains(&n), "{n} events of one device");
    assert!(field(&body, "device_id").iter().all(|d| *d == device));

    fake.set_honour_memory_protection_time_filters(false);
    let (_, body) = get_json(&agent, &fake, &token, window);
    assert_eq!(body["total_number_of_items"], 25);
    for bad in [
        "/memoryprotection/v2?start_time=14/05/2024",
        "/memoryprotection/v2?end_time=2024-05-14T09:00:00",
        "/memoryprotection/v2?page_size=201",
    ] {
        assert_eq!(get(&agent, &fake, &token, bad).0, 400, "{bad}");
    }
    fake.deny_privilege("memoryprotection:list");
    let (status, body) = get(&agent, &fake, &token, "/memoryprotection/v2");
    assert_eq!(status, 403);
    assert!(body.contains("memoryprotection:list"));
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 200);
}

#[test]
fn devices_are_listed_newest_registration_first() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    fake.add_devices(
        (0..130u64)
            .map(|i| {
                device(
                    i,
                    &threat_time(start + chrono::TimeDelta::days((i * 37 % 130) as i64)),
                )
            })
            .collect(),
    );
    let (_, first) = get_json(&agent, &fake, &token, "/devices/v2");
    assert_eq!(
        (&first["page_size"], &first["total_pages"]),
        (&json!(100), &json!(2)),
        "default page size 100"
    );
    let (items, _) = all_pages(&agent, &fake, &token, "/devices/v2", 50);
    assert_eq!(items.len(), 130);
    let registered: Vec<_> = items
        .iter()
        .map(|d| instant(d["date_first_registered"].as_str().unwrap()))
        .collect();
    assert!(registered.iter().rev().is_sorted(), "newest first");
    let ids: HashSet<&str> = items.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 130);
    // A device added again replaces the old record.
    fake.add_devices(vec![device(0, "2030-01-01T00:00:00")]);
    let (_, body) = get_json(&agent, &fake, &token, "/devices/v2?page_size=1");
    assert_eq!(body["total_number_of_items"], 130);
    assert_eq!(body["page_items"][0]["id"], items.last().unwrap()["id"]);
    assert_eq!(
        get(&agent, &fake, &token, "/devices/v2?page_size=201").0,
        400
    );
    fake.deny_privilege("device:list");
    assert_eq!(get(&agent, &fake, &token, "/devices/v2").0, 403);
}

#[test]
fn threat_devices_show_where_each_file_was_found() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    let threats: Vec<Value> = (0..40u64)
        .map(|i| threat(i, &format!("2024-05-14T10:{i:02}:00")))
        .collect();
    fake.add_threats(threats.clone());
    let path = |t: &Value| format!("/threats/v2/{}/devices", t["sha256"].as_str().unwrap());

    let (mut older_elsewhere, mut same_device_twice, mut zoned) = (0, 0, 0);
    for t in &threats {
        let last_found = instant(t["last_found"].as_str().unwrap());
        let (items, _) = all_pages(&agent, &fake, &token, &path(t), 200);
        let found = |d: &Value| instant(d["date_found"].as_str().unwrap());
        let latest: Vec<&Value> = items.iter().filter(|d| found(d) == last_found).collect();
        assert!(!latest.is_empty(), "a sighting at last_found: {items:?}");
        assert!(items.iter().all(|d| found(d) <= last_found));
        let latest_ids: HashSet<&str> = latest.iter().map(|d| d["id"].as_str().unwrap()).collect();
        older_elsewhere += usize::from(
            items
                .iter()
                .any(|d| found(d) < last_found && !latest_ids.contains(d["id"].as_str().unwrap())),
        );
        same_device_twice += usize::from(latest.len() == 2 && latest_ids.len() == 1);
        zoned += usize::from(
            items
                .iter()
                .any(|d| d["date_found"].as_str().unwrap().ends_with('Z')),
        );
        assert_eq!(
            Some(items),
            fake.threat_devices(t["sha256"].as_str().unwrap())
        );
    }
    assert!(
        older_elsewhere >= 5,
        "{older_elsewhere} threats with older sightings elsewhere"
    );
    assert!(
        same_device_twice >= 3,
        "{same_device_twice} threats on one device twice"
    );
    assert!(zoned >= 3, "{zoned} threats with a zoned date_found");

    // A re-found threat gains a sighting at its new last_found.
    let sha = threats[0]["sha256"].as_str().unwrap();
    let before = fake.threat_devices(sha).unwrap().len();
    fake.refind_threat(sha, "2024-05-15T08:00:00");
    let after = fake.threat_devices(sha).unwrap();
    assert_eq!(after.len(), before + 1);
    assert_eq!(
        instant(after.last().unwrap()["date_found"].as_str().unwrap()),
        instant("2024-05-15T08:00:00")
    );

    // More than a page, the default page size, and replacement.
    let sha = threats[1]["sha256"].as_str().unwrap();
    let many: Vec<Value> = (0..25u64)
        .map(|i| threat_device(50 + i, &format!("2024-05-13T{i:02}:00:00"), "C:\\x.exe"))
        .collect();
    fake.set_threat_devices(sha, many.clone());
    let (_, body) = get_json(&agent, &fake, &token, &path(&threats[1]));
    assert_eq!(
        (&body["page_size"], &body["total_pages"]),
        (&json!(10), &json!(3))
    );
    let (items, pretty) = all_pages(&agent, &fake, &token, &path(&threats[1]), 10);
    assert_eq!(items, many);
    assert!(pretty);

    let (status, body) = get_json(&agent, &fake, &token, "/threats/v2/00AB/devices");
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("00AB"));
    assert_eq!(get(&agent, &fake, &token, "/threats/v2//devices").0, 404);
    let lower = path(&threats[2]).to_lowercase();
    assert_eq!(
        get(&agent, &fake, &token, &lower).0,
        404,
        "sha256 as the list spells it"
    );

    // Faults for the lookups reach the lookups, faults for the list the list.
    fake.push_fault("/threats/v2/", Fault::Html(503));
    fake.push_fault("/threats/v2", Fault::Html(502));
    assert_eq!(get(&agent, &fake, &token, &path(&threats[2])).0, 503);
    assert_eq!(get(&agent, &fake, &token, &path(&threats[2])).0, 200);
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 502);
    fake.push_fault(&path(&threats[3]), Fault::Html(504));
    assert_eq!(get(&agent, &fake, &token, &path(&threats[2])).0, 200);
    assert_eq!(get(&agent, &fake, &token, &path(&threats[3])).0, 504);
    fake.push_fault_at("/threats/v2/", 2, Fault::NotJson);
    assert_eq!(
        get(
            &agent,
            &fake,
            &token,
            &format!("{}?page=2", path(&threats[1]))
        )
        .1,
        "this is not json"
    );
    fake.deny_privilege("threat:devicelist");
    assert_eq!(get(&agent, &fake, &token, &path(&threats[2])).0, 403);
    assert_eq!(get(&agent, &fake, &token, "/threats/v2").0, 200);
}

#[test]
fn detection_details_are_the_full_record_or_404() {
    let fake = FakeApi::start(Credentials::sample());
    let agent = agent();
    let token = token(&agent, &fake);
    let detections: Vec<Value> = (0..6u64)
        .map(|i| detection(i, &format!("2024-05-14T09:0{i}:00.000Z")))
        .collect();
    fake.add_detections(detections.clone());
    let id = |d: &Value| d["Id"].as_str().unwrap().to_owned();
    let path = |d: &Value| format!("/detections/v2/{}/details", id(d));

    let mut pretty = 0;
    for d in &detections {
        let (status, body) = get(&agent, &fake, &token, &path(d));
        assert_eq!(status, 200);
        pretty += usize::from(body.contains('\n'));
        let details: Value = serde_json::from_str(&body).unwrap();
        for key in [
            "Id",
            "PhoneticId",
            "Name",
            "Severity",
            "Status",
            "OccurrenceTime",
            "ReceivedTime",
            "ActivationTime",
            "Product",
            "SchemaVersion",
            "ObjectType",
            "Comment",
            "Context",
            "DetectionRule",
            "Detector",
            "Device",
            "ArtifactsOfInterest",
            "AssociatedArtifacts",
            "InvolvedArtifacts",
            "AppliedExceptions",
            "Responses",
        ] {
            assert!(details.get(key).is_some(), "{key} missing: {details}");
        }
        assert_eq!(details["Id"], d["Id"]);
        assert_eq!(details["ReceivedTime"], d["ReceivedTime"]);
        assert_eq!(details["Device"]["Name"], d["Device"]["Name"]);
        assert_eq!(Some(details), fake.detection_details(&id(d)));
    }
    assert!((1..6).contains(&pretty), "{pretty} of 6 pretty-printed");

    // The record follows the detection: its status now, gone when it is.
    fake.set_detection_status(&id(&detections[0]), "Reviewed");
    let (_, details) = get_json(&agent, &fake, &token, &path(&detections[0]));
    assert_eq!(details["Status"], "Reviewed");
    fake.remove_detection(&id(&detections[0]));
    let (status, body) = get_json(&agent, &fake, &token, &path(&detections[0]));
    assert_eq!(status, 404);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&id(&detections[0]))
    );
    assert_eq!(
        get(&agent, &fake, &token, "/detections/v2/nope/details").0,
        404
    );
    assert_eq!(get(&agent, &fake, &token, "/detections/v2/x/other").0, 404);

    let set = json!({ "Id": id(&detections[1]), "Odd": [1, {"nested": null}] });
    fake.set_detection_details(&id(&detections[1]), set.clone());
    assert_eq!(
        get_json(&agent, &fake, &token, &path(&detections[1])),
        (200, set)
    );

    fake.push_fault("/detections/v2/", Fault::Truncated);
    assert_eq!(get(&agent, &fake, &token, "/detections/v2").0, 200);
    let (status, body) = get(&agent, &fake, &token, &path(&detections[2]));
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    fake.deny_privilege("opticsdetect:read");
    assert_eq!(get(&agent, &fake, &token, &path(&detections[2])).0, 403);
    assert_eq!(get(&agent, &fake, &token, "/detections/v2").0, 200);
    let recorded = fake.requests();
    let last = recorded.last().unwrap();
    assert_eq!((last.path.as_str(), last.status), ("/detections/v2", 200));
    // The loop, the truncated answer, the 403.
    assert_eq!(fake.count(&path(&detections[2])), 3);
}
