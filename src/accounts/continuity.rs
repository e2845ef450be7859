//! Hard continuity: which account issued a recent response, and which plans offer a model.
//!
//! A turn that continues a response (`previous_response_id`) must go to the account that produced
//! it: no other account's upstream has ever seen that response. Any worker may serve the next turn,
//! so the table is shared; it is split into shards whose locks are held for one hash-map operation,
//! once per completed response and once per continuing request.
//!
//! Memory is bounded by generations: when a shard's current map fills, it becomes the previous one
//! and the older generation is dropped, so the newest ids are always kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::strategy::hash_str;

const SHARDS: usize = 8;
/// Ids per shard generation: at most 2 × 8 × 8192 ≈ 131 000 remembered responses (~4 MB).
const PER_GENERATION: usize = 8192;

#[derive(Default)]
struct Shard {
    current: HashMap<u64, Arc<str>>,
    previous: HashMap<u64, Arc<str>>,
}

#[derive(Default)]
pub struct ResponseOwners {
    shards: [Mutex<Shard>; SHARDS],
}

impl ResponseOwners {
    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // The low bits pick the map bucket; the high ones pick the shard.
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    pub fn remember(&self, response_id: &str, account: &Arc<str>) {
        let key = hash_str(response_id);
        let Ok(mut s) = self.shard(key).lock() else {
            return;
        };
        if s.current.len() >= PER_GENERATION {
            s.previous = std::mem::take(&mut s.current);
        }
        s.current.insert(key, Arc::clone(account));
    }

    /// The account that issued `response_id`, if it is still remembered.
    pub fn owner(&self, response_id: &str) -> Option<Arc<str>> {
        let key = hash_str(response_id);
        let s = self.shard(key).lock().ok()?;
        s.current
            .get(&key)
            .or_else(|| s.previous.get(&key))
            .cloned()
    }
}

/// Model slug → the plans that offer it (`available_in_plans` of the upstream catalog), merged from
/// every catalog the gateway has fetched. Models never seen in a catalog are not restricted.
#[derive(Default)]
pub struct ModelPlans {
    /// Shared slices: a request takes its model's plans with a reference count, not a copy.
    plans: ArcSwap<HashMap<String, Arc<[String]>>>,
}

impl ModelPlans {
    /// Merges a fetched catalog (`{"models":[{"slug","available_in_plans"}…]}`). Rare: runs when a
    /// worker refreshes its models cache.
    pub fn learn(&self, catalog: &serde_json::Value) {
        let Some(models) = catalog.get("models").and_then(|m| m.as_array()) else {
            return;
        };
        let mut next: HashMap<String, Arc<[String]>> = (**self.plans.load()).clone();
        let mut changed = false;
        for m in models {
            let Some(slug) = m.get("slug").and_then(|s| s.as_str()) else {
                continue;
            };
            let Some(plans) = m.get("available_in_plans").and_then(|p| p.as_array()) else {
                continue;
            };
            let plans: Vec<String> = plans
                .iter()
                .filter_map(|p| p.as_str().map(str::to_ascii_lowercase))
                .collect();
            if plans.is_empty() {
                continue;
            }
            if next.get(slug).map(|p| &p[..]) != Some(&plans[..]) {
                next.insert(slug.to_string(), Arc::from(plans));
                changed = true;
            }
        }
        if changed {
            self.plans.store(Arc::new(next));
        }
    }

    /// The plans that offer `model`, if a catalog restricted it.
    pub fn plans_for(&self, model: &str) -> Option<Arc<[String]>> {
        self.plans.load().get(model).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owners_are_remembered_and_old_generations_dropped() {
        let owners = ResponseOwners::default();
        let a: Arc<str> = Arc::from("acc_a");
        owners.remember("resp_first", &a);
        assert_eq!(owners.owner("resp_first").as_deref(), Some("acc_a"));
        assert_eq!(owners.owner("resp_unknown"), None);
        // Enough newer ids to roll every shard over twice: the first is forgotten, the last kept.
        for i in 0..(SHARDS * PER_GENERATION * 3) {
            owners.remember(&format!("resp_{i}"), &a);
        }
        assert_eq!(owners.owner("resp_first"), None);
        let last = format!("resp_{}", SHARDS * PER_GENERATION * 3 - 1);
        assert_eq!(owners.owner(&last).as_deref(), Some("acc_a"));
        let total: usize = owners
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum();
        assert!(total <= 2 * SHARDS * PER_GENERATION, "{total}");
    }

    #[test]
    fn model_plans_merge_catalogs() {
        let mp = ModelPlans::default();
        mp.learn(&json!({"models": [
            {"slug": "gpt-5.5", "available_in_plans": ["plus", "Pro"]},
            {"slug": "gpt-5.5-pro", "available_in_plans": ["pro"]},
            {"slug": "no-plans"}
        ]}));
        mp.learn(&json!({"models": [{"slug": "other", "available_in_plans": ["team"]}]}));
        assert_eq!(&*mp.plans_for("gpt-5.5").unwrap(), ["plus", "pro"]);
        assert_eq!(&*mp.plans_for("gpt-5.5-pro").unwrap(), ["pro"]);
        assert_eq!(&*mp.plans_for("other").unwrap(), ["team"]);
        assert!(mp.plans_for("no-plans").is_none());
    }
}
