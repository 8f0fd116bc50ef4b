//! The load harness's smoke run (`tests/bench/load/run.py smoke`), so the harness cannot rot:
//! 50 transfers at 20/s, 20 transfers parked for 2 s, one cold and one warm start, against this
//! build's `verbhost`. A few seconds; not a benchmark (nothing here compares timings).
//!
//! Needs python3 and sipp (Debian `sip-tester`). With `CI=true` a missing one fails the test;
//! otherwise the test skips with a banner.

#[path = "../../tests/support/sipp.rs"]
mod sipp;

use std::path::Path;
use std::process::Command;

#[test]
fn load_harness_smoke_run_completes_every_transfer() {
    if !sipp::require("python3") || !sipp::require("sipp") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/bench/load/run.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(["smoke", "--bin", env!("CARGO_BIN_EXE_verbhost")])
        .current_dir(&root)
        .output()
        .expect("run python3 tests/bench/load/run.py smoke");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status.code()
    );
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line\n{context}"));
    let result: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|err| panic!("RESULT is not JSON: {err}\n{context}"));

    let step = &result["step"];
    assert_eq!(step["calls"], 50, "{context}");
    assert_eq!(step["failed"], 0, "failed transfers\n{context}");
    assert_eq!(
        step["actions_ok"], 50,
        "every transfer's actionHook\n{context}"
    );
    for figure in ["p50", "p99"] {
        assert!(
            step["latency_ms"][figure]
                .as_f64()
                .is_some_and(|v| v >= 0.0),
            "latency {figure}\n{context}"
        );
    }
    assert!(step["server_cpu_s"].is_number(), "CPU\n{context}");
    assert!(
        step["vmhwm_mib"].as_f64().is_some_and(|v| v > 0.0),
        "peak RSS\n{context}"
    );

    let parked = &result["parked"];
    assert_eq!(parked["calls"], 20, "{context}");
    assert_eq!(parked["failed"], 0, "failed parked transfers\n{context}");
    assert_eq!(
        parked["actions_ok"], 20,
        "every parked transfer completes\n{context}"
    );
    assert!(
        parked["peak_parked"].as_u64().is_some_and(|n| n >= 1),
        "{context}"
    );
    assert!(
        parked["rss_per_parked_kib"].is_number(),
        "RSS per parked transfer\n{context}"
    );

    for cache in ["cold", "warm"] {
        assert_eq!(
            result["cold_start"][cache]["exec_to_options_200_ms"]["n"], 1,
            "cold start with a {cache} cache\n{context}"
        );
    }
    assert_eq!(result["check"]["pass"], true, "{context}");
    assert!(output.status.success(), "{context}");
}
