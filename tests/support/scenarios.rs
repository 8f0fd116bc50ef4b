//! Test support: the shipped mock-host scenario suites, and running one against a plugin.
//!
//! Integration tests include this file with `#[path = "support/scenarios.rs"] mod scenarios;`.

// Each test binary uses a different subset, and the module is private there.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use verbhost_mock::{MockCall, MockHost};
use verbhost_runtime::Plugin;

/// The `tests/scenarios/` directory (found from either package that includes this file).
pub fn dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let here = manifest.join("scenarios");
    if here.is_dir() {
        here
    } else {
        manifest.join("../tests/scenarios")
    }
}

/// The scenario files of one suite (`tests/scenarios/<suite>/*.json`), in name order.
pub fn files(suite: &str) -> Vec<PathBuf> {
    let dir = dir().join(suite);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// Runs the whole `sip-refer` suite against `plugin` and fails with every failing report.
/// The counts guard against scenarios going missing.
pub async fn assert_sip_refer_suite_passes(host: &MockHost, plugin: &Plugin<MockCall>) {
    let files = files("sip-refer");
    assert!(files.len() >= 15, "scenario files went missing: {files:?}");
    let reports = host.run_files(plugin, &files).await;
    assert!(reports.len() >= 80, "only {} scenarios ran", reports.len());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
