//! `GET /metrics`: the gateway's counters in the Prometheus text exposition format, version 0.0.4.
//!
//! Runs on whichever worker took the scrape. It reads every worker's cells (`metrics::sum`), each
//! worker's recorded-request maps (`metrics::request_totals`, a brief lock per worker), the
//! accounts snapshot and the ledger channel's length; it never asks the control or ledger
//! thread, so a scrape cannot queue behind sled. Loopback callers only, like `/api`.
//!
//! Names follow the Prometheus conventions: prefix `codex_lb_`, counters end in `_total`,
//! durations are seconds. Every family is written with `# HELP` and `# TYPE`, even before its
//! first sample.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::accounts::{now_unix, AccountStatus};
use crate::http::error_body::ApiError;
use crate::http::response::full_response;
use crate::metrics::{self, HistogramTotals, MetricsTotals, RequestTotals, OTHER, ROUTES};
use crate::proxy::client::ClientConn;
use crate::proxy::{reply_error, send};
use crate::shared::Shared;
use crate::worker::Worker;

/// The media type of the text format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers a scrape. Returns whether the connection stays open.
pub async fn handle(
    w: &Worker,
    client: &mut ClientConn,
    head: &crate::http::request::RequestHead,
    keep_alive: bool,
) -> bool {
    if !crate::access::from_this_machine(client.peer, head) {
        let err = ApiError::new(
            403,
            "permission_error",
            "admin_loopback_only",
            "/metrics only answers loopback clients",
        );
        return reply_error(w, client, &err, false).await;
    }
    let body = Scrape::collect(&w.shared).render();
    let bytes = full_response(
        200,
        CONTENT_TYPE,
        &[("cache-control", b"no-store")],
        body.as_bytes(),
        keep_alive,
    );
    send(w, client, Bytes::from(bytes), keep_alive).await
}

/// Everything one scrape reports, read once so the text is rendered from a fixed picture.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    /// Each worker's counters, by worker index.
    pub workers: Vec<MetricsTotals>,
    pub recorded: RequestTotals,
    /// Accounts per status, in [`STATUSES`] order.
    pub accounts: [u64; STATUSES.len()],
    /// Accounts cooling down after an upstream refusal, whatever their status.
    pub accounts_blocked: u64,
    pub ledger_queue_depth: usize,
}

/// Every account status, as its `status` label (the snake_case the admin API uses).
pub const STATUSES: [AccountStatus; 4] = [
    AccountStatus::Active,
    AccountStatus::Paused,
    AccountStatus::ReauthRequired,
    AccountStatus::Deactivated,
];

fn status_label(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Active => "active",
        AccountStatus::Paused => "paused",
        AccountStatus::ReauthRequired => "reauth_required",
        AccountStatus::Deactivated => "deactivated",
    }
}

impl Scrape {
    pub fn collect(shared: &Shared) -> Scrape {
        let snap = shared.accounts.load();
        let now = now_unix();
        let mut accounts = [0u64; STATUSES.len()];
        for a in &snap.accounts {
            if let Some(i) = STATUSES.iter().position(|s| *s == a.status) {
                if let Some(n) = accounts.get_mut(i) {
                    *n += 1;
                }
            }
        }
        Scrape {
            workers: shared
                .metrics
                .iter()
                .map(|c| metrics::sum(std::slice::from_ref(c)))
                .collect(),
            recorded: metrics::request_totals(&shared.metrics),
            accounts,
            accounts_blocked: snap
                .accounts
                .iter()
                .filter(|a| a.blocked_at(now).is_some())
                .count() as u64,
            ledger_queue_depth: shared.ledger_tx.len(),
        }
    }

    /// The exposition text: one family after another, each with `# HELP` and `# TYPE`.
    pub fn render(&self) -> String {
        let mut t = Text::default();
        let total = |f: fn(&MetricsTotals) -> u64| self.workers.iter().map(f).sum::<u64>();
        let r = &self.recorded;

        t.family(
            "codex_lb_requests_total",
            "counter",
            "Proxied requests recorded, by route, HTTP status and account (\"none\" before one was chosen).",
        );
        for ((route, status, account), n) in &r.requests {
            let status = status.to_string();
            t.sample(
                "codex_lb_requests_total",
                &[("route", route), ("status", &status), ("account", account)],
                *n,
            );
        }

        t.family(
            "codex_lb_errors_total",
            "counter",
            "Recorded requests that did not complete, by the error code they ended with.",
        );
        for (code, n) in &r.errors {
            t.sample("codex_lb_errors_total", &[("code", code)], *n);
        }

        t.family(
            "codex_lb_tokens_total",
            "counter",
            "Tokens reported by the upstream, by kind (cached is part of input, reasoning part of output), account and model.",
        );
        for ((account, model), u) in &r.usage {
            for (kind, n) in [
                ("input", u.input_tokens),
                ("cached", u.cached_tokens),
                ("output", u.output_tokens),
                ("reasoning", u.reasoning_tokens),
            ] {
                t.sample(
                    "codex_lb_tokens_total",
                    &[("kind", kind), ("account", account), ("model", model)],
                    n,
                );
            }
        }

        t.family(
            "codex_lb_cost_usd_total",
            "counter",
            "Cost of the priced requests by the gateway's price table, in US dollars, by account and model.",
        );
        for ((account, model), u) in r.usage.iter().filter(|(_, u)| u.priced_requests > 0) {
            t.sample_f64(
                "codex_lb_cost_usd_total",
                &[("account", account), ("model", model)],
                u.cost_micro_usd as f64 / 1e6,
            );
        }

        t.histograms(
            "codex_lb_request_duration_seconds",
            "Time from a request's head to its recording (the end of the stream for streamed turns), by route.",
            &r.duration,
        );
        t.histograms(
            "codex_lb_time_to_first_byte_seconds",
            "Time from a request's head until the first relayed bytes were written to the client, by route (streamed turns only).",
            &r.ttfb,
        );

        t.gauge(
            "codex_lb_requests_in_flight",
            "Requests being handled now, admin and metrics requests included.",
            total(|m| m.requests_in_flight),
        );
        t.gauge(
            "codex_lb_streams_open",
            "Response streams being relayed now.",
            total(|m| m.streams_open),
        );
        t.family(
            "codex_lb_connections_open",
            "gauge",
            "Client connections open now, by worker.",
        );
        for (i, m) in self.workers.iter().enumerate() {
            let worker = i.to_string();
            t.sample(
                "codex_lb_connections_open",
                &[("worker", &worker)],
                m.connections_open,
            );
        }
        t.family(
            "codex_lb_connections_accepted_total",
            "counter",
            "Client connections accepted, by worker.",
        );
        for (i, m) in self.workers.iter().enumerate() {
            let worker = i.to_string();
            t.sample(
                "codex_lb_connections_accepted_total",
                &[("worker", &worker)],
                m.connections_accepted,
            );
        }
        t.counter(
            "codex_lb_connections_refused_total",
            "Client connections refused because their worker was at its connection cap.",
            total(|m| m.connections_refused),
        );

        t.family(
            "codex_lb_accounts",
            "gauge",
            "Accounts in the pool, by status.",
        );
        for (s, n) in STATUSES.iter().zip(self.accounts) {
            t.sample("codex_lb_accounts", &[("status", status_label(*s))], n);
        }
        t.gauge(
            "codex_lb_accounts_blocked",
            "Accounts cooling down after an upstream refusal (such as a 429), whatever their status.",
            self.accounts_blocked,
        );

        t.gauge(
            "codex_lb_ledger_queue_depth",
            "Usage events waiting for the ledger thread.",
            self.ledger_queue_depth as u64,
        );
        t.counter(
            "codex_lb_ledger_dropped_events_total",
            "Usage events dropped because the ledger channel was full.",
            total(|m| m.ledger_dropped),
        );

        t.counter(
            "codex_lb_upstream_errors_total",
            "Upstream exchanges that broke, timed out or could not be reached.",
            total(|m| m.upstream_errors),
        );
        t.counter(
            "codex_lb_failovers_total",
            "Upstream attempts made on another account after a failed one.",
            total(|m| m.failovers),
        );
        t.counter(
            "codex_lb_websocket_upgrades_total",
            "Client WebSocket sessions accepted on the Codex responses path.",
            total(|m| m.websocket_upgrades),
        );
        t.counter(
            "codex_lb_sticky_moves_total",
            "Conversations sent away from their home account because it could not serve them.",
            total(|m| m.sticky_moves),
        );
        t.counter(
            "codex_lb_upstream_connects_total",
            "New upstream connections opened.",
            total(|m| m.upstream_connects),
        );
        t.counter(
            "codex_lb_upstream_reused_total",
            "Upstream exchanges sent on a pooled connection.",
            total(|m| m.upstream_reused),
        );
        t.counter(
            "codex_lb_timeouts_total",
            "Client and upstream timeouts of any kind.",
            total(|m| m.timeouts),
        );
        t.counter(
            "codex_lb_client_errors_total",
            "Requests the gateway answered with a 4xx of its own (bad input, limits).",
            total(|m| m.client_errors),
        );
        t.counter(
            "codex_lb_panics_total",
            "Connection tasks that panicked; their worker kept running.",
            total(|m| m.panics),
        );
        t.out
    }
}

/// Writes the text format (lines end in `\n`; label values and help text escaped).
#[derive(Default)]
struct Text {
    out: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_into(&mut self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v, true);
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.out, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        self.out.push(' ');
        push_f64(&mut self.out, value);
        self.out.push('\n');
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// One histogram family with a `route` label. Known routes are always written; `other` only
    /// once it has observations.
    fn histograms(&mut self, name: &str, help: &str, by_route: &[HistogramTotals]) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let sum = format!("{name}_sum");
        let count = format!("{name}_count");
        for (route, h) in ROUTES.iter().zip(by_route) {
            if *route == OTHER && h.count() == 0 {
                continue;
            }
            for (le, n) in h.cumulative() {
                self.sample(&bucket, &[("route", route), ("le", le)], n);
            }
            self.sample_f64(&sum, &[("route", route)], h.sum_micros as f64 / 1e6);
            self.sample(&count, &[("route", route)], h.count());
        }
    }
}

/// Escapes per the text format: `\` and newline always, `"` inside label values only.
fn escape_into(out: &mut String, s: &str, label_value: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A float as the text format spells it (`+Inf`, `-Inf`, `NaN`, else Rust's shortest form,
/// which never uses an exponent).
fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{RequestMetrics, RequestSample};
    use std::time::Duration;

    fn sample<'a>(account: Option<&'a str>, model: Option<&'a str>) -> RequestSample<'a> {
        RequestSample {
            route: "responses",
            status: 200,
            account,
            model,
            completed: true,
            error_code: None,
            input_tokens: 10,
            cached_tokens: 4,
            output_tokens: 7,
            reasoning_tokens: 2,
            cost_micro_usd: Some(1_500),
            duration: Duration::from_millis(30),
            ttfb: Some(Duration::from_millis(8)),
        }
    }

    fn scrape(recorded: &RequestMetrics) -> Scrape {
        let mut s = Scrape {
            workers: vec![MetricsTotals::default(), MetricsTotals::default()],
            ..Scrape::default()
        };
        recorded.read_into(&mut s.recorded);
        s
    }

    #[test]
    fn escapes_label_values_and_help() {
        let mut out = String::new();
        escape_into(&mut out, "a\"b\\c\nd", true);
        assert_eq!(out, r#"a\"b\\c\nd"#);
        let mut out = String::new();
        escape_into(&mut out, "a\"b\\c\nd", false);
        assert_eq!(out, r#"a"b\\c\nd"#);
    }

    #[test]
    fn floats_use_the_text_format_spelling() {
        for (v, want) in [
            (0.0015, "0.0015"),
            (3.0, "3"),
            (1e-7, "0.0000001"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            let mut out = String::new();
            push_f64(&mut out, v);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn renders_recorded_requests_with_escaped_labels() {
        let m = RequestMetrics::default();
        m.record(&sample(Some("acc\"1"), Some("gpt-5.5")));
        m.record(&RequestSample {
            status: 502,
            completed: false,
            error_code: Some("upstream_timeout"),
            cost_micro_usd: None,
            input_tokens: 0,
            cached_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            ttfb: None,
            ..sample(None, None)
        });
        let text = scrape(&m).render();
        for line in [
            r#"codex_lb_requests_total{route="responses",status="200",account="acc\"1"} 1"#,
            r#"codex_lb_requests_total{route="responses",status="502",account="none"} 1"#,
            r#"codex_lb_errors_total{code="upstream_timeout"} 1"#,
            r#"codex_lb_tokens_total{kind="cached",account="acc\"1",model="gpt-5.5"} 4"#,
            r#"codex_lb_cost_usd_total{account="acc\"1",model="gpt-5.5"} 0.0015"#,
            r#"codex_lb_request_duration_seconds_bucket{route="responses",le="0.025"} 0"#,
            r#"codex_lb_request_duration_seconds_bucket{route="responses",le="0.05"} 2"#,
            r#"codex_lb_request_duration_seconds_bucket{route="responses",le="+Inf"} 2"#,
            r#"codex_lb_request_duration_seconds_sum{route="responses"} 0.06"#,
            r#"codex_lb_request_duration_seconds_count{route="responses"} 2"#,
            r#"codex_lb_time_to_first_byte_seconds_count{route="responses"} 1"#,
            r#"codex_lb_request_duration_seconds_count{route="models"} 0"#,
            r#"codex_lb_connections_open{worker="1"} 0"#,
            r#"codex_lb_accounts{status="reauth_required"} 0"#,
            "# TYPE codex_lb_failovers_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // The request without tokens or a price adds no usage series.
        assert!(!text.contains(r#"model="none""#), "{text}");
        // `other` routes appear only once observed.
        assert!(!text.contains(r#"route="other""#), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let m = RequestMetrics::default();
        m.record(&sample(Some("a"), Some("m")));
        let text = scrape(&m).render();
        let mut typed: Vec<&str> = Vec::new();
        let mut helped: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap_or_default());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(helped.contains(&name), "TYPE before HELP: {line}");
                assert!(!typed.contains(&name), "family twice: {name}");
                typed.push(name);
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = typed.last().copied().unwrap_or_default();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| *b == family))
                    .unwrap_or(name);
                assert_eq!(base, family, "sample outside its family: {line}");
                assert!(name.starts_with("codex_lb_"), "{line}");
            }
        }
        assert_eq!(typed.len(), 24, "{typed:?}");
    }
}
