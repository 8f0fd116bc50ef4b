//! One full verb execution against the in-memory mock host: a fresh store, instantiation of
//! the sip:refer plugin, and its run through a 202 and three NOTIFYs (100, 180, 200) with an
//! eventHook post for each, to completion.
//!
//! Criterion measures the mean; after it, a plain loop times each execution on its own and
//! prints the p50/p90/p99 latencies that the README records.
//!
//! A run that does not complete (a trap on a badly overloaded machine, say) is counted and
//! reported at the end instead of aborting the benchmark.
//!
//! `VERBHOST_BENCH_PLUGIN=path/to/plugin.wasm` runs the same verb on another plugin that
//! implements `sip:refer` (e.g. `target/js-plugins/sip-refer-js.wasm`, built by
//! `node guest/sdk-js/build.js`); `VERBHOST_BENCH_RUNS` sets the number of timed runs (20,000).
//! For any plugin it also prints what one instance takes from the pool, how many runs the
//! default pool fits at once, and the smallest `max_memory_bytes` a run completes under.

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use verbhost_mock::{MockCall, Scenario};
use verbhost_runtime::{RunLimits, RuntimeConfig};

mod support;
use support::{scenario, setup};

/// The plugin under test and its name: `VERBHOST_BENCH_PLUGIN`, else the built-in sip:refer.
fn plugin_wasm() -> (String, Vec<u8>) {
    match std::env::var_os("VERBHOST_BENCH_PLUGIN") {
        Some(path) => {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("VERBHOST_BENCH_PLUGIN={}: {e}", path.display()));
            (path.to_string_lossy().into_owned(), bytes)
        }
        None => (
            "builtin:sip-refer".into(),
            verbhost_guests::SIP_REFER_WASM.to_vec(),
        ),
    }
}

fn verb_run(c: &mut Criterion) {
    let (name, wasm) = plugin_wasm();
    let (executor, plugin) = setup(&wasm);
    let scenario = scenario();
    let verb = scenario.verb_text();
    let call = scenario.call.to_call_info();
    let failed = Cell::new(0u64);
    let first_error = Cell::new(None);
    let once = || {
        executor.block_on(async {
            let run = plugin.run(MockCall::new(&scenario), &verb, &call).await;
            match run.outcome {
                Ok(outcome) => {
                    assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
                    assert_eq!(run.host.events_emitted.len(), 3);
                }
                Err(err) => {
                    failed.set(failed.get() + 1);
                    let first = first_error.take();
                    first_error.set(first.or_else(|| Some(err.to_string())));
                }
            }
        })
    };

    c.bench_function("sip_refer_202_and_three_notifies", |b| b.iter(once));

    // Per-execution latency distribution.
    for _ in 0..500 {
        once();
    }
    let runs: usize = std::env::var("VERBHOST_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let mut samples: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            once();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "sip_refer_202_and_three_notifies ({name}) per execution over {} runs: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us",
        samples.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.90).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
    );
    if let Some(err) = first_error.take() {
        println!(
            "sip_refer_202_and_three_notifies: {} runs did not complete; the first: {err}",
            failed.get()
        );
    }
}

/// What one run of the plugin takes: its share of the pool (and so how many runs the default
/// pool fits at once), and the smallest memory limit, in 64 KiB pages, its run completes under.
fn footprint(_: &mut Criterion) {
    let (name, wasm) = plugin_wasm();
    let (executor, plugin) = setup(&wasm);
    let needs = plugin.compiled().needs();
    let pool = RuntimeConfig::default();
    let runs = pool.max_concurrent_runs;
    let fits = [
        runs,
        runs * pool.pool_core_instances_per_run / needs.core_instances.max(1),
        runs * pool.pool_memories_per_run / needs.memories.max(1),
        runs * pool.pool_tables_per_run / needs.tables.max(1),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    println!(
        "footprint ({name}): {} core instances, {} memories, {} tables per run; the default pool fits {fits} runs at once",
        needs.core_instances, needs.memories, needs.tables
    );
    let scenario = scenario();
    let (verb, call) = (scenario.verb_text(), scenario.call.to_call_info());
    let completes = |pages: usize| {
        let limited = plugin
            .with_limits(RunLimits {
                max_memory_bytes: pages << 16,
                ..plugin.limits().clone()
            })
            .expect("limits within the pool");
        executor.block_on(async {
            let run = limited.run(MockCall::new(&scenario), &verb, &call).await;
            run.outcome.is_ok()
        })
    };
    let (mut low, mut high) = (1usize, plugin.limits().max_memory_bytes >> 16);
    if !completes(high) {
        println!("footprint ({name}): a run does not complete within max_memory_bytes");
        return;
    }
    while low < high {
        let mid = (low + high) / 2;
        if completes(mid) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    println!(
        "footprint ({name}): a run completes with max_memory_bytes = {} pages ({:.1} MiB) and fails with one page less",
        high,
        (high << 16) as f64 / f64::from(1 << 20)
    );
}

/// The runtime's own cost: store, instantiation and a run that makes no host call.
fn trivial_run(c: &mut Criterion) {
    let wasm = std::fs::read(verbhost_guests::MISBEHAVE).expect("misbehave plugin built");
    let (executor, plugin) = setup(&wasm);
    let scenario = Scenario::from_value(json!({ "name": "trivial", "verb": {}, "expect": {} }))
        .expect("valid scenario");
    let verb = r#"{"verb":"misbehave","mode":"ok"}"#;
    let call = scenario.call.to_call_info();
    let mut failed = 0u64;
    c.bench_function("trivial_run", |b| {
        b.iter(|| {
            executor.block_on(async {
                let run = plugin.run(MockCall::new(&scenario), verb, &call).await;
                failed += u64::from(run.outcome.is_err());
            })
        })
    });
    if failed > 0 {
        println!("trivial_run: {failed} runs did not complete");
    }
}

criterion_group!(benches, verb_run, footprint, trivial_run);
criterion_main!(benches);
