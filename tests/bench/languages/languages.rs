//! Runtime fit per plugin language: load time uncached and from the compiled cache,
//! instantiation (with `describe()`), the cost of one verb run, memory per run, and how many
//! concurrent runs fit the default pool. Prints one Markdown table.
//!
//! ```sh
//! cargo bench -p verbhost --bench languages
//! cargo bench -p verbhost --bench languages -- js=target/js-plugins/sip-refer-js.wasm
//! ```
//!
//! Plugins: `rust` (the built-in sip:refer), `python` (target/py-plugins/verb-py.wasm, from
//! `guest/sdk-py/build.sh`) and `js` (target/js-plugins/sip-refer-js.wasm) when those files
//! exist, plus any `LABEL=PATH` argument. Each runs `{"verb": <its first verb>, "referTo":
//! "sip:carol@127.0.0.1"}` against a host that answers 202 and then a final NOTIFY 200.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use verbhost_runtime::{
    CallHost, CallInfo, Direction, Identity, Level, NotifyError, Plugin, ReferError, ReferEvent,
    ReferRequest, ReferResponse, Runtime, RuntimeConfig, Webhook,
};

/// Runs timed for each per-run figure.
const RUNS: usize = 200;
/// Runs held at once to measure memory per run (at most what fits).
const HELD: usize = 10;

/// Answers 202, then a final NOTIFY 200. With `gate`, the REFER waits for a permit first,
/// so runs can be held open.
struct Answering {
    gate: Option<(Arc<Semaphore>, Arc<AtomicUsize>)>,
}

impl CallHost for Answering {
    async fn send_refer(&mut self, _: ReferRequest) -> Result<ReferResponse, ReferError> {
        if let Some((gate, inside)) = &self.gate {
            inside.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.expect("gate open").forget();
        }
        Ok(ReferResponse {
            refer_id: 1,
            status: 202,
            reason: "Accepted".into(),
            headers: Vec::new(),
        })
    }

    async fn on_notify(&mut self, _: u32, _: Duration) -> Result<ReferEvent, NotifyError> {
        Ok(ReferEvent::Notify(verbhost_runtime::notify_from_parts(
            Some("terminated;reason=noresource"),
            Some("message/sipfrag;version=2.0"),
            b"SIP/2.0 200 OK\r\n".to_vec(),
        )))
    }

    fn emit_event(&mut self, _: Webhook, _: Map<String, Value>) {}

    fn log(&mut self, _: Level, _: &str) {}

    fn clock_ms(&mut self) -> u64 {
        0
    }
}

fn call() -> CallInfo {
    CallInfo {
        call_sid: "bench".into(),
        sip_call_id: "bench@127.0.0.1".into(),
        direction: Direction::Inbound,
        from: "<sip:alice@127.0.0.1>;tag=a".into(),
        to: "<sip:app@127.0.0.1>".into(),
        remote_party: Identity {
            display_name: None,
            uri: "sip:alice@127.0.0.1".into(),
        },
        default_domain: "carrier.example".into(),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Figures {
    label: String,
    size_mb: f64,
    core_instances: u32,
    memories: u32,
    uncached: Duration,
    cached: Duration,
    instantiate: Duration,
    run: Duration,
    cpu: Duration,
    rss_per_run_kib: u64,
    fit: u32,
}

async fn measure(label: &str, bytes: &[u8]) -> Figures {
    let cache = std::env::temp_dir().join(format!("verbhost-bench-lang-{}", std::process::id()));
    std::fs::remove_dir_all(&cache).ok();
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::<Answering>::new(config.clone()).expect("runtime");
    let started = Instant::now();
    let compiled = runtime.compile(bytes).await.expect("compiles");
    let uncached = started.elapsed();
    assert!(!compiled.from_cache());
    // A second runtime on the same cache directory, as after a restart.
    let restarted = Runtime::<Answering>::new(config.clone()).expect("runtime");
    let mut cached = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let hit = restarted.compile(bytes).await.expect("cache hit");
        cached.push(started.elapsed());
        assert!(hit.from_cache());
    }
    let mut instantiate = Vec::new();
    let mut plugin: Option<Plugin<Answering>> = None;
    for _ in 0..20 {
        let started = Instant::now();
        plugin = Some(runtime.instantiate(&compiled).await.expect("instantiates"));
        instantiate.push(started.elapsed());
    }
    let plugin = plugin.expect("instantiated");
    let verb =
        serde_json::json!({"verb": plugin.info().verbs[0], "referTo": "sip:carol@127.0.0.1"})
            .to_string();
    let mut runs = Vec::with_capacity(RUNS);
    let mut cpu = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let run = plugin.run(Answering { gate: None }, &verb, &call()).await;
        runs.push(started.elapsed());
        cpu.push(run.cpu_time);
        run.outcome.expect("the verb completes");
    }
    let needs = compiled.needs();
    let totals = (
        config.max_concurrent_runs,
        config.max_concurrent_runs * config.pool_core_instances_per_run,
        config.max_concurrent_runs * config.pool_memories_per_run,
        config.max_concurrent_runs * config.pool_tables_per_run,
    );
    let fit = [
        totals.0,
        totals.1 / needs.core_instances.max(1),
        totals.2 / needs.memories.max(1),
        totals.3 / needs.tables.max(1),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    // Memory: hold runs open inside their REFER and compare the process's RSS.
    let held = HELD.min(fit as usize);
    let gate = Arc::new(Semaphore::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let before = rss_kib();
    let tasks: Vec<_> = (0..held)
        .map(|_| {
            let plugin = plugin.clone();
            let verb = verb.clone();
            let host = Answering {
                gate: Some((gate.clone(), inside.clone())),
            };
            tokio::spawn(async move { plugin.run(host, &verb, &call()).await.outcome.is_ok() })
        })
        .collect();
    while inside.load(Ordering::SeqCst) < held {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let during = rss_kib();
    gate.add_permits(held);
    for task in tasks {
        assert!(task.await.expect("joins"), "a held run completes");
    }
    std::fs::remove_dir_all(&cache).ok();
    Figures {
        label: label.to_owned(),
        size_mb: bytes.len() as f64 / 1e6,
        core_instances: needs.core_instances,
        memories: needs.memories,
        uncached,
        cached: median(cached),
        instantiate: median(instantiate),
        run: median(runs),
        cpu: median(cpu),
        rss_per_run_kib: during.saturating_sub(before) / held.max(1) as u64,
        fit,
    }
}

fn plugins() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut list = vec![("rust".to_owned(), verbhost_guests::SIP_REFER_WASM.to_vec())];
    let mut add = |label: &str, path: PathBuf| match std::fs::read(&path) {
        Ok(bytes) => list.push((label.to_owned(), bytes)),
        Err(err) => eprintln!("{label}: {} not read ({err}); skipped", path.display()),
    };
    add("python", root.join("target/py-plugins/verb-py.wasm"));
    let js = root.join("target/js-plugins/sip-refer-js.wasm");
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if js.exists() && !extra.iter().any(|a| a.starts_with("js=")) {
        add("js", js);
    }
    for arg in extra {
        match arg.split_once('=') {
            Some((label, path)) => add(label, PathBuf::from(path)),
            None => eprintln!("{arg}: expected LABEL=PATH; ignored"),
        }
    }
    list
}

fn main() {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "| plugin | size | core instances / memories | load uncached | load cached | instantiate + describe | one verb run (wall; guest CPU) | RSS per held run | concurrent runs in the default pool |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, bytes) in plugins() {
        let f = executor.block_on(measure(&label, &bytes));
        println!(
            "| {} | {:.1} MB | {} / {} | {} | {} | {} | {}; {} | {} KiB | {} |",
            f.label,
            f.size_mb,
            f.core_instances,
            f.memories,
            ms(f.uncached),
            ms(f.cached),
            ms(f.instantiate),
            ms(f.run),
            ms(f.cpu),
            f.rss_per_run_kib,
            f.fit
        );
    }
}
