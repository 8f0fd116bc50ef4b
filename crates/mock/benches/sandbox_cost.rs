//! What the sandbox costs: one full `sip:refer` execution (202, NOTIFY 100/180/200, an
//! eventHook post for each, completion) run two ways against the same scripted call:
//!
//! - **wasm**: the built-in component in the mock host, exactly as `verb_run` runs it (a fresh
//!   store, instantiation, the run through the runtime's host functions);
//! - **native**: the same plugin crate (`guest/sip-refer`) compiled for the host and run by
//!   `verbhost_sdk::native::run`, its host calls answered by the same [`MockCall`] through
//!   `verbhost_runtime::native` (the runtime's types, the eventHook payload parsed as the
//!   runtime parses it, the completion checked as a wasm run's is).
//!
//! Criterion measures the mean of each (group `sandbox_cost`, `wasm` and `native`); after it,
//! a plain loop times each execution on its own, alternating wasm and native so both see the
//! same machine load, and prints p50/p90/p99 of each and the wasm/native ratios.
//! `VERBHOST_BENCH_RUNS` sets the timed runs of each (default 20,000).
//! `tests/native_parity.rs` holds the two to the same completions, events and REFERs.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use verbhost_mock::MockCall;
use verbhost_runtime::native::{self, Native, Wait};

/// The `sip:refer` plugin, `guest/sip-refer/src/lib.rs` compiled natively as a module of this
/// crate. (Not a dependency on the guest crate: an `rlib` crate type next to its `cdylib`
/// changes the code rustc generates for the wasm build, and the wasm build is the one measured.)
#[path = "../../../guest/sip-refer/src/lib.rs"]
mod sip_refer;
use sip_refer::SipReferPlugin;

mod support;

/// p50, p90 and p99 of `samples`, which it sorts.
fn percentiles(samples: &mut [Duration]) -> [Duration; 3] {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    [at(0.50), at(0.90), at(0.99)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn sandbox_cost(c: &mut Criterion) {
    let (executor, plugin) = support::setup(verbhost_guests::SIP_REFER_WASM);
    let scenario = support::scenario();
    let verb = scenario.verb_text();
    let call = scenario.call.to_call_info();
    let native_call = native::call_info(&call);

    let wasm_once = || {
        executor.block_on(async {
            let run = plugin.run(MockCall::new(&scenario), &verb, &call).await;
            // A run that traps (a CPU budget on a badly overloaded machine) stops the bench:
            // a failed run would time something else.
            let outcome = run.outcome.expect("the wasm run completes");
            assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
            assert_eq!(run.host.events_emitted.len(), 3);
        })
    };
    let native_once = || {
        let (host, outcome) = verbhost_sdk::native::run::<SipReferPlugin, _>(
            Native::new(MockCall::new(&scenario), Wait::Ready),
            &verb,
            &native_call,
        );
        let outcome = native::outcome(&plugin, outcome).expect("the native run completes");
        assert_eq!(outcome.event, "TRANSFER_REFER_SUCCESS");
        assert_eq!(host.get().events_emitted.len(), 3);
    };

    let mut group = c.benchmark_group("sandbox_cost");
    group.bench_function("wasm", |b| b.iter(wasm_once));
    group.bench_function("native", |b| b.iter(native_once));
    group.finish();

    // Per-execution latency distributions, wasm and native interleaved.
    for _ in 0..500 {
        wasm_once();
        native_once();
    }
    let runs: usize = std::env::var("VERBHOST_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
        .max(1);
    let time = |once: &dyn Fn()| {
        let start = Instant::now();
        once();
        start.elapsed()
    };
    let (mut wasm, mut native): (Vec<Duration>, Vec<Duration>) = (0..runs)
        .map(|_| (time(&wasm_once), time(&native_once)))
        .unzip();
    let [wasm50, wasm90, wasm99] = percentiles(&mut wasm);
    let [native50, native90, native99] = percentiles(&mut native);
    for (what, p50, p90, p99) in [
        ("wasm  ", wasm50, wasm90, wasm99),
        ("native", native50, native90, native99),
    ] {
        println!(
            "sandbox_cost {what} sip_refer_202_and_three_notifies per execution over {runs} runs: p50 {:.2} us, p90 {:.2} us, p99 {:.2} us",
            us(p50),
            us(p90),
            us(p99),
        );
    }
    println!(
        "sandbox_cost wasm/native: p50 {:.1}x, p99 {:.1}x (the sandbox adds {:.2} us at p50)",
        us(wasm50) / us(native50),
        us(wasm99) / us(native99),
        us(wasm50) - us(native50),
    );
}

criterion_group!(benches, sandbox_cost);
criterion_main!(benches);
