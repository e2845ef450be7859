//! `--plot FILE.svg`: one chart with three panels per scenario: time to first byte and time to
//! first delta at p50/p90/p99/p99.9 (log scale, one line per target), and one bar per target of
//! requests per second (for hold, where the rate is fixed by the ramp: RSS per open stream).
//! The `ws` chart has time to first event and the whole turn instead, and turns per second.
//!
//! plotters is built with its SVG backend only: text goes out as SVG `<text>` elements, sized
//! by plotters' built-in estimate and drawn by whatever displays the file, so no system font is
//! needed to write the chart.

use anyhow::anyhow;
use plotters::prelude::*;

use super::hist::Summary;
use super::report::TargetSummary;

const SIZE: (u32, u32) = (1500, 520);
const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
/// Distinct, readable on white: direct grey, the gateway blue, nginx green, then extras.
const COLORS: [RGBColor; 6] = [
    RGBColor(110, 110, 110),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn points(s: &Summary) -> [f64; 4] {
    [s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms]
}

/// Three panels side by side under `title`, drawn by `draw`, as SVG text.
fn three_panels(
    title: &str,
    draw: impl FnOnce(&[DrawingArea<SVGBackend<'_>, plotters::coord::Shift>]) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| anyhow!("{e}"))?;
        draw(&root.split_evenly((1, 3)))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(out)
}

/// The chart as SVG text; `memory` puts RSS per stream in the bar panel instead of req/s.
pub fn svg(title: &str, all: &[TargetSummary], memory: bool) -> anyhow::Result<String> {
    three_panels(title, |panels| {
        latency_panel(&panels[0], "time to first byte (ms, log)", all, |s| &s.ttfb)?;
        latency_panel(&panels[1], "time to first delta (ms, log)", all, |s| {
            &s.ttfd
        })?;
        if memory {
            bar_panel(&panels[2], "RSS per open stream (KB)", all, |s| {
                s.rss_per_stream_kb.unwrap_or(0.0)
            })
        } else {
            bar_panel(&panels[2], "throughput (req/s)", all, |s| s.req_per_s)
        }
    })
}

/// The `ws` chart: time to first event and whole turn at p50/p90/p99/p99.9 (log scale), and
/// turns per second.
pub fn svg_ws(title: &str, all: &[TargetSummary]) -> anyhow::Result<String> {
    three_panels(title, |panels| {
        latency_panel(&panels[0], "time to first event (ms, log)", all, |s| {
            &s.ttfb
        })?;
        latency_panel(&panels[1], "whole turn (ms, log)", all, |s| &s.total)?;
        bar_panel(&panels[2], "throughput (turns/s)", all, |s| s.req_per_s)
    })
}

fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    all: &[TargetSummary],
    pick: impl Fn(&TargetSummary) -> &Summary,
) -> anyhow::Result<()> {
    let values: Vec<f64> = all
        .iter()
        .flat_map(|s| points(pick(s)))
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if values.is_empty() {
        (0.01, 1.0)
    } else {
        ((lo / 1.5).max(0.001), (hi * 1.5).max(lo * 2.0))
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0i32..3i32, (lo..hi).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_labels(4)
        .y_labels(12)
        .x_label_formatter(&|i| {
            PERCENTILES
                .get(*i as usize)
                .copied()
                .unwrap_or("")
                .to_string()
        })
        .y_label_formatter(&|v| super::report::fmt_ms(*v))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, s) in all.iter().enumerate() {
        let color = color(i);
        let pts: Vec<(i32, f64)> = points(pick(s))
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(x, v)| (x as i32, *v))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    all: &[TargetSummary],
    value: impl Fn(&TargetSummary) -> f64,
) -> anyhow::Result<()> {
    let max = all.iter().map(&value).fold(1.0, f64::max);
    let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (0..all.len().max(1) as i32).into_segmented(),
            0.0..max * 1.15,
        )
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(all.iter().enumerate().map(|(i, s)| {
            let i = i as i32;
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), s.req_per_s),
                ],
                color(i as usize).filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::record::{Outcome, Recorder};
    use crate::harness::report::{summarize, Run};
    use crate::harness::target::{parse_named_target, Target, TargetKind};
    use std::time::Duration;

    #[test]
    fn writes_an_svg_with_every_target_named() {
        let u = parse_named_target("http://127.0.0.1:9").unwrap().1;
        let all: Vec<TargetSummary> = ["direct", "gateway", "nginx"]
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let mut rec = Recorder::default();
                for ms in 1..50 {
                    rec.record(&Outcome {
                        ttfb: Some(Duration::from_micros(ms * 100 * (k as u64 + 1))),
                        ttfd: Some(Duration::from_micros(ms * 150 * (k as u64 + 1))),
                        ..Outcome::default()
                    });
                }
                let run = Run {
                    elapsed: Duration::from_secs(1),
                    rec,
                    ..Run::default()
                };
                summarize(
                    &Target::new(name, TargetKind::External, &u, None),
                    &[run],
                    false,
                )
            })
            .collect();
        let svg = svg("short: 3 targets", &all, false).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        for text in [
            "gateway",
            "nginx",
            "p99.9",
            "throughput (req/s)",
            "short: 3 targets",
        ] {
            assert!(svg.contains(text), "no {text:?} in the chart");
        }
        // An empty run still draws (axes only).
        assert!(svg.len() > 1000);
        assert!(super::svg("empty", &[], false).is_ok());
        let hold = super::svg("hold", &all, true).unwrap();
        assert!(hold.contains("RSS per open stream (KB)"));
        let ws = super::svg_ws("ws", &all).unwrap();
        for text in ["time to first event", "whole turn", "throughput (turns/s)"] {
            assert!(ws.contains(text), "no {text:?} in the ws chart");
        }
    }
}
