//! The load scenarios: what each request asks the mock for, how big its body is, which
//! request shapes a run cycles through, and each scenario's default bounds.
//!
//! A scenario is a list of [`Variant`]s and a schedule: request number `n` uses variant
//! `schedule[n % schedule.len()]`, so a blend (`mixed`) is deterministic and identical for
//! every target.

use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Codex turns with a ~2 KB answer, keep-alive connections, fixed concurrency.
    Short,
    /// Long answers with an event every --event-ms: added inter-event latency.
    Stream,
    /// Many concurrent streams that drip slowly: memory per stream, errors while held.
    Hold,
    /// Request bodies of 200 KB to 2 MB (long Codex histories).
    Big,
    /// A blend of the above, with upstream 5xx and 429s the gateway must fail over.
    Mixed,
    /// The `short` turn over the Codex WebSocket transport: one socket per client, a
    /// `response.create` message per turn, turns back to back on the same socket.
    #[value(alias = "websocket")]
    Ws,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Stream => "stream",
            Kind::Hold => "hold",
            Kind::Big => "big",
            Kind::Mixed => "mixed",
            Kind::Ws => "ws",
        }
    }

    /// Concurrency (streams, for `hold`) when `--concurrency` is not given.
    pub fn default_concurrency(self) -> usize {
        match self {
            Kind::Short | Kind::Stream | Kind::Mixed | Kind::Ws => 64,
            Kind::Hold => 10_000,
            Kind::Big => 16,
        }
    }

    /// Run length when `--duration` is not given; for `hold`, how long all streams are held.
    pub fn default_duration(self) -> Duration {
        Duration::from_secs(match self {
            Kind::Short | Kind::Stream | Kind::Big | Kind::Ws => 10,
            Kind::Hold => 20,
            Kind::Mixed => 15,
        })
    }

    /// Pause between delta events when `--event-ms` is not given.
    pub fn default_event_ms(self) -> u64 {
        match self {
            Kind::Hold => 1000,
            _ => 10,
        }
    }
}

/// One request shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variant {
    pub label: &'static str,
    /// The `[[mock {...}]]` directive: the mock scenario for this request.
    pub mock: Value,
    /// Body size to pad to; 0 keeps the natural size (~10 KB).
    pub body_bytes: usize,
}

/// A scenario resolved against the run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub kind: Kind,
    pub variants: Vec<Variant>,
    pub schedule: Vec<usize>,
}

/// Settings a plan depends on.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub event_ms: u64,
    /// For `hold`: how long each stream must stay open.
    pub stream_life: Duration,
    /// `--mock-scenario`: laid over every variant's directive.
    pub overlay: Option<Map<String, Value>>,
}

const BIG_SIZES: [usize; 8] = [
    200_000, 300_000, 450_000, 650_000, 900_000, 1_200_000, 1_600_000, 2_000_000,
];

fn short() -> Variant {
    // 32 deltas of 64 bytes: a 2 KiB answer.
    Variant {
        label: "short",
        mock: json!({"deltas": 32, "delta_bytes": 64}),
        body_bytes: 0,
    }
}

impl Plan {
    pub fn new(kind: Kind, input: &PlanInput) -> Plan {
        let ms = input.event_ms;
        let (variants, schedule) = match kind {
            Kind::Short => (vec![short()], vec![0]),
            Kind::Ws => (
                vec![Variant {
                    label: "ws",
                    ..short()
                }],
                vec![0],
            ),
            Kind::Stream => (
                vec![Variant {
                    label: "stream",
                    mock: json!({"deltas": 100, "delta_bytes": 32, "delay_ms": ms}),
                    body_bytes: 0,
                }],
                vec![0],
            ),
            Kind::Hold => {
                let deltas = (input.stream_life.as_millis() as u64)
                    .div_ceil(ms.max(1))
                    .max(1);
                (
                    vec![Variant {
                        label: "hold",
                        mock: json!({"deltas": deltas, "delta_bytes": 16, "delay_ms": ms}),
                        body_bytes: 0,
                    }],
                    vec![0],
                )
            }
            Kind::Big => (
                BIG_SIZES
                    .iter()
                    .map(|&b| Variant {
                        label: "big",
                        mock: json!({"deltas": 16, "delta_bytes": 32}),
                        body_bytes: b,
                    })
                    .collect(),
                (0..BIG_SIZES.len()).collect(),
            ),
            Kind::Mixed => {
                let variants = vec![
                    short(),
                    Variant {
                        label: "stream",
                        mock: json!({"deltas": 20, "delta_bytes": 32, "delay_ms": ms}),
                        body_bytes: 0,
                    },
                    Variant {
                        label: "big",
                        mock: json!({"deltas": 16, "delta_bytes": 32}),
                        body_bytes: 300_000,
                    },
                    Variant {
                        label: "tool_call",
                        mock: json!({"deltas": 8, "tool_call": true}),
                        body_bytes: 0,
                    },
                ];
                // Out of 20 requests: 12 short, 4 streamed, 3 big, 1 tool call; interleaved so
                // any window of the run sees the blend.
                let schedule = vec![0, 1, 0, 2, 0, 0, 1, 0, 3, 0, 2, 0, 1, 0, 0, 2, 0, 1, 0, 0];
                (variants, schedule)
            }
        };
        let mut plan = Plan {
            kind,
            variants,
            schedule,
        };
        if let Some(o) = &input.overlay {
            for v in &mut plan.variants {
                if let Value::Object(m) = &mut v.mock {
                    m.extend(o.clone());
                }
            }
        }
        plan
    }

    /// The variant request number `n` uses.
    pub fn variant_index(&self, n: u64) -> usize {
        self.schedule[(n % self.schedule.len() as u64) as usize]
    }
}

/// Parses `--mock-scenario` into the object laid over every variant.
pub fn parse_overlay(raw: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("--mock-scenario must be a JSON object".into()),
        Err(e) => Err(format!("--mock-scenario is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PlanInput {
        PlanInput {
            event_ms: 10,
            stream_life: Duration::from_secs(30),
            overlay: None,
        }
    }

    #[test]
    fn names_parse_and_unknown_ones_do_not() {
        for k in Kind::value_variants() {
            assert_eq!(Kind::from_str(k.name(), false).unwrap(), *k);
        }
        assert!(Kind::from_str("long", false).is_err());
        assert_eq!(Kind::from_str("websocket", false).unwrap(), Kind::Ws);
    }

    #[test]
    fn mixed_blend_proportions() {
        let p = Plan::new(Kind::Mixed, &input());
        let mut counts = [0usize; 4];
        for n in 0..2000 {
            counts[p.variant_index(n)] += 1;
        }
        assert_eq!(counts, [1200, 400, 300, 100]);
    }

    #[test]
    fn hold_streams_outlive_the_hold_and_big_spans_the_range() {
        let mut i = input();
        i.event_ms = 1000;
        let p = Plan::new(Kind::Hold, &i);
        assert_eq!(p.variants[0].mock["deltas"], 30);
        assert_eq!(p.variants[0].mock["delay_ms"], 1000);
        let big = Plan::new(Kind::Big, &input());
        let sizes: Vec<usize> = (0..8)
            .map(|n| big.variants[big.variant_index(n)].body_bytes)
            .collect();
        assert_eq!((sizes[0], sizes[7]), (200_000, 2_000_000));
    }

    #[test]
    fn overlay_applies_to_every_variant() {
        let mut i = input();
        i.overlay = Some(parse_overlay(r#"{"delta_bytes": 7, "reasoning": false}"#).unwrap());
        let p = Plan::new(Kind::Mixed, &i);
        assert!(p.variants.iter().all(|v| v.mock["delta_bytes"] == 7));
        assert!(p.variants.iter().all(|v| v.mock["reasoning"] == false));
        assert!(parse_overlay("[1]").is_err());
        assert!(parse_overlay("{").is_err());
    }
}
