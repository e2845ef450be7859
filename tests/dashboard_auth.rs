//! Who may use the dashboard and the admin API: open mode on loopback, passwords and sessions,
//! CSRF, the viewer role, login throttling, TOTP, the remote bootstrap token, the admin token of
//! the CLI, and sessions across a restart.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use codex_lb::Gateway;
use common::Env;
use serde_json::{json, Value};

/// One HTTP exchange's outcome: status, a header we care about, and the JSON body.
struct Reply {
    status: u16,
    cookie: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

/// A browser-like client: keeps the session cookie and sends the CSRF token it was given.
#[derive(Default, Clone)]
struct Client {
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
    /// Send `Origin` as a browser does on changes.
    browser: bool,
    host: Option<String>,
    bearer: Option<String>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            base: format!("http://{addr}"),
            ..Client::default()
        }
    }

    fn browser(addr: SocketAddr) -> Client {
        Client {
            browser: true,
            ..Client::new(addr)
        }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req =
            ureq::request(method, &format!("{}{path}", self.base)).timeout(Duration::from_secs(20));
        if let Some(c) = &self.cookie {
            req = req.set("cookie", &format!("codex_lb_session={c}"));
        }
        if let Some(t) = &self.csrf {
            req = req.set("x-csrf-token", t);
        }
        if self.browser {
            req = req.set("origin", &self.base);
        }
        if let Some(h) = &self.host {
            req = req.set("host", h);
        }
        if let Some(b) = &self.bearer {
            req = req.set("authorization", &format!("Bearer {b}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let r = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = r.status();
        let cookie = r
            .header("set-cookie")
            .map(|c| c.split(';').next().unwrap_or("").to_string())
            .and_then(|c| c.strip_prefix("codex_lb_session=").map(str::to_string));
        let retry_after = r.header("retry-after").map(str::to_string);
        let body: Value = r.into_json().unwrap_or(Value::Null);
        Reply {
            status,
            cookie,
            retry_after,
            body,
        }
    }

    /// Takes the session a login or password call returned.
    fn adopt(&mut self, r: &Reply) {
        if let Some(c) = &r.cookie {
            self.cookie = Some(c.clone()).filter(|c| !c.is_empty());
        }
        if let Some(t) = r.body["csrf_token"].as_str() {
            self.csrf = Some(t.to_string());
        }
    }

    fn session(&mut self) -> Value {
        let r = self.call("GET", "/api/dashboard-auth/session", None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
}

fn code(r: &Reply) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

fn set_password(addr: SocketAddr, password: &str) -> Client {
    let mut c = Client::browser(addr);
    let s = c.session();
    c.csrf = s["csrf_token"].as_str().map(str::to_string);
    let r = c.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({ "new_password": password })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    c.adopt(&r);
    c
}

fn login(addr: SocketAddr, password: &str, totp: Option<&str>) -> (Reply, Client) {
    let mut c = Client::browser(addr);
    let mut body = json!({ "password": password });
    if let Some(t) = totp {
        body["totp_code"] = json!(t);
    }
    let r = c.call("POST", "/api/dashboard-auth/login", Some(body));
    c.adopt(&r);
    (r, c)
}

#[test]
fn open_mode_on_loopback_needs_csrf_from_browsers_and_a_loopback_host() {
    let env = Env::start(1);
    let mut c = Client::browser(env.addr);
    let s = c.session();
    assert_eq!(s["open"], true, "{s}");
    assert_eq!(s["role"], "admin");
    assert_eq!(s["password_set"], false);
    // A browser change without the token is refused (a page elsewhere could have sent it).
    let r = c.call("POST", "/api/keys", Some(json!({"name": "a"})));
    assert_eq!(
        (r.status, code(&r)),
        (403, "csrf_token_invalid"),
        "{}",
        r.body
    );
    c.csrf = s["csrf_token"].as_str().map(str::to_string);
    let r = c.call("POST", "/api/keys", Some(json!({"name": "a"})));
    assert_eq!(r.status, 201, "{}", r.body);
    // A command-line tool on this machine (no Origin) needs none.
    let mut tool = Client::new(env.addr);
    let r = tool.call("POST", "/api/keys", Some(json!({"name": "b"})));
    assert_eq!(r.status, 201, "{}", r.body);
    // A page that rebound its own name to 127.0.0.1 is not this machine's user.
    let mut rebound = Client::new(env.addr);
    rebound.host = Some("attacker.example:2455".into());
    let r = rebound.call("GET", "/api/keys", None);
    assert_eq!((r.status, code(&r)), (401, "authentication_required"));
    assert_eq!(rebound.session()["authenticated"], false);
}

#[test]
fn a_password_closes_the_api_until_login_and_changes_need_csrf() {
    let env = Env::start(1);
    let mut admin = set_password(env.addr, "correct horse battery");
    assert!(
        admin.cookie.is_some(),
        "setting the password signs the setter in"
    );
    // Without a cookie: 401, loopback or not.
    let mut anon = Client::new(env.addr);
    let r = anon.call("GET", "/api/accounts", None);
    assert_eq!((r.status, code(&r)), (401, "authentication_required"));
    let r = anon.call("GET", "/api/live", None);
    assert_eq!(r.status, 401);
    let s = anon.session();
    assert_eq!(
        (s["authenticated"].clone(), s["password_set"].clone()),
        (json!(false), json!(true))
    );
    // The setter's session works, and a change with a wrong token is refused.
    assert_eq!(admin.call("GET", "/api/accounts", None).status, 200);
    let good = admin.csrf.take();
    admin.csrf = Some("wrong".into());
    let r = admin.call("POST", "/api/keys", Some(json!({"name": "k"})));
    assert_eq!((r.status, code(&r)), (403, "csrf_token_invalid"));
    admin.csrf = good;
    let r = admin.call("POST", "/api/keys", Some(json!({"name": "k"})));
    assert_eq!(r.status, 201, "{}", r.body);
    // Wrong password, then the right one.
    let (r, _) = login(env.addr, "nope nope nope", None);
    assert_eq!((r.status, code(&r)), (401, "invalid_credentials"));
    let (r, mut second) = login(env.addr, "correct horse battery", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["role"], "admin");
    assert_eq!(second.call("GET", "/api/keys", None).status, 200);
    // The admin token from the data dir (what the CLI sends) is an admin without a session.
    let token = std::fs::read_to_string(env.settings.data_dir.join("admin.token")).unwrap();
    let mut cli = Client::new(env.addr);
    cli.bearer = Some(token.trim().into());
    assert_eq!(cli.call("GET", "/api/keys", None).status, 200);
    cli.bearer = Some("not-the-token".into());
    assert_eq!(cli.call("GET", "/api/keys", None).status, 401);
    // Logout ends the session.
    let r = second.call("POST", "/api/dashboard-auth/logout", None);
    assert_eq!(r.status, 200);
    assert_eq!(second.call("GET", "/api/keys", None).status, 401);
    // Changing the password needs the current one, and ends the other sessions.
    let r = admin.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({"new_password": "another password", "current_password": "wrong one"})),
    );
    assert_eq!((r.status, code(&r)), (401, "invalid_credentials"));
    let (_, mut third) = login(env.addr, "correct horse battery", None);
    let r = admin.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({"new_password": "another password", "current_password": "correct horse battery"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    admin.adopt(&r);
    assert_eq!(third.call("GET", "/api/keys", None).status, 401);
    assert_eq!(admin.call("GET", "/api/keys", None).status, 200);
    let r = admin.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({"new_password": "short", "current_password": "another password"})),
    );
    assert_eq!((r.status, code(&r)), (400, "invalid_password"));
}

#[test]
fn a_viewer_sees_but_cannot_change_or_export() {
    let env = Env::start(1);
    let mut admin = set_password(env.addr, "admin password");
    let r = admin.call(
        "PUT",
        "/api/dashboard-auth/viewer-password",
        Some(json!({"password": "viewer password"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (r, mut viewer) = login(env.addr, "viewer password", None);
    assert_eq!(r.body["role"], "viewer", "{}", r.body);
    for path in [
        "/api/accounts",
        "/api/keys",
        "/api/usage/summary",
        "/api/requests",
        "/api/settings",
    ] {
        assert_eq!(viewer.call("GET", path, None).status, 200, "{path}");
    }
    let id = viewer.call("GET", "/api/accounts", None).body["accounts"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (method, path, body) in [
        ("POST", "/api/keys".to_string(), Some(json!({"name": "v"}))),
        (
            "PUT",
            "/api/settings".to_string(),
            Some(json!({"strategy": "round_robin"})),
        ),
        ("POST", format!("/api/accounts/{id}/pause"), None),
        ("DELETE", format!("/api/accounts/{id}"), None),
        ("GET", format!("/api/accounts/{id}/export"), None),
        (
            "PUT",
            "/api/dashboard-auth/viewer-password".to_string(),
            Some(json!({"password": "takeover!!"})),
        ),
        ("POST", "/api/dashboard-auth/totp/setup".to_string(), None),
    ] {
        let r = viewer.call(method, &path, body);
        assert_eq!(
            (r.status, code(&r)),
            (403, "read_only"),
            "{method} {path}: {}",
            r.body
        );
    }
    // Nothing changed.
    assert_eq!(admin.call("GET", "/api/keys", None).body["keys"], json!([]));
    // Removing the viewer password ends viewer sessions.
    let r = admin.call("DELETE", "/api/dashboard-auth/viewer-password", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(viewer.call("GET", "/api/keys", None).status, 401);
}

#[test]
fn repeated_bad_passwords_are_throttled() {
    let env = Env::start(0);
    set_password(env.addr, "the real password");
    for i in 0..5 {
        let (r, _) = login(env.addr, "a wrong password", None);
        assert_eq!(
            (r.status, code(&r)),
            (401, "invalid_credentials"),
            "try {i}"
        );
    }
    // Locked out, even with the right password, and told for how long.
    let (r, _) = login(env.addr, "the real password", None);
    assert_eq!((r.status, code(&r)), (429, "login_throttled"), "{}", r.body);
    let wait: u64 = r.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
}

fn totp_code(secret_b32: &str, at: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).unwrap();
    let t = totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name("t")
        .build()
        .unwrap();
    t.generate(at).to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn totp_is_required_once_enrolled_and_a_code_is_used_once() {
    let env = Env::start(0);
    let mut admin = set_password(env.addr, "admin password");
    let r = admin.call("POST", "/api/dashboard-auth/totp/setup", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert!(r.body["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    assert!(r.body["qr_svg"].as_str().unwrap().contains("<svg"));
    let r = admin.call(
        "POST",
        "/api/dashboard-auth/totp/confirm",
        Some(json!({"code": "000000"})),
    );
    assert_eq!((r.status, code(&r)), (401, "invalid_totp"), "{}", r.body);
    let first = totp_code(&secret, now());
    let r = admin.call(
        "POST",
        "/api/dashboard-auth/totp/confirm",
        Some(json!({"code": first})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(admin.session()["totp_enabled"], true);
    // The password alone is not enough now.
    let (r, _) = login(env.addr, "admin password", None);
    assert_eq!((r.status, code(&r)), (401, "totp_required"), "{}", r.body);
    // The code the enrolment used cannot be replayed.
    let (r, _) = login(env.addr, "admin password", Some(&first));
    assert_eq!((r.status, code(&r)), (401, "invalid_totp"), "{}", r.body);
    // The next step's code is accepted (one step of skew), once.
    let next = totp_code(&secret, now() + 30);
    let (r, mut c) = login(env.addr, "admin password", Some(&next));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(c.call("GET", "/api/keys", None).status, 200);
    let (r, _) = login(env.addr, "admin password", Some(&next));
    assert_eq!((r.status, code(&r)), (401, "invalid_totp"));
    // A viewer password never needs the code; disabling TOTP needs a fresh one.
    let r = c.call(
        "POST",
        "/api/dashboard-auth/totp/disable",
        Some(json!({"code": next})),
    );
    assert_eq!((r.status, code(&r)), (401, "invalid_totp"));
}

/// This machine's address on its default route (no packet is sent), if it has one.
fn local_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.254:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn remote_first_setup_needs_the_bootstrap_token_and_remote_use_a_login() {
    let Some(ip) = local_ip() else {
        panic!("this test needs a non-loopback address on the machine");
    };
    let env = Env::start(0);
    let mut settings = env.settings.clone();
    settings.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    settings.data_dir = env.dir.path().join("remote");
    // Without a password a remote listen is refused unless the owner opts out of that check...
    match Gateway::start(settings.clone()) {
        Err(e) => assert!(e.to_string().contains("dashboard set-password"), "{e}"),
        Ok(_) => panic!("a remote listen without a dashboard password started"),
    }
    // ...and then the dashboard itself still needs the bootstrap token from afar.
    settings.insecure_allow_remote = true;
    let settings_dir = settings.data_dir.clone();
    let gw = Gateway::start(settings).unwrap();
    let remote = SocketAddr::new(ip, gw.local_addr().port());
    let mut c = Client::browser(remote);
    let s = c.session();
    assert_eq!(s["bootstrap_required"], true, "{s}");
    assert_eq!(s["authenticated"], false);
    let r = c.call("GET", "/api/accounts", None);
    assert_eq!((r.status, code(&r)), (401, "bootstrap_required"));
    let r = c.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({"new_password": "remote password"})),
    );
    assert_eq!((r.status, code(&r)), (401, "bootstrap_required"));
    let r = c.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({"new_password": "remote password", "bootstrap_token": "guess"})),
    );
    assert_eq!((r.status, code(&r)), (401, "invalid_bootstrap_token"));
    // The owner finds the token in the data dir (0600), not in the log.
    let token_file = settings_dir.join("dashboard-bootstrap.token");
    let token = std::fs::read_to_string(&token_file).expect("the bootstrap token file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        gw.shared().admin_auth.bootstrap_token().as_deref(),
        Some(token.as_str())
    );
    let r = c.call(
        "POST",
        "/api/dashboard-auth/password",
        Some(json!({"new_password": "remote password", "bootstrap_token": token})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    c.adopt(&r);
    assert_eq!(c.call("GET", "/api/accounts", None).status, 200);
    // The token is spent, its file gone; loopback without a session is closed too now.
    assert!(gw.shared().admin_auth.bootstrap_token().is_none());
    assert!(!token_file.exists());
    let local = SocketAddr::from(([127, 0, 0, 1], gw.local_addr().port()));
    assert_eq!(
        Client::new(local).call("GET", "/api/accounts", None).status,
        401
    );
    // The admin token is a loopback-only credential.
    let token = std::fs::read_to_string(env.dir.path().join("remote/admin.token")).unwrap();
    let mut far = Client::new(remote);
    far.bearer = Some(token.trim().into());
    assert_eq!(far.call("GET", "/api/accounts", None).status, 401);
    gw.shutdown().unwrap();
}

#[test]
fn sessions_survive_a_restart() {
    let mut env = Env::start(0);
    let c = set_password(env.addr, "admin password");
    env.restart();
    let mut c = Client {
        base: format!("http://{}", env.addr),
        ..c
    };
    assert_eq!(c.call("GET", "/api/keys", None).status, 200);
    assert_eq!(c.session()["password_set"], true);
    let (r, _) = login(env.addr, "admin password", None);
    assert_eq!(r.status, 200);
}

/// Runs `codex-lb` with `input` on standard input.
fn cli_with_input(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_codex-lb"))
        .args(args)
        .env_remove("CODEX_LB_DATA_DIR")
        .env_remove("CODEX_LB_LISTEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("codex-lb runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_sets_the_password_offline_and_through_a_running_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    // Offline: the first password needs nothing else; a change needs the current one.
    let out = cli_with_input(
        &["dashboard", "--data-dir", data_arg, "set-password"],
        "first password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_with_input(
        &["dashboard", "--data-dir", data_arg, "set-password"],
        "second password\nnot the current one\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    let out = cli_with_input(
        &["dashboard", "--data-dir", data_arg, "set-password"],
        "second password\nfirst password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With a password set, a remote listen starts without the opt-out.
    let mock = loadtest::mock::MockUpstream::start(Default::default()).unwrap();
    let mut settings = common::settings_for(data.clone(), &mock);
    settings.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let gw = Gateway::start(settings).expect("remote listen with a password");
    let local = SocketAddr::from(([127, 0, 0, 1], gw.local_addr().port()));
    let (r, _) = login(local, "second password", None);
    assert_eq!(r.status, 200, "{}", r.body);
    // Through the running gateway (the CLI finds it by --listen and uses the admin token).
    let listen = local.to_string();
    let out = cli_with_input(
        &[
            "dashboard",
            "--data-dir",
            data_arg,
            "--listen",
            &listen,
            "set-password",
            "--viewer",
        ],
        "viewer password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (r, _) = login(local, "viewer password", None);
    assert_eq!(r.body["role"], "viewer", "{}", r.body);
    gw.shutdown().unwrap();
}

/// The audit log names who changed what from where, and how it ended — refused attempts too —
/// without any of the secrets sent; only admins may read it.
#[test]
fn changes_and_refused_attempts_are_in_the_audit_log_without_secrets() {
    let env = Env::start(1);
    let mut admin = set_password(env.addr, "the audit admin password");
    let r = admin.call("POST", "/api/keys", Some(json!({"name": "audited"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["key"].as_str().unwrap().to_string();
    let key_id = r.body["api_key"]["id"].as_str().unwrap().to_string();
    let account = admin.call("GET", "/api/accounts", None).body["accounts"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        admin
            .call("GET", &format!("/api/accounts/{account}/export"), None)
            .status,
        200
    );
    let (r, _) = login(env.addr, "a wrong guess at it", None);
    assert_eq!(r.status, 401);
    let r = admin.call(
        "PUT",
        "/api/dashboard-auth/viewer-password",
        Some(json!({"password": "the viewer password"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, mut viewer) = login(env.addr, "the viewer password", None);
    let r = viewer.call("DELETE", &format!("/api/keys/{key_id}"), None);
    assert_eq!((r.status, code(&r)), (403, "read_only"));
    // Only admins read it.
    assert_eq!(viewer.call("GET", "/api/audit", None).status, 403);

    let log = env
        .wait_for(Duration::from_secs(5), |_| {
            let r = admin.call("GET", "/api/audit?limit=50", None);
            assert_eq!(r.status, 200, "{}", r.body);
            let entries = r.body["entries"].as_array().unwrap().clone();
            (entries.len() >= 7).then_some(entries)
        })
        .expect("the audit rows");
    let line = |e: &Value| {
        format!(
            "{} {} {} {}",
            e["actor"].as_str().unwrap(),
            e["method"].as_str().unwrap(),
            e["path"].as_str().unwrap(),
            e["status"]
        )
    };
    let lines: Vec<String> = log.iter().map(line).collect();
    let find = |want: &str| {
        lines
            .iter()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("no {want:?} in {lines:#?}"))
            .clone()
    };
    // Newest first: the viewer's refused delete (and its audit read) came last.
    assert!(lines[0].starts_with("viewer session "), "{lines:#?}");
    assert!(find(&format!("DELETE /api/keys/{key_id} 403")).starts_with("viewer session "));
    assert!(find("POST /api/dashboard-auth/password 200").starts_with("local "));
    assert!(find("POST /api/keys 201").starts_with("admin session "));
    assert!(find(&format!("GET /api/accounts/{account}/export 200")).starts_with("admin session "));
    assert!(find("POST /api/dashboard-auth/login 401").starts_with("anonymous "));
    assert!(log.iter().all(|e| e["client_ip"] == "127.0.0.1"), "{log:?}");
    // What was sent is not kept.
    let text = serde_json::to_string(&log).unwrap();
    for s in [
        secret.as_str(),
        "the audit admin password",
        "a wrong guess at it",
        "the viewer password",
    ] {
        assert!(!text.contains(s), "{s:?} in the audit log");
    }
}
