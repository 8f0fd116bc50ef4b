//! Plugins in Python: `py:refer-computed` (guest/verb-py, on guest/sdk-py) built from source
//! through `guest/sdk-py/build.sh` with the pinned componentize-py, loaded into the real
//! runtime (import allowlist, contract), run through its scenarios in the mock host, run many
//! at once in a pool too small for them (they wait, and all complete), and run on a real call
//! through `verbhost serve --plugins DIR` against the sipp transferee. The `verbhost plugin
//! new --lang python` template is built and tested as written.
//!
//! componentize-py comes from PyPI into target/py-venv (`guest/sdk-py/build.sh --install`,
//! which `.ci/run` runs). With `CI=true` a missing tool fails the test; elsewhere the test is
//! skipped with a loud message. Ports 28820-28839.

#[path = "support/serve.rs"]
mod serve;
#[path = "support/sipp.rs"]
mod sipp;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use verbhost_runtime::{
    CallHost, CallInfo, Direction, Identity, Level, NotifyError, ReferError, ReferEvent,
    ReferRequest, ReferResponse, RunError, Runtime, RuntimeConfig, Webhook,
};
use verbhost_testkit::{Hit, Receiver};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace root")
}

/// The pinned componentize-py, or `None` (after a loud skip message) when it is not
/// installed; panics instead with `CI=true`.
fn componentize_py() -> Option<PathBuf> {
    let tool = std::env::var_os("COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/py-venv/bin/componentize-py"));
    sipp::require(tool.to_str()?).then_some(tool)
}

/// Runs a build script and returns the path it printed last.
fn run_build(script: &Path, args: &[&Path], tool: &Path) -> PathBuf {
    let output = std::process::Command::new(script)
        .args(args)
        .env("COMPONENTIZE_PY", tool)
        .env("VERBHOST_ROOT", root())
        .output()
        .expect("the build script runs");
    assert!(
        output.status.success(),
        "{} failed: {}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the output path"),
    )
}

/// guest/verb-py built once per test run, through the build script.
fn verb_py() -> Option<PathBuf> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let tool = componentize_py()?;
    Some(
        BUILT
            .get_or_init(|| {
                let wasm = run_build(
                    &root().join("guest/sdk-py/build.sh"),
                    &[&root().join("guest/verb-py")],
                    &tool,
                );
                assert_eq!(wasm, root().join("target/py-plugins/verb-py.wasm"));
                wasm
            })
            .clone(),
    )
}

fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the scenario directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_python_verb_builds_loads_with_no_wasi_and_passes_its_scenarios() {
    let Some(wasm) = verb_py() else { return };
    // The import allowlist: the stub build imports the contract only.
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, &wasm).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(
        imports
            .iter()
            .all(|name| name.starts_with("verbhost:plugin/")),
        "{imports:?}"
    );
    let files = scenario_files(&root().join("guest/verb-py/scenarios"));
    let reports = verbhost_mock::run_files(&wasm, &files).expect("the real runtime loads it");
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.to_string())
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(reports.len(), 23, "every scenario ran");

    // It exports the contract's verb-check (the SDK's check_verb on its parse), so serve checks
    // an application of py:refer-computed before any call, as with the Rust plugin.
    let executor = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    executor.block_on(async {
        let host = verbhost_mock::MockHost::new().unwrap();
        let plugin = host.load_file(&wasm).await.unwrap();
        assert!(plugin.can_check(), "the Python plugin exports verb-check");
        plugin
            .check(r#"{"verb":"py:refer-computed","referTo":"+4930123"}"#)
            .await
            .expect("a good verb passes the check");
        let err = plugin
            .check(r#"{"verb":"py:refer-computed","referto":"+4930123"}"#)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid verb: py:refer-computed: unknown property referto"
        );
    });
}

/// A call host whose REFER takes real time to be answered (603), counting the runs in it.
struct SlowHost {
    delay: Duration,
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl CallHost for SlowHost {
    async fn send_refer(&mut self, _: ReferRequest) -> Result<ReferResponse, ReferError> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Ok(ReferResponse {
            refer_id: 1,
            status: 603,
            reason: "Decline".into(),
            headers: Vec::new(),
        })
    }

    async fn on_notify(&mut self, refer_id: u32, _: Duration) -> Result<ReferEvent, NotifyError> {
        Err(NotifyError::UnknownRefer(refer_id))
    }

    fn emit_event(&mut self, _: Webhook, _: Map<String, Value>) {}

    fn log(&mut self, _: Level, _: &str) {}

    fn clock_ms(&mut self) -> u64 {
        0
    }
}

fn call_info() -> CallInfo {
    CallInfo {
        call_sid: "sid-1".into(),
        sip_call_id: "c1@127.0.0.1".into(),
        direction: Direction::Inbound,
        from: "<sip:alice@127.0.0.1>;tag=a".into(),
        to: "<sip:app@127.0.0.1>".into(),
        remote_party: Identity {
            display_name: None,
            uri: "sip:alice@127.0.0.1".into(),
        },
        default_domain: "carrier.example".into(),
    }
}

/// Starts `runs` Python runs at once on a pool of `slots` run slots with
/// `core_per_slot` core instances each; returns how many fit at once, the outcomes, the most
/// runs seen inside the host at once and the runtime's overloaded count.
async fn crowd(
    wasm: &Path,
    slots: u32,
    core_per_slot: u32,
    slot_wait_ms: u64,
    runs: usize,
) -> (u32, Vec<Result<String, RunError>>, usize, u64) {
    let mut config = RuntimeConfig {
        max_concurrent_runs: slots,
        pool_core_instances_per_run: core_per_slot,
        ..RuntimeConfig::default()
    };
    config.run.slot_wait_ms = slot_wait_ms;
    let runtime: Runtime<SlowHost> = Runtime::new(config).unwrap();
    let plugin = runtime.load_file(wasm).await.expect("loads");
    let needs = plugin.compiled().needs();
    let fit = (slots * core_per_slot) / needs.core_instances;
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let verb = json!({"verb": "py:refer-computed", "referTo": "sip:carol@127.0.0.1"}).to_string();
    let tasks: Vec<_> = (0..runs)
        .map(|_| {
            let plugin = plugin.clone();
            let verb = verb.clone();
            let host = SlowHost {
                delay: Duration::from_millis(150),
                inside: inside.clone(),
                most: most.clone(),
            };
            tokio::spawn(async move {
                let run = plugin.run(host, &verb, &call_info()).await;
                run.outcome.map(|o| o.event)
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(runs);
    for task in tasks {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("every run ends within 60 s")
                .unwrap(),
        );
    }
    (
        fit,
        outcomes,
        most.load(Ordering::SeqCst),
        runtime.overloaded_runs(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_runs_beyond_what_the_pool_holds_wait_for_room_and_all_complete() {
    let Some(wasm) = verb_py() else { return };
    // 8 slots of 10 core instances: 80, room for two Python runs (about 38 each) at once,
    // where the slot count alone would allow eight.
    let (fit, outcomes, most, overloaded) = crowd(&wasm, 8, 10, 30_000, 9).await;
    assert_eq!(
        fit, 2,
        "a componentize-py instance needs 27 to 40 core instances"
    );
    for outcome in &outcomes {
        assert_eq!(
            outcome.as_ref().ok().map(String::as_str),
            Some("PY_REFER_FAILED"),
            "{outcome:?}"
        );
    }
    assert_eq!(most, 2, "runs waited for room: never more than fit at once");
    assert_eq!(overloaded, 0);

    // The wait is bounded and configurable: with 50 ms of slot_wait_ms the runs that cannot
    // get room in time end overloaded, naming what they waited for, and are counted.
    let (_, outcomes, _, overloaded) = crowd(&wasm, 8, 10, 50, 6).await;
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Err(err @ RunError::Overloaded { .. }) => Some(err.to_string()),
            Ok(_) => None,
            Err(other) => panic!("only overloaded runs may fail: {other}"),
        })
        .collect();
    assert_eq!(refused.len(), 4, "{outcomes:?}");
    assert_eq!(overloaded, 4);
    assert!(
        refused[0].contains("core instances of the instance pool's 80"),
        "{}",
        refused[0]
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verbhost-py-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_call_through_serve_runs_the_python_verb_against_the_sipp_transferee() {
    if !sipp::require("sipp") {
        return;
    }
    let Some(wasm) = verb_py() else { return };
    let dir = temp_dir("serve");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    // The plugin with its own scenarios beside it: serve runs them before serving it.
    std::fs::copy(&wasm, plugins.join("refer-computed.wasm")).unwrap();
    copy_dir(
        &root().join("guest/verb-py/scenarios"),
        &plugins.join("refer-computed.scenarios"),
    );
    let receiver = Receiver::start().await;
    let app = dir.join("app.json");
    std::fs::write(
        &app,
        json!([{"verb": "py:refer-computed", "id": "py-1", "referTo": "+4930999", "tag": "vip",
                "actionHook": "/action", "eventHook": "/event"}])
        .to_string(),
    )
    .unwrap();
    // An uncached 18 MB Python component compiles in seconds; allow for a busy machine.
    let server = serve::Server::start_within(
        &[
            "--sip",
            "127.0.0.1:28820",
            "--app",
            app.to_str().unwrap(),
            "--plugins",
            plugins.to_str().unwrap(),
            "--base-url",
            &receiver.base(),
            "--default-domain",
            "pstn.example",
        ],
        28821,
        Duration::from_secs(120),
    )
    .await;
    let (_, plugins_listed) = server.get("/plugins").await;
    assert!(
        plugins_listed.contains("py:refer-computed"),
        "{plugins_listed}\n{}",
        server.log()
    );
    let caller = sipp::SippPeer::start_with_args(
        &root().join("tests/sipp/uac-transferee-accept.xml"),
        28830,
        sipp::Transport::Udp,
        &["127.0.0.1:28820"],
    )
    .expect("sipp starts");
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    let server_log = || server.log();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server_log());
    let refer = outcome
        .received()
        .into_iter()
        .find(|m| m.starts_with("REFER "))
        .expect("sipp got the REFER")
        .to_owned();
    let hits = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(
        receiver.paths(),
        ["/event", "/event", "/event", "/action"],
        "{}",
        server_log()
    );
    let ids = |hit: &Hit| {
        json!({
            "call_sid": hit.json["call_sid"],
            "call_id": hit.json["call_id"],
            "direction": "inbound",
            "from": "+4930111",
            "to": "app",
            "caller_name": "Alice",
        })
    };
    let with = |hit: &Hit, extra: Value| {
        let mut all = ids(hit);
        all.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        all
    };
    let call_sid = hits[3].json["call_sid"].as_str().unwrap().to_owned();
    for (line, needle) in [
        (
            "Refer-To",
            "Refer-To: <sip:+4930999@pstn.example;user=phone>".to_owned(),
        ),
        (
            "X-Transferred-Call",
            format!("X-Transferred-Call: {call_sid}"),
        ),
        ("X-Transfer-Tag", "X-Transfer-Tag: vip".to_owned()),
        ("X-Call-Direction", "X-Call-Direction: inbound".to_owned()),
    ] {
        assert!(refer.contains(&needle), "{line} missing:\n{refer}");
    }
    let caller_uri = refer
        .lines()
        .find_map(|l| l.strip_prefix("X-Original-Caller: "))
        .expect("X-Original-Caller sent")
        .trim()
        .to_owned();
    assert!(
        caller_uri.starts_with("sip:+4930111@127.0.0.1"),
        "{caller_uri}"
    );
    for (hit, (status, reason)) in hits
        .iter()
        .zip([(100, "Trying"), (180, "Ringing"), (200, "OK")])
    {
        assert_eq!(
            hit.json,
            with(
                hit,
                json!({"event": "py-refer-progress", "status": status, "reason": reason, "verb_id": "py-1"})
            )
        );
    }
    assert_eq!(
        hits[3].json,
        with(
            &hits[3],
            json!({
                "event": "PY_REFER_TRANSFERRED",
                "outcome": "final-notify",
                "verb_id": "py-1",
                "refer_to": "<sip:+4930999@pstn.example;user=phone>",
                "headers_sent": {
                    "X-Transferred-Call": call_sid,
                    "X-Original-Caller": caller_uri,
                    "X-Call-Direction": "inbound",
                    "X-Transfer-Tag": "vip",
                },
                "refer_status": 202,
                "refer_reason": "Accepted",
                "final_status": 200,
                "final_reason": "OK",
                "call_status": "completed",
            })
        )
    );
    let (_, metrics) = server.get("/metrics").await;
    let line =
        "verbhost_verbs_total{verb=\"py:refer-computed\",outcome=\"PY_REFER_TRANSFERRED\"} 1";
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} missing:\n{metrics}"
    );
    drop(server); // killed on drop
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_python_template_builds_with_its_own_script_and_passes_verbhost_test() {
    let Some(tool) = componentize_py() else {
        return;
    };
    let parent = temp_dir("template");
    let dir = parent.join("my-verb");
    // The template as users get it: `verbhost plugin new`, then its own build script with no
    // VERBHOST_ROOT (the command wrote the source tree's path into it).
    let new = std::process::Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .args(["plugin", "new", "my-verb", "--lang", "python", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let build = std::process::Command::new(dir.join("build.sh"))
        .env("COMPONENTIZE_PY", &tool)
        .env_remove("VERBHOST_ROOT")
        .output()
        .expect("the template's build script runs");
    assert!(
        build.status.success(),
        "build.sh failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = dir.join("my-verb.wasm");
    assert_eq!(
        std::fs::canonicalize(String::from_utf8_lossy(&build.stdout).trim()).unwrap(),
        std::fs::canonicalize(&wasm).unwrap()
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .arg("test")
        .arg(&wasm)
        .args(scenario_files(&dir.join("scenarios")))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(&parent);
}
