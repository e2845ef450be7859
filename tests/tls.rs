//! TLS termination: HTTPS with the configured certificate (TLS 1.3 and 1.2, ALPN http/1.1), plain
//! HTTP still open to loopback, a turn streamed over TLS, Secure cookies, and a certificate
//! replaced on disk taking effect for new connections while an open one goes on.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{turn_body, Env};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn write_pair(dir: &Path) -> (PathBuf, PathBuf, String) {
    let (tls, ca) = loadtest::mock::self_signed_localhost();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&key, tls.key_pem).unwrap();
    std::fs::write(&cert, tls.cert_chain_pem).unwrap();
    (cert, key, ca)
}

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap())
        .map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now, so a refused certificate is an error here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One request on an open connection; reads a Content-Length reply.
fn request(s: &mut Tls, req: &str) -> (u16, String) {
    s.write_all(req.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut len = 0usize;
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        headers.push_str(&line);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    let code = status.split(' ').nth(1).unwrap().parse().unwrap();
    (
        code,
        format!("{headers}\r\n{}", String::from_utf8_lossy(&body)),
    )
}

#[test]
fn https_and_loopback_http_on_one_port_and_a_turn_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, ca) = write_pair(certs.path());
    let env = Env::start_with(1, |s| s.tls = Some((cert.clone(), key.clone())));
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let mut s = connect(env.addr, client_config(&ca, versions)).expect("handshake");
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (status, _) = request(&mut s, "GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n");
        assert_eq!(status, 200);
        // Keep-alive over TLS.
        let (status, _) = request(&mut s, "GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n");
        assert_eq!(status, 200);
    }
    // Plain HTTP from this machine still works on the same port.
    let v = env.get_json("/health");
    assert_eq!(v["status"], "ok");

    // A streamed turn over TLS ends with its terminal event.
    let mut s = connect(env.addr, client_config(&ca, &[&rustls::version::TLS13])).unwrap();
    let body = turn_body("over tls");
    let req = format!(
        "POST /backend-api/codex/responses HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("response.completed"), "{text}");

    // Session cookies are Secure when the gateway terminates TLS.
    let mut s = connect(env.addr, client_config(&ca, &[&rustls::version::TLS13])).unwrap();
    let pw = r#"{"new_password":"tls dashboard password"}"#;
    let (status, reply) = request(
        &mut s,
        &format!(
            "POST /api/dashboard-auth/password HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n{pw}",
            pw.len()
        ),
    );
    assert_eq!(status, 200, "{reply}");
    let cookie = reply
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[test]
fn a_replaced_certificate_serves_new_connections_and_open_ones_go_on() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, old_ca) = write_pair(certs.path());
    let env = Env::start_with(0, |s| s.tls = Some((cert.clone(), key.clone())));
    let old = client_config(&old_ca, &[&rustls::version::TLS13]);
    let mut open = connect(env.addr, old.clone()).unwrap();
    let (status, _) = request(&mut open, "GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n");
    assert_eq!(status, 200);

    // Replaced on disk (as a certificate renewal does): new connections get the new one.
    std::thread::sleep(Duration::from_millis(20));
    let (_, _, new_ca) = write_pair(certs.path());
    let new = client_config(&new_ca, &[&rustls::version::TLS13]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect(env.addr, new.clone()).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        connect(env.addr, old.clone()).is_err(),
        "new connections must not get the old certificate"
    );
    // The connection made before the change is still served.
    let (status, _) = request(&mut open, "GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n");
    assert_eq!(status, 200);

    // A broken pair is refused and the current one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        connect(env.addr, new).is_ok(),
        "a bad file must not replace a good pair"
    );
}

#[test]
fn a_bad_certificate_file_stops_the_start_with_its_reason() {
    let certs = tempfile::tempdir().unwrap();
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    std::fs::write(&cert, "nope").unwrap();
    std::fs::write(&key, "nope").unwrap();
    let mock = loadtest::mock::MockUpstream::start(Default::default()).unwrap();
    let mut settings = common::settings_for(certs.path().join("data"), &mock);
    settings.tls = Some((cert, key));
    match codex_lb::Gateway::start(settings) {
        Err(e) => assert!(e.to_string().contains("no PEM certificate"), "{e}"),
        Ok(_) => panic!("started with a bad certificate"),
    }
}
