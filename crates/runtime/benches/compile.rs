//! What loading the sip:refer plugin costs, cold (the compiler runs) and from the compiled
//! cache (a `.cwasm` mapped back in), each through `Runtime::compile` as the server calls it.
//! The difference is what a warm cache saves every restart and every hot swap of a file
//! that was seen before.
//!
//! `VERBHOST_BENCH_PLUGIN=path/to/plugin.wasm` measures another plugin instead (e.g.
//! `target/js-plugins/sip-refer-js.wasm`, built by `node guest/sdk-js/build.js`).

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use verbhost_mock::MockCall;
use verbhost_runtime::{Runtime, RuntimeConfig};

fn cache_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verbhost-bench-cache-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn compile(c: &mut Criterion) {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (name, owned) = match std::env::var_os("VERBHOST_BENCH_PLUGIN") {
        Some(path) => {
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("VERBHOST_BENCH_PLUGIN={}: {e}", path.display()));
            (path.to_string_lossy().into_owned(), bytes)
        }
        None => (
            "sip:refer".to_owned(),
            verbhost_guests::SIP_REFER_WASM.to_vec(),
        ),
    };
    let wasm = owned.as_slice();
    let mut group = c.benchmark_group(format!("compile {name}"));
    group.sample_size(10);

    let cold = Runtime::<MockCall>::new(RuntimeConfig::default()).expect("runtime");
    group.bench_function("cold (no cache)", |b| {
        b.iter(|| {
            let compiled = executor.block_on(cold.compile(wasm)).expect("compiles");
            assert!(!compiled.from_cache());
        })
    });

    let dir = cache_dir();
    let warm = Runtime::<MockCall>::new(RuntimeConfig {
        cache_dir: Some(dir.clone()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    executor
        .block_on(warm.compile(wasm))
        .expect("fills the cache");
    group.bench_function("cache hit", |b| {
        b.iter(|| {
            let compiled = executor.block_on(warm.compile(wasm)).expect("loads");
            assert!(compiled.from_cache());
        })
    });
    group.bench_function("cache hit + instantiate (describe)", |b| {
        b.iter(|| {
            executor.block_on(async {
                let compiled = warm.compile(wasm).await.expect("loads");
                warm.instantiate(&compiled).await.expect("instantiates")
            })
        })
    });
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
}

criterion_group!(benches, compile);
criterion_main!(benches);
