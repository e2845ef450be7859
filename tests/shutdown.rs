//! Graceful shutdown: in-flight streams finish within the grace period, new connections are
//! refused, the ledger is flushed; streams still running at the deadline end with a clean
//! `response.failed`. Also the real binary under SIGTERM, and the accounts CLI both ways.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{turn_body, Env, Reply};
use serde_json::json;

fn stream_in_thread(env: &Env, scenario: serde_json::Value) -> std::thread::JoinHandle<Reply> {
    let url = env.url("/backend-api/codex/responses");
    std::thread::spawn(move || {
        let resp = ureq::post(&url)
            .timeout(Duration::from_secs(30))
            .set("x-mock-scenario", &scenario.to_string())
            .send_string(&turn_body("a long one"));
        let resp = match resp {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("stream failed: {e}"),
        };
        let status = resp.status();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("body");
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    })
}

fn wait_streams(env: &Env, n: u64) {
    env.wait_for(Duration::from_secs(5), |e| {
        (e.mock.stats().streams_active == n).then_some(())
    })
    .unwrap_or_else(|| panic!("{n} streams never became active"));
}

#[test]
fn in_flight_streams_complete_and_the_ledger_is_flushed() {
    let mut env = Env::start(1);
    let streams: Vec<_> = (0..3)
        .map(|_| stream_in_thread(&env, json!({"deltas": 15, "delay_ms": 100})))
        .collect();
    wait_streams(&env, 3);
    let gateway = env.gateway.take().unwrap();
    let addr = env.addr;
    let started = Instant::now();
    let stopper = std::thread::spawn(move || gateway.shutdown());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still accepting while draining"
    );
    for s in streams {
        let reply = s.join().unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.terminal().expect("terminal")["type"],
            "response.completed",
            "{}",
            reply.text()
        );
    }
    stopper.join().unwrap().expect("clean shutdown");
    assert!(
        started.elapsed() < env.settings.shutdown_grace,
        "drained in {:?}",
        started.elapsed()
    );
    // A new gateway on the same data dir sees all three requests.
    let mut s = env.settings.clone();
    s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let g = codex_lb::Gateway::start(s).unwrap();
    env.addr = g.local_addr();
    env.gateway = Some(g);
    assert_eq!(env.summary()["totals"]["completed"], 3);
}

#[test]
fn streams_past_the_grace_deadline_end_with_response_failed() {
    let mut env = Env::start_with(1, |s| s.shutdown_grace = Duration::from_millis(500));
    let stream = stream_in_thread(&env, json!({"deltas": 100, "delay_ms": 100}));
    wait_streams(&env, 1);
    let started = Instant::now();
    env.gateway
        .take()
        .unwrap()
        .shutdown()
        .expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let reply = stream.join().unwrap();
    let terminal = reply.terminal().expect("terminal event");
    assert_eq!(terminal["type"], "response.failed");
    assert_eq!(
        terminal["response"]["error"]["code"],
        "server_shutting_down"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_healthy(url: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if ureq::get(url)
            .timeout(Duration::from_millis(500))
            .call()
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway at {url} never became healthy");
}

fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < end, "gateway did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_binary_serves_refuses_a_taken_port_and_stops_cleanly_on_sigterm() {
    let mock = loadtest::mock::MockUpstream::start(Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    std::fs::write(&auth, mock.auth_json(0)).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let bin = env!("CARGO_BIN_EXE_codex-lb");
    let serve = || {
        Command::new(bin)
            .args([
                "--listen",
                &listen,
                "--upstream-base-url",
                &mock.base_url(),
                "--workers",
                "2",
            ])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let accounts = |args: &[&str]| {
        Command::new(bin)
            .args(["accounts", "--listen", &listen])
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    let mut gw = serve();
    let base = format!("http://{listen}");
    wait_healthy(&format!("{base}/health"));

    // Import through the running gateway (the data dir is locked by it).
    let out = accounts(&["import", auth.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("imported acc_"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let resp = ureq::post(&format!("{base}/backend-api/codex/responses"))
        .send_string(&turn_body("binary"))
        .unwrap();
    assert!(resp.into_string().unwrap().contains("response.completed"));

    // A second gateway on the same port refuses to start instead of sharing it.
    let second = Command::new(bin)
        .args(["--listen", &listen, "--upstream-base-url", &mock.base_url()])
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already in use"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let status = sigterm_and_wait(&mut gw);
    assert!(status.success(), "exit status {status:?}");

    // With no gateway running, the accounts commands open the data dir directly.
    let out = accounts(&["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("user0@example.com"));

    let mut gw = serve();
    wait_healthy(&format!("{base}/health"));
    let summary: serde_json::Value = ureq::get(&format!("{base}/api/usage/summary"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(summary["totals"]["completed"], 1, "{summary}");
    assert!(summary["totals"]["total_tokens"].as_u64().unwrap() > 0);
    let id = summary["by_account"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let out = accounts(&["remove", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = ureq::get(&format!("{base}/api/accounts"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(list["accounts"].as_array().unwrap().len(), 0);
    assert!(sigterm_and_wait(&mut gw).success());
}
