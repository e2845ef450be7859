//! The mock over HTTPS: a rustls (ring) client that trusts the generated CA gets a full Codex
//! turn; one that does not trust it, or that speaks plain HTTP, gets nothing.

mod common;

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use loadtest::mock::{self_signed_localhost, MockConfig, MockUpstream, SeedAccount};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type TlsConn = Conn<StreamOwned<ClientConnection, TcpStream>>;

fn start_tls() -> (MockUpstream, String) {
    let (tls, ca_pem) = self_signed_localhost();
    let m = MockUpstream::start(MockConfig {
        tls: Some(tls),
        ..MockConfig::default()
    })
    .expect("mock starts with TLS");
    (m, ca_pem)
}

/// A client config trusting only `ca_pem`, ring provider, offering ALPN `alpn`.
fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("CA PEM parses"))
            .expect("CA accepted");
    }
    assert_eq!(roots.len(), 1);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Connects and completes the handshake (or returns its error).
fn handshake(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    name: &str,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let server_name = ServerName::try_from(name.to_string()).expect("valid server name");
    let mut conn = ClientConnection::new(cfg, server_name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// The error of a handshake that must fail; panics if it succeeds.
fn handshake_error(addr: SocketAddr, cfg: Arc<ClientConfig>, name: &str) -> io::Error {
    match handshake(addr, cfg, name) {
        Ok(_) => panic!("the handshake as {name:?} must fail but completed"),
        Err(e) => e,
    }
}

/// The rustls error behind a failed handshake.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

fn post_turn_over(c: &mut TlsConn, a: &SeedAccount) -> Reply {
    let body = turn("gpt-5.5", "Say hi in three words.").to_string();
    c.send(
        "POST",
        "/backend-api/codex/responses",
        &auth(a),
        body.as_bytes(),
    );
    read_reply(c)
}

fn assert_completed_turn(r: &Reply) {
    assert_eq!(r.status(), 200, "{}", r.text());
    assert!(r.complete, "stream aborted: {:?}", r.error);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let ev = r.events();
    assert!(ev.len() > 4, "too few events: {}", r.text());
    assert_eq!(ev[0].0, "response.created");
    let (last, data) = ev.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(data["response"]["status"], "completed");
    assert!(data["response"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn trusting_client_gets_a_full_turn_over_https() {
    let (m, ca_pem) = start_tls();
    assert_eq!(
        m.base_url(),
        format!("https://localhost:{}/backend-api", m.addr().port())
    );
    assert!(m.is_tls());
    let a = &m.accounts()[0];

    let tls = handshake(
        m.addr(),
        client_config(&ca_pem, &[b"http/1.1"]),
        "localhost",
    )
    .expect("handshake with the trusted CA");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let chain = tls
        .conn
        .peer_certificates()
        .expect("server sent certificates");
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    assert_ne!(chain[0], ca, "leaf first");

    let mut c = Conn::over(tls);
    let r = post_turn_over(&mut c, a);
    assert_completed_turn(&r);
    // Keep-alive works over TLS too: a second turn on the same session.
    let r = post_turn_over(&mut c, a);
    assert_completed_turn(&r);
    assert_eq!(m.stats().responses_completed, 2);
    let req = m.last_request(&a.chatgpt_account_id).expect("recorded");
    assert_eq!(req.path, "/backend-api/codex/responses");
    assert_eq!(req.body_json().expect("json body")["model"], "gpt-5.5");
}

#[test]
fn certificate_also_covers_the_loopback_ip_and_alpn_is_optional() {
    let (m, ca_pem) = start_tls();
    let a = &m.accounts()[1];
    let tls = handshake(m.addr(), client_config(&ca_pem, &[]), "127.0.0.1")
        .expect("handshake by IP without ALPN");
    assert_eq!(tls.conn.alpn_protocol(), None);
    let mut c = Conn::over(tls);
    assert_completed_turn(&post_turn_over(&mut c, a));
}

#[test]
fn untrusting_client_fails_the_handshake_and_the_mock_keeps_serving() {
    let (m, ca_pem) = start_tls();
    let (_, other_ca) = self_signed_localhost();
    let err = handshake_error(
        m.addr(),
        client_config(&other_ca, &[b"http/1.1"]),
        "localhost",
    );
    assert!(
        matches!(
            tls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "expected UnknownIssuer, got {err:?}"
    );

    // A name the certificate does not cover is refused as well.
    let err = handshake_error(
        m.addr(),
        client_config(&ca_pem, &[b"http/1.1"]),
        "example.com",
    );
    assert!(
        matches!(tls_error(&err), Some(rustls::Error::InvalidCertificate(_))),
        "expected a certificate error, got {err:?}"
    );

    // Failed handshakes only closed their own connections.
    let tls = handshake(
        m.addr(),
        client_config(&ca_pem, &[b"http/1.1"]),
        "localhost",
    )
    .expect("trusted handshake after failed ones");
    let mut c = Conn::over(tls);
    assert_completed_turn(&post_turn_over(&mut c, &m.accounts()[0]));
    assert_eq!(m.stats().requests_total, 1);
    assert_eq!(m.stats().responses_completed, 1);
}

#[test]
fn plain_http_to_the_tls_mock_gets_no_http_reply() {
    let (m, _) = start_tls();
    let mut c = Conn::open(m.addr());
    c.send("GET", "/backend-api/codex/models", &[], b"");
    if let Ok(h) = c.read_head() {
        panic!("plain HTTP got an HTTP reply: {}", h.status);
    }
    assert_eq!(m.stats().requests_total, 0);
}

#[test]
fn plain_mock_keeps_its_http_base_url() {
    let m = start();
    assert!(!m.is_tls());
    assert_eq!(m.base_url(), format!("http://{}/backend-api", m.addr()));
}

/// Kills the child on drop so a failing assertion does not leak the process.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_serves_https_and_writes_the_ca() {
    let dir = std::env::temp_dir().join(format!("mock-upstream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    let auth_dir = dir.join("auth");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
            .args(["--tls", "--accounts", "1", "--write-ca"])
            .arg(&ca_path)
            .arg("--write-auth-dir")
            .arg(&auth_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mock-upstream"),
    );
    let mut banner = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let url = banner
        .trim()
        .strip_prefix("mock-upstream listening on ")
        .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
    let port: u16 = url
        .strip_prefix("https://localhost:")
        .and_then(|rest| rest.strip_suffix("/backend-api"))
        .unwrap_or_else(|| panic!("not an https localhost URL: {url:?}"))
        .parse()
        .unwrap();

    let ca_pem = std::fs::read_to_string(&ca_path).expect("CA written");
    let auth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(auth_dir.join("auth-0.json")).unwrap())
            .unwrap();
    let field = |k: &str| auth["tokens"][k].as_str().unwrap().to_string();
    let account = SeedAccount {
        chatgpt_account_id: field("account_id"),
        access_token: field("access_token"),
        refresh_token: field("refresh_token"),
        id_token: field("id_token"),
        email: String::new(),
        plan_type: "plus".into(),
    };
    let tls = handshake(
        SocketAddr::from(([127, 0, 0, 1], port)),
        client_config(&ca_pem, &[b"http/1.1"]),
        "localhost",
    )
    .expect("handshake with the written CA");
    let mut c = Conn::over(tls);
    assert_completed_turn(&post_turn_over(&mut c, &account));
    drop(c);
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}
