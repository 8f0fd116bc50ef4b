//! The engine, plugin loading and runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, ComponentExportIndex, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use crate::bindings::{VerbPlugin, VerbPluginPre};
use crate::cache::{Cache, CacheStats, sha256_hex};
use crate::config::{LimitsError, RunLimits, RuntimeConfig};
use crate::error::{LoadError, RunError, TrapKind};
use crate::host::{
    BoundExceeded, CallHost, PayloadError, State, StoreCounts, check_hook, check_payload, classify,
    is_hostcall_fuel_exhausted,
};
use crate::pool::{PluginNeeds, Pool, Totals};
use crate::{CallInfo, PluginInfo, Webhook};

/// Imports outside the contract a plugin may have, by interface prefix; the contract's own
/// (`verbhost:plugin/...`) are checked by [`crate::contract::check_import`].
const ALLOWED_IMPORTS: [&str; 3] = ["wasi:io/", "wasi:cli/", "wasi:random/insecure"];

/// One per process and call host: the engine, the linker, the epoch ticker, the instance
/// pool, the compiled cache and the limits. Cheap to clone (a clone shares everything).
///
/// [`Runtime::sibling`] makes a runtime for another [`CallHost`] on the same engine, pool and
/// cache, so a [`Compiled`] plugin can be instantiated by both (the server runs a new
/// version's scenarios in the mock host against the very code it is about to serve).
pub struct Runtime<H: CallHost> {
    shared: Arc<Shared>,
    linker: Arc<Linker<State<H>>>,
}

/// What sibling runtimes share.
struct Shared {
    engine: Engine,
    allocator: Allocator,
    config: RuntimeConfig,
    pool: Pool,
    cache: Cache,
}

/// How the engine allocates the memories, tables and stacks of plugin instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocator {
    /// wasmtime's pooling allocator: address space for `slots` concurrent runs is reserved
    /// up front and reused, which is what makes a run cost microseconds.
    Pooling {
        /// Runs that can be instantiated at once ([`RuntimeConfig::max_concurrent_runs`]).
        slots: u32,
    },
    /// Every instance is allocated on demand (mmap per run, slower), because the pool could
    /// not be created; the runtime logged this at warn when it started.
    OnDemand {
        /// Why the pool could not be created, in wasmtime's words.
        reason: String,
    },
}

impl std::fmt::Display for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pooling { slots } => write!(f, "pooling ({slots} slots)"),
            Self::OnDemand { reason } => write!(f, "on-demand (no pool: {reason})"),
        }
    }
}

impl<H: CallHost> Clone for Runtime<H> {
    fn clone(&self) -> Self {
        Runtime {
            shared: self.shared.clone(),
            linker: self.linker.clone(),
        }
    }
}

/// A compiled plugin, not yet checked against a host: what [`Runtime::compile`] makes and
/// [`Runtime::instantiate`] (of this runtime or a sibling) turns into a [`Plugin`]. Cheap to
/// clone; clones share the code.
#[derive(Clone)]
pub struct Compiled {
    inner: Arc<CompiledInner>,
}

struct CompiledInner {
    component: Component,
    sha256: String,
    len: usize,
    from_cache: bool,
    needs: PluginNeeds,
}

impl Compiled {
    /// The sha256 of the wasm bytes, in lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// The size of the wasm bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// True for an empty file (which never compiles, so never true in practice; here for
    /// the `len`/`is_empty` pair).
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// True when the code came from the compiled cache instead of the compiler.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// What one instance takes from the instance pool.
    pub fn needs(&self) -> PluginNeeds {
        self.inner.needs
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("sha256", &self.inner.sha256)
            .field("len", &self.inner.len)
            .field("from_cache", &self.inner.from_cache)
            .field("needs", &self.inner.needs)
            .finish()
    }
}

impl<H: CallHost> Runtime<H> {
    /// Builds the engine (pooling allocator sized by `config`, epoch interruption on), the
    /// linker and the cache, and starts the epoch ticker thread, which stops when the engine
    /// is dropped. Fails when `config.run` does not fit the engine.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
        config.run.check(&config)?;
        let (engine, allocator) = match build_engine(&config) {
            Ok(engine) => (
                engine,
                Allocator::Pooling {
                    slots: config.max_concurrent_runs.max(1),
                },
            ),
            Err(pooled) => {
                // Some sandboxes refuse the pool's address-space reservation; run without it,
                // loudly, since every figure of a run's cost changes.
                let reason = format!("{pooled:#}");
                let engine = build_engine_on_demand().map_err(|_| {
                    LoadError::Engine(format!("cannot build the wasm engine: {reason}"))
                })?;
                tracing::warn!(
                    reason = %reason,
                    slots = config.max_concurrent_runs,
                    "the pooling allocator could not be created; plugin instances are allocated on demand, which makes every run slower"
                );
                (engine, Allocator::OnDemand { reason })
            }
        };
        let linker = Arc::new(build_linker(&engine)?);
        // Without the ticker the CPU budget would never be enforced: refuse to start.
        spawn_epoch_ticker(&engine, config.epoch_tick)
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        let cache = Cache::new(config.cache_dir.clone(), &engine);
        let pool = Pool::new(&config);
        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                allocator,
                config,
                pool,
                cache,
            }),
            linker,
        })
    }

    /// A runtime for another call host on this one's engine, epoch ticker, config, instance
    /// pool and compiled cache, with its own linker. A [`Compiled`] from either instantiates
    /// in both, and their runs share the pool's capacity.
    pub fn sibling<H2: CallHost>(&self) -> Result<Runtime<H2>, LoadError> {
        Ok(Runtime {
            shared: self.shared.clone(),
            linker: Arc::new(build_linker(&self.shared.engine)?),
        })
    }

    /// The engine settings and default run limits in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// How plugin instances are allocated: pooled, or on demand because the pool could not
    /// be created. Worth showing in metrics and health checks, since it changes what a run
    /// costs.
    pub fn allocator(&self) -> &Allocator {
        &self.shared.allocator
    }

    /// What the compiled cache did so far (shared with sibling runtimes), for metrics.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// Runs (and load-time `describe` calls) of every plugin of this runtime and its
    /// siblings that ended [`RunError::Overloaded`]: waited `slot_wait_ms` for room and were
    /// not started. For a metric.
    pub fn overloaded_runs(&self) -> u64 {
        self.shared.pool.overloaded()
    }

    /// The engine's part of cache entry names: a hex digest of wasmtime's
    /// `precompile_compatibility_hash`, the same in every process of the same build and
    /// config.
    pub fn engine_hash(&self) -> &str {
        self.shared.cache.engine_hash()
    }

    /// Reads and loads a plugin file ([`Runtime::compile_file`], then
    /// [`Runtime::instantiate`]).
    pub async fn load_file(&self, path: &std::path::Path) -> Result<Plugin<H>, LoadError> {
        let compiled = self.compile_file(path).await?;
        self.instantiate(&compiled).await
    }

    /// Reads and compiles a plugin file ([`Runtime::read_file`], then [`Runtime::compile`]).
    pub async fn compile_file(&self, path: &std::path::Path) -> Result<Compiled, LoadError> {
        let bytes = self.read_file(path).await?;
        self.compile(&bytes).await
    }

    /// Reads a plugin file, at most [`RuntimeConfig::max_plugin_bytes`]: a larger file is
    /// refused from its length, without reading it, and one that grows while it is read is
    /// refused after one byte past the limit.
    pub async fn read_file(&self, path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
        let read_error = |source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        let limit = self.shared.config.max_plugin_bytes;
        let too_large = |len: u64| LoadError::TooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            limit,
        };
        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let len = file.metadata().await.map_err(read_error)?.len();
        if len > limit as u64 {
            return Err(too_large(len));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(limit));
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(read_error)?;
        if bytes.len() > limit {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Compiles and checks a plugin ([`Runtime::compile`], then [`Runtime::instantiate`]).
    pub async fn load(&self, bytes: &[u8]) -> Result<Plugin<H>, LoadError> {
        let compiled = self.compile(bytes).await?;
        self.instantiate(&compiled).await
    }

    /// Compiles a plugin, on a blocking thread (never a tokio worker): checks its size and
    /// that it is a component, takes its sha256, loads it from the compiled cache or compiles
    /// it (and fills the cache), measures what one instance takes from the pool and refuses it
    /// when that could never fit ([`LoadError::TooHeavy`]).
    pub async fn compile(&self, bytes: &[u8]) -> Result<Compiled, LoadError> {
        let limit = self.shared.config.max_plugin_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                len: bytes.len(),
                limit,
            });
        }
        let shared = self.shared.clone();
        let owned = bytes.to_vec();
        let compiled = tokio::task::spawn_blocking(move || compile_blocking(&shared, &owned))
            .await
            .map_err(|e| LoadError::NotAComponent(format!("compiler thread failed: {e}")))??;
        Ok(compiled)
    }

    /// Turns a compiled plugin into a runnable one for this runtime's call host: checks its
    /// imports against the sandbox's allowlist and its exports against the contract, links
    /// it, and calls `describe` under the default run limits. `compiled` must come from this
    /// runtime or a sibling.
    pub async fn instantiate(&self, compiled: &Compiled) -> Result<Plugin<H>, LoadError> {
        let component = &compiled.inner.component;
        if !Engine::same(component.engine(), &self.shared.engine) {
            return Err(LoadError::Engine(
                "the plugin was compiled by another runtime's engine; compile it with this runtime or a sibling".into(),
            ));
        }
        check_imports(&self.shared.engine, component)?;
        check_exports(&self.shared.engine, component)?;
        let pre = self
            .linker
            .instantiate_pre(component)
            .and_then(VerbPluginPre::new)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let check = find_check_export(&self.shared.engine, component);
        let mut plugin = Plugin {
            runtime: self.clone(),
            pre,
            check,
            compiled: compiled.clone(),
            limits: Arc::new(self.shared.config.run.clone()),
            runs: None,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                verbs: Vec::new(),
            },
        };
        plugin.info = plugin.describe().await?;
        if plugin.check.is_none() {
            tracing::info!(
                plugin = %plugin.info.name,
                version = %plugin.info.version,
                verbs = %plugin.info.verbs.join(","),
                "the plugin exports no verbhost:plugin/verb-check (built before contract 0.1.1): \
                 applications are checked only for a plugin per verb and their hook URLs, and \
                 its own verb errors show when a verb runs"
            );
        }
        Ok(plugin)
    }
}

/// The compile half of [`Runtime::compile`], on the blocking thread.
fn compile_blocking(shared: &Shared, bytes: &[u8]) -> Result<Compiled, LoadError> {
    let sha256 = sha256_hex(bytes);
    let (component, from_cache) = shared
        .cache
        .get_or_compile(&shared.engine, &sha256, || compile(&shared.engine, bytes))?;
    let needs = PluginNeeds::measure(bytes, &component)?;
    shared.pool.check_fits(&needs)?;
    Ok(Compiled {
        inner: Arc::new(CompiledInner {
            component,
            sha256,
            len: bytes.len(),
            from_cache,
            needs,
        }),
    })
}

fn build_linker<H: CallHost>(engine: &Engine) -> Result<Linker<State<H>>, LoadError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| {
            VerbPlugin::add_to_linker::<_, wasmtime::component::HasSelf<State<H>>>(
                &mut linker,
                |state| state,
            )
        })
        .map_err(|e| LoadError::Engine(format!("cannot link the host interfaces: {e:#}")))?;
    Ok(linker)
}

fn base_config() -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    wasm.wasm_component_model(true);
    wasm
}

fn build_engine(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut wasm = base_config();
    let totals = Totals::of(config);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(totals.components)
        .total_core_instances(totals.core_instances)
        .total_memories(totals.memories)
        .total_tables(totals.tables)
        .total_stacks(totals.components)
        .max_memory_size(config.pool_memory_bytes)
        .linear_memory_keep_resident(config.memory_keep_resident)
        // Tables are small; zeroing them measured cheaper than faulting them back in.
        .table_keep_resident(64 << 10)
        // Reset only the pages a run dirtied, where the kernel can say which (Linux 6.7+):
        // see `RuntimeConfig::memory_keep_resident`.
        .pagemap_scan(wasmtime::Enabled::Auto);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm)
}

fn build_engine_on_demand() -> wasmtime::Result<Engine> {
    Engine::new(&base_config())
}

/// Increments the engine's epoch every `tick` until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("verbhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(drop)
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    if bytes.starts_with(b"\0asm\x01\0\0\0") {
        return Err(LoadError::NotAComponent(
            "this is a core WebAssembly module; build the plugin for wasm32-wasip2, which produces a component".into(),
        ));
    }
    if !bytes.starts_with(b"\0asm") {
        // wasmparser would answer with a dump of the four bytes it expected and found.
        return Err(LoadError::NotAComponent(format!(
            "the file does not start with the WebAssembly magic bytes (\\0asm) but with {:?}: it is not WebAssembly",
            String::from_utf8_lossy(&bytes[..bytes.len().min(8)])
        )));
    }
    Component::new(engine, bytes).map_err(|e| LoadError::NotAComponent(format!("{e:#}")))
}

fn check_imports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    for (name, item) in component.component_type().imports(engine) {
        if crate::contract::is_contract_name(name) {
            crate::contract::check_import(engine, name, &item.ty)?;
            continue;
        }
        if ALLOWED_IMPORTS
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            continue;
        }
        let why = if name.starts_with("wasi:clocks/") {
            "there is no clock in the sandbox; use verbhost:plugin/host.clock-ms"
        } else if name.starts_with("wasi:filesystem/") {
            "plugins get no file system"
        } else if name.starts_with("wasi:sockets/") || name.starts_with("wasi:http/") {
            "plugins get no network; the host owns SIP and webhooks"
        } else if name.starts_with("wasi:random/") {
            "only wasi:random/insecure and insecure-seed are granted"
        } else {
            "it is not part of the plugin contract"
        };
        return Err(LoadError::ForbiddenImport {
            import: name.to_owned(),
            why,
        });
    }
    Ok(())
}

/// The `check` function of the plugin's `verbhost:plugin/verb-check` export (since 0.1.1), in a
/// supported track; `None` when the plugin does not export it (built for 0.1.0, or without
/// the SDK).
fn find_check_export(engine: &Engine, component: &Component) -> Option<ComponentExportIndex> {
    let ty = component.component_type();
    let name = ty.exports(engine).map(|(name, _)| name).find(|name| {
        matches!(
            crate::contract::parse_name(name),
            Some(Ok(("verb-check", version))) if crate::contract::SUPPORTED
                .iter()
                .any(|track| track.implemented.same_track(version))
        )
    })?;
    let interface = component.get_export_index(None, name)?;
    component.get_export_index(Some(&interface), "check")
}

fn check_exports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    Ok(crate::contract::check_exports(
        ty.exports(engine).map(|(name, _)| name),
    )?)
}

/// A loaded plugin, ready to run: linked for one call host, described, and bound by its
/// [`RunLimits`] (the runtime's defaults unless [`Plugin::with_limits`] gave it its own).
/// Cheap to clone; a clone shares the compiled code, the limits and the count of runs
/// that `max_concurrent_runs` bounds.
pub struct Plugin<H: CallHost> {
    runtime: Runtime<H>,
    pre: VerbPluginPre<State<H>>,
    /// The `verb-check` export's `check`, when the plugin has one.
    check: Option<ComponentExportIndex>,
    compiled: Compiled,
    limits: Arc<RunLimits>,
    /// Permits for [`RunLimits::max_concurrent_runs`], when set.
    runs: Option<Arc<Semaphore>>,
    info: PluginInfo,
}

impl<H: CallHost> Clone for Plugin<H> {
    fn clone(&self) -> Self {
        Plugin {
            runtime: self.runtime.clone(),
            pre: self.pre.clone(),
            check: self.check,
            compiled: self.compiled.clone(),
            limits: self.limits.clone(),
            runs: self.runs.clone(),
            info: self.info.clone(),
        }
    }
}

/// A run's room: its permit under the plugin's `max_concurrent_runs` and in the pool.
struct Admission {
    _own: Option<tokio::sync::OwnedSemaphorePermit>,
    _pool: crate::pool::PoolPermit,
}

/// How a run ended, with the host handed back (the mock host reads its recordings from it).
pub struct Run<H> {
    /// The completion, or why there is none.
    pub outcome: Result<Outcome, RunError>,
    /// The call host, as the run left it.
    pub host: H,
    /// The tail of the guest's stdout and stderr (one stream, in the order written): at most
    /// [`RunLimits::max_guest_output_bytes`] bytes, the last ones written.
    pub guest_output: String,
    /// Bytes of guest stdout/stderr written but not in [`Run::guest_output`]: pushed out of
    /// the tail by later output. The guest's writes are never refused.
    pub guest_output_dropped: usize,
    /// Log bytes dropped because the run wrote more than its limit.
    pub log_dropped: usize,
    /// The guest CPU time charged to the run against [`RunLimits::cpu_ms`].
    pub cpu_time: Duration,
}

/// A verb's completion, checked by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The outcome's event name, e.g. `TRANSFER_REFER_SUCCESS`.
    pub event: String,
    /// The actionHook payload.
    pub payload: Map<String, Value>,
    /// Where the payload goes; none when the verb has no actionHook.
    pub action_hook: Option<Webhook>,
    /// True when the call leg has left the platform.
    pub call_left: bool,
}

impl<H: CallHost> Plugin<H> {
    /// What the plugin said about itself at load.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The compiled code this plugin runs (its sha256, size, pool needs).
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The bounds of each run.
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// The same plugin under other run limits, checked against the engine (memory above the
    /// pool's is refused). The new plugin has its own count of concurrent runs; the original
    /// keeps its limits.
    pub fn with_limits(&self, limits: RunLimits) -> Result<Plugin<H>, LimitsError> {
        limits.check(&self.runtime.shared.config)?;
        Ok(Plugin {
            runtime: self.runtime.clone(),
            pre: self.pre.clone(),
            check: self.check,
            compiled: self.compiled.clone(),
            runs: limits
                .max_concurrent_runs
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            limits: Arc::new(limits),
            info: self.info.clone(),
        })
    }

    /// Waits for room for one run: under the plugin's own `max_concurrent_runs`, then in the
    /// instance pool, at most [`RunLimits::slot_wait_ms`] in all. The permits live as long as
    /// the run's store, which holds the pool's slots until it is dropped.
    async fn admit(&self) -> Result<Admission, RunError> {
        let admitted = self.try_admit().await;
        if admitted.is_err() {
            self.runtime.shared.pool.count_overloaded();
        }
        admitted
    }

    async fn try_admit(&self) -> Result<Admission, RunError> {
        let wait = self.limits.slot_wait();
        let started = std::time::Instant::now();
        let own = match &self.runs {
            Some(runs) => Some(
                crate::pool::take(runs, 1, started, started + wait, || {
                    format!(
                        "one of this plugin's {} concurrent runs (max_concurrent_runs)",
                        self.limits.max_concurrent_runs.unwrap_or_default()
                    )
                })
                .await?,
            ),
            None => None,
        };
        let left = wait.saturating_sub(started.elapsed());
        let pool = self
            .runtime
            .shared
            .pool
            .acquire(&self.compiled.inner.needs, left)
            .await
            .map_err(|err| match err {
                RunError::Overloaded { waited_for, .. } => RunError::Overloaded {
                    waited_for,
                    waited: started.elapsed(),
                },
                other => other,
            })?;
        Ok(Admission {
            _own: own,
            _pool: pool,
        })
    }

    /// Runs one verb on a call, to completion, in a fresh store. A run that finds no room
    /// within `slot_wait_ms` ends with [`RunError::Overloaded`] without entering the plugin.
    pub async fn run(&self, host: H, verb: &str, call: &CallInfo) -> Run<H> {
        let config = &*self.limits;
        let _admission = match self.admit().await {
            Ok(admission) => admission,
            Err(err) => {
                return Run {
                    outcome: Err(err),
                    host,
                    guest_output: String::new(),
                    guest_output_dropped: 0,
                    log_dropped: 0,
                    cpu_time: Duration::ZERO,
                };
            }
        };
        let mut store = self.new_store(Some(host));
        let outcome = if verb.len() > config.max_verb_bytes {
            Err(RunError::VerbTooLarge {
                len: verb.len(),
                limit: config.max_verb_bytes,
            })
        } else {
            let limit = config.wall_clock_limit();
            match tokio::time::timeout(limit, self.call_run(&mut store, verb, call)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(RunError::WallClock(limit)),
            }
        };
        store.data_mut().meter.pause();
        let cpu_time = store.data().meter.used();
        let (guest_output, guest_output_dropped) = store.data().guest_output.text();
        let log_dropped = store.data().log_dropped();
        let outcome = outcome.map_err(|err| match err {
            RunError::Trap {
                kind,
                message,
                guest_output: _,
            } => RunError::Trap {
                kind,
                message,
                guest_output: guest_output.clone(),
            },
            other => other,
        });
        // Invariant: the store was created above with `Some(host)` and nothing takes it out.
        let host = store
            .into_data()
            .host
            .expect("a run's store holds its host");
        Run {
            outcome,
            host,
            guest_output,
            guest_output_dropped,
            log_dropped,
            cpu_time,
        }
    }

    /// True when the plugin exports `verbhost:plugin/verb-check` (contract 0.1.1, which the
    /// SDK builds), so [`Plugin::check`] asks the plugin itself. A plugin built for 0.1.0 does
    /// not; its verbs can be checked only for what the host knows (a plugin for the name, hook
    /// URLs).
    pub fn can_check(&self) -> bool {
        self.check.is_some()
    }

    /// Checks one verb without running it: the plugin's `check` (the `verb-check` export)
    /// reads it as `run` would and says what `run` would refuse it with. It runs in a fresh
    /// store under the same bounds as a run (room in the pool, `max_verb_bytes`, CPU, memory,
    /// wall clock) and with no call: a plugin that calls the host while checking traps.
    ///
    /// `Ok(())` when the plugin accepts the verb, and also when it has no `check` export
    /// ([`Plugin::can_check`] tells them apart; only the size bound applies then). A refusal
    /// is [`RunError::Verb`]; a trap or an exceeded bound is the [`RunError`] a run would end
    /// with.
    pub async fn check(&self, verb: &str) -> Result<(), RunError> {
        let config = &*self.limits;
        if verb.len() > config.max_verb_bytes {
            return Err(RunError::VerbTooLarge {
                len: verb.len(),
                limit: config.max_verb_bytes,
            });
        }
        let Some(check) = self.check else {
            return Ok(());
        };
        let _admission = self.admit().await?;
        let mut store = self.new_store(None);
        let limit = config.wall_clock_limit();
        let outcome =
            match tokio::time::timeout(limit, self.call_check(&mut store, &check, verb)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(RunError::WallClock(limit)),
            };
        outcome.map_err(|err| match err {
            RunError::Trap { kind, message, .. } => RunError::Trap {
                kind,
                message,
                guest_output: store.data().guest_output.text().0,
            },
            other => other,
        })
    }

    async fn call_check(
        &self,
        store: &mut Store<State<H>>,
        check: &ComponentExportIndex,
        verb: &str,
    ) -> Result<(), RunError> {
        let instance = self
            .pre
            .instance_pre()
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| RunError::Instantiate(format!("{e:#}")))?;
        let func = instance
            .get_typed_func::<(&str,), (Result<(), crate::VerbError>,)>(&mut *store, check)
            .map_err(|e| {
                RunError::Instantiate(format!(
                    "the plugin's verbhost:plugin/verb-check export does not fit the contract: {e:#}"
                ))
            })?;
        store.data_mut().meter.start();
        let (result,) = func
            .call_async(&mut *store, (verb,))
            .await
            .map_err(|err| trap(err, store))?;
        store.data_mut().meter.pause();
        result.map_err(RunError::Verb)
    }

    /// A fresh store with the run limits; `host` is `None` for the load-time `describe` and
    /// for [`Plugin::check`], which may not call the host.
    fn new_store(&self, host: Option<H>) -> Store<State<H>> {
        let shared = &self.runtime.shared;
        let most = shared.pool.per_plugin();
        let counts = StoreCounts {
            instances: most.core_instances,
            memories: most.memories,
            tables: most.tables,
        };
        let state = State::new(host, &self.limits, counts, shared.config.epoch_tick);
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_hostcall_fuel(hostcall_fuel(&self.limits));
        // Checked every tick while wasm runs: trap once the guest's own CPU time is spent,
        // otherwise yield to the executor so one busy guest never starves the others. The
        // yield reopens the meter's segment on the thread that resumes the guest.
        store.epoch_deadline_callback(|mut ctx| {
            let meter = &mut ctx.data_mut().meter;
            meter.tick();
            if meter.over_budget() {
                return Err(wasmtime::Error::new(BoundExceeded {
                    kind: TrapKind::CpuBudget,
                    what: format!(
                        "guest used {:?} of CPU, more than its budget of {:?}",
                        meter.used(),
                        meter.budget()
                    ),
                }));
            }
            Ok(UpdateDeadline::YieldCustom(1, meter.yield_now()))
        });
        store.set_epoch_deadline(1);
        store
    }

    async fn call_run(
        &self,
        store: &mut Store<State<H>>,
        verb: &str,
        call: &CallInfo,
    ) -> Result<Outcome, RunError> {
        let instance = self.instantiate(store).await?;
        store.data_mut().meter.start();
        let result = instance
            .verbhost_plugin_verb()
            .call_run(&mut *store, verb, call)
            .await
            .map_err(|err| trap(err, store))?;
        let completion = result.map_err(RunError::Verb)?;
        self.check_completion(
            completion.event,
            &completion.payload,
            completion.action_hook,
            completion.call_left,
        )
    }

    /// The checks a run's completion meets before the host acts on it (the payload's size and
    /// form, the event's name, the actionHook): for this plugin's wasm runs, and for a native
    /// run of the same plugin ([`crate::native`]), which must meet the same ones.
    pub fn check_completion(
        &self,
        event: String,
        payload: &str,
        action_hook: Option<Webhook>,
        call_left: bool,
    ) -> Result<Outcome, RunError> {
        let payload = match check_payload(payload, self.limits.max_payload_bytes) {
            Ok(payload) => payload,
            Err(PayloadError::TooLarge(limit)) => {
                return Err(RunError::InvalidCompletion(format!(
                    "payload is larger than {limit} bytes"
                )));
            }
            Err(PayloadError::Invalid(why)) => {
                return Err(RunError::InvalidCompletion(format!("payload: {why}")));
            }
        };
        let event_ok = !event.is_empty()
            && event.len() <= 128
            && event
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !event_ok {
            return Err(RunError::InvalidCompletion(format!(
                "event name {event:?} is not 1-128 characters of A-Z a-z 0-9 _ - . :"
            )));
        }
        if let Some(hook) = &action_hook {
            check_hook(hook)
                .map_err(|why| RunError::InvalidCompletion(format!("actionHook: {why}")))?;
        }
        Ok(Outcome {
            event,
            payload,
            action_hook,
            call_left,
        })
    }

    async fn instantiate(&self, store: &mut Store<State<H>>) -> Result<VerbPlugin, RunError> {
        let instance = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| RunError::Instantiate(format!("{e:#}")))?;
        Ok(instance)
    }

    async fn describe(&self) -> Result<PluginInfo, LoadError> {
        let _admission = self
            .admit()
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        let mut store = self.new_store(None);
        let instance = self
            .instantiate(&mut store)
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?;
        store.data_mut().meter.start();
        let info = instance
            .verbhost_plugin_verb()
            .call_describe(&mut store)
            .await
            .map_err(|e| LoadError::Describe(trap(e, &store).to_string()))?;
        if info.name.trim().is_empty()
            || info.verbs.is_empty()
            || info.verbs.iter().any(|v| v.trim().is_empty())
        {
            return Err(LoadError::Describe(format!(
                "describe() must give a name and at least one verb name, got {info:?}"
            )));
        }
        Ok(info)
    }
}

/// The most bytes a guest may pass the host in one call: the largest payload or verb, plus
/// room for the call's other arguments.
fn hostcall_fuel(config: &RunLimits) -> usize {
    config.max_payload_bytes.max(config.max_verb_bytes) + (64 << 10)
}

/// Turns a wasmtime error from a guest call into a [`RunError::Trap`].
fn trap<H: CallHost>(err: wasmtime::Error, store: &Store<State<H>>) -> RunError {
    let kind = classify(&err, store.data().limits.memory_refused);
    let message = if is_hostcall_fuel_exhausted(&err) {
        format!(
            "the guest passed more than {} bytes to the host in one call: {err:#}",
            store.hostcall_fuel()
        )
    } else {
        format!("{err:#}")
    };
    RunError::Trap {
        kind,
        message,
        guest_output: String::new(),
    }
}
