//! `[limits]` (what one run of a plugin may use, with per-verb overrides) and `[pool]` (how
//! the instance pool is sized), as the config file has them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use verbhost_runtime::{RunLimits, RuntimeConfig};

/// `[limits]`: the bounds of one run of any plugin ([`RunLimits`]: CPU, wall clock, host
/// calls, REFERs, payload sizes, events, logs, memory, concurrent runs), and
/// `[limits.verbs."NAME"]` tables that override some of them for the plugin implementing
/// verb NAME. A plugin implementing several overridden verbs gets the tightest value of each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsConfig {
    /// Every plugin's bounds.
    pub run: RunLimits,
    /// Per verb, the keys that differ.
    pub verbs: BTreeMap<String, toml::Table>,
}

/// A `[limits.verbs."NAME"]` table that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[error("[limits.verbs.{verb:?}]: {why}")]
pub struct LimitsOverrideError {
    /// The verb whose table is at fault.
    pub verb: String,
    /// What is wrong, in serde's words (it names an unknown key or a wrong type).
    pub why: String,
}

impl LimitsConfig {
    /// The limits of a plugin that implements `verbs`: `[limits]` with each of their
    /// overrides on top, the smallest value winning where two overrides set the same key.
    pub fn for_verbs(&self, verbs: &[String]) -> Result<RunLimits, LimitsOverrideError> {
        let mut merged = match serde_json::to_value(&self.run) {
            Ok(Value::Object(map)) => map,
            _ => return Ok(self.run.clone()),
        };
        let defaults = merged.clone();
        for verb in verbs {
            let Some(table) = self.verbs.get(verb) else {
                continue;
            };
            let patch = serde_json::to_value(table).map_err(|e| LimitsOverrideError {
                verb: verb.clone(),
                why: e.to_string(),
            })?;
            for (key, value) in patch.as_object().into_iter().flatten() {
                let tighter = match (merged.get(key), defaults.get(key)) {
                    // A second override of the same key: keep the smaller.
                    (Some(now), Some(default)) if now != default => {
                        match (now.as_f64(), value.as_f64()) {
                            (Some(a), Some(b)) if a <= b => now.clone(),
                            _ => value.clone(),
                        }
                    }
                    _ => value.clone(),
                };
                merged.insert(key.clone(), tighter);
            }
            // Check each table alone too, so the error names the verb whose table is wrong.
            serde_json::from_value::<RunLimits>(Value::Object(merged.clone())).map_err(|e| {
                LimitsOverrideError {
                    verb: verb.clone(),
                    why: e.to_string(),
                }
            })?;
        }
        serde_json::from_value(Value::Object(merged)).map_err(|e| LimitsOverrideError {
            verb: verbs.join(","),
            why: e.to_string(),
        })
    }

    /// Checks every override table on its own.
    pub fn check(&self) -> Result<(), LimitsOverrideError> {
        for verb in self.verbs.keys() {
            self.for_verbs(std::slice::from_ref(verb))?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for LimitsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let verbs = match table.remove("verbs") {
            None => BTreeMap::new(),
            Some(toml::Value::Table(verbs)) => verbs
                .into_iter()
                .map(|(verb, value)| match value {
                    toml::Value::Table(t) => Ok((verb, t)),
                    other => Err(D::Error::custom(format!(
                        "limits.verbs.{verb:?} must be a table of limits, got {}",
                        other.type_str()
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "limits.verbs must be a table of per-verb tables, got {}",
                    other.type_str()
                )));
            }
        };
        let run = RunLimits::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(LimitsConfig { run, verbs })
    }
}

impl Serialize for LimitsConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let run = match serde_json::to_value(&self.run).map_err(S::Error::custom)? {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let mut map = serializer.serialize_map(None)?;
        // An unset optional bound is left out (TOML has no null).
        for (key, value) in run.iter().filter(|(_, value)| !value.is_null()) {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("verbs", &self.verbs)?;
        map.end()
    }
}

/// `[pool]`: how the wasm instance pool is sized. Fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Plugin runs instantiated at once; a run beyond them waits (up to
    /// `limits.slot_wait_ms`, then the verb fails `overloaded`).
    pub runs: u32,
    /// Core instances held per run: a Rust plugin needs 3, a componentize-py one about 38,
    /// whose runs therefore take the room of several.
    pub core_instances_per_run: u32,
    /// Linear memories held per run.
    pub memories_per_run: u32,
    /// Tables held per run.
    pub tables_per_run: u32,
    /// A plugin needing more core instances than this is refused at load.
    pub max_core_instances_per_plugin: u32,
    /// A plugin needing more memories than this is refused at load.
    pub max_memories_per_plugin: u32,
    /// A plugin needing more tables than this is refused at load.
    pub max_tables_per_plugin: u32,
    /// The largest linear memory a slot holds, in bytes: the ceiling of
    /// `limits.max_memory_bytes`.
    pub memory_bytes: usize,
    /// The largest plugin file accepted (directory, upload), in bytes.
    pub max_plugin_bytes: usize,
    /// How often guest CPU time is checked, in ms.
    pub epoch_tick_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        let engine = RuntimeConfig::default();
        PoolConfig {
            runs: engine.max_concurrent_runs,
            core_instances_per_run: engine.pool_core_instances_per_run,
            memories_per_run: engine.pool_memories_per_run,
            tables_per_run: engine.pool_tables_per_run,
            max_core_instances_per_plugin: engine.max_core_instances_per_plugin,
            max_memories_per_plugin: engine.max_memories_per_plugin,
            max_tables_per_plugin: engine.max_tables_per_plugin,
            memory_bytes: engine.pool_memory_bytes,
            max_plugin_bytes: engine.max_plugin_bytes,
            epoch_tick_ms: u64::try_from(engine.epoch_tick.as_millis()).unwrap_or(10),
        }
    }
}

impl PoolConfig {
    /// The runtime's settings: this pool, the compiled cache, and the default run limits.
    pub fn runtime(&self, cache_dir: Option<PathBuf>, run: RunLimits) -> RuntimeConfig {
        RuntimeConfig {
            max_concurrent_runs: self.runs.max(1),
            pool_core_instances_per_run: self.core_instances_per_run,
            pool_memories_per_run: self.memories_per_run,
            pool_tables_per_run: self.tables_per_run,
            max_core_instances_per_plugin: self.max_core_instances_per_plugin,
            max_memories_per_plugin: self.max_memories_per_plugin,
            max_tables_per_plugin: self.max_tables_per_plugin,
            pool_memory_bytes: self.memory_bytes,
            epoch_tick: Duration::from_millis(self.epoch_tick_ms.max(1)),
            max_plugin_bytes: self.max_plugin_bytes,
            cache_dir,
            run,
            ..RuntimeConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LimitsConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn a_verb_override_changes_only_its_keys_and_the_tightest_wins() {
        let limits = parse(
            "cpu_ms = 200\nmax_refers = 5\n\
             [verbs.\"sip:refer\"]\nmax_refers = 2\n\
             [verbs.\"x:slow\"]\nmax_refers = 4\ncpu_ms = 50\n",
        )
        .unwrap();
        assert_eq!(limits.run.cpu_ms, 200);
        let refer = limits.for_verbs(&["sip:refer".into()]).unwrap();
        assert_eq!((refer.cpu_ms, refer.max_refers), (200, 2));
        let both = limits
            .for_verbs(&["sip:refer".into(), "x:slow".into()])
            .unwrap();
        assert_eq!((both.cpu_ms, both.max_refers), (50, 2));
        let other = limits.for_verbs(&["other".into()]).unwrap();
        assert_eq!(other, limits.run);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let err = parse("cpu = 5\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `cpu`"), "{err}");
        let limits = parse("[verbs.\"sip:refer\"]\nmax_refers = \"two\"\n").unwrap();
        let err = limits.check().unwrap_err().to_string();
        assert!(err.starts_with("[limits.verbs.\"sip:refer\"]"), "{err}");
        let limits = parse("[verbs.\"sip:refer\"]\nmax_referz = 2\n").unwrap();
        let err = limits.check().unwrap_err().to_string();
        assert!(err.contains("max_referz"), "{err}");
        let err = parse("verbs = 3\n").unwrap_err().to_string();
        assert!(err.contains("limits.verbs must be a table"), "{err}");
    }

    #[test]
    fn it_round_trips_through_toml() {
        let limits = parse("cpu_ms = 7\n[verbs.a]\nmax_events = 3\n").unwrap();
        let text = toml::to_string(&limits).unwrap();
        assert_eq!(parse(&text).unwrap(), limits);
    }
}
