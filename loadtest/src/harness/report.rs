//! Report math and rendering: runs merged per target, rates, latency added against the
//! direct-to-mock baseline, process figures, and the Markdown tables printed at the end (the
//! same tables go into tuning.md as they are).
//!
//! Rates divide by the measured time of each run (first start to last completion) summed over
//! rounds. Latency percentiles come from histograms merged over rounds, never from averaging
//! per-round percentiles. "Added" is target minus direct at the same percentile; event rates
//! are also given as a fraction of direct's and of nginx's.
//!
//! The `ws` scenario has its own first table ([`render_ws`]): turns for requests, messages
//! (frames) for events, the first message of a turn for its first byte, and the upgrades.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::hist::Summary;
use super::procstat::Usage;
use super::record::Recorder;
use super::target::{Target, TargetKind};

/// One run: one target, one round.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub round: u32,
    pub elapsed: Duration,
    pub rec: Recorder,
    pub streams_peak: u64,
    pub target_proc: Option<Usage>,
    pub mock_proc: Option<Usage>,
    pub client_cpu_s: f64,
    /// Non-2xx answers the mock gave during the run, by status.
    pub upstream_rejections: BTreeMap<u16, u64>,
}

/// The figures of one run, as kept in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RunBrief {
    pub round: u32,
    pub elapsed_s: f64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub req_per_s: f64,
    pub ttfd_p99_ms: f64,
    pub streams_peak: u64,
    pub cpu_s: Option<f64>,
    pub rss_before_mb: Option<f64>,
    pub rss_peak_mb: Option<f64>,
    pub mock_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
    pub upstream_rejections: BTreeMap<u16, u64>,
}

/// Target minus direct at three percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Delta {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Delta {
    fn between(t: &Summary, base: &Summary) -> Delta {
        Delta {
            p50: t.p50_ms - base.p50_ms,
            p99: t.p99_ms - base.p99_ms,
            p999: t.p999_ms - base.p999_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Added {
    pub ttfb_ms: Delta,
    pub ttfd_ms: Delta,
    pub gap_ms: Delta,
    /// Whole request (turn) latency.
    pub total_ms: Delta,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetSummary {
    pub name: String,
    pub kind: TargetKind,
    pub url: String,
    pub requests_ok: u64,
    pub error_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub req_per_s: f64,
    /// Response bytes received per second.
    pub bytes_per_s: f64,
    /// Request bytes sent per second.
    pub sent_bytes_per_s: f64,
    /// Events received per second: SSE events, or WebSocket messages (`ws`).
    pub events_per_s: f64,
    /// `events_per_s` as a fraction of the direct target's, and of nginx's.
    pub events_vs_direct: Option<f64>,
    pub events_vs_nginx: Option<f64>,
    pub ttfb: Summary,
    pub ttfd: Summary,
    pub total: Summary,
    pub gap: Summary,
    /// WebSocket upgrades (`ws`): TCP connect to the 101; `count` is how many succeeded.
    pub upgrade: Summary,
    pub added_vs_direct: Option<Added>,
    pub streams_peak: u64,
    pub cpu_s: Option<f64>,
    pub cpu_ms_per_req: Option<f64>,
    pub rss_before_mb: Option<f64>,
    pub rss_peak_mb: Option<f64>,
    pub rss_per_stream_kb: Option<f64>,
    pub mock_cpu_s: Option<f64>,
    pub client_cpu_s: f64,
    pub upstream_rejections: BTreeMap<u16, u64>,
    pub runs: Vec<RunBrief>,
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// RSS growth per held stream in KiB, when streams were held.
fn per_stream_kb(u: &Usage, streams: u64) -> Option<f64> {
    (streams > 0).then(|| u.rss_peak_kb.saturating_sub(u.rss_before_kb) as f64 / streams as f64)
}

fn rate(n: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        n / secs
    } else {
        0.0
    }
}

/// `per_stream`: whether RSS growth per held stream means anything (the hold scenario).
pub fn summarize(target: &Target, runs: &[Run], per_stream: bool) -> TargetSummary {
    let mut rec = Recorder::default();
    let mut upstream_rejections = BTreeMap::new();
    for r in runs {
        rec.merge(&r.rec);
        for (s, n) in &r.upstream_rejections {
            *upstream_rejections.entry(*s).or_default() += n;
        }
    }
    let elapsed_s: f64 = runs.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let procs: Vec<(&Usage, u64)> = runs
        .iter()
        .filter_map(|r| r.target_proc.as_ref().map(|u| (u, r.streams_peak)))
        .collect();
    let cpu_s = (!procs.is_empty()).then(|| procs.iter().map(|(u, _)| u.cpu_s).sum::<f64>());
    let per_stream: Vec<f64> = procs
        .iter()
        .filter(|_| per_stream)
        .filter_map(|(u, s)| per_stream_kb(u, *s))
        .collect();
    let mocks: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.mock_proc.map(|u| u.cpu_s))
        .collect();
    let runs_brief = runs
        .iter()
        .map(|r| RunBrief {
            round: r.round,
            elapsed_s: r.elapsed.as_secs_f64(),
            ok: r.rec.ok,
            errors: r.rec.errors_by_label(),
            req_per_s: rate(r.rec.ok as f64, r.elapsed.as_secs_f64()),
            ttfd_p99_ms: r.rec.ttfd.quantile_ms(0.99),
            streams_peak: r.streams_peak,
            cpu_s: r.target_proc.map(|u| u.cpu_s),
            rss_before_mb: r.target_proc.map(|u| mb(u.rss_before_kb)),
            rss_peak_mb: r.target_proc.map(|u| mb(u.rss_peak_kb)),
            mock_cpu_s: r.mock_proc.map(|u| u.cpu_s),
            client_cpu_s: r.client_cpu_s,
            upstream_rejections: r.upstream_rejections.clone(),
        })
        .collect();
    TargetSummary {
        name: target.name.clone(),
        kind: target.kind,
        url: target.url.clone(),
        requests_ok: rec.ok,
        error_total: rec.error_total(),
        errors: rec.errors_by_label(),
        elapsed_s,
        req_per_s: rate(rec.ok as f64, elapsed_s),
        bytes_per_s: rate(rec.bytes as f64, elapsed_s),
        sent_bytes_per_s: rate(rec.sent as f64, elapsed_s),
        events_per_s: rate(rec.events as f64, elapsed_s),
        events_vs_direct: None,
        events_vs_nginx: None,
        ttfb: rec.ttfb.summary(),
        ttfd: rec.ttfd.summary(),
        total: rec.total.summary(),
        gap: rec.gap.summary(),
        upgrade: rec.upgrade.summary(),
        added_vs_direct: None,
        streams_peak: runs.iter().map(|r| r.streams_peak).max().unwrap_or(0),
        cpu_ms_per_req: cpu_s
            .filter(|_| rec.ok > 0)
            .map(|c| c * 1000.0 / rec.ok as f64),
        cpu_s,
        rss_before_mb: procs.first().map(|(u, _)| mb(u.rss_before_kb)),
        rss_peak_mb: procs
            .iter()
            .map(|(u, _)| mb(u.rss_peak_kb))
            .reduce(f64::max),
        rss_per_stream_kb: (!per_stream.is_empty())
            .then(|| per_stream.iter().sum::<f64>() / per_stream.len() as f64),
        mock_cpu_s: (!mocks.is_empty()).then(|| mocks.iter().sum()),
        client_cpu_s: runs.iter().map(|r| r.client_cpu_s).sum(),
        upstream_rejections,
        runs: runs_brief,
    }
}

fn ratio(n: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| n / base)
}

/// Fills `added_vs_direct` and `events_vs_direct` of every non-direct target from the direct
/// one, and `events_vs_nginx` of every target but nginx, when those targets were measured.
pub fn add_baseline(all: &mut [TargetSummary]) {
    let rate_of = |kind| all.iter().find(|s| s.kind == kind).map(|s| s.events_per_s);
    if let Some(nginx) = rate_of(TargetKind::Nginx) {
        for s in all.iter_mut().filter(|s| s.kind != TargetKind::Nginx) {
            s.events_vs_nginx = ratio(s.events_per_s, nginx);
        }
    }
    let Some(base) = all.iter().find(|s| s.kind == TargetKind::Direct).cloned() else {
        return;
    };
    for s in all.iter_mut().filter(|s| s.kind != TargetKind::Direct) {
        s.events_vs_direct = ratio(s.events_per_s, base.events_per_s);
        s.added_vs_direct = Some(Added {
            ttfb_ms: Delta::between(&s.ttfb, &base.ttfb),
            ttfd_ms: Delta::between(&s.ttfd, &base.ttfd),
            gap_ms: Delta::between(&s.gap, &base.gap),
            total_ms: Delta::between(&s.total, &base.total),
        });
    }
}

/// Milliseconds with the precision their size deserves.
pub fn fmt_ms(ms: f64) -> String {
    let a = ms.abs();
    if a < 1.0 {
        format!("{ms:.3}")
    } else if a < 10.0 {
        format!("{ms:.2}")
    } else if a < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn signed(ms: f64) -> String {
    if ms >= 0.0 {
        format!("+{}", fmt_ms(ms))
    } else {
        fmt_ms(ms)
    }
}

fn three(s: &Summary) -> String {
    if s.count == 0 {
        return "-".into();
    }
    format!(
        "{} / {} / {}",
        fmt_ms(s.p50_ms),
        fmt_ms(s.p99_ms),
        fmt_ms(s.p999_ms)
    )
}

/// p50 / p99 of one histogram, `-` when empty.
fn two(s: &Summary) -> String {
    if s.count == 0 {
        return "-".into();
    }
    format!("{} / {}", fmt_ms(s.p50_ms), fmt_ms(s.p99_ms))
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn kinds<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Markdown table with padded columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(&width) {
            let _ = write!(s, " {c:<w$} |");
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out += &line(width.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

/// The two result tables: latency and throughput, then resources and errors.
pub fn render(all: &[TargetSummary]) -> String {
    let latency: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let added = s.added_vs_direct;
            vec![
                s.name.clone(),
                s.requests_ok.to_string(),
                s.error_total.to_string(),
                format!("{:.0}", s.req_per_s),
                format!(
                    "{:.1} / {:.1}",
                    s.sent_bytes_per_s / 1e6,
                    s.bytes_per_s / 1e6
                ),
                three(&s.ttfb),
                three(&s.ttfd),
                added.map_or_else(
                    || "-".into(),
                    |a| format!("{} / {}", signed(a.ttfd_ms.p50), signed(a.ttfd_ms.p99)),
                ),
                three(&s.gap),
                added.map_or_else(|| "-".into(), |a| signed(a.gap_ms.p99)),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "target",
            "ok",
            "errors",
            "req/s",
            "MB/s up / down",
            "TTFB p50 / p99 / p99.9 ms",
            "TTFD p50 / p99 / p99.9 ms",
            "added TTFD p50 / p99",
            "gap p50 / p99 / p99.9 ms",
            "added gap p99",
        ],
        &latency,
    );
    out.push('\n');
    out += &resources(all);
    out
}

/// The `ws` tables: turns, frames and their latency per target (with the ratios against direct
/// and nginx), then the same resources table as [`render`].
pub fn render_ws(all: &[TargetSummary]) -> String {
    let turns: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let added = s.added_vs_direct;
            vec![
                s.name.clone(),
                s.requests_ok.to_string(),
                s.error_total.to_string(),
                format!("{:.0}", s.req_per_s),
                format!("{:.0}", s.events_per_s),
                times(s.events_vs_direct),
                times(s.events_vs_nginx),
                three(&s.ttfb),
                added.map_or_else(
                    || "-".into(),
                    |a| format!("{} / {}", signed(a.ttfb_ms.p50), signed(a.ttfb_ms.p99)),
                ),
                three(&s.total),
                added.map_or_else(
                    || "-".into(),
                    |a| format!("{} / {}", signed(a.total_ms.p50), signed(a.total_ms.p99)),
                ),
                s.upgrade.count.to_string(),
                two(&s.upgrade),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "target",
            "turns ok",
            "errors",
            "turns/s",
            "frames/s",
            "frames/s vs direct",
            "vs nginx",
            "first event p50 / p99 / p99.9 ms",
            "added first event p50 / p99",
            "turn p50 / p99 / p99.9 ms",
            "added turn p50 / p99",
            "upgrades",
            "upgrade p50 / p99 ms",
        ],
        &turns,
    );
    out.push('\n');
    out += &resources(all);
    out
}

/// Processes and errors: streams (sockets) at most, the target's CPU and RSS, the mock's and
/// the load generator's CPU, errors by kind and the mock's own non-2xx answers.
fn resources(all: &[TargetSummary]) -> String {
    let resources: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.streams_peak.to_string(),
                opt(s.cpu_s, 2),
                opt(s.cpu_ms_per_req, 3),
                match (s.rss_before_mb, s.rss_peak_mb) {
                    (Some(b), Some(p)) => format!("{b:.1} → {p:.1}"),
                    _ => "-".into(),
                },
                opt(s.rss_per_stream_kb, 1),
                opt(s.mock_cpu_s, 2),
                format!("{:.2}", s.client_cpu_s),
                kinds(&s.errors),
                kinds(&s.upstream_rejections),
            ]
        })
        .collect();
    table(
        &[
            "target",
            "streams peak",
            "CPU s",
            "CPU ms/req",
            "RSS before → peak MB",
            "RSS KB/stream",
            "mock CPU s",
            "client CPU s",
            "errors by kind",
            "upstream non-2xx",
        ],
        &resources,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::record::{ErrorKind, Outcome};
    use crate::harness::target::parse_named_target;

    fn run(ms: u64, n: u64, secs: u64, cpu: f64) -> Run {
        let mut rec = Recorder::default();
        for _ in 0..n {
            rec.record(&Outcome {
                ttfb: Some(Duration::from_millis(ms)),
                ttfd: Some(Duration::from_millis(ms + 1)),
                total: Duration::from_millis(ms + 2),
                gaps_us: vec![10_000],
                bytes: 1_000,
                sent: 2_000,
                events: 5,
                error: None,
            });
        }
        Run {
            round: 1,
            elapsed: Duration::from_secs(secs),
            rec,
            streams_peak: 100,
            target_proc: Some(Usage {
                cpu_s: cpu,
                rss_before_kb: 10_240,
                rss_peak_kb: 10_240 + 100 * 64,
                rss_after_kb: 10_240,
            }),
            ..Run::default()
        }
    }

    fn target(name: &str, kind: TargetKind) -> Target {
        Target::new(
            name,
            kind,
            &parse_named_target("http://127.0.0.1:9").unwrap().1,
            None,
        )
    }

    #[test]
    fn rates_divide_by_summed_time_and_percentiles_merge() {
        let mut second = run(3, 100, 3, 0.5);
        second.rec.record(&Outcome {
            error: Some(ErrorKind::Status(502)),
            ..Outcome::default()
        });
        let s = summarize(
            &target("gw", TargetKind::Gateway),
            &[run(1, 300, 1, 1.0), second],
            true,
        );
        assert_eq!((s.requests_ok, s.error_total), (400, 1));
        assert!((s.req_per_s - 100.0).abs() < 1e-9);
        assert!((s.bytes_per_s - 100_000.0).abs() < 1e-9);
        assert!((s.sent_bytes_per_s - 200_000.0).abs() < 1e-9);
        assert!((s.ttfb.p50_ms - 1.0).abs() < 0.01 && (s.ttfb.p99_ms - 3.0).abs() < 0.01);
        assert_eq!(s.cpu_s, Some(1.5));
        assert!((s.cpu_ms_per_req.unwrap() - 3.75).abs() < 1e-9);
        assert_eq!(s.rss_per_stream_kb, Some(64.0));
        assert_eq!((s.rss_before_mb, s.rss_peak_mb), (Some(10.0), Some(16.25)));
        assert_eq!(s.errors["status_502"], 1);
        assert_eq!(s.runs.len(), 2);
    }

    #[test]
    fn added_latency_is_against_direct() {
        let mut all = vec![
            summarize(
                &target("direct", TargetKind::Direct),
                &[run(1, 10, 1, 0.1)],
                false,
            ),
            summarize(
                &target("gateway", TargetKind::Gateway),
                &[run(4, 10, 1, 0.1)],
                false,
            ),
        ];
        add_baseline(&mut all);
        assert!(all[0].added_vs_direct.is_none());
        assert_eq!(
            all[1].rss_per_stream_kb, None,
            "only hold reports memory per stream"
        );
        let a = all[1].added_vs_direct.unwrap();
        assert!((a.ttfb_ms.p50 - 3.0).abs() < 0.01 && (a.ttfd_ms.p99 - 3.0).abs() < 0.01);
        assert!(a.gap_ms.p99.abs() < 0.01);
        let text = render(&all);
        assert!(text.contains("| direct "), "{text}");
        assert!(text.contains("+3.00 / +3.00"), "{text}");
        assert!(text.contains("10.0 → 16.2"), "{text}");
        assert_eq!(text.lines().count(), 9);
    }

    #[test]
    fn ws_table_has_frame_ratios_and_added_first_event() {
        let mut up = run(1, 10, 1, 0.1);
        up.rec.upgrade.record(Duration::from_micros(300));
        let mut all = vec![
            summarize(&target("direct", TargetKind::Direct), &[up], false),
            summarize(
                &target("codex-lb", TargetKind::Gateway),
                &[run(4, 5, 1, 0.1)],
                false,
            ),
            summarize(
                &target("nginx", TargetKind::Nginx),
                &[run(2, 20, 1, 0.1)],
                false,
            ),
        ];
        add_baseline(&mut all);
        // 5 events per turn: direct 50/s, the gateway 25/s, nginx 100/s.
        assert!((all[1].events_per_s - 25.0).abs() < 1e-9);
        assert_eq!(all[0].events_vs_direct, None);
        assert_eq!(all[0].events_vs_nginx, Some(0.5));
        assert_eq!(all[1].events_vs_direct, Some(0.5));
        assert_eq!(all[1].events_vs_nginx, Some(0.25));
        assert_eq!(
            (all[2].events_vs_direct, all[2].events_vs_nginx),
            (Some(2.0), None)
        );
        let a = all[1].added_vs_direct.unwrap();
        assert!((a.total_ms.p50 - 3.0).abs() < 0.01);
        assert_eq!(all[0].upgrade.count, 1);
        let text = render_ws(&all);
        assert!(text.contains("| frames/s vs direct |"), "{text}");
        let gw = text.lines().find(|l| l.starts_with("| codex-lb")).unwrap();
        for cell in ["| 0.50x ", "| 0.25x ", "| +3.00 / +3.00 ", "| 25 "] {
            assert!(gw.contains(cell), "no {cell:?} in {gw}");
        }
        let direct = text.lines().find(|l| l.starts_with("| direct")).unwrap();
        assert!(direct.contains("| 0.300 / 0.300 "), "{direct}");
        assert_eq!(text.lines().count(), 11);
    }

    #[test]
    fn millisecond_formatting() {
        assert_eq!(fmt_ms(0.41234), "0.412");
        assert_eq!(fmt_ms(2.345), "2.35");
        assert_eq!(fmt_ms(23.45), "23.4");
        assert_eq!(fmt_ms(234.5), "234");
        assert_eq!(signed(-0.5), "-0.500");
    }
}
