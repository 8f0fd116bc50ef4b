//! Test support: build JavaScript plugins from source with `guest/sdk-js/build.js`.
//!
//! Integration tests include this file with `#[path = "support/js.rs"] mod js;`, after
//! `support/sipp.rs` as `mod sipp` (whose skip rule it shares). The SDK's pinned npm packages
//! come from `npm ci` in `guest/sdk-js` (`.ci/run` runs it).

// Each test binary uses a different subset, and the module is private there.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The JavaScript SDK's directory (both test packages sit one level below the workspace root).
pub fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/sdk-js")
}

/// True when node and the SDK's npm packages are installed. Otherwise skips loudly and
/// returns false, or fails when `CI=true` (the rule of [`crate::sipp::require`]).
pub fn require_sdk() -> bool {
    if !crate::sipp::require("node") {
        return false;
    }
    if sdk()
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        return true;
    }
    crate::sipp::missing(
        "the JS SDK's npm packages",
        "run `npm ci` in guest/sdk-js; .ci/run does",
    )
}

/// Runs `command` to its end, killing it after `limit` (a hang guard), and returns its output.
/// The output goes through files, so a chatty command never blocks on a full pipe.
pub fn run(command: &mut Command, limit: Duration) -> Output {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("verbhost-js-{}-{n}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let mut child = command
        .stdout(std::fs::File::create(&out_path).expect("temp file"))
        .stderr(std::fs::File::create(&err_path).expect("temp file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{command:?} did not finish within {limit:?}:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    output
}

/// Builds the plugin in `dir` into `out` with the SDK's build script; panics with its output
/// when the build fails.
pub fn build(dir: &Path, out: &Path) {
    let output = run(
        Command::new("node")
            .arg(sdk().join("build.js"))
            .arg(dir)
            .arg("-o")
            .arg(out),
        Duration::from_secs(600),
    );
    assert!(
        output.status.success() && out.is_file(),
        "building {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
