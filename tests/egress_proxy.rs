//! `--upstream-proxy`: every outbound connection — turns, usage polls, token refreshes — goes
//! through an HTTP CONNECT proxy, with TLS end to end inside the tunnel; a proxy that refuses
//! (407) is a clear 502, never a hang.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codex_lb::Gateway;
use common::{turn_body, Env};
use loadtest::mock::{self_signed_localhost, MockConfig, MockUpstream};

/// A minimal CONNECT proxy: checks the credentials, opens the tunnel, copies bytes both ways.
struct ConnectProxy {
    port: u16,
    /// `host:port` of every CONNECT it accepted.
    tunnels: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

impl ConnectProxy {
    fn start(expected_auth: &'static str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (t, r) = (Arc::clone(&tunnels), Arc::clone(&refused));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (t, r) = (Arc::clone(&t), Arc::clone(&r));
                std::thread::spawn(move || serve(client, expected_auth, &t, &r));
            }
        });
        ConnectProxy {
            port,
            tunnels,
            refused,
        }
    }
}

fn serve(
    mut client: TcpStream,
    expected_auth: &str,
    tunnels: &Mutex<Vec<String>>,
    refused: &AtomicUsize,
) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let target = text
        .strip_prefix("CONNECT ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_string();
    let auth_ok = text.lines().any(|l| {
        l.to_ascii_lowercase()
            == format!(
                "proxy-authorization: {}",
                expected_auth.to_ascii_lowercase()
            )
    });
    if !auth_ok {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n");
        return;
    }
    // The mock listens on localhost: the tunnel's target is resolved here, by the proxy.
    let port = target
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap();
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    tunnels.lock().unwrap().push(target);
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut c1, mut u1) = (client, upstream);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut u1, &mut c1);
    let _ = c1.shutdown(Shutdown::Write);
}

fn env_through(proxy: &ConnectProxy, user_pass: &str) -> Env {
    let (tls, ca_pem) = self_signed_localhost();
    let mock = MockUpstream::start(MockConfig {
        tls: Some(tls),
        ..MockConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = common::settings_for(dir.path().join("data"), &mock);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    settings.upstream_ca_file = Some(ca);
    settings.upstream_proxy = Some(
        codex_lb::upstream::egress::EgressProxy::parse(&format!(
            "http://{user_pass}@127.0.0.1:{}",
            proxy.port
        ))
        .unwrap(),
    );
    let gateway = Gateway::start(settings.clone()).unwrap();
    let addr = gateway.local_addr();
    Env {
        mock,
        gateway: Some(gateway),
        addr,
        dir,
        settings,
    }
}

#[test]
fn turns_and_usage_polls_tunnel_through_the_proxy_with_tls_inside() {
    // base64("team:s3cret")
    let proxy = ConnectProxy::start("Basic dGVhbTpzM2NyZXQ=");
    let env = env_through(&proxy, "team:s3cret");
    let v = env.post_json("/api/accounts/import", env.mock.auth_json(0).as_bytes());
    assert!(v["account"]["id"].is_string(), "{v}");
    for i in 0..3 {
        let r = env.turn(&turn_body(&format!("through the proxy {i}")), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.terminal().unwrap()["type"], "response.completed");
    }
    let tunnels = proxy.tunnels.lock().unwrap().clone();
    let mock_port = env.mock.addr().port();
    assert!(!tunnels.is_empty());
    assert!(
        tunnels
            .iter()
            .all(|t| *t == format!("localhost:{mock_port}")),
        "the proxy is asked for the upstream by name: {tunnels:?}"
    );
    // The control plane goes the same way: the import's usage poll reached the mock.
    let id = env.mock.accounts()[0].chatgpt_account_id.clone();
    env.wait_for(Duration::from_secs(5), |e| {
        (e.mock.usage_calls(&id) > 0).then_some(())
    })
    .expect("a usage poll through the proxy");
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 0);
}

#[test]
fn a_proxy_that_refuses_is_a_clear_502() {
    let proxy = ConnectProxy::start("Basic dGVhbTpzM2NyZXQ=");
    let env = env_through(&proxy, "team:wrong");
    env.post_json("/api/accounts/import", env.mock.auth_json(0).as_bytes());
    let r = env.turn(&turn_body("refused"), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("407"), "{msg}");
    assert!(proxy.refused.load(Ordering::SeqCst) >= 1);
    assert_eq!(env.mock.stats().requests_total, 0);
}
