//! Plugins in production, against a real server started in-process: the plugin directory
//! watched and every new version checked before it serves, the admin API (list, upload,
//! rollback, token), and sip:refer swapped ten times under sipp load without a failed call.
//!
//! The two sip:refer builds that alternate are tagged (`support/variants.rs`): every payload
//! of a call says which build served it. The swap latency (file renamed into place -> the
//! admin API reports the new version, so new calls take it) is printed; run with
//! `--nocapture` to see the figures the README quotes.

#[path = "support/sipp.rs"]
mod sipp;
#[path = "support/variants.rs"]
mod variants;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use verbhost_server::config::Config;
use verbhost_server::{Server, ServerHandle};
use verbhost_testkit::Receiver;

const TOKEN: &str = "swap-test-token";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verbhost-hot-swap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The safe way to deploy: write a hidden temporary file, then rename it into place.
fn deploy(dir: &Path, name: &str, bytes: &[u8]) {
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, dir.join(name)).unwrap();
}

/// The admin API of a server under test.
struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("the admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn list(&self) -> Vec<Value> {
        let (status, body) = self
            .send(
                self.http
                    .get(format!("{}/plugins", self.base))
                    .bearer_auth(TOKEN),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["plugins"].as_array().cloned().unwrap_or_default()
    }

    async fn active(&self, verb: &str) -> Option<Value> {
        self.list().await.into_iter().find(|p| p["verb"] == verb)
    }

    async fn version(&self, verb: &str) -> Option<String> {
        self.active(verb)
            .await
            .and_then(|p| p["version"].as_str().map(str::to_owned))
    }

    /// Polls until `verb` is served by `version`; how long that took.
    async fn wait_version(&self, verb: &str, version: Option<&str>) -> Duration {
        let started = Instant::now();
        loop {
            if self.version(verb).await.as_deref() == version {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{verb} not on {version:?} after 20 s: {:?}",
                self.list().await
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn upload(&self, name: &str, bytes: Vec<u8>, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .put(format!("{}/plugins/{name}", self.base))
            .body(bytes);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    async fn rollback(&self, verb: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}/plugins/{verb}/rollback", self.base))
                .bearer_auth(TOKEN),
        )
        .await
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the metric line that starts with `prefix` (0 when absent).
    async fn counter(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    async fn wait_counter(&self, prefix: &str, at_least: f64) {
        let started = Instant::now();
        while self.counter(prefix).await < at_least {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{prefix} below {at_least} after 20 s:\n{}",
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A server on free ports with `dir` as its plugin directory and a sip:refer application
/// whose hooks go to `receiver`.
async fn start(dir: &Path, receiver: &Receiver, sip: &str) -> (ServerHandle, Admin) {
    let app = dir.with_extension("app.json");
    std::fs::write(
        &app,
        json!([{"verb": "sip:refer", "referTo": "+4930999", "actionHook": "/action", "eventHook": "/event"}])
            .to_string(),
    )
    .unwrap();
    let mut config = Config::default();
    config.sip.listen = sip.parse().unwrap();
    config.sip.default_domain = Some("pstn.example".into());
    config.app.file = Some(app);
    config.app.base_url = Some(receiver.base());
    config.plugins.dir = Some(dir.to_owned());
    config.plugins.quiet_ms = 200;
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    config.admin.token = Some(TOKEN.into());
    config.server.drain_timeout_s = 5;
    let server = Server::builder(config)
        .start()
        .await
        .expect("the server starts");
    let admin = Admin {
        base: format!("http://{}", server.admin_addr().unwrap()),
        http: reqwest::Client::new(),
    };
    (server, admin)
}

async fn builds(tags: &[&'static str]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for &tag in tags {
        out.push(
            tokio::task::spawn_blocking(move || variants::sip_refer(tag))
                .await
                .unwrap(),
        );
    }
    out
}

/// A scenario every tagged sip:refer build passes: it checks only the REFER it sends.
const PASSING_SCENARIO: &str = r#"{
  "name": "the REFER goes to the number in the caller's domain",
  "verb": {"verb": "sip:refer", "referTo": "+4930555"},
  "refer_response": {"status": 202, "at_ms": 10},
  "notifies": [{"at_ms": 20, "notify": {"state": "terminated;reason=noresource", "body": "SIP/2.0 200 OK\r\n"}}],
  "expect": {
    "refer": {
      "refer_to": "<sip:+4930555@carrier.example;user=phone>",
      "referred_by": "\"Alice\" <sip:+4930111@carrier.example>",
      "headers": {}
    }
  }
}"#;

/// A scenario no sip:refer build passes.
const FAILING_SCENARIO: &str = r#"{
  "name": "expects an outcome sip:refer never reports",
  "verb": {"verb": "sip:refer", "referTo": "+4930555"},
  "refer_response": {"status": 202, "at_ms": 10},
  "notifies": [{"at_ms": 20, "notify": {"state": "terminated;reason=noresource", "body": "SIP/2.0 200 OK\r\n"}}],
  "expect": {"completion": {"event": "NO_SUCH_EVENT"}}
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_directory_and_the_admin_api_swap_checked_versions_only() {
    let [a, b, c]: [Vec<u8>; 3] = builds(&["a", "b", "c"]).await.try_into().unwrap();
    let dir = temp_dir("dir");
    let receiver = Receiver::start().await;
    let (server, admin) = start(&dir, &receiver, "127.0.0.1:0").await;

    // At start: the built-in plugin, nothing to roll back to.
    let builtin = admin.active("sip:refer").await.unwrap();
    assert_eq!(builtin["version"], "0.1.0", "{builtin}");
    assert_eq!(builtin["origin"], "builtin:sip-refer", "{builtin}");
    assert_eq!(builtin["previous"], Value::Null, "{builtin}");
    let (status, body) = admin.rollback("sip:refer").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["cause"]
            .as_str()
            .unwrap()
            .contains("no previous version"),
        "{body}"
    );

    // The plugin endpoints need the token; /metrics and /health do not.
    let (status, _) = admin.upload("sip:refer", a.clone(), None).await;
    assert_eq!(status, 401);
    let (status, _) = admin.upload("sip:refer", a.clone(), Some("wrong")).await;
    assert_eq!(status, 401);
    assert!(
        admin
            .metrics()
            .await
            .contains("verbhost_plugin_version_info")
    );

    // A new plugin, deployed the safe way, adds its verbs.
    let misbehave = std::fs::read(verbhost_guests::MISBEHAVE).unwrap();
    deploy(&dir, "misbehave.wasm", &misbehave);
    admin.wait_version("misbehave", Some("0.1.0")).await;

    // A file that is not wasm is refused and counted; nothing changes.
    std::fs::write(dir.join("junk.wasm"), b"this is not a component").unwrap();
    admin
        .wait_counter(
            r#"verbhost_plugin_swaps_total{verb="other",result="rejected"}"#,
            1.0,
        )
        .await;
    assert_eq!(admin.version("sip:refer").await.as_deref(), Some("0.1.0"));

    // The unsafe way: a truncated copy is refused, the completed file then serves.
    std::fs::write(dir.join("sip-refer.wasm"), &a[..a.len() / 2]).unwrap();
    admin
        .wait_counter(
            r#"verbhost_plugin_swaps_total{verb="other",result="rejected"}"#,
            2.0,
        )
        .await;
    assert_eq!(admin.version("sip:refer").await.as_deref(), Some("0.1.0"));
    std::fs::write(dir.join("sip-refer.wasm"), &a).unwrap();
    admin.wait_version("sip:refer", Some("0.1.0+a")).await;
    let active = admin.active("sip:refer").await.unwrap();
    assert_eq!(
        active["origin"],
        format!("file:{}", dir.join("sip-refer.wasm").display())
    );
    assert_eq!(active["previous"]["version"], "0.1.0", "{active}");

    // Its own scenarios: a version that fails one never serves.
    let scenarios = dir.join("sip-refer.scenarios");
    std::fs::create_dir_all(&scenarios).unwrap();
    std::fs::write(scenarios.join("refer.json"), PASSING_SCENARIO).unwrap();
    std::fs::write(scenarios.join("must-fail.json"), FAILING_SCENARIO).unwrap();
    deploy(&dir, "sip-refer.wasm", &c);
    admin
        .wait_counter(
            r#"verbhost_plugin_swaps_total{verb="sip:refer",result="rejected"}"#,
            1.0,
        )
        .await;
    assert_eq!(admin.version("sip:refer").await.as_deref(), Some("0.1.0+a"));

    // An upload goes through the same checks (the failing scenario refuses it), and once it
    // passes it serves and is saved over the file, so a restart keeps it.
    let (status, body) = admin.upload("sip:refer", b.clone(), Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["result"], "rejected", "{body}");
    assert_eq!(body["stage"], "scenarios", "{body}");
    assert!(
        body["cause"].as_str().unwrap().contains("must-fail.json")
            || body["cause"].as_str().unwrap().contains("NO_SUCH_EVENT"),
        "{body}"
    );
    std::fs::remove_file(scenarios.join("must-fail.json")).unwrap();
    let (status, body) = admin.upload("sip:refer", b.clone(), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "ok", "{body}");
    assert_eq!(body["version"], "0.1.0+b", "{body}");
    assert_eq!(body["scenarios"], 1, "{body}");
    let saved = dir.join("sip-refer.wasm");
    assert_eq!(body["saved"], saved.display().to_string(), "{body}");
    assert_eq!(std::fs::read(&saved).unwrap(), b);
    // An upload for a verb it does not implement is refused by name.
    let (status, body) = admin
        .upload("sip:refer", misbehave.clone(), Some(TOKEN))
        .await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (422, Some("name")),
        "{body}"
    );

    // Rollback, and a second rollback undoes the first.
    let (status, body) = admin.rollback("sip:refer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["version"], "0.1.0+a", "{body}");
    assert_eq!(admin.version("sip:refer").await.as_deref(), Some("0.1.0+a"));
    let (status, body) = admin.rollback("sip:refer").await;
    assert_eq!(
        (status, &body["active"]["version"]),
        (200, &json!("0.1.0+b"))
    );

    // Removing the file brings the built-in back.
    std::fs::remove_file(&saved).unwrap();
    admin.wait_version("sip:refer", Some("0.1.0")).await;
    // The counter is bumped just after the swap is published, so it may trail the version
    // by a moment on a loaded machine: wait for it rather than read it once.
    admin
        .wait_counter(
            r#"verbhost_plugin_swaps_total{verb="sip:refer",result="retired"}"#,
            1.0,
        )
        .await;
    let metrics = admin.metrics().await;
    for line in [
        r#"verbhost_plugin_rollbacks_total{verb="sip:refer"} 2"#,
        r#"verbhost_plugin_swaps_total{verb="sip:refer",result="retired"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with(
            r#"verbhost_plugin_version_info{verb="sip:refer",plugin="sip-refer",version="0.1.0","#
        )),
        "{metrics}"
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_refer_swapped_ten_times_under_load_fails_no_call() {
    if !sipp::require("sipp") {
        return;
    }
    let [a, b, c]: [Vec<u8>; 3] = builds(&["a", "b", "c"]).await.try_into().unwrap();
    let dir = temp_dir("load");
    let scenarios = dir.join("sip-refer.scenarios");
    std::fs::create_dir_all(&scenarios).unwrap();
    std::fs::write(scenarios.join("refer.json"), PASSING_SCENARIO).unwrap();
    let receiver = Receiver::start().await;
    let (server, admin) = start(&dir, &receiver, "127.0.0.1:28600").await;

    // 100 calls/s for 14 s; each is a whole transfer (REFER, NOTIFYs, BYE).
    let calls = 1400;
    let caller = sipp::SippPeer::start_with_args(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sipp/uac-transferee-accept.xml"
        )),
        28610,
        sipp::Transport::Udp,
        &[
            "127.0.0.1:28600",
            "-r",
            "100",
            "-m",
            &calls.to_string(),
            "-l",
            "500",
        ],
    )
    .expect("sipp starts");
    let load = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(90)));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for round in 0..10 {
        let (tag, bytes) = if round % 2 == 0 { ("a", &a) } else { ("b", &b) };
        let started = Instant::now();
        deploy(&dir, "sip-refer.wasm", bytes);
        admin
            .wait_version("sip:refer", Some(&format!("0.1.0+{tag}")))
            .await;
        let took = started.elapsed();
        if round < 2 {
            uncached.push(took);
        } else {
            cached.push(took);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        if round == 4 {
            // A broken file, then a version whose own scenario fails: neither serves.
            let serving = admin.version("sip:refer").await;
            deploy(&dir, "sip-refer.wasm", b"\0asm broken");
            std::fs::write(scenarios.join("must-fail.json"), FAILING_SCENARIO).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            deploy(&dir, "sip-refer.wasm", &c);
            admin
                .wait_counter(
                    r#"verbhost_plugin_swaps_total{verb="sip:refer",result="rejected"}"#,
                    2.0,
                )
                .await;
            assert_eq!(admin.version("sip:refer").await, serving);
            std::fs::remove_file(scenarios.join("must-fail.json")).unwrap();
        }
    }
    // Rollback under load too.
    let (status, body) = admin.rollback("sip:refer").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["version"], "0.1.0+a", "{body}");

    let outcome = load.await.unwrap();
    assert!(outcome.passed(), "sipp: {}", outcome.describe());
    let hits = receiver.wait_for(calls * 4, Duration::from_secs(20)).await;
    server.shutdown().await;

    // Every call completed, and each call's payloads all came from one build, never c.
    let mut builds_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for hit in &hits {
        let sid = hit.json["call_sid"].as_str().unwrap_or_default().to_owned();
        let build = hit.json["plugin_build"]
            .as_str()
            .unwrap_or("builtin")
            .to_owned();
        builds_of.entry(sid).or_default().insert(build);
        if hit.path == "/action" {
            *outcomes
                .entry(hit.json["event"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([("TRANSFER_REFER_SUCCESS".to_owned(), calls)]),
        "actionHooks by event"
    );
    assert_eq!(builds_of.len(), calls);
    let mixed: Vec<_> = builds_of.iter().filter(|(_, b)| b.len() != 1).collect();
    assert!(mixed.is_empty(), "calls served by two builds: {mixed:?}");
    let mut per_build: BTreeMap<&str, usize> = BTreeMap::new();
    for builds in builds_of.values() {
        for build in builds {
            *per_build.entry(build.as_str()).or_default() += 1;
        }
    }
    assert!(!per_build.contains_key("c"), "{per_build:?}");
    assert!(
        per_build.get("a").is_some_and(|n| *n > 0) && per_build.get("b").is_some_and(|n| *n > 0),
        "{per_build:?}"
    );
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    cached.sort();
    eprintln!(
        "swap latency under {calls} calls at 100/s (file renamed -> served): uncached {:?} ms, cached {:?} ms (median {} ms, max {} ms); calls per build: {per_build:?}",
        uncached.iter().map(ms).collect::<Vec<_>>(),
        cached.iter().map(ms).collect::<Vec<_>>(),
        ms(&cached[cached.len() / 2]),
        ms(cached.last().unwrap()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
