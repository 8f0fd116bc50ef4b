//! The instance pool's capacity, counted so that a run waits for room before it instantiates
//! instead of failing inside wasmtime when the pool is full.
//!
//! wasmtime's pooling allocator has fixed totals of component instances, core instances,
//! linear memories and tables. A plugin needs one component instance and its own numbers of
//! the others ([`PluginNeeds`], measured when it is compiled). Each run takes weighted
//! permits for all four before it instantiates and holds them until its store is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RuntimeConfig;
use crate::error::{LoadError, RunError};

/// What one instance of a plugin takes from the instance pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginNeeds {
    /// Core (module) instances: 3 for a Rust plugin, about 38 for componentize-py.
    pub core_instances: u32,
    /// Linear memories it defines.
    pub memories: u32,
    /// Tables it defines.
    pub tables: u32,
}

impl PluginNeeds {
    /// Counts what `component` instantiates: memories and tables from wasmtime, core
    /// instances from the binary (`bytes`), since wasmtime does not expose that count. Every
    /// core `instantiate` in the binary is counted once, nested components included.
    pub(crate) fn measure(
        bytes: &[u8],
        component: &wasmtime::component::Component,
    ) -> Result<PluginNeeds, LoadError> {
        let mut core_instances = 0u32;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| LoadError::NotAComponent(e.to_string()))?;
            if let wasmparser::Payload::InstanceSection(reader) = payload {
                for instance in reader {
                    let instance = instance.map_err(|e| LoadError::NotAComponent(e.to_string()))?;
                    if matches!(instance, wasmparser::Instance::Instantiate { .. }) {
                        core_instances = core_instances.saturating_add(1);
                    }
                }
            }
        }
        let resources = component.resources_required().ok_or_else(|| {
            LoadError::NotAComponent(
                "the component instantiates core modules it imports, so what it needs cannot be known before it runs"
                    .into(),
            )
        })?;
        Ok(PluginNeeds {
            core_instances,
            memories: resources.num_memories,
            tables: resources.num_tables,
        })
    }
}

/// The pool's capacity, as semaphores (shared by sibling runtimes).
pub(crate) struct Pool {
    components: Arc<Semaphore>,
    core_instances: Arc<Semaphore>,
    memories: Arc<Semaphore>,
    tables: Arc<Semaphore>,
    totals: Totals,
    /// What one plugin may need at most: the config's per-plugin maximums, capped by the
    /// totals.
    per_plugin: PluginNeeds,
    /// Runs refused as overloaded (see [`Pool::count_overloaded`]).
    overloaded: AtomicU64,
}

/// The pool's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) components: u32,
    pub(crate) core_instances: u32,
    pub(crate) memories: u32,
    pub(crate) tables: u32,
}

impl Totals {
    /// The totals `config` asks for.
    pub(crate) fn of(config: &RuntimeConfig) -> Totals {
        let runs = config.max_concurrent_runs.max(1);
        Totals {
            components: runs,
            core_instances: runs.saturating_mul(config.pool_core_instances_per_run.max(1)),
            memories: runs.saturating_mul(config.pool_memories_per_run.max(1)),
            tables: runs.saturating_mul(config.pool_tables_per_run.max(1)),
        }
    }
}

/// A run's room in the pool, given back when dropped.
pub(crate) struct PoolPermit {
    _permits: [OwnedSemaphorePermit; 4],
}

impl Pool {
    pub(crate) fn new(config: &RuntimeConfig) -> Pool {
        let totals = Totals::of(config);
        let permits = |n: u32| Arc::new(Semaphore::new(n as usize));
        Pool {
            components: permits(totals.components),
            core_instances: permits(totals.core_instances),
            memories: permits(totals.memories),
            tables: permits(totals.tables),
            totals,
            overloaded: AtomicU64::new(0),
            per_plugin: PluginNeeds {
                core_instances: config
                    .max_core_instances_per_plugin
                    .min(totals.core_instances),
                memories: config.max_memories_per_plugin.min(totals.memories),
                tables: config.max_tables_per_plugin.min(totals.tables),
            },
        }
    }

    /// Counts a run (or a load's `describe`) that ended overloaded.
    pub(crate) fn count_overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs (and load-time `describe` calls) that ended overloaded so far.
    pub(crate) fn overloaded(&self) -> u64 {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// The most one plugin instance may take; also each store's instance, memory and table
    /// limits.
    pub(crate) fn per_plugin(&self) -> PluginNeeds {
        self.per_plugin
    }

    /// Refuses a plugin whose single instance could never fit, naming the config key that
    /// bounds it.
    pub(crate) fn check_fits(&self, needs: &PluginNeeds) -> Result<(), LoadError> {
        let checks = [
            (
                "core instances",
                needs.core_instances,
                self.per_plugin.core_instances,
                self.totals.core_instances,
                "max_core_instances_per_plugin",
                "max_concurrent_runs * pool_core_instances_per_run",
            ),
            (
                "memories",
                needs.memories,
                self.per_plugin.memories,
                self.totals.memories,
                "max_memories_per_plugin",
                "max_concurrent_runs * pool_memories_per_run",
            ),
            (
                "tables",
                needs.tables,
                self.per_plugin.tables,
                self.totals.tables,
                "max_tables_per_plugin",
                "max_concurrent_runs * pool_tables_per_run",
            ),
        ];
        for (resource, needs, limit, total, key, total_key) in checks {
            if needs > limit {
                return Err(LoadError::TooHeavy {
                    resource,
                    needs,
                    limit,
                    key: if limit == total { total_key } else { key },
                });
            }
        }
        Ok(())
    }

    /// Waits for room for one instance needing `needs`, at most `wait`.
    pub(crate) async fn acquire(
        &self,
        needs: &PluginNeeds,
        wait: Duration,
    ) -> Result<PoolPermit, RunError> {
        let started = Instant::now();
        let deadline = started + wait;
        // Always in this order, so two waiting runs never hold what the other waits for in a
        // cycle; every holder of all four finishes and gives them back.
        let components = take(&self.components, 1, started, deadline, || {
            format!(
                "a run slot of the instance pool's {} (max_concurrent_runs)",
                self.totals.components
            )
        })
        .await?;
        let core_instances = take(
            &self.core_instances,
            needs.core_instances,
            started,
            deadline,
            || {
                format!(
                    "{} core instances of the instance pool's {}",
                    needs.core_instances, self.totals.core_instances
                )
            },
        )
        .await?;
        let memories = take(&self.memories, needs.memories, started, deadline, || {
            format!(
                "{} memories of the instance pool's {}",
                needs.memories, self.totals.memories
            )
        })
        .await?;
        let tables = take(&self.tables, needs.tables, started, deadline, || {
            format!(
                "{} tables of the instance pool's {}",
                needs.tables, self.totals.tables
            )
        })
        .await?;
        Ok(PoolPermit {
            _permits: [components, core_instances, memories, tables],
        })
    }
}

/// Takes `n` permits of `semaphore` before `deadline`, or fails naming `what` and the time
/// waited since `started`.
pub(crate) async fn take(
    semaphore: &Arc<Semaphore>,
    n: u32,
    started: Instant,
    deadline: Instant,
    what: impl FnOnce() -> String,
) -> Result<OwnedSemaphorePermit, RunError> {
    let acquire = semaphore.clone().acquire_many_owned(n);
    match tokio::time::timeout_at(deadline.into(), acquire).await {
        Ok(Ok(permit)) => Ok(permit),
        // The semaphores are never closed; treat it as no room all the same.
        Ok(Err(_)) | Err(_) => Err(RunError::Overloaded {
            waited_for: what(),
            waited: started.elapsed(),
        }),
    }
}
