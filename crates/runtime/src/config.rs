//! Sizing of the engine ([`RuntimeConfig`]) and the bounds of each run ([`RunLimits`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the runtime sizes its engine: the instance pool, the compiled cache and the epoch
/// ticker. These are fixed for the life of the process. What bounds a single run is in
/// [`RuntimeConfig::run`], the default [`RunLimits`] of every plugin, which a plugin can
/// override with [`crate::Plugin::with_limits`]. The defaults suit a 2-core machine running a
/// few hundred concurrent calls.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Runs that may be instantiated at once (the pooling allocator's component-instance
    /// slots and fiber stacks). A run beyond this waits for a slot, at most
    /// [`RunLimits::slot_wait_ms`].
    pub max_concurrent_runs: u32,
    /// Core (module) instances the pool holds per run slot: the pool's total is
    /// `max_concurrent_runs` times this. A Rust plugin instantiates 3; a componentize-py one
    /// about 38, so its runs take the room of several Rust runs and wait when the pool is
    /// full.
    pub pool_core_instances_per_run: u32,
    /// Linear memories the pool holds per run slot (total: `max_concurrent_runs` times this).
    pub pool_memories_per_run: u32,
    /// Tables the pool holds per run slot (total: `max_concurrent_runs` times this).
    pub pool_tables_per_run: u32,
    /// Most core instances one plugin instance may need; a plugin needing more is refused at
    /// load. Capped by the pool's total.
    pub max_core_instances_per_plugin: u32,
    /// Most linear memories one plugin instance may need (capped by the pool's total).
    pub max_memories_per_plugin: u32,
    /// Most tables one plugin instance may need (capped by the pool's total).
    pub max_tables_per_plugin: u32,
    /// Largest linear memory a pool slot holds, in bytes: the ceiling of every plugin's
    /// [`RunLimits::max_memory_bytes`].
    pub pool_memory_bytes: usize,
    /// Interval of the epoch ticker that enforces [`RunLimits::cpu_ms`]. A stretch of guest
    /// code that no tick interrupted is charged its wall time, but at most one tick (see the
    /// runtime's CPU meter), so this also bounds what a pause can cost a short stretch.
    pub epoch_tick: Duration,
    /// Bytes of each pooled linear memory kept resident when a run ends (reset in place)
    /// instead of being returned to the kernel with `madvise`. Where the kernel has the
    /// `PAGEMAP_SCAN` ioctl (Linux 6.7 and later) only the pages the run dirtied are reset, so
    /// the default is [`KEEP_RESIDENT_WITH_PAGEMAP_SCAN`] there: on the sip:refer plugin it
    /// took the sandbox's cost per verb from 4.2x native to 3.0-3.3x (BENCHMARKS.md). Without
    /// the ioctl every kept byte is zeroed with memset on each run (1 MiB cost about 9 us,
    /// more than the page faults it saves), so the default is 0. Kept pages stay resident
    /// while their slot is unused: after a peak of N runs at once, up to N slots keep what
    /// their last run dirtied.
    pub memory_keep_resident: usize,
    /// Largest plugin file accepted, in bytes.
    pub max_plugin_bytes: usize,
    /// Where compiled plugins are cached, as `<sha256 of the wasm>-<engine hash>.cwasm`
    /// (`None`, the default: no cache, every load compiles). A hit loads in well under a
    /// millisecond instead of compiling for tens of milliseconds.
    ///
    /// Entries are native code that the runtime maps and runs without checking it as it checks
    /// wasm (wasmtime's `Component::deserialize_file` is `unsafe` for that reason). That is
    /// sound only because this directory is the operator's and only this runtime writes it:
    /// give it to the verbhost user alone (mode 0700), never to plugin authors or uploads.
    /// Entries are written to a temporary file in the same directory and renamed into place,
    /// so processes sharing the directory never see half an entry. An entry that fails to
    /// load (another wasmtime build, a truncated or damaged file) is deleted and rebuilt; a
    /// directory that cannot be created or written turns the cache off with one warning.
    pub cache_dir: Option<PathBuf>,
    /// The bounds of one run, for every plugin that does not have its own.
    pub run: RunLimits,
}

/// [`RuntimeConfig::memory_keep_resident`]'s default where the kernel can tell which pages a
/// run dirtied: 2 MiB covers a Rust plugin's whole first-run footprint (its 1 MiB stack, data
/// and early heap).
pub const KEEP_RESIDENT_WITH_PAGEMAP_SCAN: usize = 2 << 20;

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_runs: 128,
            pool_core_instances_per_run: 4,
            pool_memories_per_run: 2,
            pool_tables_per_run: 4,
            max_core_instances_per_plugin: 64,
            max_memories_per_plugin: 8,
            max_tables_per_plugin: 16,
            pool_memory_bytes: 64 << 20,
            epoch_tick: Duration::from_millis(10),
            memory_keep_resident: if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available()
            {
                KEEP_RESIDENT_WITH_PAGEMAP_SCAN
            } else {
                0
            },
            max_plugin_bytes: 32 << 20,
            cache_dir: None,
            run: RunLimits::default(),
        }
    }
}

/// The bounds of one run of a plugin. A run that exceeds one ends with a
/// [`crate::RunError`] naming it; the host and every other run carry on.
///
/// This is meant to be the server config's `[limits]` table as it is (and its per-verb
/// overrides): every field has a default, unknown keys are an error, durations are
/// milliseconds in `*_ms` fields. For example:
///
/// ```toml
/// cpu_ms = 100
/// wall_clock_ms = 60000
/// max_refers = 3
/// max_concurrent_runs = 50
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunLimits {
    /// Guest CPU time one run may use, in ms. Only CPU time the guest's thread actually ran
    /// is charged: time parked in host calls, queued for a worker, paused (SIGSTOP) or
    /// preempted by other threads is not. Default 100.
    pub cpu_ms: u64,
    /// Wall-clock time one run may take, waits for NOTIFYs included, in ms. Default 3600000
    /// (one hour).
    pub wall_clock_ms: u64,
    /// Host calls one run may make. Default 10000.
    pub max_host_calls: u32,
    /// `send-refer` calls one run may make; one more ends the run with a trap of kind
    /// [`crate::TrapKind::Refers`]. Default 10.
    pub max_refers: u32,
    /// Largest verb JSON accepted, in bytes. Default 1 MiB.
    pub max_verb_bytes: usize,
    /// Largest actionHook or eventHook payload a plugin may produce, in bytes. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Events (eventHook posts) one run may emit. Default 1000.
    pub max_events: u32,
    /// Log bytes one run may write through the `log` import; the rest is dropped and
    /// counted. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Bytes of guest stdout/stderr kept: the last ones written, in [`Run::guest_output`]
    /// and reported with traps. Writes past it are never refused; the older bytes are
    /// pushed out and counted in [`Run::guest_output_dropped`]. Default 4 KiB.
    ///
    /// [`Run::guest_output`]: crate::Run::guest_output
    /// [`Run::guest_output_dropped`]: crate::Run::guest_output_dropped
    pub max_guest_output_bytes: usize,
    /// Largest linear memory one run may grow to, in bytes; at most
    /// [`RuntimeConfig::pool_memory_bytes`]. Default 32 MiB.
    pub max_memory_bytes: usize,
    /// Runs of this plugin at once; `None` (the default) leaves only the pool to bound them.
    /// A run beyond it waits like a run beyond the pool.
    pub max_concurrent_runs: Option<u32>,
    /// How long a run waits for room (in the pool or under `max_concurrent_runs`) before it
    /// ends with [`crate::RunError::Overloaded`], in ms. Default 5000.
    pub slot_wait_ms: u64,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            cpu_ms: 100,
            wall_clock_ms: 3_600_000,
            max_host_calls: 10_000,
            max_refers: 10,
            max_verb_bytes: 1 << 20,
            max_payload_bytes: 1 << 20,
            max_events: 1_000,
            max_log_bytes: 64 << 10,
            max_guest_output_bytes: 4 << 10,
            max_memory_bytes: 32 << 20,
            max_concurrent_runs: None,
            slot_wait_ms: 5_000,
        }
    }
}

impl RunLimits {
    /// [`RunLimits::cpu_ms`] as a duration.
    pub fn cpu_budget(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }

    /// [`RunLimits::wall_clock_ms`] as a duration.
    pub fn wall_clock_limit(&self) -> Duration {
        Duration::from_millis(self.wall_clock_ms)
    }

    /// [`RunLimits::slot_wait_ms`] as a duration.
    pub fn slot_wait(&self) -> Duration {
        Duration::from_millis(self.slot_wait_ms)
    }

    /// Checks the limits against the engine they will run in: memory within the pool's, and
    /// no bound that would refuse every run.
    pub fn check(&self, engine: &RuntimeConfig) -> Result<(), LimitsError> {
        if self.max_memory_bytes > engine.pool_memory_bytes {
            return Err(LimitsError::MemoryAbovePool {
                run: self.max_memory_bytes,
                pool: engine.pool_memory_bytes,
            });
        }
        let zero = [
            ("cpu_ms", self.cpu_ms == 0),
            ("wall_clock_ms", self.wall_clock_ms == 0),
            ("max_concurrent_runs", self.max_concurrent_runs == Some(0)),
        ];
        if let Some((key, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
            return Err(LimitsError::Zero { key });
        }
        Ok(())
    }
}

/// Why a set of [`RunLimits`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// The run's memory bound is above what a pool slot holds.
    #[error(
        "max_memory_bytes = {run} is more than the instance pool's pool_memory_bytes = {pool}; lower it or raise the pool's"
    )]
    MemoryAbovePool {
        /// The run's `max_memory_bytes`.
        run: usize,
        /// The engine's `pool_memory_bytes`.
        pool: usize,
    },
    /// A bound is 0, which would refuse every run.
    #[error("{key} = 0 would refuse every run")]
    Zero {
        /// The field.
        key: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_from_toml_with_defaults_and_refuse_unknown_keys() {
        let limits: RunLimits =
            toml::from_str("cpu_ms = 50\nmax_refers = 3\nmax_concurrent_runs = 7\n")
                .expect("valid limits");
        assert_eq!(
            limits,
            RunLimits {
                cpu_ms: 50,
                max_refers: 3,
                max_concurrent_runs: Some(7),
                ..RunLimits::default()
            }
        );
        assert_eq!(limits.cpu_budget(), Duration::from_millis(50));
        let err = toml::from_str::<RunLimits>("cpu = 50\n").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `cpu`"), "{err}");
        let back: RunLimits =
            toml::from_str(&toml::to_string(&limits).expect("serialises")).expect("reads back");
        assert_eq!(back, limits);
    }

    #[test]
    fn limits_are_checked_against_the_engine() {
        let engine = RuntimeConfig::default();
        assert_eq!(RunLimits::default().check(&engine), Ok(()));
        let err = RunLimits {
            max_memory_bytes: engine.pool_memory_bytes + 1,
            ..RunLimits::default()
        }
        .check(&engine)
        .expect_err("above the pool");
        assert_eq!(
            err,
            LimitsError::MemoryAbovePool {
                run: engine.pool_memory_bytes + 1,
                pool: engine.pool_memory_bytes
            }
        );
        assert!(err.to_string().contains("pool_memory_bytes"), "{err}");
        let err = RunLimits {
            max_concurrent_runs: Some(0),
            ..RunLimits::default()
        }
        .check(&engine)
        .expect_err("zero runs");
        assert_eq!(
            err,
            LimitsError::Zero {
                key: "max_concurrent_runs"
            }
        );
    }
}
