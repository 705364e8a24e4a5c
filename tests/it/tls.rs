//! TLS end to end: a TLS front for the fake API, with a certificate authority
//! made at test time. Trusted through `--ca-file`, the run works; without it,
//! the run fails at once with a message that says what to do, never retrying
//! what cannot get better.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, leaf DER, leaf key DER).
fn certificates() -> (String, Vec<u8>, Vec<u8>) {
    certificates_for(rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap())
}

/// A CA and a leaf with these parameters signed by it, as [`certificates`].
fn certificates_for(leaf_params: rcgen::CertificateParams) -> (String, Vec<u8>, Vec<u8>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cylance-logs test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    (ca.pem(), leaf.der().to_vec(), leaf_key.serialize_der())
}

/// One HTTP/1.1 message head and body (by Content-Length) from `reader`.
fn read_message(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut length = 0;
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(value) = text.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        if text.starts_with("connection:") {
            continue;
        }
        if line == b"\r\n" {
            message.extend_from_slice(b"connection: close\r\n\r\n");
            break;
        }
        message.extend_from_slice(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    message.extend_from_slice(&body);
    Some(message)
}

/// Serves TLS on loopback and passes each request to `upstream` (plain HTTP).
fn tls_front(upstream: String, leaf: Vec<u8>, key: Vec<u8>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(leaf)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (config, upstream) = (config.clone(), upstream.clone());
            std::thread::spawn(move || {
                let Ok(connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = BufReader::new(rustls::StreamOwned::new(connection, client));
                while let Some(request) = read_message(&mut tls) {
                    let Ok(mut plain) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    let mut response = Vec::new();
                    if plain.write_all(&request).is_err()
                        || plain.read_to_end(&mut response).is_err()
                    {
                        return;
                    }
                    let stream = tls.get_mut();
                    if stream
                        .write_all(&response)
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn tls_env() -> (TestEnv, String, std::path::PathBuf) {
    tls_env_with(certificates())
}

fn tls_env_with(
    (ca_pem, leaf, key): (String, Vec<u8>, Vec<u8>),
) -> (TestEnv, String, std::path::PathBuf) {
    let env = TestEnv::new();
    let upstream = env.fake.url().trim_start_matches("http://").to_string();
    let url = tls_front(upstream, leaf, key);
    let ca_file = env.dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    (env, url, ca_file)
}

#[test]
fn https_api_trusted_through_ca_file_works() {
    let (env, url, ca_file) = tls_env();
    env.fake.add_threats(threats(0, 250, 5));
    env.fake.add_detections(detections(0, 3, 5));
    let ca = ca_file.display().to_string();
    env.run(&["poll", "--api-url", &url, "--ca-file", &ca])
        .expect(0);
    assert_eq!(env.lines().len(), 253);
}

#[test]
fn untrusted_certificate_fails_at_once_with_78_pointing_at_ca_file() {
    let (env, url, _) = tls_env();
    let started = std::time::Instant::now();
    let out = env.run(&["poll", "--api-url", &url]).expect(78);
    let line = out.error_line();
    assert!(line.contains("POST /auth/v2/token"), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(line.contains("--ca-file"), "{line}");
    assert!(
        !out.stderr.contains("retrying"),
        "a certificate error was retried:\n{}",
        out.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(env.fake.requests().len(), 0, "nothing reached the API");
}

/// The names a certificate presents are the server's text: rustls quotes them
/// raw in its error (a DNS name may hold ESC or a newline), and a
/// certificate may list thousands. They reached stderr unescaped and uncut.
#[test]
fn names_in_a_hostile_certificate_reach_stderr_escaped_and_cut() {
    let hostile = "evil\u{1b}[2J\n<0>forged.example";
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = (0..500)
        .map(|i| rcgen::SanType::DnsName(format!("{hostile}{i}").try_into().unwrap()))
        .collect();
    let (env, url, ca_file) = tls_env_with(certificates_for(params));
    let ca = ca_file.display().to_string();
    let out = env
        .run(&["poll", "--api-url", &url, "--ca-file", &ca])
        .expect(78);
    assert!(out.stderr.contains("forged.example"), "{}", out.stderr);
    assert!(!out.stderr.contains('\u{1b}'), "raw ESC: {:?}", out.stderr);
    assert!(
        out.stderr.lines().all(|l| l.starts_with("cylance-logs: ")),
        "a forged line: {}",
        out.stderr
    );
    assert!(out.stderr.len() < 2000, "{} bytes", out.stderr.len());
}
