//! Token prices and the cost of a request.
//!
//! Owns the price table (USD per 1M tokens per model) and the cost formula of FEATURES.md §1.6:
//! `(input − cached)/1M × input + cached/1M × cached_input + output/1M × output`, with a model's
//! long-context rates applied to the *whole* request once its input tokens exceed that model's
//! threshold. The service tier a turn ran at (`service_tier`: `priority` is Codex's "Fast" mode,
//! `flex` the slow and cheap one) picks the model's tier rates when the table has them, else
//! twice (priority) or half (flex) the standard ones. It does no I/O except [`Pricing::load`], which runs once at start-up; the result is
//! immutable and meant to be shared (`Arc<Pricing>`) and read on the request path.
//!
//! The table ships inside the binary (`default_prices.json`, see its `_comment` for sources and
//! format). `<data_dir>/prices.json` in the same format is merged over it: a model named there
//! replaces the embedded model of the same name entirely (its aliases included); every other
//! embedded model is kept. There is no way to delete an embedded model, only to re-price it.
//!
//! Lookup ([`Pricing::price`]) is ASCII case-insensitive and tries, in order: an exact model name
//! or exact alias (one hash lookup), then prefix aliases written with a trailing `*` (longest
//! prefix wins), then the same two after stripping a date suffix such as `-2026-01-15`. A model
//! that matches nothing has no price: callers record "cost unknown", never 0.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

/// File in the data directory whose models are merged over the embedded table.
pub const PRICES_FILE_NAME: &str = "prices.json";
/// Input tokens above which long-context rates apply, for models that define long-context rates
/// without their own `long_context_threshold`.
pub const DEFAULT_LONG_CONTEXT_THRESHOLD: u64 = 272_000;

/// Prices are quoted per this many tokens.
const TOKENS_PER_QUOTE: f64 = 1_000_000.0;
const EMBEDDED_PRICES: &str = include_str!("default_prices.json");
/// How errors in the embedded table name their file.
const EMBEDDED_ORIGIN: &str = "src/pricing/default_prices.json (embedded)";

/// Why a price file could not be used. Every variant names the file.
#[derive(Debug, Error)]
pub enum PricingError {
    #[error("cannot read price file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("price file {} is not a valid price table: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("price file {}: model `{model}`: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        model: String,
        problem: EntryProblem,
    },
}

/// What is wrong with one model entry of a price file.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EntryProblem {
    #[error("`{field}` must be a finite price >= 0, got {value}")]
    BadRate { field: &'static str, value: f64 },
    #[error("long-context rates need all three of long_input, long_cached_input and long_output")]
    PartialLongContext,
    #[error("{0} rates need all three of {0}_input, {0}_cached_input and {0}_output")]
    PartialTier(&'static str),
    #[error("long_context_threshold is set but long-context rates are not")]
    ThresholdWithoutRates,
    #[error("long_context_threshold must be greater than 0")]
    ZeroThreshold,
    #[error("model names must be non-empty and must not contain `*`")]
    BadName,
    #[error("alias `{0}` is invalid: aliases are exact names or a non-empty prefix followed by one trailing `*`")]
    BadAlias(String),
    #[error("`{name}` is already used by model `{other}`")]
    Duplicate { name: String, other: String },
}

/// One set of rates, in USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Input tokens not served from the prompt cache.
    pub input: f64,
    /// Input tokens served from the prompt cache.
    pub cached_input: f64,
    pub output: f64,
}

impl Rates {
    fn scaled(&self, by: f64) -> Rates {
        Rates {
            input: self.input * by,
            cached_input: self.cached_input * by,
            output: self.output * by,
        }
    }
}

/// The processing tier a request ran at, as priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceTier {
    /// `default`, `auto`, absent, or a tier this table does not know.
    #[default]
    Standard,
    /// `priority` (Codex's "Fast"; also spelled `fast`).
    Priority,
    Flex,
}

impl ServiceTier {
    pub fn from_name(name: Option<&str>) -> ServiceTier {
        match name.map(str::to_ascii_lowercase).as_deref() {
            Some("priority" | "fast" | "ultrafast") => ServiceTier::Priority,
            Some("flex") => ServiceTier::Flex,
            _ => ServiceTier::Standard,
        }
    }
}

/// Multipliers of the standard rates for a model without its own tier rates.
const PRIORITY_MULTIPLIER: f64 = 2.0;
const FLEX_MULTIPLIER: f64 = 0.5;

/// Rates that replace the normal ones for a request whose input tokens exceed `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongContext {
    pub threshold: u64,
    pub rates: Rates,
}

/// The price of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    /// Canonical (ASCII-lowercased) model name, as written in the table.
    pub model: String,
    pub rates: Rates,
    pub long_context: Option<LongContext>,
    /// Rates at the priority ("Fast") tier, when the table gives them.
    pub priority: Option<Rates>,
    /// Rates at the flex tier, when the table gives them.
    pub flex: Option<Rates>,
    /// ASCII-lowercased aliases: exact names, or prefixes ending in `*`.
    pub aliases: Vec<String>,
}

/// The price table: embedded defaults, optionally merged with the data directory's override.
#[derive(Debug, Clone, Default)]
pub struct Pricing {
    /// Sorted by model name.
    models: Vec<ModelPrice>,
    /// Model names and exact aliases → index into `models`.
    exact: HashMap<Box<str>, usize>,
    /// Prefix aliases (without the `*`) → index into `models`, longest prefix first.
    prefixes: Vec<(Box<str>, usize)>,
}

// === impl Rates ===

impl Rates {
    /// Cost in micro-USD. A price in USD per 1M tokens is numerically micro-USD per token.
    /// `cached_tokens` is clamped to `input_tokens` so the uncached part is never negative.
    fn micro_usd(&self, input_tokens: u64, cached_tokens: u64, output_tokens: u64) -> f64 {
        let cached = cached_tokens.min(input_tokens);
        let uncached = input_tokens - cached;
        uncached as f64 * self.input
            + cached as f64 * self.cached_input
            + output_tokens as f64 * self.output
    }
}

// === impl ModelPrice ===

impl ModelPrice {
    /// The rates that apply to a request with `input_tokens` input tokens (cached included):
    /// long-context rates strictly above the threshold, normal rates at or below it.
    pub fn rates_for(&self, input_tokens: u64) -> &Rates {
        match &self.long_context {
            Some(long) if input_tokens > long.threshold => &long.rates,
            _ => &self.rates,
        }
    }

    /// The rates at `tier` for a request with `input_tokens` input tokens: the table's tier
    /// rates, else the standard rates times the tier's multiplier. Past the long-context
    /// threshold the long-context rates are the base, raised by the same factor the table's tier
    /// rates put on the standard ones (so a priority long request never costs less than a
    /// standard long one).
    pub fn tier_rates(&self, tier: ServiceTier, input_tokens: u64) -> Rates {
        let (own, multiplier) = match tier {
            ServiceTier::Standard => return *self.rates_for(input_tokens),
            ServiceTier::Priority => (self.priority, PRIORITY_MULTIPLIER),
            ServiceTier::Flex => (self.flex, FLEX_MULTIPLIER),
        };
        let long = self
            .long_context
            .filter(|l| input_tokens > l.threshold)
            .map(|l| l.rates);
        match (own, long) {
            (None, base) => base.unwrap_or(self.rates).scaled(multiplier),
            (Some(own), None) => own,
            (Some(own), Some(long)) => {
                let factor = |tiered: f64, standard: f64| {
                    if standard > 0.0 {
                        tiered / standard
                    } else {
                        multiplier
                    }
                };
                Rates {
                    input: long.input * factor(own.input, self.rates.input),
                    cached_input: long.cached_input
                        * factor(own.cached_input, self.rates.cached_input),
                    output: long.output * factor(own.output, self.rates.output),
                }
            }
        }
    }

    /// Cost of one request in USD at the standard tier. `cached_tokens` is part of
    /// `input_tokens`; a larger value is clamped to `input_tokens`.
    pub fn cost_usd(&self, input_tokens: u64, cached_tokens: u64, output_tokens: u64) -> f64 {
        self.raw_micro_usd(
            ServiceTier::Standard,
            input_tokens,
            cached_tokens,
            output_tokens,
        ) / TOKENS_PER_QUOTE
    }

    /// Cost of one request at `tier` in micro-USD, rounded to the nearest integer (saturating at
    /// `u64::MAX`), as the ledger stores it.
    pub fn cost_micro_usd(
        &self,
        tier: ServiceTier,
        input_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> u64 {
        // Float-to-int `as` saturates; the value is never negative because rates are validated.
        self.raw_micro_usd(tier, input_tokens, cached_tokens, output_tokens)
            .round() as u64
    }

    fn raw_micro_usd(
        &self,
        tier: ServiceTier,
        input_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> f64 {
        self.tier_rates(tier, input_tokens)
            .micro_usd(input_tokens, cached_tokens, output_tokens)
    }
}

// === impl Pricing ===

impl Pricing {
    /// The table compiled into the binary. Never panics: should the embedded file ever fail to
    /// parse (a unit test makes sure it does not), this logs an error and returns an empty table,
    /// so every cost is reported as unknown instead of wrong.
    pub fn embedded() -> Pricing {
        match Self::parse(EMBEDDED_PRICES, Path::new(EMBEDDED_ORIGIN)) {
            Ok(pricing) => pricing,
            Err(error) => {
                tracing::error!(%error, "embedded price table rejected; all costs will be unknown");
                Pricing::default()
            }
        }
    }

    /// The embedded table with `<data_dir>/prices.json` merged over it when that file exists:
    /// each model in the file replaces the embedded model of the same name, other embedded models
    /// are kept. A missing file (or data directory) is not an error; an unreadable or invalid one
    /// is, and the error names the file.
    pub fn load(data_dir: &Path) -> Result<Pricing, PricingError> {
        let path = data_dir.join(PRICES_FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::embedded()),
            Err(source) => return Err(PricingError::Read { path, source }),
        };
        let overrides = parse_entries(&text, &path)?;
        let count = overrides.len();
        let pricing = Self::embedded().merged(overrides, &path)?;
        tracing::info!(path = %path.display(), models = count, "price overrides loaded");
        Ok(pricing)
    }

    /// The price of `model`: exact name or alias, then prefix aliases, then both again without a
    /// `-YYYY-MM-DD` suffix. ASCII case-insensitive; allocates only if `model` has uppercase.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        let name: Cow<'_, str> = if model.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(model.to_ascii_lowercase())
        } else {
            Cow::Borrowed(model)
        };
        let index = self
            .find(&name)
            .or_else(|| strip_date_suffix(&name).and_then(|base| self.find(base)))?;
        self.models.get(index)
    }

    /// Cost of one request in USD, or `None` when `model` has no price.
    pub fn cost_usd(
        &self,
        model: &str,
        input_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> Option<f64> {
        self.price(model)
            .map(|p| p.cost_usd(input_tokens, cached_tokens, output_tokens))
    }

    /// Cost of one request at `tier` in micro-USD (rounded), or `None` when `model` has no price.
    pub fn cost_micro_usd(
        &self,
        model: &str,
        tier: ServiceTier,
        input_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> Option<u64> {
        self.price(model)
            .map(|p| p.cost_micro_usd(tier, input_tokens, cached_tokens, output_tokens))
    }

    /// Every priced model, sorted by name.
    pub fn models(&self) -> impl Iterator<Item = &ModelPrice> {
        self.models.iter()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    fn find(&self, name: &str) -> Option<usize> {
        if let Some(&index) = self.exact.get(name) {
            return Some(index);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| name.starts_with(&**prefix))
            .map(|&(_, index)| index)
    }

    fn parse(text: &str, origin: &Path) -> Result<Pricing, PricingError> {
        Self::build(parse_entries(text, origin)?, origin)
    }

    /// This table with `overrides` replacing same-named models; errors are charged to `origin`.
    fn merged(self, overrides: Vec<ModelPrice>, origin: &Path) -> Result<Pricing, PricingError> {
        let mut models: Vec<ModelPrice> = {
            let replaced: HashSet<&str> = overrides.iter().map(|m| m.model.as_str()).collect();
            self.models
                .into_iter()
                .filter(|m| !replaced.contains(m.model.as_str()))
                .collect()
        };
        models.extend(overrides);
        Self::build(models, origin)
    }

    /// Indexes validated entries; rejects any name or alias used twice.
    fn build(mut models: Vec<ModelPrice>, origin: &Path) -> Result<Pricing, PricingError> {
        models.sort_by(|a, b| a.model.cmp(&b.model));
        let mut exact: HashMap<Box<str>, usize> = HashMap::with_capacity(models.len());
        let mut prefixes: Vec<(Box<str>, usize)> = Vec::new();
        for (index, entry) in models.iter().enumerate() {
            let names = std::iter::once(entry.model.as_str())
                .chain(entry.aliases.iter().map(String::as_str));
            for name in names {
                let taken_by = match name.strip_suffix('*') {
                    Some(prefix) => prefixes
                        .iter()
                        .find(|(p, _)| **p == *prefix)
                        .map(|&(_, other)| other),
                    None => exact.get(name).copied(),
                };
                if let Some(other) = taken_by {
                    return Err(invalid(
                        origin,
                        &entry.model,
                        EntryProblem::Duplicate {
                            name: name.to_owned(),
                            other: models[other].model.clone(),
                        },
                    ));
                }
                match name.strip_suffix('*') {
                    Some(prefix) => prefixes.push((prefix.into(), index)),
                    None => {
                        exact.insert(name.into(), index);
                    }
                }
            }
        }
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Pricing {
            models,
            exact,
            prefixes,
        })
    }
}

/// `gpt-5.5-2026-01-15` → `gpt-5.5`; anything without a `-YYYY-MM-DD` suffix → `None`.
fn strip_date_suffix(name: &str) -> Option<&str> {
    const SUFFIX_LEN: usize = "-YYYY-MM-DD".len();
    let split = name.len().checked_sub(SUFFIX_LEN)?;
    let base = name.get(..split)?;
    let suffix = name.as_bytes().get(split..)?;
    let is_date = suffix.iter().enumerate().all(|(i, &b)| match i {
        0 | 5 | 8 => b == b'-',
        _ => b.is_ascii_digit(),
    });
    (is_date && !base.is_empty()).then_some(base)
}

fn invalid(origin: &Path, model: &str, problem: EntryProblem) -> PricingError {
    PricingError::Invalid {
        path: origin.to_path_buf(),
        model: model.to_owned(),
        problem,
    }
}

// === file format ===

/// Top level of a price file: `{"_comment": <anything>, "models": {"<name>": {...}, ...}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    /// Free-form notes for humans; ignored.
    #[serde(rename = "_comment", default)]
    _comment: IgnoredAny,
    models: ModelList,
}

/// The `models` object, kept in file order with duplicate keys preserved so they can be
/// reported (a plain map would silently keep the last one).
struct ModelList(Vec<(String, RawEntry)>);

impl<'de> Deserialize<'de> for ModelList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ModelList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping model names to their prices")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelList, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, RawEntry>()? {
                    entries.push(entry);
                }
                Ok(ModelList(entries))
            }
        }

        deserializer.deserialize_map(ListVisitor)
    }
}

/// One model as written in the file, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    input: f64,
    cached_input: f64,
    output: f64,
    long_context_threshold: Option<u64>,
    long_input: Option<f64>,
    long_cached_input: Option<f64>,
    long_output: Option<f64>,
    priority_input: Option<f64>,
    priority_cached_input: Option<f64>,
    priority_output: Option<f64>,
    flex_input: Option<f64>,
    flex_cached_input: Option<f64>,
    flex_output: Option<f64>,
    #[serde(default)]
    aliases: Vec<String>,
}

impl RawEntry {
    fn validate(self, name: &str) -> Result<ModelPrice, EntryProblem> {
        let model = name.to_ascii_lowercase();
        if model.is_empty() || model.contains('*') {
            return Err(EntryProblem::BadName);
        }
        let rates = Rates {
            input: rate("input", self.input)?,
            cached_input: rate("cached_input", self.cached_input)?,
            output: rate("output", self.output)?,
        };
        let long_context = match (self.long_input, self.long_cached_input, self.long_output) {
            (None, None, None) if self.long_context_threshold.is_some() => {
                return Err(EntryProblem::ThresholdWithoutRates)
            }
            (None, None, None) => None,
            (Some(input), Some(cached_input), Some(output)) => {
                let threshold = self
                    .long_context_threshold
                    .unwrap_or(DEFAULT_LONG_CONTEXT_THRESHOLD);
                if threshold == 0 {
                    return Err(EntryProblem::ZeroThreshold);
                }
                Some(LongContext {
                    threshold,
                    rates: Rates {
                        input: rate("long_input", input)?,
                        cached_input: rate("long_cached_input", cached_input)?,
                        output: rate("long_output", output)?,
                    },
                })
            }
            _ => return Err(EntryProblem::PartialLongContext),
        };
        let tier = |prefix: &'static str,
                    [input, cached_input, output]: [(&'static str, Option<f64>); 3]|
         -> Result<Option<Rates>, EntryProblem> {
            match (input.1, cached_input.1, output.1) {
                (None, None, None) => Ok(None),
                (Some(i), Some(c), Some(o)) => Ok(Some(Rates {
                    input: rate(input.0, i)?,
                    cached_input: rate(cached_input.0, c)?,
                    output: rate(output.0, o)?,
                })),
                _ => Err(EntryProblem::PartialTier(prefix)),
            }
        };
        let priority = tier(
            "priority",
            [
                ("priority_input", self.priority_input),
                ("priority_cached_input", self.priority_cached_input),
                ("priority_output", self.priority_output),
            ],
        )?;
        let flex = tier(
            "flex",
            [
                ("flex_input", self.flex_input),
                ("flex_cached_input", self.flex_cached_input),
                ("flex_output", self.flex_output),
            ],
        )?;
        let aliases = self
            .aliases
            .into_iter()
            .map(|alias| {
                let alias = alias.to_ascii_lowercase();
                let body = alias.strip_suffix('*').unwrap_or(&alias);
                if body.is_empty() || body.contains('*') {
                    Err(EntryProblem::BadAlias(alias))
                } else {
                    Ok(alias)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ModelPrice {
            model,
            rates,
            long_context,
            priority,
            flex,
            aliases,
        })
    }
}

fn rate(field: &'static str, value: f64) -> Result<f64, EntryProblem> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(EntryProblem::BadRate { field, value })
    }
}

/// Parses and validates every entry of a price file (duplicates are caught by `Pricing::build`).
fn parse_entries(text: &str, origin: &Path) -> Result<Vec<ModelPrice>, PricingError> {
    let file: PriceFile = serde_json::from_str(text).map_err(|source| PricingError::Parse {
        path: origin.to_path_buf(),
        source,
    })?;
    file.models
        .0
        .into_iter()
        .map(|(name, raw)| {
            raw.validate(&name)
                .map_err(|problem| invalid(origin, &name, problem))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_tiers_use_their_rates_or_the_multipliers() {
        let pricing = Pricing::embedded();
        let at = |model: &str, tier: ServiceTier| {
            pricing
                .cost_micro_usd(model, tier, 1_000_000, 0, 100_000)
                .unwrap()
        };
        // gpt-5.5: 5 in, 30 out per 1M; no tier rates in the table.
        assert_eq!(at("gpt-5.5", ServiceTier::Standard), 8_000_000);
        assert_eq!(at("gpt-5.5", ServiceTier::Priority), 16_000_000);
        assert_eq!(at("gpt-5.5", ServiceTier::Flex), 4_000_000);
        // gpt-5.6-sol has its own priority rates (10 in, 60 out) below its threshold.
        let sol = pricing
            .cost_micro_usd("gpt-5.6-sol", ServiceTier::Priority, 100_000, 0, 10_000)
            .unwrap();
        assert_eq!(sol, 1_000_000 + 600_000);
        // Past its long-context threshold: long rates (10 in, 45 out) times the priority factor
        // (2x in, 2x out), never less than standard long.
        let long = |tier| {
            pricing
                .cost_micro_usd("gpt-5.6-sol", tier, 300_000, 0, 10_000)
                .unwrap()
        };
        assert_eq!(long(ServiceTier::Standard), 3_000_000 + 450_000);
        assert_eq!(long(ServiceTier::Priority), 2 * (3_000_000 + 450_000));
        assert_eq!(ServiceTier::from_name(Some("FAST")), ServiceTier::Priority);
        assert_eq!(ServiceTier::from_name(Some("auto")), ServiceTier::Standard);
        assert_eq!(ServiceTier::from_name(None), ServiceTier::Standard);
        let partial =
            r#"{"models":{"m":{"input":1,"cached_input":0.1,"output":2,"flex_input":0.5}}}"#;
        let err = Pricing::parse(partial, Path::new("t.json")).unwrap_err();
        assert!(
            err.to_string().contains("flex rates need all three"),
            "{err}"
        );
    }

    /// Costs below are whole micro-USD by construction; compare USD with a tolerance for float
    /// rounding only.
    fn assert_usd(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("model should be priced");
        assert!(
            (actual - expected).abs() < 1e-9,
            "cost {actual} USD, expected {expected} USD"
        );
    }

    fn table(json: &str) -> Result<Pricing, PricingError> {
        Pricing::parse(json, Path::new("test.json"))
    }

    fn problem(result: Result<Pricing, PricingError>) -> EntryProblem {
        match result {
            Err(PricingError::Invalid { problem, .. }) => problem,
            other => panic!("expected an invalid-entry error, got {other:?}"),
        }
    }

    #[test]
    fn embedded_table_parses_with_every_listed_model() {
        let pricing = Pricing::parse(EMBEDDED_PRICES, Path::new(EMBEDDED_ORIGIN))
            .expect("embedded price table must be valid");
        // Exactly the models of FEATURES.md §1.6 that we seed, in·cached·out.
        let expected: [(&str, f64, f64, f64); 8] = [
            ("gpt-5.6-sol", 5.0, 0.5, 30.0),
            ("gpt-5.6-terra", 2.0, 0.2, 12.0),
            ("gpt-5.6-luna", 0.2, 0.02, 1.2),
            ("gpt-5.5", 5.0, 0.5, 30.0),
            ("gpt-5.4", 2.5, 0.25, 15.0),
            ("gpt-5.4-mini", 0.75, 0.075, 4.5),
            ("gpt-5.3-codex", 1.75, 0.175, 14.0),
            ("gpt-5.1-codex-mini", 0.25, 0.025, 2.0),
        ];
        assert_eq!(pricing.len(), expected.len());
        for (model, input, cached_input, output) in expected {
            let price = pricing.price(model).expect(model);
            assert_eq!(price.model, model);
            assert_eq!(
                price.rates,
                Rates {
                    input,
                    cached_input,
                    output
                },
                "{model}"
            );
        }
        for price in pricing.models() {
            let mut all = vec![price.rates];
            all.extend(price.long_context.map(|l| l.rates));
            for r in all {
                for v in [r.input, r.cached_input, r.output] {
                    assert!(v.is_finite() && v >= 0.0, "{}: {v}", price.model);
                }
            }
        }
        let sol = pricing.price("gpt-5.6-sol").expect("sol");
        assert_eq!(
            sol.long_context,
            Some(LongContext {
                threshold: 272_000,
                rates: Rates {
                    input: 10.0,
                    cached_input: 1.0,
                    output: 45.0
                }
            })
        );
        // `embedded()` must give the same table.
        assert_eq!(Pricing::embedded().len(), expected.len());
    }

    #[test]
    fn cost_matches_hand_computation() {
        let pricing = Pricing::embedded();
        // gpt-5.5, 1,000,000 input of which 200,000 cached, 100,000 output:
        // 0.8 × 5 + 0.2 × 0.5 + 0.1 × 30 = 4 + 0.1 + 3 = 7.1 USD. No long-context rates for this
        // model, so 1M input tokens (above 272,000) still uses the normal rates.
        assert_usd(
            pricing.cost_usd("gpt-5.5", 1_000_000, 200_000, 100_000),
            7.1,
        );
        assert_eq!(
            pricing.cost_micro_usd(
                "gpt-5.5",
                ServiceTier::Standard,
                1_000_000,
                200_000,
                100_000
            ),
            Some(7_100_000)
        );
        // gpt-5.1-codex-mini, 10,000 input of which 4,000 cached, 2,000 output:
        // 6,000 × 0.25 + 4,000 × 0.025 + 2,000 × 2 = 1,500 + 100 + 4,000 = 5,600 µUSD.
        assert_eq!(
            pricing.cost_micro_usd(
                "gpt-5.1-codex-mini",
                ServiceTier::Standard,
                10_000,
                4_000,
                2_000
            ),
            Some(5_600)
        );
        assert_usd(
            pricing.cost_usd("gpt-5.1-codex-mini", 10_000, 4_000, 2_000),
            0.0056,
        );
        // gpt-5.4-mini, 1 uncached input token: 0.75 µUSD, rounds to 1.
        assert_eq!(
            pricing.cost_micro_usd("gpt-5.4-mini", ServiceTier::Standard, 1, 0, 0),
            Some(1)
        );
        // A known model with no tokens costs 0, which is not the same as unknown.
        assert_eq!(pricing.cost_usd("gpt-5.4", 0, 0, 0), Some(0.0));
    }

    #[test]
    fn cached_above_input_is_clamped() {
        let pricing = Pricing::embedded();
        // gpt-5.4, 1,000 input but 5,000 "cached": cached becomes 1,000, uncached 0:
        // 1,000 × 0.25 = 250 µUSD.
        assert_eq!(
            pricing.cost_micro_usd("gpt-5.4", ServiceTier::Standard, 1_000, 5_000, 0),
            Some(250)
        );
        assert_usd(pricing.cost_usd("gpt-5.4", 1_000, 5_000, 0), 0.00025);
    }

    #[test]
    fn long_context_switches_strictly_above_threshold() {
        let pricing = Pricing::embedded();
        // At 272,000 input: normal rates, 272,000 × 5 = 1,360,000 µUSD = 1.36 USD.
        assert_eq!(
            pricing.cost_micro_usd("gpt-5.6-sol", ServiceTier::Standard, 272_000, 0, 0),
            Some(1_360_000)
        );
        // At 272,001: long rates for the whole request, 272,001 × 10 = 2,720,010 µUSD.
        assert_eq!(
            pricing.cost_micro_usd("gpt-5.6-sol", ServiceTier::Standard, 272_001, 0, 0),
            Some(2_720_010)
        );
        // 300,000 input of which 100,000 cached, 10,000 output, all at long rates:
        // 200,000 × 10 + 100,000 × 1 + 10,000 × 45 = 2,000,000 + 100,000 + 450,000
        // = 2,550,000 µUSD = 2.55 USD.
        assert_usd(
            pricing.cost_usd("gpt-5.6-sol", 300_000, 100_000, 10_000),
            2.55,
        );
        // A model without long-context rates keeps its normal rates above the threshold:
        // gpt-5.6-terra, same request: 200,000 × 2 + 100,000 × 0.2 + 10,000 × 12
        // = 400,000 + 20,000 + 120,000 = 540,000 µUSD.
        assert_eq!(
            pricing.cost_micro_usd(
                "gpt-5.6-terra",
                ServiceTier::Standard,
                300_000,
                100_000,
                10_000
            ),
            Some(540_000)
        );
    }

    #[test]
    fn lookup_is_case_insensitive_and_strips_date_suffix() {
        let pricing = Pricing::embedded();
        assert_eq!(
            pricing.price("GPT-5.5").map(|p| p.model.as_str()),
            Some("gpt-5.5")
        );
        assert_eq!(
            pricing
                .price("gpt-5.3-codex-2026-01-15")
                .map(|p| p.model.as_str()),
            Some("gpt-5.3-codex")
        );
        assert_eq!(
            pricing
                .price("GPT-5.4-Mini-2025-12-31")
                .map(|p| p.model.as_str()),
            Some("gpt-5.4-mini")
        );
        // Not a date suffix: no match.
        assert!(pricing.price("gpt-5.5-2026-1-15").is_none());
        assert!(pricing.price("gpt-5.5-2026x01-15").is_none());
        // A bare date is not a model.
        assert!(pricing.price("-2026-01-15").is_none());
    }

    #[test]
    fn unknown_models_have_no_price() {
        let pricing = Pricing::embedded();
        for model in ["gpt-5.5-pro", "gpt-unknown", "", "gpt-5", "gpt-5.55"] {
            assert!(pricing.price(model).is_none(), "{model}");
            assert_eq!(pricing.cost_usd(model, 1_000, 0, 1_000), None, "{model}");
            assert_eq!(
                pricing.cost_micro_usd(model, ServiceTier::Standard, 1_000, 0, 1_000),
                None,
                "{model}"
            );
        }
    }

    #[test]
    fn aliases_exact_prefix_and_longest_prefix_wins() {
        let pricing = table(
            r#"{"models": {
                "base": {"input": 1, "cached_input": 0.1, "output": 2,
                         "aliases": ["Base-Latest", "base-*"]},
                "base-fast": {"input": 3, "cached_input": 0.3, "output": 6,
                              "aliases": ["base-fast-*"]}
            }}"#,
        )
        .expect("valid table");
        let name = |m: &str| pricing.price(m).map(|p| p.model.clone());
        assert_eq!(name("base-latest").as_deref(), Some("base"));
        assert_eq!(name("BASE-LATEST").as_deref(), Some("base"));
        assert_eq!(name("base-anything").as_deref(), Some("base"));
        // Exact name beats the `base-*` prefix.
        assert_eq!(name("base-fast").as_deref(), Some("base-fast"));
        // Longer prefix `base-fast-*` beats `base-*`.
        assert_eq!(name("base-fast-v2").as_deref(), Some("base-fast"));
        // A prefix alias also matches a dated slug without stripping.
        assert_eq!(name("base-2026-01-15").as_deref(), Some("base"));
        assert_eq!(name("other"), None);
        // 10 input, 0 cached, 5 output through an alias: 10 × 1 + 5 × 2 = 20 µUSD.
        assert_eq!(
            pricing.cost_micro_usd("base-latest", ServiceTier::Standard, 10, 0, 5),
            Some(20)
        );
    }

    #[test]
    fn invalid_entries_are_rejected_with_a_reason() {
        let entry = |body: &str| format!(r#"{{"models": {{"m": {body}}}}}"#);
        assert_eq!(
            problem(table(&entry(
                r#"{"input": -1, "cached_input": 0, "output": 0}"#
            ))),
            EntryProblem::BadRate {
                field: "input",
                value: -1.0
            }
        );
        assert_eq!(
            problem(table(&entry(
                r#"{"input": 1, "cached_input": 0, "output": 0, "long_input": 2}"#
            ))),
            EntryProblem::PartialLongContext
        );
        assert_eq!(
            problem(table(&entry(
                r#"{"input": 1, "cached_input": 0, "output": 0, "long_context_threshold": 10}"#
            ))),
            EntryProblem::ThresholdWithoutRates
        );
        assert_eq!(
            problem(table(&entry(
                r#"{"input": 1, "cached_input": 0, "output": 0, "long_context_threshold": 0,
                    "long_input": 2, "long_cached_input": 0, "long_output": 0}"#
            ))),
            EntryProblem::ZeroThreshold
        );
        for bad in ["*", "a*b*", "*x"] {
            let body =
                format!(r#"{{"input": 1, "cached_input": 0, "output": 0, "aliases": ["{bad}"]}}"#);
            assert_eq!(
                problem(table(&entry(&body))),
                EntryProblem::BadAlias(bad.to_owned()),
                "{bad}"
            );
        }
        // The same name twice, once differing in case only, and an alias stealing a model name.
        let dup = table(
            r#"{"models": {"m": {"input": 1, "cached_input": 0, "output": 0},
                           "m": {"input": 2, "cached_input": 0, "output": 0}}}"#,
        );
        assert!(matches!(problem(dup), EntryProblem::Duplicate { .. }));
        let dup_case = table(
            r#"{"models": {"m": {"input": 1, "cached_input": 0, "output": 0},
                           "M": {"input": 2, "cached_input": 0, "output": 0}}}"#,
        );
        assert!(matches!(problem(dup_case), EntryProblem::Duplicate { .. }));
        let stolen = table(
            r#"{"models": {"a": {"input": 1, "cached_input": 0, "output": 0},
                           "b": {"input": 2, "cached_input": 0, "output": 0, "aliases": ["a"]}}}"#,
        );
        assert_eq!(
            problem(stolen),
            EntryProblem::Duplicate {
                name: "a".to_owned(),
                other: "a".to_owned()
            }
        );
        // Unknown fields (typos) are parse errors naming the field.
        let typo = table(&entry(r#"{"input": 1, "cache_input": 0, "output": 0}"#))
            .expect_err("typo must be rejected");
        assert!(typo.to_string().contains("cache_input"), "{typo}");
    }

    #[test]
    fn missing_override_gives_embedded_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pricing = Pricing::load(dir.path()).expect("no override is fine");
        assert_eq!(pricing.len(), Pricing::embedded().len());
        let nowhere = dir.path().join("does-not-exist");
        assert_eq!(
            Pricing::load(&nowhere).expect("missing dir is fine").len(),
            Pricing::embedded().len()
        );
    }

    #[test]
    fn override_file_merges_per_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(PRICES_FILE_NAME),
            r#"{
                "_comment": "local prices",
                "models": {
                    "GPT-5.5": {"input": 1, "cached_input": 0.1, "output": 2},
                    "my-model": {"input": 4, "cached_input": 0.4, "output": 8,
                                 "long_input": 8, "long_cached_input": 0.8, "long_output": 16,
                                 "aliases": ["my-model-*"]}
                }
            }"#,
        )
        .expect("write override");
        let pricing = Pricing::load(dir.path()).expect("valid override");
        // Replaced: gpt-5.5, 1,000 input of which 200 cached, 100 output:
        // 800 × 1 + 200 × 0.1 + 100 × 2 = 800 + 20 + 200 = 1,020 µUSD.
        assert_eq!(
            pricing.cost_micro_usd("gpt-5.5", ServiceTier::Standard, 1_000, 200, 100),
            Some(1_020)
        );
        // Kept from the embedded table, long-context rates included.
        assert_eq!(pricing.price("gpt-5.4").map(|p| p.rates.input), Some(2.5));
        assert!(pricing
            .price("gpt-5.6-sol")
            .is_some_and(|p| p.long_context.is_some()));
        // Added, with the default threshold since the file gives none.
        let mine = pricing.price("my-model-preview").expect("alias");
        assert_eq!(mine.model, "my-model");
        assert_eq!(
            mine.long_context.map(|l| l.threshold),
            Some(DEFAULT_LONG_CONTEXT_THRESHOLD)
        );
        assert_eq!(pricing.len(), Pricing::embedded().len() + 1);
    }

    #[test]
    fn override_replacing_a_model_drops_its_aliases() {
        let base = table(
            r#"{"models": {"a": {"input": 1, "cached_input": 0, "output": 0,
                                 "aliases": ["a-*"]}}}"#,
        )
        .expect("valid table");
        assert!(base.price("a-x").is_some());
        let replacement = parse_entries(
            r#"{"models": {"a": {"input": 2, "cached_input": 0, "output": 0}}}"#,
            Path::new("override.json"),
        )
        .expect("valid override");
        let merged = base
            .merged(replacement, Path::new("override.json"))
            .expect("merge");
        assert_eq!(merged.price("a").map(|p| p.rates.input), Some(2.0));
        assert!(merged.price("a-x").is_none());
    }

    #[test]
    fn override_collisions_are_charged_to_the_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An override alias colliding with an embedded model name is charged to the override.
        fs::write(
            dir.path().join(PRICES_FILE_NAME),
            r#"{"models": {"x": {"input": 1, "cached_input": 0, "output": 0,
                                 "aliases": ["gpt-5.4"]}}}"#,
        )
        .expect("write override");
        let err = Pricing::load(dir.path()).expect_err("collision must be rejected");
        let path = dir.path().join(PRICES_FILE_NAME);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // Replacing gpt-5.4 itself is fine, and then the alias may point elsewhere.
        fs::write(
            &path,
            r#"{"models": {"gpt-5.4": {"input": 9, "cached_input": 0, "output": 0,
                                       "aliases": ["gpt-5.4-latest"]}}}"#,
        )
        .expect("write override");
        let pricing = Pricing::load(dir.path()).expect("valid override");
        assert_eq!(
            pricing.price("gpt-5.4-latest").map(|p| p.rates.input),
            Some(9.0)
        );
    }

    #[test]
    fn malformed_override_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(PRICES_FILE_NAME);
        fs::write(&path, r#"{"models": {"gpt-5.5": {"input": 5,"#).expect("write");
        let err = Pricing::load(dir.path()).expect_err("malformed must be rejected");
        assert!(matches!(err, PricingError::Parse { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        fs::write(
            &path,
            r#"{"models": {"gpt-5.5": {"input": 5, "cached_input": -0.5, "output": 30}}}"#,
        )
        .expect("write");
        let err = Pricing::load(dir.path()).expect_err("negative price must be rejected");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("gpt-5.5") && text.contains("cached_input"),
            "{text}"
        );
    }

    #[test]
    fn unreadable_override_is_a_read_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should be: exists, but cannot be read as text.
        fs::create_dir(dir.path().join(PRICES_FILE_NAME)).expect("mkdir");
        let err = Pricing::load(dir.path()).expect_err("must be rejected");
        assert!(matches!(err, PricingError::Read { .. }), "{err:?}");
    }

    #[test]
    fn date_suffix_is_recognised_exactly() {
        assert_eq!(strip_date_suffix("gpt-5.5-2026-01-15"), Some("gpt-5.5"));
        assert_eq!(strip_date_suffix("gpt-5.5"), None);
        assert_eq!(strip_date_suffix("2026-01-15"), None);
        assert_eq!(strip_date_suffix("-2026-01-15"), None);
        assert_eq!(strip_date_suffix("x-20260-1-15"), None);
        // Multi-byte characters before the suffix do not panic.
        assert_eq!(strip_date_suffix("é-2026-01-15"), Some("é"));
        assert_eq!(strip_date_suffix("ééééééé"), None);
    }
}
