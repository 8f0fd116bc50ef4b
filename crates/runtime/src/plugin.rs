//! The engine, plugin loading and runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use crate::bindings::{VerbPlugin, VerbPluginPre};
use crate::config::RuntimeConfig;
use crate::error::{LoadError, RunError, TrapKind};
use crate::host::{
    BoundExceeded, CallHost, PayloadError, State, check_hook, check_payload, classify,
    is_hostcall_fuel_exhausted,
};
use crate::{CallInfo, PluginInfo, Webhook};

/// Imports outside the contract a plugin may have, by interface prefix; the contract's own
/// (`verbhost:plugin/...`) are checked by [`crate::contract::check_import`].
const ALLOWED_IMPORTS: [&str; 3] = ["wasi:io/", "wasi:cli/", "wasi:random/insecure"];

/// One per process: the engine, the linker, the epoch ticker and the limits.
pub struct Runtime<H: CallHost> {
    inner: Arc<Inner<H>>,
}

struct Inner<H: CallHost> {
    engine: Engine,
    allocator: Allocator,
    linker: Linker<State<H>>,
    config: RuntimeConfig,
    slots: Arc<Semaphore>,
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
            inner: self.inner.clone(),
        }
    }
}

impl<H: CallHost> Runtime<H> {
    /// Builds the engine (pooling allocator sized by `config`, epoch interruption on), the
    /// linker, and starts the epoch ticker thread, which stops when the engine is dropped.
    pub fn new(config: RuntimeConfig) -> Result<Self, LoadError> {
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
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| {
                VerbPlugin::add_to_linker::<_, wasmtime::component::HasSelf<State<H>>>(
                    &mut linker,
                    |state| state,
                )
            })
            .map_err(|e| LoadError::Engine(format!("cannot link the host interfaces: {e:#}")))?;
        // Without the ticker the CPU budget would never be enforced: refuse to start.
        spawn_epoch_ticker(&engine, config.epoch_tick)
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        let slots = Arc::new(Semaphore::new(config.max_concurrent_runs as usize));
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                allocator,
                linker,
                config,
                slots,
            }),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// How plugin instances are allocated: pooled, or on demand because the pool could not
    /// be created. Worth showing in metrics and health checks, since it changes what a run
    /// costs.
    pub fn allocator(&self) -> &Allocator {
        &self.inner.allocator
    }

    /// Reads and loads a plugin file. A file larger than [`RuntimeConfig::max_plugin_bytes`]
    /// is refused from its length, without reading it.
    pub async fn load_file(&self, path: &std::path::Path) -> Result<Plugin<H>, LoadError> {
        let read_error = |source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        let limit = self.inner.config.max_plugin_bytes;
        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let len = file.metadata().await.map_err(read_error)?.len();
        if len > limit as u64 {
            return Err(LoadError::TooLarge {
                len: usize::try_from(len).unwrap_or(usize::MAX),
                limit,
            });
        }
        // The file may grow after the check: read at most one byte past the limit, which
        // `load` then refuses.
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(limit));
        file.take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(read_error)?;
        self.load(&bytes).await
    }

    /// Compiles and checks a plugin: size, that it is a component, its imports against the
    /// sandbox's allowlist, its exports against the contract, and a `describe` call under the
    /// run limits. Compilation runs on a blocking thread.
    pub async fn load(&self, bytes: &[u8]) -> Result<Plugin<H>, LoadError> {
        let limit = self.inner.config.max_plugin_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                len: bytes.len(),
                limit,
            });
        }
        let engine = self.inner.engine.clone();
        let owned = bytes.to_vec();
        let component = tokio::task::spawn_blocking(move || compile(&engine, &owned))
            .await
            .map_err(|e| LoadError::NotAComponent(format!("compiler thread failed: {e}")))??;
        check_imports(&self.inner.engine, &component)?;
        check_exports(&self.inner.engine, &component)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(VerbPluginPre::new)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let mut plugin = Plugin {
            runtime: self.clone(),
            pre,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                verbs: Vec::new(),
            },
        };
        plugin.info = plugin.describe().await?;
        Ok(plugin)
    }
}

fn base_config() -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true);
    wasm.wasm_component_model(true);
    wasm
}

fn build_engine(config: &RuntimeConfig) -> wasmtime::Result<Engine> {
    let mut wasm = base_config();
    let runs = config.max_concurrent_runs.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(runs)
        // A Rust wasip2 component instantiates several core instances (main module plus
        // adapter shims): size the core pools at four per component.
        .total_core_instances(runs * 4)
        .total_memories(runs * 2)
        .total_tables(runs * 4)
        .total_stacks(runs)
        .max_memory_size(config.max_memory_bytes)
        .linear_memory_keep_resident(config.memory_keep_resident)
        // Tables are small; zeroing them measured cheaper than faulting them back in.
        .table_keep_resident(64 << 10);
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

fn check_exports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    Ok(crate::contract::check_exports(
        ty.exports(engine).map(|(name, _)| name),
    )?)
}

/// A loaded plugin, ready to run. Cheap to clone; a clone shares the compiled code.
pub struct Plugin<H: CallHost> {
    runtime: Runtime<H>,
    pre: VerbPluginPre<State<H>>,
    info: PluginInfo,
}

impl<H: CallHost> Clone for Plugin<H> {
    fn clone(&self) -> Self {
        Plugin {
            runtime: self.runtime.clone(),
            pre: self.pre.clone(),
            info: self.info.clone(),
        }
    }
}

/// How a run ended, with the host handed back (the mock host reads its recordings from it).
pub struct Run<H> {
    /// The completion, or why there is none.
    pub outcome: Result<Outcome, RunError>,
    /// The call host, as the run left it.
    pub host: H,
    /// The tail of the guest's stdout/stderr.
    pub guest_output: String,
    /// Log bytes dropped because the run wrote more than its limit.
    pub log_dropped: usize,
    /// The guest CPU time charged to the run against [`RuntimeConfig::cpu_budget`].
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

    /// Runs one verb on a call, to completion, in a fresh store.
    pub async fn run(&self, host: H, verb: &str, call: &CallInfo) -> Run<H> {
        let config = &self.runtime.inner.config;
        // The instance holds pool slots until its store is dropped, so the permit lives as
        // long as the store; a run beyond the pool's size waits here instead of failing.
        let _slot = self.runtime.inner.slots.clone().acquire_owned().await;
        let mut store = self.new_store(Some(host));
        let outcome = if verb.len() > config.max_verb_bytes {
            Err(RunError::VerbTooLarge {
                len: verb.len(),
                limit: config.max_verb_bytes,
            })
        } else {
            let limit = config.wall_clock_limit;
            match tokio::time::timeout(limit, self.call_run(&mut store, verb, call)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(RunError::WallClock(limit)),
            }
        };
        store.data_mut().meter.pause();
        let cpu_time = store.data().meter.used();
        let guest_output =
            String::from_utf8_lossy(&store.data().guest_output.contents()).into_owned();
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
            log_dropped,
            cpu_time,
        }
    }

    /// A fresh store with the run limits; `host` is `None` only for the load-time `describe`.
    fn new_store(&self, host: Option<H>) -> Store<State<H>> {
        let inner = &self.runtime.inner;
        let mut store = Store::new(&inner.engine, State::new(host, &inner.config));
        store.limiter(|state| &mut state.limits);
        store.set_hostcall_fuel(hostcall_fuel(&inner.config));
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
        let config = &self.runtime.inner.config;
        let payload = match check_payload(&completion.payload, config.max_payload_bytes) {
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
        let event_ok = !completion.event.is_empty()
            && completion.event.len() <= 128
            && completion
                .event
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !event_ok {
            return Err(RunError::InvalidCompletion(format!(
                "event name {:?} is not 1-128 characters of A-Z a-z 0-9 _ - . :",
                completion.event
            )));
        }
        if let Some(hook) = &completion.action_hook {
            check_hook(hook)
                .map_err(|why| RunError::InvalidCompletion(format!("actionHook: {why}")))?;
        }
        Ok(Outcome {
            event: completion.event,
            payload,
            action_hook: completion.action_hook,
            call_left: completion.call_left,
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
        let _slot = self.runtime.inner.slots.clone().acquire_owned().await;
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
fn hostcall_fuel(config: &RuntimeConfig) -> usize {
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
