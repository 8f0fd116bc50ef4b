//! Test support: tagged builds of the sip:refer plugin. A build made with
//! `VERBHOST_SIP_REFER_BUILD=TAG` reports version `0.1.0+TAG` and puts `"plugin_build": TAG`
//! in every payload, so a deployment test can tell which build served each call.
//!
//! Built on first use with the workspace's own toolchain into `target/sip-refer-variants`
//! (one build per tag, each in its own directory so later runs are no-ops) and cached there.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One build at a time: the tests of a binary share the target directory.
static BUILDING: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The sip:refer plugin built with tag `tag`; panics with cargo's output if it cannot be
/// built.
pub fn sip_refer(tag: &str) -> Vec<u8> {
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    let target_dir = root.join("target/sip-refer-variants").join(tag);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "-p",
            "verbhost-guest-sip-refer",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("VERBHOST_SIP_REFER_BUILD", tag);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    let output = build.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building sip:refer with tag {tag} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wasm = target_dir.join("wasm32-wasip2/release/verbhost_guest_sip_refer.wasm");
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()))
}
