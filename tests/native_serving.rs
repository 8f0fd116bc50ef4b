//! The load harness's native mode serves calls as the wasm build does: the same sip:refer
//! source, compiled natively and served through `ServerBuilder::native_plugin`, against a real
//! server started in-process and sipp transferees over loopback, posts the same webhooks
//! (paths, order, every field but the per-call ids and times) as the built-in wasm build. That
//! is what makes `tests/bench/load/run.py compare` a measure of the sandbox and nothing else.

#[path = "support/sipp.rs"]
mod sipp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use verbhost_server::Server;
use verbhost_server::config::Config;
use verbhost_testkit::Receiver;

/// `guest/sip-refer/src/lib.rs`, compiled natively as a module of this test.
#[path = "../guest/sip-refer/src/lib.rs"]
mod sip_refer;

const CALLS: usize = 20;

/// Fields that differ from call to call whichever build serves it (the server's ids).
const PER_CALL: &[&str] = &["call_sid", "call_id"];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "verbhost-native-serving-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One call's webhooks as (path, body without the per-call fields), in the order posted.
type Posts = Vec<(String, Value)>;

/// `CALLS` transfers through a server on `sip` whose sip:refer runs natively or not; every
/// call's webhooks, the calls in no particular order.
async fn serve(native: bool, sip: u16) -> Vec<Posts> {
    let dir = temp_dir(if native { "native" } else { "wasm" });
    let receiver = Receiver::start().await;
    let app = dir.join("app.json");
    std::fs::write(
        &app,
        json!([{"verb": "sip:refer", "referTo": "+4930999", "actionHook": "/action", "eventHook": "/event"}])
            .to_string(),
    )
    .unwrap();
    let mut config = Config::default();
    config.sip.listen = format!("127.0.0.1:{sip}").parse().unwrap();
    config.sip.default_domain = Some("pstn.example".into());
    config.app.file = Some(app);
    config.app.base_url = Some(receiver.base());
    let mut builder = Server::builder(config);
    if native {
        builder = builder.native_plugin::<sip_refer::SipReferPlugin>();
    }
    let server = builder.start().await.expect("the server starts");
    let caller = sipp::SippPeer::start_with_args(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sipp/uac-transferee-accept.xml"
        )),
        sip + 10,
        sipp::Transport::Udp,
        &[
            &format!("127.0.0.1:{sip}"),
            "-r",
            "20",
            "-m",
            &CALLS.to_string(),
        ],
    )
    .expect("sipp starts");
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(outcome.passed(), "sipp: {}", outcome.describe());
    // An actionHook and three eventHooks per call.
    let hits = receiver.wait_for(CALLS * 4, Duration::from_secs(20)).await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    let mut calls: BTreeMap<String, Posts> = BTreeMap::new();
    for hit in hits {
        let mut body = hit.json;
        let sid = body["call_sid"].as_str().unwrap_or_default().to_owned();
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|key, _| !PER_CALL.contains(&key.as_str()));
        }
        calls.entry(sid).or_default().push((hit.path, body));
    }
    assert_eq!(calls.len(), CALLS, "calls seen by their call_sid");
    calls.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_natively_served_sip_refer_posts_what_the_wasm_build_posts() {
    if !sipp::require("sipp") {
        return;
    }
    let wasm = serve(false, 28700).await;
    let native = serve(true, 28720).await;
    // Every call of either build posts the same sequence, so one call stands for its build.
    for (build, calls) in [("wasm", &wasm), ("native", &native)] {
        assert!(
            calls.iter().all(|posts| posts == &calls[0]),
            "{build}: the calls posted different webhooks: {calls:#?}"
        );
    }
    assert_eq!(
        native[0], wasm[0],
        "native and wasm posted different webhooks"
    );
    let paths: Vec<&str> = wasm[0].iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["/event", "/event", "/event", "/action"]);
    assert_eq!(wasm[0][3].1["event"], "TRANSFER_REFER_SUCCESS");
}
