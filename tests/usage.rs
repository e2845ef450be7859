//! Usage you can trust: the request log's filters and pages, rollups that equal the log, CSV,
//! the `usage` command, and a ledger that survives `kill -9` under load.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, turn_body, turn_body_in, Env};
use serde_json::{json, Value};

fn all_rows(env: &Env, query: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/requests?limit=7&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = env.get_json(&path);
        let got = page["requests"].as_array().unwrap().clone();
        assert!(got.len() <= 7);
        rows.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return rows,
        }
    }
}

/// Random-ish traffic: two keys and no key, three conversations, a few upstream failures.
fn traffic(env: &Env) -> Vec<String> {
    let mut keys = Vec::new();
    for name in ["alpha", "beta"] {
        let v = env.post_json("/api/keys", json!({ "name": name }).to_string().as_bytes());
        keys.push(v["key"].as_str().unwrap().to_string());
    }
    let accounts: Vec<String> = env
        .mock
        .accounts()
        .iter()
        .map(|a| a.chatgpt_account_id.clone())
        .collect();
    for i in 0..30u32 {
        if i % 11 == 5 {
            env.mock
                .fail_next(&accounts[i as usize % accounts.len()], 400, 1);
        }
        let auth = format!("Bearer {}", keys[i as usize % 2]);
        let headers: Vec<(&str, &str)> = if i % 3 == 0 {
            vec![]
        } else {
            vec![("authorization", auth.as_str())]
        };
        let body = if i % 2 == 0 {
            turn_body_in(&format!("t{i}"), &format!("conv-{}", i % 3))
        } else {
            turn_body(&format!("t{i}")).replace("\"gpt-5.5\"", "\"gpt-5.3-codex\"")
        };
        env.turn(&body, &headers);
    }
    keys
}

#[test]
fn filters_and_pages_return_exactly_the_matching_rows_and_rollups_equal_the_log() {
    let env = Env::start(2);
    traffic(&env);
    let everything = env.get_json("/api/requests?limit=1000");
    let all: Vec<Value> = everything["requests"].as_array().unwrap().clone();
    assert!(everything["next_cursor"].is_null());
    assert_eq!(all.len(), 30);
    assert_eq!(
        all_rows(&env, ""),
        all,
        "pages concatenate to the whole log"
    );
    let row_ids = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    let key_id = all
        .iter()
        .find_map(|r| r["key_id"].as_str())
        .unwrap()
        .to_string();
    let account = all[0]["account_id"].as_str().unwrap().to_string();
    for (query, keep) in [
        (
            format!("key={key_id}"),
            Box::new(|r: &Value| r["key_id"] == key_id.as_str()) as Box<dyn Fn(&Value) -> bool>,
        ),
        (
            format!("account={account}&model=gpt-5.5"),
            Box::new(|r: &Value| r["account_id"] == account.as_str() && r["model"] == "gpt-5.5"),
        ),
        (
            "status=4xx".to_string(),
            Box::new(|r: &Value| (400..500).contains(&r["status"].as_u64().unwrap())),
        ),
        (
            "status=200".to_string(),
            Box::new(|r: &Value| r["status"] == 200),
        ),
    ] {
        let want: Vec<Value> = all.iter().filter(|r| keep(r)).cloned().collect();
        assert!(!want.is_empty(), "{query} matches something");
        assert_eq!(row_ids(&all_rows(&env, &query)), row_ids(&want), "{query}");
    }
    // A time range: only the newest rows, by their own timestamps.
    let newest = all[0]["ts_ms"].as_u64().unwrap();
    let in_range = all_rows(&env, &format!("since={}", newest / 1000));
    assert!(in_range
        .iter()
        .all(|r| r["ts_ms"].as_u64().unwrap() >= newest / 1000 * 1000));
    assert!(!in_range.is_empty());
    let bad = env.get_json("/api/requests?cursor=zz");
    assert_eq!(bad["error"]["param"], "cursor");

    // Rollups per dimension equal the sums of the log rows they cover.
    for (dim, field) in [
        ("account", "account_id"),
        ("key", "key_id"),
        ("model", "model"),
    ] {
        for g in ["hour", "day"] {
            let report = env.get_json(&format!("/api/usage?granularity={g}&group_by={dim}"));
            let mut from_rollups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
            for r in report["rows"].as_array().unwrap() {
                let e = from_rollups
                    .entry(r["group"].as_str().unwrap().to_string())
                    .or_default();
                e.0 += r["requests"].as_u64().unwrap();
                e.1 += r["input_tokens"].as_u64().unwrap();
                e.2 += r["cost_micro_usd"].as_u64().unwrap();
            }
            let mut from_log: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
            for r in &all {
                if let Some(v) = r[field].as_str() {
                    let e = from_log.entry(v.to_string()).or_default();
                    e.0 += 1;
                    e.1 += r["input_tokens"].as_u64().unwrap();
                    e.2 += r["cost_micro_usd"].as_u64().unwrap_or(0);
                }
            }
            assert_eq!(from_rollups, from_log, "{g} by {dim}");
        }
    }
    let total = env.get_json("/api/usage?granularity=day");
    let row = &total["rows"][0];
    assert_eq!(row["requests"], 30);
    let rate = row["cache_hit_rate"].as_f64().unwrap();
    let expect = row["cached_tokens"].as_f64().unwrap() / row["input_tokens"].as_f64().unwrap();
    assert!((rate - expect).abs() < 1e-9);

    // CSV of both, with a header and one line per row.
    let csv = ureq::get(&env.url("/api/usage?group_by=model&format=csv"))
        .call()
        .unwrap();
    assert!(csv.content_type().starts_with("text/csv"));
    let text = csv.into_string().unwrap();
    assert!(text.starts_with("bucket_start,model,requests"), "{text}");
    assert!(text.lines().count() >= 3);
    let log_csv = ureq::get(&env.url("/api/requests?limit=1000&format=csv"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(log_csv.lines().count(), 31, "header and 30 rows");
    let bad = env.get_json("/api/usage?since=10&until=99999999");
    assert_eq!(
        bad["error"]["param"], "since",
        "ranges are capped at 90 days"
    );
}

#[test]
fn usage_command_shows_keys_and_accounts_from_a_running_gateway_and_from_the_data_dir() {
    let mut env = Env::start(2);
    traffic(&env);
    let addr = env.addr.to_string();
    let data = env.settings.data_dir.to_str().unwrap().to_string();
    let out = cli(&["usage", "--listen", &addr, "--data-dir", &data, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let through_gateway: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = through_gateway["key"].as_object().unwrap();
    assert_eq!(keys.len(), 2);
    let summed: u64 = through_gateway["account"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["today"]["requests"].as_u64().unwrap())
        .sum();
    // Refused requests have no account; the rest are all today.
    assert!(summed > 0 && summed <= 30);
    // Stopped: the command reads the data dir itself and sees the same.
    env.gateway.take().unwrap().shutdown().unwrap();
    let out = cli(&["usage", "--data-dir", &data, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(direct, through_gateway);
    let table = cli(&["usage", "--data-dir", &data]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("TODAY (UTC)") && text.contains("req"),
        "{text}"
    );
}

#[test]
fn the_store_survives_kill_9_under_load_with_at_most_one_flush_interval_lost() {
    let mock = loadtest::mock::MockUpstream::start(loadtest::mock::MockConfig {
        accounts: 2,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |port: u16| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_codex-lb"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                data.to_str().unwrap(),
                "--upstream-base-url",
                &mock.base_url(),
                "--ledger-flush-interval",
                "200ms",
                "--workers",
                "2",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready when it says it listens.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(10);
        for line in lines.by_ref() {
            if line.unwrap_or_default().contains("listening") || Instant::now() > deadline {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        child
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut gw = start(port);
    for i in 0..2 {
        let r = ureq::post(&format!("{base}/api/accounts/import"))
            .send_string(&mock.auth_json(i))
            .unwrap();
        assert!(r.status() < 300);
    }
    // Load from four clients; each records when its responses completed.
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, done, url) = (
                Arc::clone(&stop),
                Arc::clone(&done),
                format!("{base}/backend-api/codex/responses"),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = turn_body(&format!("c{c} r{i}"));
                    if let Ok(r) = ureq::post(&url).send_string(&body) {
                        if r.into_string()
                            .is_ok_and(|t| t.contains("response.completed"))
                        {
                            done.lock().unwrap().push(Instant::now());
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    gw.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    gw.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let done = done.lock().unwrap().clone();
    let seen = done.len() as u64;
    // What the client saw complete up to one flush interval (plus the write tick) before the
    // kill must be in the store.
    let settled = done
        .iter()
        .filter(|t| killed_at.duration_since(**t) > Duration::from_millis(200 + 100 + 50))
        .count() as u64;
    assert!(seen > 50, "the load ran: {seen}");

    let mut gw = start(port);
    let summary: Value = ureq::get(&format!("{base}/api/usage/summary"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let recorded = summary["totals"]["completed"].as_u64().unwrap();
    eprintln!("kill -9: client saw {seen}, {settled} before the last flush; store has {recorded}");
    // Requests are recorded just before their last bytes go out, so the store may hold a few
    // the clients never saw finish (at most one per client).
    assert!(
        recorded >= settled && recorded <= seen + 4,
        "recorded {recorded}, client saw {seen} ({settled} settled before the last flush)"
    );
    // Rollups agree with the log after the crash too.
    let day: Value = ureq::get(&format!("{base}/api/usage?granularity=day"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let rolled: u64 = day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(rolled, recorded);
    gw.kill().unwrap();
    gw.wait().unwrap();
}

/// Codex's "Fast" mode (`service_tier: "priority"`, here spelled `fast`) costs twice the standard
/// rates and `flex` half: the same tokens, priced at the tier the upstream reports.
#[test]
fn a_turn_is_priced_at_the_service_tier_it_ran_at() {
    let env = Env::start(1);
    let turn = |tier: &str, id: &str| {
        let mut b: Value = serde_json::from_str(&turn_body("same size")).unwrap();
        b["service_tier"] = json!(tier);
        b["prompt_cache_key"] = json!(format!("tier-{tier}"));
        let r = env.turn(&b.to_string(), &[("x-request-id", id)]);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    turn("fast", "tier-fast");
    turn("flex", "tier-flex");
    let rows = env
        .wait_for(Duration::from_secs(5), |e| {
            let rows = all_rows(e, "");
            let pick = |id: &str| rows.iter().find(|r| r["request_id"] == id).cloned();
            Some((pick("tier-fast")?, pick("tier-flex")?))
        })
        .expect("both turns logged");
    let (fast, flex) = rows;
    assert_eq!(fast["service_tier"], "fast", "{fast}");
    assert_eq!(flex["service_tier"], "flex", "{flex}");
    assert_eq!(fast["input_tokens"], flex["input_tokens"]);
    assert_eq!(fast["output_tokens"], flex["output_tokens"]);
    let cost = |r: &Value| r["cost_micro_usd"].as_u64().unwrap() as f64;
    let ratio = cost(&fast) / cost(&flex);
    assert!(
        (ratio - 4.0).abs() < 0.01,
        "fast {fast} / flex {flex} = {ratio}"
    );
}

/// The request log's effort, route and text filters, and a CSV export that holds every matching
/// row however many pages that takes (the API's page is at most 1000).
#[test]
fn effort_route_and_text_filters_and_an_export_of_every_row() {
    let env = Env::start(2);
    let with_effort = |effort: &str, id: &str| {
        let mut b: Value = serde_json::from_str(&turn_body("filters")).unwrap();
        b["reasoning"] = json!({"effort": effort});
        assert_eq!(
            env.turn(&b.to_string(), &[("x-request-id", id)]).status,
            200
        );
    };
    with_effort("high", "needle-high-1");
    with_effort("low", "plain-low-1");
    let v1 = ureq::post(&env.url("/v1/chat/completions"))
        .set("x-request-id", "needle-chat-1")
        .send_string(
            &json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .unwrap();
    assert_eq!(v1.status(), 200);
    // 1100 more turns from 4 clients.
    std::thread::scope(|s| {
        for c in 0..4 {
            let env = &env;
            s.spawn(move || {
                for i in 0..275 {
                    let r = env.turn(&turn_body(&format!("bulk {c} {i}")), &[]);
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    let ids = |q: &str| -> Vec<String> {
        all_rows(&env, q)
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    let total = env
        .wait_for(Duration::from_secs(10), |e| {
            let n = e.summary()["totals"]["requests"].as_u64()?;
            (n >= 1103).then_some(n)
        })
        .expect("every turn recorded");
    assert_eq!(total, 1103);
    assert_eq!(ids("effort=high"), vec!["needle-high-1"]);
    assert_eq!(ids("route=v1/chat/completions"), vec!["needle-chat-1"]);
    let mut found = ids("q=NEEDLE");
    found.sort();
    assert_eq!(found, vec!["needle-chat-1", "needle-high-1"]);
    assert_eq!(ids("q=needle&effort=low"), Vec::<String>::new());

    // The export: every row, once, beyond the API's 1000-row page.
    let r = ureq::get(&env.url("/api/requests?format=csv"))
        .call()
        .unwrap();
    assert_eq!(r.header("x-codex-lb-next-cursor"), None);
    let text = r.into_string().unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("time,request_id,"), "{header}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1103);
    let distinct: std::collections::HashSet<&str> =
        rows.iter().map(|l| l.split(',').nth(1).unwrap()).collect();
    assert_eq!(distinct.len(), 1103);
    // Filters apply to it too.
    let text = ureq::get(&env.url("/api/requests?format=csv&q=needle"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
}
