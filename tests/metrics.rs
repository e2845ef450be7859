//! `GET /metrics`: the Prometheus text exposition (0.0.4), parsed strictly line by line, and its
//! counters checked against what the ledger recorded for the same requests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{turn_body, Env};

// === A strict parser for the text format ===

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }
}

#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    fn family(&self, name: &str) -> &Family {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    fn samples(&self, name: &str) -> &[Sample] {
        &self.family(name).samples
    }

    fn sum(&self, name: &str, filter: impl Fn(&Sample) -> bool) -> f64 {
        self.samples(name)
            .iter()
            .filter(|s| filter(s))
            .map(|s| s.value)
            .sum()
    }

    /// The one sample of an unlabelled family.
    fn value(&self, name: &str) -> f64 {
        match self.samples(name) {
            [s] if s.labels.is_empty() => s.value,
            other => panic!("{name}: expected one unlabelled sample, got {other:?}"),
        }
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value: a Go-style float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) =>
        {
            s.parse().map_err(|e| format!("bad value {s:?}: {e}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// Undoes the escapes the format allows: `\\`, `\n`, and `\"` where `quote` is allowed.
fn unescape(s: &str, quote: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {s:?}")),
        }
    }
    Ok(out)
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must open with {")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let (name, r) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        // The value runs to the first `"` not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in r.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        let value = unescape(&r[..end], true)?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &r[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        } else {
            return Err(format!("expected , or }} at {rest:?}"));
        }
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("sample without value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end..])?
    } else {
        (BTreeMap::new(), &line[name_end..])
    };
    let rest = rest
        .strip_prefix(' ')
        .ok_or("value must follow one space")?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    // An optional integer timestamp (this gateway writes none), then nothing.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("bad timestamp {ts:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to: itself, or a histogram's base for `_bucket`/`_sum`/`_count`.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families
                .get(base)
                .is_some_and(|f| f.kind.as_deref() == Some("histogram"))
            {
                return base;
            }
        }
    }
    name
}

/// Parses the whole text; any line that is not a HELP, a TYPE or a well-formed sample fails, as
/// do a family described twice, a family whose lines are not one group, and a repeated series.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    let mut current: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut enter = |name: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(name) {
            if closed.contains(name) {
                return Err(format!("lines of {name} are not one group"));
            }
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            *current = Some(name.to_string());
        }
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            enter(name, &mut current).map_err(at)?;
            let f = exp.families.entry(name.to_string()).or_default();
            if f.help.is_some() || !f.samples.is_empty() {
                return Err(at("HELP twice or after samples".into()));
            }
            f.help = Some(unescape(help, false).map_err(at)?);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without kind".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(at(format!("bad type {kind:?}")));
            }
            enter(name, &mut current).map_err(at)?;
            let f = exp.families.entry(name.to_string()).or_default();
            if f.kind.is_some() || !f.samples.is_empty() {
                return Err(at("TYPE twice or after samples".into()));
            }
            f.kind = Some(kind.to_string());
        } else if line.starts_with('#') || line.trim().is_empty() {
            return Err(at("neither HELP, TYPE nor a sample".into()));
        } else {
            let s = parse_sample(line).map_err(at)?;
            let family = family_of(&s.name, &exp.families).to_string();
            enter(&family, &mut current).map_err(at)?;
            let key = format!("{}{:?}", s.name, s.labels);
            if !series.insert(key) {
                return Err(at("series repeated".into()));
            }
            exp.families.entry(family).or_default().samples.push(s);
        }
    }
    Ok(exp)
}

// === Checks every scrape must pass ===

/// Every sample has a typed, described family; names follow the conventions; histograms are
/// cumulative and end with `+Inf` equal to `_count`.
fn check_well_formed(exp: &Exposition) {
    for (name, f) in &exp.families {
        let kind = f
            .kind
            .as_deref()
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert!(f.help.is_some(), "{name} has no HELP");
        assert!(name.starts_with("codex_lb_"), "{name}");
        match kind {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name}"),
            "histogram" => check_histogram(name, f),
            other => panic!("{name}: unexpected type {other}"),
        }
        for s in &f.samples {
            assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
            if kind != "histogram" {
                assert_eq!(&s.name, name, "{s:?}");
            }
        }
    }
}

/// One labelled series of a histogram: `(le, cumulative count)` pairs, `_sum` and `_count`.
#[derive(Debug, Default)]
struct HistogramSeries {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

fn check_histogram(name: &str, f: &Family) {
    assert!(name.ends_with("_seconds"), "histogram {name}");
    // Group by labels other than `le`.
    let mut groups: BTreeMap<Vec<(String, String)>, HistogramSeries> = BTreeMap::new();
    for s in &f.samples {
        let key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let g = groups.entry(key).or_default();
        match s.name.strip_prefix(name) {
            Some("_bucket") => {
                let le = parse_value(s.labels.get("le").expect("bucket without le")).unwrap();
                g.buckets.push((le, s.value));
            }
            Some("_sum") => g.sum = Some(s.value),
            Some("_count") => g.count = Some(s.value),
            _ => panic!("{name}: stray sample {s:?}"),
        }
    }
    assert!(!groups.is_empty(), "{name} has no series");
    for (labels, g) in groups {
        let count = g
            .count
            .unwrap_or_else(|| panic!("{name}{labels:?}: no _count"));
        let sum = g.sum.unwrap_or_else(|| panic!("{name}{labels:?}: no _sum"));
        let buckets = g.buckets;
        assert!(buckets.len() >= 2, "{name}{labels:?}: {buckets:?}");
        for pair in buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{name}{labels:?}: le out of order");
            assert!(pair[0].1 <= pair[1].1, "{name}{labels:?}: not cumulative");
        }
        let (last_le, last) = *buckets.last().unwrap();
        assert_eq!(
            last_le,
            f64::INFINITY,
            "{name}{labels:?}: last le is not +Inf"
        );
        assert_eq!(last, count, "{name}{labels:?}: +Inf bucket != _count");
        assert!(count > 0.0 || sum == 0.0, "{name}{labels:?}");
    }
}

fn scrape(env: &Env) -> (String, Exposition) {
    let resp = ureq::get(&env.url("/metrics"))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.into_string().expect("utf-8 body");
    let exp = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    check_well_formed(&exp);
    (text, exp)
}

fn account_ids(env: &Env) -> Vec<String> {
    env.mock
        .accounts()
        .into_iter()
        .map(|a| a.chatgpt_account_id)
        .collect()
}

// === Tests ===

#[test]
fn a_fresh_gateway_exposes_every_family() {
    let env = Env::start(2);
    let (text, exp) = scrape(&env);
    for family in [
        "codex_lb_requests_total",
        "codex_lb_errors_total",
        "codex_lb_tokens_total",
        "codex_lb_cost_usd_total",
        "codex_lb_request_duration_seconds",
        "codex_lb_time_to_first_byte_seconds",
        "codex_lb_requests_in_flight",
        "codex_lb_streams_open",
        "codex_lb_connections_open",
        "codex_lb_connections_accepted_total",
        "codex_lb_connections_refused_total",
        "codex_lb_accounts",
        "codex_lb_accounts_blocked",
        "codex_lb_ledger_queue_depth",
        "codex_lb_ledger_dropped_events_total",
        "codex_lb_upstream_errors_total",
        "codex_lb_failovers_total",
        "codex_lb_sticky_moves_total",
        "codex_lb_upstream_connects_total",
        "codex_lb_upstream_reused_total",
        "codex_lb_timeouts_total",
        "codex_lb_client_errors_total",
        "codex_lb_panics_total",
    ] {
        assert!(
            exp.families.contains_key(family),
            "{family} missing:\n{text}"
        );
    }
    assert_eq!(exp.sum("codex_lb_requests_total", |_| true), 0.0);
    let workers = exp.samples("codex_lb_connections_open");
    assert_eq!(workers.len(), env.settings.workers, "{workers:?}");
    assert_eq!(
        exp.sum("codex_lb_accounts", |s| s.label("status") == "active"),
        2.0
    );
    // The scrape itself is in flight while it is answered.
    assert!(exp.value("codex_lb_requests_in_flight") >= 1.0, "{text}");
}

#[test]
fn counters_agree_with_the_ledger_after_turns_a_failover_and_a_4xx() {
    let env = Env::start(2);
    let mut recorded = 0u64;

    for _ in 0..3 {
        assert_eq!(env.turn(&turn_body("plain"), &[]).status, 200);
        recorded += 1;
    }
    // A 500 on one account: the turn fails over and still completes.
    let failing = account_ids(&env)[0].clone();
    env.mock.fail_next(&failing, 500, 1);
    for _ in 0..20 {
        let reply = env.turn(&turn_body("failover"), &[]);
        recorded += 1;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if env.mock.stats().rejected_by_status.get(&500).copied() == Some(1) {
            break;
        }
    }
    assert_eq!(env.mock.stats().rejected_by_status.get(&500), Some(&1));
    // A 4xx the gateway produces: the body is not JSON.
    let bad = env.turn("{not json", &[]);
    assert_eq!(bad.status, 400, "{}", bad.text());
    recorded += 1;
    // And one request on the models route.
    let models = ureq::get(&env.url("/backend-api/codex/models?client_version=0.169.0"))
        .timeout(Duration::from_secs(10))
        .call();
    assert!(models.is_ok(), "{models:?}");
    recorded += 1;

    let summary = env
        .wait_for(Duration::from_secs(5), |e| {
            let s = e.summary();
            (s["totals"]["requests"].as_u64() == Some(recorded)).then_some(s)
        })
        .unwrap_or_else(|| panic!("ledger has {recorded} requests: {}", env.summary()));
    let totals = &summary["totals"];
    let (text, exp) = scrape(&env);

    // Requests: the same count as the ledger, and as the request log.
    assert_eq!(
        exp.sum("codex_lb_requests_total", |_| true),
        recorded as f64,
        "{text}"
    );
    let rows = env.get_json("/api/requests?limit=1000");
    assert_eq!(
        rows["requests"].as_array().map(Vec::len),
        Some(recorded as usize),
        "{rows}"
    );
    assert_eq!(
        exp.sum("codex_lb_requests_total", |s| s.label("route") == "models"),
        1.0,
        "{text}"
    );
    assert_eq!(
        exp.sum("codex_lb_requests_total", |s| s.label("status") == "400"
            && s.label("account") == "none"),
        1.0,
        "{text}"
    );
    assert_eq!(
        exp.sum("codex_lb_errors_total", |s| s.label("code")
            == "invalid_json"),
        1.0,
        "{text}"
    );
    // Every account label is one the ledger knows (or `none`).
    let by_account = summary["by_account"].as_object().expect("by_account");
    for s in exp.samples("codex_lb_requests_total") {
        let a = s.label("account");
        assert!(a == "none" || by_account.contains_key(a), "{s:?}");
    }

    // Tokens and cost match the ledger's totals.
    for (kind, field) in [
        ("input", "input_tokens"),
        ("cached", "cached_tokens"),
        ("output", "output_tokens"),
        ("reasoning", "reasoning_tokens"),
    ] {
        assert_eq!(
            exp.sum("codex_lb_tokens_total", |s| s.label("kind") == kind),
            totals[field].as_u64().expect(field) as f64,
            "{kind}: {totals}\n{text}"
        );
    }
    assert!(totals["input_tokens"].as_u64() > Some(0), "{totals}");
    let cost = exp.sum("codex_lb_cost_usd_total", |_| true);
    let ledger_cost = totals["cost_micro_usd"].as_u64().expect("cost") as f64 / 1e6;
    assert!((cost - ledger_cost).abs() < 1e-6, "{cost} vs {ledger_cost}");

    // Latency: every recorded request observed once per route; first bytes for the turns.
    let count = |s: &Sample| s.name.ends_with("_count");
    let duration = exp.sum("codex_lb_request_duration_seconds", count);
    assert_eq!(duration, recorded as f64, "{text}");
    assert!(
        exp.sum("codex_lb_time_to_first_byte_seconds", |s| count(s)
            && s.label("route") == "responses")
            >= (recorded - 2) as f64,
        "{text}"
    );

    // Core counters.
    assert!(exp.value("codex_lb_failovers_total") >= 1.0, "{text}");
    assert!(exp.value("codex_lb_client_errors_total") >= 1.0, "{text}");
    assert!(
        exp.sum("codex_lb_connections_accepted_total", |_| true) >= 1.0,
        "{text}"
    );
    assert_eq!(exp.value("codex_lb_panics_total"), 0.0);
    assert_eq!(exp.value("codex_lb_ledger_dropped_events_total"), 0.0);
}

#[test]
fn only_get_is_allowed() {
    let env = Env::start(1);
    match ureq::post(&env.url("/metrics"))
        .timeout(Duration::from_secs(10))
        .send_string("")
    {
        Err(ureq::Error::Status(405, r)) => {
            let v: serde_json::Value = r.into_json().expect("json");
            assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
        }
        other => panic!("POST /metrics: {other:?}"),
    }
}

// === The parser itself must refuse what the format forbids ===

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total Help with \\\\ and \\n.\n# TYPE a_total counter\n\
              a_total{x=\"q\\\"\\\\\\n\",y=\"\"} 1\na_total 2 1700000000\n";
    let exp = parse(ok).expect("valid");
    let s = &exp.samples("a_total")[0];
    assert_eq!(s.label("x"), "q\"\\\n");
    assert_eq!(
        exp.family("a_total").help.as_deref(),
        Some("Help with \\ and \n.")
    );
    for bad in [
        "a_total 1",                                        // no final newline
        "a_total{x=\"1\"} 1\n\n",                           // empty line
        "a_total{x=\"1\",x=\"2\"} 1\n",                     // label twice
        "a_total{x=\"1} 1\n",                               // unterminated value
        "a_total{x=\"\\t\"} 1\n",                           // unknown escape
        "a_total{1x=\"1\"} 1\n",                            // bad label name
        "a_total{x=\"1\"}  1\n",                            // two spaces
        "a_total{x=\"1\"} one\n",                           // bad value
        "a_total 1 2 3\n",                                  // trailing field
        "# TYPE a_total counter\n# TYPE a_total counter\n", // TYPE twice
        "# TYPE a_total bogus\n",                           // unknown type
        "# comment\n",                                      // neither HELP nor TYPE
        "a_total 1\nb_total 1\na_total{x=\"2\"} 1\n",       // not one group
        "a_total 1\na_total 2\n",                           // series repeated
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
