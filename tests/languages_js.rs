//! Plugins in JavaScript: `guest/sip-refer-js` built from source by `guest/sdk-js/build.js`
//! (componentize-js, every WASI feature disabled), loaded into the real runtime, held to the
//! Rust plugin's whole scenario suite, and serving a real transfer through `verbhost serve
//! --plugins` against the sipp transferee; the SDK's JSON reader held to the Rust SDK's; and
//! the `verbhost plugin new --lang js` template built and tested as a new user would.
//!
//! node and the SDK's npm packages (`npm ci` in `guest/sdk-js`, which `.ci/run` runs) are
//! needed: with `CI=true` a missing one fails the test, elsewhere the test is skipped with a
//! loud message. Ports 28800-28819.

#[path = "support/js.rs"]
mod js;
#[path = "support/scenarios.rs"]
mod scenarios;
#[path = "support/serve.rs"]
mod serve;
#[path = "support/sipp.rs"]
mod sipp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use serve::{Server, TempFile, root};
use verbhost_mock::MockHost;
use verbhost_testkit::Receiver;

/// `guest/sip-refer-js`, built once per test run into `target/js-plugins/`; None (after the
/// loud skip) when node or the npm packages are missing.
fn sip_refer_js() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !js::require_sdk() {
                return None;
            }
            let out = root().join("target/js-plugins/sip-refer-js.wasm");
            js::build(&root().join("guest/sip-refer-js"), &out);
            Some(out)
        })
        .as_deref()
}

#[tokio::test]
async fn the_js_sip_refer_passes_every_shipped_sip_refer_scenario() {
    let Some(wasm) = sip_refer_js() else {
        return;
    };
    let host = MockHost::new().expect("mock host starts");
    // Loading checks the contract version, the import allowlist (a WASI import would be refused
    // here) and describe().
    let plugin = host.load_file(wasm).await.expect("the JS sip:refer loads");
    assert_eq!(plugin.info().name, "sip-refer-js");
    assert_eq!(plugin.info().verbs, ["sip:refer"]);
    // It exports the contract's verb-check (the SDK's parse alone), so an application is
    // checked before any call exactly as with the Rust plugin.
    assert!(plugin.can_check(), "the JS plugin exports verb-check");
    plugin
        .check(r#"{"verb":"sip:refer","referTo":"+4930123","actionHook":"/a"}"#)
        .await
        .expect("a good verb passes the check");
    let err = plugin
        .check(r#"{"verb":"sip:refer","referto":"+4930123"}"#)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid verb: sip:refer: unknown property referto"
    );
    scenarios::assert_sip_refer_suite_passes(&host, &plugin).await;
}

#[test]
fn the_js_sdk_reads_json_exactly_like_the_rust_sdk() {
    if !sipp::require("node") {
        return;
    }
    let texts = [
        r#"{"verb": "sip:refer", "referTo": "sip:carol@pbx.example"}"#,
        r#"{"verb":"sip:refer","referTo": +4915112345678, "id": 007}"#,
        "[{\"referTo\":\n\t004930123 , \"x\": [+1, 0]}]",
        r#"{"a": "x\": +49", "b": +49}"#,
        r#"{"z": 1, "a": 2, "é": 3, "10": 4, "2": 5, "__proto__": 6, "a": 7}"#,
        r#"{"n": [0, -0, 1.5, 5.0, 1e20, 1E-7, 0.001, -3, 18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809, 123456789012345678]}"#,
        // Floats print alike. (serde_json without `float_roundtrip` may round the last bit of a
        // long float literal, 9007199254740993.0 or 123456789012345680000, differently from
        // JS's correct rounding; floats only reach error messages.)
        "[1e15, 1e16, 1e17, 1.5e300, 1e-5, 1e-6, 1e-7, 0.0001, 12345.678, 2.5E+3, -1.0e-10]",
        r#"{"s": "\u00e9\ud83d\ude00\n\t\"\\\/\b\f", "t": "€ ünïcode"}"#,
        "{\"verb\": \"sip:refer\",\n \"referTo\": \"sip:c@x\",,}",
        "{\"verb\": \"sip:refer\", \"referTo\": +49",
        "",
        "   ",
        "{\"referTo\": +49,\n  \"id\": }",
        "{\"a\": +49, \"b\": +49, \"c\": }",
        "+49",
        "{\"a\": +}",
        "{\"a\": 1",
        "[1,]",
        "{\"a\":1,}",
        "{\"é\": x}",
        "{\"é\": +49, \"ü\": }",
        "[1 2]",
        "{\"a\" 1}",
        "{\"a\": 1 \"b\": 2}",
        "\"abc",
        "tru",
        "nul x",
        "truex",
        "01",
        "-",
        "-a",
        "1.",
        "1.x",
        "1e",
        "1e+",
        "1ex",
        "1e999",
        "[\"\u{1}\"]",
        "\"\\q\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"\\udc00\"",
        "\"\\ud800\"",
        "\"\\ud800\\u0041\"",
        "1 2",
        "{} x",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "{\"a\": [+49, 0123, +x]}",
        "\u{feff}{}",
        "{\"a\":\u{c}+49}",
    ];
    let cases = TempFile::new(
        "json-cases.json",
        &serde_json::to_string(&texts[..]).unwrap(),
    );
    let output = js::run(
        Command::new("node")
            .arg(js::sdk().join("test/json-oracle.mjs"))
            .arg(&cases.path),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let js: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the oracle prints JSON");
    assert_eq!(js.len(), texts.len());
    let mut differences = Vec::new();
    for (text, js) in texts.iter().zip(&js) {
        let rust = match verbhost_common::json::parse(text) {
            Ok(value) => json!({ "ok": value.to_string() }),
            Err(err) => json!({ "err": err.to_string() }),
        };
        if &rust != js {
            differences.push(format!("{text:?}\n  rust: {rust}\n  js:   {js}"));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn the_js_sdk_types_are_generated_from_the_current_contract() {
    if !js::require_sdk() {
        return;
    }
    let output = js::run(
        Command::new("node")
            .arg(js::sdk().join("build.js"))
            .args(["types", "--check"]),
        Duration::from_secs(120),
    );
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbhost_serve_runs_a_real_transfer_on_the_js_plugin() {
    if !sipp::require("sipp") {
        return;
    }
    let Some(wasm) = sip_refer_js() else {
        return;
    };
    let plugins = TempFile::new("app.json", "");
    let dir = plugins.dir.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(wasm, dir.join("sip-refer-js.wasm")).unwrap();
    let receiver = Receiver::start().await;
    std::fs::write(
        &plugins.path,
        json!([{"verb": "sip:refer", "id": "js-transfer", "referTo": "+4930999", "actionHook": "/action", "eventHook": "/event"}]).to_string(),
    )
    .unwrap();
    // Uncached, the 12 MB component compiles for several seconds (much longer on a busy
    // machine) before the server answers.
    let server = Server::start_within(
        &[
            "--sip",
            "127.0.0.1:28800",
            "--plugins",
            dir.to_str().unwrap(),
            "--app",
            plugins.path.to_str().unwrap(),
            "--base-url",
            &receiver.base(),
            "--default-domain",
            "pstn.example",
        ],
        28801,
        Duration::from_secs(300),
    )
    .await;
    // The JS plugin, not the built-in one, serves sip:refer.
    let (status, body) = server.get("/plugins").await;
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    let active = listed["plugins"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["verb"] == "sip:refer"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(active["plugin"], "sip-refer-js", "{body}\n{}", server.log());

    let caller = sipp::SippPeer::start_with_args(
        &root().join("tests/sipp/uac-transferee-accept.xml"),
        28810,
        sipp::Transport::Udp,
        &["127.0.0.1:28800"],
    )
    .expect("sipp starts");
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let refer = outcome
        .received()
        .into_iter()
        .find(|m| m.starts_with("REFER "))
        .expect("sipp got the REFER")
        .to_owned();
    assert!(
        refer.contains("Refer-To: <sip:+4930999@pstn.example;user=phone>"),
        "{refer}"
    );
    let hits = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(
        receiver.paths(),
        ["/event", "/event", "/event", "/action"],
        "{}",
        server.log()
    );
    let ids = json!({
        "call_sid": hits[3].json["call_sid"],
        "call_id": hits[3].json["call_id"],
        "direction": "inbound",
        "from": "+4930111",
        "to": "app",
        "caller_name": "Alice",
    });
    let with_ids = |extra: Value| {
        let mut payload = ids.clone();
        for (key, value) in extra.as_object().unwrap() {
            payload[key] = value.clone();
        }
        payload
    };
    for (hit, status) in hits.iter().zip(["100", "180", "200"]) {
        assert_eq!(
            hit.json,
            with_ids(
                json!({"event": "transfer-status", "call_status": status, "verb_id": "js-transfer"})
            )
        );
    }
    assert_eq!(
        hits[3].json,
        with_ids(json!({
            "event": "TRANSFER_REFER_SUCCESS",
            "refer_status": 202,
            "referStatus": 202,
            "refer_reason": "Accepted",
            "final_referred_call_status": 200,
            "final_referred_call_reason": "OK",
            "completion_reason": "final-notify",
            "call_status": "completed",
            "verb_id": "js-transfer",
        }))
    );
    let (_, metrics) = server.get("/metrics").await;
    let line = "verbhost_verbs_total{verb=\"sip:refer\",outcome=\"TRANSFER_REFER_SUCCESS\"} 1";
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} missing from:\n{metrics}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[test]
fn the_js_template_builds_with_its_own_command_and_passes_verbhost_test() {
    if !js::require_sdk() || !sipp::require("npm") {
        return;
    }
    let scratch = TempFile::new("README", "");
    let plugin = scratch.dir.join("my-verb");
    // As users get it: `verbhost plugin new`, then the template's own build command, with no
    // VERBHOST_SDK_JS (the command wrote the SDK's path into package.json).
    let new = Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .args(["plugin", "new", "my-verb", "--lang", "js", "--dir"])
        .arg(&plugin)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let build = js::run(
        Command::new("npm")
            .args(["run", "build"])
            .current_dir(&plugin)
            .env_remove("VERBHOST_SDK_JS"),
        Duration::from_secs(600),
    );
    assert!(
        build.status.success(),
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let mut scenario_files: Vec<PathBuf> = std::fs::read_dir(plugin.join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scenario_files.sort();
    let test = js::run(
        Command::new(env!("CARGO_BIN_EXE_verbhost"))
            .arg("test")
            .arg("my-verb.wasm")
            .args(&scenario_files)
            .current_dir(&plugin),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success() && stdout.contains("2 passed, 0 failed"),
        "{stdout}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(
        stdout.contains("plugin my-verb 0.1.0 (my:verb)"),
        "{stdout}"
    );
}
