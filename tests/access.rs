//! Who may connect and how much: `--allow-cidr`, `--max-connections-per-client`, and a data dir
//! other users can read.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use codex_lb::Gateway;
use common::{cli, Env};

/// This machine's address on its default route (no packet is sent), if it has one.
fn local_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.254:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A documentation network the machine is not on.
fn elsewhere(ip: IpAddr) -> ipnet::IpNet {
    ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"]
        .iter()
        .map(|n| n.parse::<ipnet::IpNet>().unwrap())
        .find(|n| !n.contains(&ip))
        .unwrap()
}

/// Settings for a gateway on every address, with a data dir of its own under `env`'s. No
/// dashboard password is set there, so the remote listen needs the explicit opt-out.
fn remote_settings(env: &Env, dir: &str) -> codex_lb::config::Settings {
    let mut settings = env.settings.clone();
    settings.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    settings.data_dir = env.dir.path().join(dir);
    settings.insecure_allow_remote = true;
    settings
}

fn answer(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn addresses_outside_the_allow_list_are_refused_and_loopback_never_is() {
    let Some(ip) = local_ip() else {
        panic!("this test needs a non-loopback address on the machine");
    };
    let env = Env::start(0);
    let mut settings = remote_settings(&env, "other");
    settings.allow_cidrs = vec![elsewhere(ip)];
    let gw = Gateway::start(settings.clone()).unwrap();
    let port = gw.local_addr().port();
    let refused = answer(SocketAddr::new(ip, port));
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("ip_forbidden"), "{refused}");
    let fine = answer(SocketAddr::from(([127, 0, 0, 1], port)));
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    gw.shutdown().unwrap();
    // The client's own network listed: let in.
    settings.allow_cidrs = vec![ipnet::IpNet::from(ip)];
    let gw = Gateway::start(settings).unwrap();
    let ok = answer(SocketAddr::new(ip, gw.local_addr().port()));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    gw.shutdown().unwrap();
}

#[test]
fn one_client_cannot_hold_every_connection() {
    let env = Env::start_with(0, |s| {
        s.workers = 1;
        s.max_connections_per_client = 3;
    });
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(env.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let refused = answer(env.addr);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too_many_client_connections"));
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert!(answer(env.addr).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_data_dir_others_can_read_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert!(cli(&["accounts", "--data-dir", d, "list"]).status.success());
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700,
        "created owner-only"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cli(&["accounts", "--data-dir", d, "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod go-rwx") && err.contains("755"), "{err}");
    let out = cli(&["accounts", "--data-dir", d, "--allow-open-data-dir", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The key file alone is checked too.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        data.join("secret.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = cli(&["accounts", "--data-dir", d, "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret.key"));
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_dashboard_has_its_own_allow_list_and_the_proxy_is_not_affected() {
    let Some(ip) = local_ip() else {
        panic!("this test needs a non-loopback address on the machine");
    };
    let env = Env::start(1);
    let mut settings = remote_settings(&env, "dash");
    settings.dashboard_allow_cidrs = vec![elsewhere(ip)];
    let gw = Gateway::start(settings).unwrap();
    let port = gw.local_addr().port();
    let remote = SocketAddr::new(ip, port);
    for path in ["/", "/api/dashboard-auth/session", "/api/accounts"] {
        let r = get(remote, path);
        assert!(r.starts_with("HTTP/1.1 403"), "{path}: {r}");
        assert!(r.contains("dashboard_ip_forbidden"), "{path}: {r}");
    }
    // The rest of the port is open to it, and loopback reaches the dashboard.
    assert!(get(remote, "/health").starts_with("HTTP/1.1 200"));
    assert!(get(remote, "/v1/models").starts_with("HTTP/1.1 200"));
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(get(local, "/api/dashboard-auth/session").starts_with("HTTP/1.1 200"));
    gw.shutdown().unwrap();
}

/// Sends `request` (a complete HTTP/1.1 request) and returns the whole answer.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_request_forwarded_by_a_local_proxy_gets_no_loopback_privilege() {
    let env = Env::start(1);
    let body = common::turn_body("through a proxy");
    let turn = |extra: &str| {
        format!(
            "POST /backend-api/codex/responses HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // From this machine itself, key auth off: served.
    assert!(exchange(env.addr, &turn("")).starts_with("HTTP/1.1 200"));
    // The same bytes relayed by a reverse proxy on this machine, for someone else: refused.
    for header in [
        "x-forwarded-for: 203.0.113.9\r\n",
        "forwarded: for=203.0.113.9\r\n",
        "x-real-ip: 203.0.113.9\r\n",
    ] {
        let r = exchange(env.addr, &turn(header));
        assert!(r.starts_with("HTTP/1.1 401"), "{header}: {r}");
        // Nor is the dashboard open to it: with no password, it needs the bootstrap token.
        let r = exchange(
            env.addr,
            &format!("GET /api/accounts HTTP/1.1\r\nhost: 127.0.0.1\r\n{header}connection: close\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 401"), "{header}: {r}");
        assert!(r.contains("bootstrap_required"), "{header}: {r}");
    }
    let r = exchange(
        env.addr,
        "GET /api/accounts HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // /metrics, loopback-only, is not served to a forwarded request either.
    let r = exchange(
        env.addr,
        "GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nx-forwarded-for: 203.0.113.9\r\nconnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
}

/// `--trusted-proxy`: a reverse proxy on this machine forwards for clients elsewhere, and each
/// request is judged by the client's address, not the proxy's: the allow-lists, the login
/// throttle and the request log.
#[test]
fn a_trusted_proxy_s_forwarded_address_is_who_the_request_is_from() {
    let env = Env::start_with(1, |s| {
        s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        s.allow_cidrs = vec!["198.51.100.0/24".parse().unwrap()];
        s.dashboard_allow_cidrs = vec!["198.51.100.0/25".parse().unwrap()];
        // Forwarded requests are not this machine's: key-less proxy use needs the opt-out.
        s.insecure_allow_remote = true;
    });
    let body = common::turn_body("forwarded");
    let turn = |xff: &str, id: &str| {
        format!(
            "POST /backend-api/codex/responses HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nx-request-id: {id}\r\nx-forwarded-for: {xff}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // Outside --allow-cidr, though the proxy itself is loopback: refused.
    let r = exchange(env.addr, &turn("203.0.113.9", "fw-1"));
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("ip_forbidden"),
        "{r}"
    );
    // A client cannot choose its address by sending the header itself: the proxy appends what
    // it saw, and that right-most entry is the one believed.
    let r = exchange(env.addr, &turn("198.51.100.7, 203.0.113.9", "fw-2"));
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // A loopback address in the header is not this machine: no exemption from the list.
    let r = exchange(env.addr, &turn("127.0.0.1", "fw-0"));
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = exchange(env.addr, &turn("203.0.113.9, 198.51.100.7", "fw-3"));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // The request log names the client, not the proxy.
    let row = env
        .wait_for(Duration::from_secs(5), |e| {
            e.get_json("/api/requests?limit=50")["requests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["request_id"] == "fw-3")
                .cloned()
        })
        .expect("the forwarded turn is logged");
    assert_eq!(row["client_ip"], "198.51.100.7", "{row}");

    // The dashboard's narrower list, by the forwarded address too.
    let dash = |xff: &str| {
        exchange(
            env.addr,
            &format!("GET /api/dashboard-auth/session HTTP/1.1\r\nhost: gw\r\nx-forwarded-for: {xff}\r\nconnection: close\r\n\r\n"),
        )
    };
    let r = dash("198.51.100.200");
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("dashboard_ip_forbidden"),
        "{r}"
    );
    assert!(dash("198.51.100.20").starts_with("HTTP/1.1 200"));

    // Login throttling counts per client: one locked-out client behind the proxy does not lock
    // out the next.
    let session = env.get_json("/api/dashboard-auth/session");
    let csrf = session["csrf_token"].as_str().unwrap();
    let set = r#"{"new_password":"the real password"}"#;
    let r = exchange(
        env.addr,
        &format!("POST /api/dashboard-auth/password HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nx-csrf-token: {csrf}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{set}", set.len()),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let login = |xff: &str, password: &str| {
        let b = format!(r#"{{"password":"{password}"}}"#);
        exchange(
            env.addr,
            &format!("POST /api/dashboard-auth/login HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nx-forwarded-for: {xff}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}", b.len()),
        )
    };
    for _ in 0..5 {
        assert!(login("198.51.100.21", "wrong").starts_with("HTTP/1.1 401"));
    }
    assert!(login("198.51.100.21", "the real password").starts_with("HTTP/1.1 429"));
    let r = login("198.51.100.22", "the real password");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}
