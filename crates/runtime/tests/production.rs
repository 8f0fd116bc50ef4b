//! The runtime's production API with the real guests: compile once and instantiate in two
//! hosts, the compiled cache on disk, the pool's weighted capacity, per-plugin run limits
//! and the registry's hot swap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};
use verbhost_runtime::{
    CallHost, CallInfo, Direction, Identity, Level, LimitsError, LoadError, NotifyError, Origin,
    Plugin, ReferError, ReferEvent, ReferRequest, ReferResponse, Registry, RollbackError, RunError,
    RunLimits, Runtime, RuntimeConfig, TrapKind, Webhook,
};

const TRANSFER: &str = r#"{"verb":"sip:refer","referTo":"sip:carol@127.0.0.1"}"#;

/// A hang guard for waits that should end at once.
const GUARD: Duration = Duration::from_secs(20);

fn call_info() -> CallInfo {
    CallInfo {
        call_sid: "sid".into(),
        sip_call_id: "cid@127.0.0.1".into(),
        direction: Direction::Inbound,
        from: "<sip:alice@127.0.0.1>;tag=1".into(),
        to: "<sip:verbhost@127.0.0.1>;tag=2".into(),
        remote_party: Identity {
            display_name: None,
            uri: "sip:alice@127.0.0.1".into(),
        },
        default_domain: "127.0.0.1".into(),
    }
}

/// A call whose REFER is accepted at once and whose final NOTIFY waits for `gate` (when
/// given). It reports on `referred` when the REFER was sent, so a test knows the run is
/// parked in the plugin.
struct GateCall {
    gate: Option<Arc<Notify>>,
    referred: Option<mpsc::UnboundedSender<()>>,
}

impl GateCall {
    fn open() -> GateCall {
        GateCall {
            gate: None,
            referred: None,
        }
    }

    fn gated(gate: &Arc<Notify>, referred: &mpsc::UnboundedSender<()>) -> GateCall {
        GateCall {
            gate: Some(gate.clone()),
            referred: Some(referred.clone()),
        }
    }
}

impl CallHost for GateCall {
    async fn send_refer(&mut self, _request: ReferRequest) -> Result<ReferResponse, ReferError> {
        if let Some(referred) = &self.referred {
            referred.send(()).ok();
        }
        Ok(ReferResponse {
            refer_id: 1,
            status: 202,
            reason: "Accepted".into(),
            headers: Vec::new(),
        })
    }

    async fn on_notify(
        &mut self,
        _refer_id: u32,
        _timeout: Duration,
    ) -> Result<ReferEvent, NotifyError> {
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        Ok(ReferEvent::Notify(verbhost_runtime::notify_from_parts(
            Some("terminated;reason=noresource"),
            Some("message/sipfrag"),
            b"SIP/2.0 200 OK\r\n".to_vec(),
        )))
    }

    fn emit_event(&mut self, _hook: Webhook, _payload: Map<String, Value>) {}

    fn log(&mut self, _level: Level, _message: &str) {}

    fn clock_ms(&mut self) -> u64 {
        0
    }
}

fn runtime(config: RuntimeConfig) -> Runtime<GateCall> {
    Runtime::new(config).expect("the runtime starts")
}

async fn sip_refer(runtime: &Runtime<GateCall>) -> Plugin<GateCall> {
    runtime
        .load(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("sip:refer loads")
}

async fn transfer(plugin: &Plugin<GateCall>, call: GateCall) -> Result<String, RunError> {
    plugin
        .run(call, TRANSFER, &call_info())
        .await
        .outcome
        .map(|outcome| outcome.event)
}

/// A fresh directory under the target dir (no temp-dir crate in the workspace).
fn scratch_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "verbhost-runtime-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn cached(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        max_concurrent_runs: 8,
        cache_dir: Some(dir.to_path_buf()),
        ..RuntimeConfig::default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- 1. Compile once, use from two hosts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_compiled_once_runs_in_the_server_and_in_a_sibling_mock_host() {
    let dir = scratch_dir("sibling");
    let server = runtime(cached(&dir));
    let compiled = server
        .compile(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("compiles");
    assert_eq!(
        compiled.sha256(),
        sha256_hex(verbhost_guests::SIP_REFER_WASM)
    );
    assert_eq!(compiled.len(), verbhost_guests::SIP_REFER_WASM.len());
    assert!(!compiled.from_cache());
    let needs = compiled.needs();
    println!("sip:refer needs {needs:?}");
    assert!(
        needs.core_instances >= 1 && needs.memories >= 1,
        "{needs:?}"
    );

    let mock = verbhost_mock::MockHost::from_runtime(server.sibling().expect("a sibling runtime"));
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/scenarios/sip-refer/accepted-100-180-200.json");
    let in_mock = mock.instantiate(&compiled).await.expect("instantiates");
    let reports = mock.run_files(&in_mock, &[scenarios]).await;
    assert!(!reports.is_empty());
    for report in &reports {
        assert!(report.passed(), "{report}");
    }
    let in_server = server.instantiate(&compiled).await.expect("instantiates");
    assert_eq!(
        transfer(&in_server, GateCall::open()).await.expect("runs"),
        "TRANSFER_REFER_SUCCESS"
    );
    let stats = server.cache_stats();
    assert_eq!(
        (stats.hits, stats.misses),
        (0, 1),
        "compiled once: {stats:?}"
    );
    assert_eq!(
        mock.runtime().cache_stats(),
        stats,
        "the sibling shares the cache"
    );

    // Code compiled by another engine is refused, not instantiated.
    let other = runtime(RuntimeConfig::default());
    match other.instantiate(&compiled).await {
        Err(LoadError::Engine(why)) => assert!(why.contains("another runtime"), "{why}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("instantiated code of another engine"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ---- 2. Compiled cache on disk ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runtime_loads_the_compiled_plugin_from_the_cache() {
    let dir = scratch_dir("warm");
    let cold = runtime(cached(&dir));
    let first = cold
        .compile(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("compiles");
    assert!(!first.from_cache());
    let entry = dir.join(format!("{}-{}.cwasm", first.sha256(), cold.engine_hash()));
    assert!(entry.is_file(), "{} was written", entry.display());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.path() != entry)
        .collect();
    assert!(
        leftovers.is_empty(),
        "only the entry is left: {leftovers:?}"
    );

    let warm = runtime(cached(&dir));
    assert_eq!(warm.engine_hash(), cold.engine_hash());
    let second = warm
        .compile(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("loads");
    assert!(second.from_cache());
    assert_eq!(second.needs(), first.needs());
    let stats = warm.cache_stats();
    assert!(stats.enabled);
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 0, 0));
    let plugin = warm.instantiate(&second).await.expect("instantiates");
    assert_eq!(
        transfer(&plugin, GateCall::open()).await.expect("runs"),
        "TRANSFER_REFER_SUCCESS"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cache_entry_is_a_miss_and_is_rebuilt() {
    let dir = scratch_dir("corrupt");
    let first = runtime(cached(&dir));
    let compiled = first
        .compile(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("compiles");
    let entry = dir.join(format!(
        "{}-{}.cwasm",
        compiled.sha256(),
        first.engine_hash()
    ));
    let good = std::fs::read(&entry).expect("entry");
    let damaged: [(&str, Vec<u8>); 3] = [
        ("garbage", b"this is not a compiled component".repeat(100)),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&entry, &bytes).expect("damage the entry");
        let fresh = runtime(cached(&dir));
        let rebuilt = fresh
            .compile(verbhost_guests::SIP_REFER_WASM)
            .await
            .unwrap_or_else(|e| panic!("{what}: a damaged entry is not an error: {e}"));
        assert!(!rebuilt.from_cache(), "{what}");
        let stats = fresh.cache_stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.errors),
            (0, 1, 1),
            "{what}"
        );
        let plugin = fresh.instantiate(&rebuilt).await.expect("instantiates");
        assert_eq!(
            transfer(&plugin, GateCall::open()).await.expect("runs"),
            "TRANSFER_REFER_SUCCESS"
        );
        // Rebuilt: the next runtime gets a hit again.
        let next = runtime(cached(&dir));
        assert!(
            next.compile(verbhost_guests::SIP_REFER_WASM)
                .await
                .expect("loads")
                .from_cache(),
            "{what}: rebuilt"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_dir_that_cannot_be_created_turns_the_cache_off_and_plugins_still_load() {
    let dir = scratch_dir("unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").expect("file");
    // The tests run as root, so permissions would not stop us: a path under a regular file
    // can never be created.
    let rt = runtime(cached(&file.join("cache")));
    assert!(!rt.cache_stats().enabled);
    let compiled = rt
        .compile(verbhost_guests::SIP_REFER_WASM)
        .await
        .expect("compiles without a cache");
    assert!(!compiled.from_cache());
    let plugin = rt.instantiate(&compiled).await.expect("instantiates");
    assert_eq!(
        transfer(&plugin, GateCall::open()).await.expect("runs"),
        "TRANSFER_REFER_SUCCESS"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Prints the engine hash for [`the_engine_hash_is_the_same_in_another_process`]; does
/// nothing unless that test runs it.
#[test]
fn print_engine_hash_for_the_parent() {
    if std::env::var_os("VERBHOST_PRINT_ENGINE_HASH").is_some() {
        println!(
            "ENGINE_HASH={}",
            runtime(RuntimeConfig::default()).engine_hash()
        );
    }
}

#[test]
fn the_engine_hash_is_the_same_in_another_process() {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "print_engine_hash_for_the_parent", "--nocapture"])
        .env("VERBHOST_PRINT_ENGINE_HASH", "1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let theirs = stdout
        .lines()
        .find_map(|line| line.strip_prefix("ENGINE_HASH="))
        .unwrap_or_else(|| panic!("no hash printed: {stdout}"));
    let ours = runtime(RuntimeConfig::default());
    assert_eq!(theirs, ours.engine_hash());
    assert_eq!(ours.engine_hash().len(), 32);
}

// ---- 3. The pool fits any plugin ----

/// Starts a transfer that parks on its NOTIFY until `gate` opens; returns once the REFER
/// was sent (the run holds its pool room).
async fn parked_transfer(
    plugin: &Plugin<GateCall>,
    gate: &Arc<Notify>,
) -> tokio::task::JoinHandle<Result<String, RunError>> {
    let (referred, mut sent) = mpsc::unbounded_channel();
    let run = {
        let plugin = plugin.clone();
        let call = GateCall::gated(gate, &referred);
        tokio::spawn(async move { transfer(&plugin, call).await })
    };
    tokio::time::timeout(GUARD, sent.recv())
        .await
        .expect("the REFER is sent")
        .expect("sent");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waits_for_core_instances_and_ends_overloaded_after_slot_wait() {
    // Four run slots, but core instances for one sip:refer instance only: the run slots
    // alone would let a second run in, to fail inside wasmtime's pool.
    let rt = runtime(RuntimeConfig {
        max_concurrent_runs: 4,
        pool_core_instances_per_run: 1,
        ..RuntimeConfig::default()
    });
    let plugin = sip_refer(&rt).await;
    assert!(
        plugin.compiled().needs().core_instances > 2,
        "{:?}",
        plugin.compiled().needs()
    );
    let gate = Arc::new(Notify::new());
    let first = parked_transfer(&plugin, &gate).await;
    let second = {
        let plugin = plugin.clone();
        tokio::spawn(async move { transfer(&plugin, GateCall::open()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second run waits for room");

    let impatient = plugin
        .with_limits(RunLimits {
            slot_wait_ms: 50,
            ..RunLimits::default()
        })
        .expect("valid limits");
    match transfer(&impatient, GateCall::open()).await {
        Err(err @ RunError::Overloaded { .. }) => {
            let text = err.to_string();
            assert!(text.contains("core instances"), "{text}");
            assert!(text.contains("slot_wait_ms"), "{text}");
        }
        other => panic!("expected overloaded, got {other:?}"),
    }
    assert_eq!(rt.overloaded_runs(), 1, "the refusal is counted");

    gate.notify_one();
    for run in [first, second] {
        let event = tokio::time::timeout(GUARD, run)
            .await
            .expect("runs end")
            .expect("task ran")
            .expect("the run completes");
        assert_eq!(event, "TRANSFER_REFER_SUCCESS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_sized_for_one_run_serialises_runs_instead_of_failing() {
    let rt = runtime(RuntimeConfig {
        max_concurrent_runs: 1,
        ..RuntimeConfig::default()
    });
    let plugin = sip_refer(&rt).await;
    let gate = Arc::new(Notify::new());
    let first = parked_transfer(&plugin, &gate).await;
    let second = {
        let plugin = plugin.clone();
        tokio::spawn(async move { transfer(&plugin, GateCall::open()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());
    gate.notify_one();
    for run in [first, second] {
        assert_eq!(
            tokio::time::timeout(GUARD, run)
                .await
                .expect("runs end")
                .expect("task ran")
                .expect("completes"),
            "TRANSFER_REFER_SUCCESS"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_pool_holds_max_concurrent_runs_sip_refer_runs_at_once() {
    let rt = runtime(RuntimeConfig::default());
    let plugin = sip_refer(&rt).await;
    let runs = rt.config().max_concurrent_runs as usize;
    let gate = Arc::new(Notify::new());
    let (referred, mut sent) = mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..runs)
        .map(|_| {
            let plugin = plugin.clone();
            let call = GateCall::gated(&gate, &referred);
            tokio::spawn(async move { transfer(&plugin, call).await })
        })
        .collect();
    // Every run sent its REFER, so every one is instantiated at the same time.
    for _ in 0..runs {
        tokio::time::timeout(GUARD, sent.recv())
            .await
            .expect("all runs are in at once")
            .expect("sent");
    }
    // `notify_waiters` wakes only runs already waiting for their NOTIFY: repeat it until
    // every run is done.
    let opener = {
        let gate = gate.clone();
        tokio::spawn(async move {
            loop {
                gate.notify_waiters();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for task in tasks {
        assert_eq!(
            tokio::time::timeout(GUARD, task)
                .await
                .expect("ends")
                .expect("task ran")
                .expect("completes"),
            "TRANSFER_REFER_SUCCESS"
        );
    }
    opener.abort();
}

#[tokio::test]
async fn a_plugin_that_needs_more_than_one_plugin_may_have_is_refused_at_load() {
    let rt = runtime(RuntimeConfig {
        max_core_instances_per_plugin: 1,
        ..RuntimeConfig::default()
    });
    match rt.compile(verbhost_guests::SIP_REFER_WASM).await {
        Err(err @ LoadError::TooHeavy { .. }) => {
            let text = err.to_string();
            assert!(text.contains("core instances"), "{text}");
            assert!(text.contains("limit of 1"), "{text}");
            assert!(text.contains("max_core_instances_per_plugin"), "{text}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("loaded a plugin that does not fit"),
    }
    // A pool whose total is the bound names the pool's keys instead.
    let rt = runtime(RuntimeConfig {
        max_concurrent_runs: 1,
        pool_memories_per_run: 1,
        pool_core_instances_per_run: 1,
        ..RuntimeConfig::default()
    });
    match rt.compile(verbhost_guests::SIP_REFER_WASM).await {
        Err(err @ LoadError::TooHeavy { .. }) => {
            let text = err.to_string();
            assert!(text.contains("pool_core_instances_per_run"), "{text}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("loaded a plugin that does not fit"),
    }
}

// ---- 4. Per-plugin run limits ----

#[tokio::test]
async fn more_refers_than_max_refers_end_the_run_with_a_refer_trap() {
    let rt = runtime(RuntimeConfig::default());
    let plugin = sip_refer(&rt)
        .await
        .with_limits(RunLimits {
            max_refers: 0,
            ..RunLimits::default()
        })
        .expect("valid limits");
    match transfer(&plugin, GateCall::open()).await {
        Err(err @ RunError::Trap { kind, .. }) => {
            assert_eq!(kind, TrapKind::Refers);
            let text = err.to_string();
            assert!(text.contains("more than 0 send-refer calls"), "{text}");
            assert!(text.contains("max_refers"), "{text}");
        }
        other => panic!("expected a refer trap, got {other:?}"),
    }
    // The default allows the plugin's one REFER.
    let plugin = sip_refer(&rt).await;
    assert_eq!(plugin.limits().max_refers, 10);
    assert_eq!(
        transfer(&plugin, GateCall::open()).await.expect("runs"),
        "TRANSFER_REFER_SUCCESS"
    );
}

#[tokio::test]
async fn a_plugin_s_own_limits_apply_to_its_runs_only() {
    let rt = Runtime::<GateCall>::new(RuntimeConfig::default()).expect("runtime");
    let misbehave = rt
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("loads");
    let tight = misbehave
        .with_limits(RunLimits {
            cpu_ms: 20,
            ..RunLimits::default()
        })
        .expect("valid limits");
    let verb = json!({ "verb": "misbehave", "mode": "loop" }).to_string();
    let run = tight.run(GateCall::open(), &verb, &call_info()).await;
    match run.outcome {
        Err(err @ RunError::Trap { kind, .. }) => {
            assert_eq!(kind, TrapKind::CpuBudget);
            assert!(err.to_string().contains("budget of 20ms"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    let run = misbehave.run(GateCall::open(), &verb, &call_info()).await;
    match run.outcome {
        Err(err @ RunError::Trap { .. }) => {
            assert!(err.to_string().contains("budget of 100ms"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    match misbehave.with_limits(RunLimits {
        max_memory_bytes: rt.config().pool_memory_bytes * 2,
        ..RunLimits::default()
    }) {
        Err(err @ LimitsError::MemoryAbovePool { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains(&format!("{}", rt.config().pool_memory_bytes)),
                "{text}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("memory above the pool's was accepted"),
    }
    // Bad defaults refuse to start the runtime, naming the cause.
    match Runtime::<GateCall>::new(RuntimeConfig {
        run: RunLimits {
            max_memory_bytes: usize::MAX,
            ..RunLimits::default()
        },
        ..RuntimeConfig::default()
    }) {
        Err(LoadError::Limits(LimitsError::MemoryAbovePool { .. })) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started with memory above the pool's"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_s_max_concurrent_runs_makes_its_runs_wait() {
    let rt = runtime(RuntimeConfig::default());
    let plugin = sip_refer(&rt)
        .await
        .with_limits(RunLimits {
            max_concurrent_runs: Some(1),
            slot_wait_ms: 200,
            ..RunLimits::default()
        })
        .expect("valid limits");
    let gate = Arc::new(Notify::new());
    let first = parked_transfer(&plugin, &gate).await;
    match transfer(&plugin, GateCall::open()).await {
        Err(err @ RunError::Overloaded { .. }) => {
            let text = err.to_string();
            assert!(text.contains("max_concurrent_runs"), "{text}");
        }
        other => panic!("expected overloaded, got {other:?}"),
    }
    assert_eq!(rt.overloaded_runs(), 1, "the refusal is counted");
    // The pool has room: the same plugin without its own bound runs at once.
    let unbounded = sip_refer(&rt).await;
    assert_eq!(
        transfer(&unbounded, GateCall::open()).await.expect("runs"),
        "TRANSFER_REFER_SUCCESS"
    );
    gate.notify_one();
    assert_eq!(
        tokio::time::timeout(GUARD, first)
            .await
            .expect("ends")
            .expect("task ran")
            .expect("completes"),
        "TRANSFER_REFER_SUCCESS"
    );
}

// ---- 5. The registry ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_leaves_a_running_verb_on_its_version_and_frees_it_when_the_run_ends() {
    fn shared_across_tasks<T: Send + Sync>(_: &T) {}
    let rt = runtime(RuntimeConfig::default());
    let registry = Registry::<GateCall>::new();
    shared_across_tasks(&registry);
    registry.install(sip_refer(&rt).await, Origin::Upload);
    let old = registry.get("sip:refer").expect("installed");
    let old_weak: Weak<_> = Arc::downgrade(&old);

    // A call takes the version once and parks on its NOTIFY.
    let gate = Arc::new(Notify::new());
    let (referred, mut sent) = mpsc::unbounded_channel();
    let running = {
        let version = old.clone();
        let call = GateCall::gated(&gate, &referred);
        tokio::spawn(async move { version.run(call, TRANSFER, &call_info()).await.outcome })
    };
    drop(old);
    tokio::time::timeout(GUARD, sent.recv())
        .await
        .expect("REFER sent")
        .expect("sent");

    // Two swaps: the old version falls out of the previous slot, and only the run holds it.
    let swaps = registry.install(sip_refer(&rt).await, Origin::Upload);
    assert_eq!(swaps.len(), 1);
    assert_eq!(swaps[0].verb, "sip:refer");
    assert!(swaps[0].from.is_some() && swaps[0].to.is_some());
    let second = registry.get("sip:refer").expect("installed");
    registry.install(sip_refer(&rt).await, Origin::Upload);
    let third = registry.get("sip:refer").expect("installed");
    assert!(!Arc::ptr_eq(&second, &third));
    assert_eq!(
        old_weak.strong_count(),
        1,
        "only the running call holds the old version"
    );

    // New calls run on the new version while the old run is still parked.
    let outcome = third
        .run(GateCall::open(), TRANSFER, &call_info())
        .await
        .outcome
        .expect("the new version serves");
    assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
    assert!(!running.is_finished());

    gate.notify_one();
    let outcome = tokio::time::timeout(GUARD, running)
        .await
        .expect("the old run ends")
        .expect("task ran")
        .expect("the old run completes on its version");
    assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
    assert!(
        old_weak.upgrade().is_none(),
        "the old version (and its plugin) is dropped after its last run"
    );
    assert_eq!(third.calls(), 1);
}

#[tokio::test]
async fn a_retired_file_gives_its_verbs_back_to_what_they_overrode() {
    let rt = runtime(RuntimeConfig::default());
    let registry = Registry::<GateCall>::new();
    let builtin = Origin::Builtin("sip-refer".into());
    let file = Origin::File("/plugins/sip-refer.wasm".into());
    let swaps = registry.install(sip_refer(&rt).await, builtin.clone());
    assert_eq!(swaps.len(), 1);
    assert!(swaps[0].from.is_none());
    registry.install(sip_refer(&rt).await, file.clone());
    assert_eq!(registry.get("sip:refer").expect("served").origin(), &file);
    let listed = registry.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].origin, "file:/plugins/sip-refer.wasm");
    assert_eq!(
        listed[0].previous.as_ref().map(|p| p.origin.as_str()),
        Some("builtin:sip-refer")
    );

    let swaps = registry.retire(&file);
    assert_eq!(swaps.len(), 1);
    assert_eq!(
        swaps[0].to.as_ref().map(|v| v.origin.as_str()),
        Some("builtin:sip-refer")
    );
    assert_eq!(
        registry.get("sip:refer").expect("served").origin(),
        &builtin
    );
    assert!(
        registry.retire(&file).is_empty(),
        "retiring twice changes nothing"
    );

    let swaps = registry.retire(&builtin);
    assert_eq!(swaps.len(), 1);
    assert!(swaps[0].to.is_none());
    assert!(registry.get("sip:refer").is_none());
    assert!(registry.list().is_empty());
}

#[tokio::test]
async fn rollback_swaps_back_and_a_second_rollback_undoes_the_first() {
    let rt = runtime(RuntimeConfig::default());
    let registry = Registry::<GateCall>::new();
    assert_eq!(
        registry.rollback("sip:refer"),
        Err(RollbackError::UnknownVerb("sip:refer".into()))
    );
    registry.install(sip_refer(&rt).await, Origin::Upload);
    assert_eq!(
        registry.rollback("sip:refer"),
        Err(RollbackError::NoPrevious("sip:refer".into()))
    );
    let v1 = registry.get("sip:refer").expect("served");
    registry.install(sip_refer(&rt).await, Origin::Upload);
    let v2 = registry.get("sip:refer").expect("served");

    let swap = registry.rollback("sip:refer").expect("rolls back");
    assert_eq!(swap.verb, "sip:refer");
    assert!(Arc::ptr_eq(
        &registry.get("sip:refer").expect("served"),
        &v1
    ));
    registry.rollback("sip:refer").expect("rolls forward");
    assert!(Arc::ptr_eq(
        &registry.get("sip:refer").expect("served"),
        &v2
    ));

    // Calls and traps are counted per version and listed, as JSON for an admin API.
    v2.run(GateCall::open(), TRANSFER, &call_info()).await;
    v2.record_trap();
    let listed = serde_json::to_value(registry.list()).expect("serialises");
    let entry = &listed[0];
    assert_eq!(entry["verb"], "sip:refer");
    assert_eq!(entry["plugin"], v2.name());
    assert_eq!(entry["version"], v2.version());
    assert_eq!(entry["sha256"], sha256_hex(verbhost_guests::SIP_REFER_WASM));
    assert_eq!(entry["origin"], "upload");
    assert_eq!(entry["calls"], 1);
    assert_eq!(entry["traps"], 1);
    assert_eq!(entry["previous"]["version"], v1.version());
    assert!(entry["loaded_at_unix_ms"].as_u64().expect("a number") > 1_600_000_000_000);
}

#[tokio::test]
async fn a_trapping_run_is_counted_against_its_version() {
    let rt = runtime(RuntimeConfig::default());
    let registry = Registry::<GateCall>::new();
    let misbehave = rt
        .load_file(verbhost_guests::MISBEHAVE.as_ref())
        .await
        .expect("loads");
    registry.install(misbehave, Origin::File(verbhost_guests::MISBEHAVE.into()));
    let version = registry.get("misbehave").expect("served");
    let verb = json!({ "verb": "misbehave", "mode": "panic" }).to_string();
    let run = version.run(GateCall::open(), &verb, &call_info()).await;
    assert!(matches!(run.outcome, Err(RunError::Trap { .. })));
    let verb = json!({ "verb": "misbehave", "mode": "ok" }).to_string();
    version.run(GateCall::open(), &verb, &call_info()).await;
    assert_eq!((version.calls(), version.traps()), (2, 1));
}
