//! Issue 9: verbhost nodes behind Kamailio, started by the shipped deployment
//! (`host/deploy/kamailio/run.sh` with its `kamailio.cfg`). sipp callers and a baresip
//! transferee talk to the proxy only; the nodes are real `verbhost serve` processes.
//! - calls split across two nodes, every transfer succeeds, the webhook payloads are exact,
//!   and the REFER, the BYE and the NOTIFYs pass the proxy (record-routed);
//! - SIGTERM on one node during load: no call fails (its calls finish, new ones go to the
//!   other node);
//! - SIGKILL on one node during load: only the calls it held fail; the test prints how many
//!   and how long the dispatcher took to notice;
//! - `verbhost call --proxy` through Kamailio to a baresip transferee: INVITE, ACK, REFER,
//!   202, NOTIFYs, their 200s and the BYE all pass the proxy.
//!
//! Needs kamailio (Debian `kamailio`), sipp and baresip. With `CI=true` a missing tool fails
//! the test; elsewhere the test is skipped with a loud message. Ports 28700-28799 only. The
//! tests share the machine's two cores, so they run one at a time.

#[path = "support/baresip.rs"]
mod baresip;
#[path = "support/sipp.rs"]
mod sipp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use verbhost_testkit::Receiver;

/// One test at a time: each starts a proxy, nodes and callers.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tools_present() -> bool {
    // Evaluate all three, so every missing tool is reported.
    let tools = [
        sipp::require("kamailio"),
        sipp::require("sipp"),
        sipp::require("baresip"),
    ];
    tools.iter().all(|t| *t)
}

/// Kamailio and `nodes` verbhost nodes, as `run.sh` starts them. The proxy listens on
/// `base`; node `i` (from 1) on `base + 2 + 10 * (i - 1)`, its admin API on the next port.
struct Pool {
    child: Child,
    dir: PathBuf,
    proxy: u16,
    nodes: u16,
}

impl Pool {
    async fn start(name: &str, base: u16, nodes: u16, serve_args: &[&str]) -> Pool {
        let dir =
            std::env::temp_dir().join(format!("verbhost-kamailio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("run dir");
        let log = std::fs::File::create(dir.join("run.log")).expect("run log");
        let child = Command::new(root().join("host/deploy/kamailio/run.sh"))
            .args(["--nodes", &nodes.to_string()])
            .args(["--proxy-port", &base.to_string()])
            .args(["--node-port", &(base + 2).to_string()])
            .arg("--run-dir")
            .arg(&dir)
            .args(["--verbhost", env!("CARGO_BIN_EXE_verbhost")])
            .arg("--")
            .args(serve_args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("run.sh starts");
        let mut pool = Pool {
            child,
            dir,
            proxy: base,
            nodes,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pool.log().contains("run.sh: ready") {
            if let Ok(Some(status)) = pool.child.try_wait() {
                panic!(
                    "run.sh exited ({status}) before the pool was ready:\n{}",
                    pool.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the pool was not ready in 60 s:\n{}",
                pool.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Every node active in the dispatcher (probed at least once).
        for node in 1..=nodes {
            pool.wait_for_state(node, 'A', Duration::from_secs(10))
                .await;
        }
        pool
    }

    fn node_port(&self, node: u16) -> u16 {
        self.proxy + 2 + 10 * (node - 1)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.log")).unwrap_or_default()
    }

    fn node_pid(&self, node: u16) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("node-{node}.pid")))
            .ok()
            .map(|p| p.trim().to_owned())
    }

    /// Sends `signal` (`TERM`, `KILL`) to node `node`.
    fn signal(&self, node: u16, signal: &str) {
        let pid = self.node_pid(node).expect("node pid file");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Whether node `node`'s process is still there.
    fn node_alive(&self, node: u16) -> bool {
        self.node_pid(node).is_some_and(|pid| {
            Command::new("kill")
                .args(["-0", &pid])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    async fn metrics(&self, node: u16) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.node_port(node) + 1);
        match reqwest::get(&url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(err) => format!("no metrics: {err}"),
        }
    }

    /// The dispatcher's state letter for node `node`: `A`ctive, `I`nactive, `D`isabled.
    fn state(&self, node: u16) -> Option<char> {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}/kamailio.ctl", self.dir.display()))
            .arg("dispatcher.list")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let uri = format!("URI: sip:127.0.0.1:{}", self.node_port(node));
        let mut lines = text.lines().skip_while(|l| l.trim() != uri);
        lines.next()?;
        lines
            .find_map(|l| l.trim().strip_prefix("FLAGS: "))
            .and_then(|f| f.chars().next())
    }

    /// Waits until node `node` has state `want`; returns how long that took.
    async fn wait_for_state(&self, node: u16, want: char, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.state(node) == Some(want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "node-{node} not {want} within {within:?} (state {:?}):\n{}",
                self.state(node),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // run.sh stops what it started on SIGTERM (the nodes drain, bounded by
        // --drain-timeout); anything left after 15 s is killed.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut leftovers: Vec<String> =
            (1..=self.nodes).filter_map(|n| self.node_pid(n)).collect();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("kamailio.pid")) {
            leftovers.push(pid.trim().to_owned());
        }
        for pid in leftovers {
            let _ = Command::new("kill")
                .args(["-KILL", &pid])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An application file in the pool's run directory: one `sip:refer` with both hooks.
fn app_file(dir_name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "verbhost-kamailio-app-{dir_name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("app dir");
    let path = dir.join("app.json");
    std::fs::write(
        &path,
        json!([{"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1", "actionHook": "/action", "eventHook": "/event"}])
            .to_string(),
    )
    .expect("write the app");
    path
}

/// sipp callers through the proxy: `scenario` with `extra` arguments.
fn callers(scenario: &str, port: u16, proxy: u16, extra: &[&str]) -> sipp::SippPeer {
    let mut args = vec![format!("127.0.0.1:{proxy}")];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sipp::SippPeer::start_with_args(
        &root().join("tests/sipp").join(scenario),
        port,
        sipp::Transport::Udp,
        &args,
    )
    .expect("sipp starts")
}

/// sipp's final `Successful call` and `Failed call` counts (cumulative column).
fn call_counts(outcome: &sipp::SippOutcome) -> (u64, u64) {
    let count = |label: &str| {
        outcome
            .stdout
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    (count("Successful call"), count("Failed call"))
}

/// The value of metric line `name` (exact label set included), or 0.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Every webhook a call posted, by call_sid, in arrival order.
fn by_call(receiver: &Receiver) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut calls: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for hit in receiver.hits() {
        let sid = hit.json["call_sid"].as_str().unwrap_or("").to_owned();
        calls
            .entry(sid)
            .or_default()
            .push((hit.path.clone(), hit.json.clone()));
    }
    calls
}

/// The exact posts of one successful transfer from `tests/sipp/uac-transferee-*.xml`.
fn expected_posts(first: &Value) -> Vec<(String, Value)> {
    let ids = json!({
        "call_sid": first["call_sid"],
        "call_id": first["call_id"],
        "direction": "inbound",
        "from": "+4930111",
        "to": "app",
        "caller_name": "Alice",
    });
    let with = |extra: Value| {
        let mut out = ids.clone();
        for (k, v) in extra.as_object().expect("object") {
            out[k] = v.clone();
        }
        out
    };
    let mut posts: Vec<(String, Value)> = ["100", "180", "200"]
        .iter()
        .map(|code| {
            (
                "/event".to_owned(),
                with(json!({"event": "transfer-status", "call_status": code})),
            )
        })
        .collect();
    posts.push((
        "/action".to_owned(),
        with(json!({
            "event": "TRANSFER_REFER_SUCCESS",
            "refer_status": 202,
            "referStatus": 202,
            "refer_reason": "Accepted",
            "final_referred_call_status": 200,
            "final_referred_call_reason": "OK",
            "completion_reason": "final-notify",
            "call_status": "completed",
        })),
    ));
    posts
}

/// Checks that every call in `calls` posted exactly the posts of a successful transfer.
fn assert_exact_posts(calls: &BTreeMap<String, Vec<(String, Value)>>, log: &str) {
    for (sid, posts) in calls {
        assert!(!sid.is_empty(), "a post without call_sid: {posts:?}");
        assert_eq!(posts, &expected_posts(&posts[0].1), "call {sid}\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_kamailio_split_across_two_nodes_with_exact_payloads() {
    if !tools_present() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let app = app_file("split");
    let pool = Pool::start(
        "split",
        28700,
        2,
        &[
            "--app",
            app.to_str().expect("utf-8"),
            "--base-url",
            &receiver.base(),
        ],
    )
    .await;
    const CALLS: u64 = 10;
    let caller = callers(
        "uac-transferee-accept.xml",
        28705,
        pool.proxy,
        &["-m", &CALLS.to_string(), "-r", "5"],
    );
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .expect("sipp joined");
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), pool.log());
    assert_eq!(call_counts(&outcome), (CALLS, 0), "{}", outcome.stdout);

    // Through the proxy: the 200 carries Kamailio's Record-Route, and the REFER and the BYE
    // arrive with Kamailio's Via on top (they were relayed, not sent straight to sipp).
    let proxy_via = format!("Via: SIP/2.0/UDP 127.0.0.1:{};branch=", pool.proxy);
    let received = outcome.received();
    for start in ["REFER ", "BYE "] {
        let relayed = received
            .iter()
            .filter(|m| m.starts_with(start))
            .filter(|m| m.lines().nth(1).is_some_and(|l| l.starts_with(&proxy_via)))
            .count();
        assert_eq!(
            relayed, CALLS as usize,
            "{start} via the proxy:\n{}",
            outcome.messages
        );
    }
    let rr = format!("Record-Route: <sip:127.0.0.1:{};lr", pool.proxy);
    let answered = received
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 1 INVITE"))
        .filter(|m| m.contains(&rr))
        .count();
    assert_eq!(
        answered, CALLS as usize,
        "200s with Record-Route:\n{}",
        outcome.messages
    );
    // sipp's NOTIFYs went to the proxy as a loose route.
    let notifies_routed = outcome
        .sent()
        .iter()
        .filter(|m| {
            m.starts_with("NOTIFY ")
                && m.contains(&format!("Route: <sip:127.0.0.1:{};lr", pool.proxy))
        })
        .count();
    assert_eq!(notifies_routed, 3 * CALLS as usize, "{}", outcome.messages);

    // Split evenly (round-robin), and every call's hooks exact.
    for node in 1..=2 {
        let metrics = pool.metrics(node).await;
        assert_eq!(
            metric(&metrics, "verbhost_calls_total{direction=\"inbound\"}"),
            CALLS / 2,
            "node-{node}:\n{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "verbhost_verbs_total{verb=\"sip:refer\",outcome=\"TRANSFER_REFER_SUCCESS\"}"
            ),
            CALLS / 2,
            "node-{node}:\n{metrics}"
        );
    }
    receiver
        .wait_for(4 * CALLS as usize, Duration::from_secs(10))
        .await;
    let calls = by_call(&receiver);
    assert_eq!(calls.len(), CALLS as usize, "{calls:?}");
    assert_exact_posts(&calls, &pool.log());
    let _ = std::fs::remove_dir_all(app.parent().expect("app dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_with_sigterm_during_load_costs_no_call() {
    if !tools_present() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let app = app_file("drain");
    let pool = Pool::start(
        "drain",
        28725,
        2,
        &[
            "--app",
            app.to_str().expect("utf-8"),
            "--base-url",
            &receiver.base(),
        ],
    )
    .await;
    // Each call lasts about 3 s (a 2.5 s pause before the final NOTIFY), so node-1 holds
    // several calls when it is told to drain.
    const CALLS: u64 = 24;
    let caller = callers(
        "uac-transferee-slow.xml",
        28730,
        pool.proxy,
        &["-m", &CALLS.to_string(), "-r", "4"],
    );
    let caller = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = pool.metrics(1).await;
    let held = metric(&before, "verbhost_calls_active");
    pool.signal(1, "TERM");
    let signalled = Instant::now();
    let noticed = pool.wait_for_state(1, 'I', Duration::from_secs(10)).await;
    eprintln!(
        "drain: node-1 held {held} calls at SIGTERM; the dispatcher marked it inactive after {noticed:?}"
    );
    let outcome = caller.await.expect("sipp joined");
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), pool.log());
    assert_eq!(call_counts(&outcome), (CALLS, 0), "{}", outcome.stdout);
    // node-1 finished its calls and exited on its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pool.node_alive(1) {
        assert!(
            Instant::now() < deadline,
            "node-1 still running after its drain:\n{}",
            pool.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "drain: node-1 exited {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(
        held > 0,
        "node-1 held no call at SIGTERM: the test proves nothing\n{before}"
    );
    receiver
        .wait_for(4 * CALLS as usize, Duration::from_secs(10))
        .await;
    let calls = by_call(&receiver);
    assert_eq!(calls.len(), CALLS as usize);
    assert_exact_posts(&calls, &pool.log());
    // After the SIGTERM, new calls went to node-2 only.
    let after = pool.metrics(2).await;
    let node2 = metric(&after, "verbhost_calls_total{direction=\"inbound\"}");
    let node1_before = metric(&before, "verbhost_calls_total{direction=\"inbound\"}");
    assert!(
        node2 > node1_before,
        "node-2 took the rest: node-1 {node1_before}, node-2 {node2}"
    );
    let _ = std::fs::remove_dir_all(app.parent().expect("app dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_loses_only_the_calls_it_held() {
    if !tools_present() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let receiver = Receiver::start().await;
    let app = app_file("kill");
    let pool = Pool::start(
        "kill",
        28750,
        2,
        &[
            "--app",
            app.to_str().expect("utf-8"),
            "--base-url",
            &receiver.base(),
        ],
    )
    .await;
    const CALLS: u64 = 24;
    // A call whose node died waits at most 6 s for its next message, then fails.
    let caller = callers(
        "uac-transferee-slow.xml",
        28755,
        pool.proxy,
        &[
            "-m",
            &CALLS.to_string(),
            "-r",
            "4",
            "-recv_timeout",
            "6000",
            "-max_non_invite_retrans",
            "3",
        ],
    );
    let caller = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = pool.metrics(1).await;
    let held = metric(&before, "verbhost_calls_active");
    let taken_before = metric(&before, "verbhost_calls_total{direction=\"inbound\"}");
    pool.signal(1, "KILL");
    let detection = pool.wait_for_state(1, 'I', Duration::from_secs(15)).await;
    let survivor_at_detection = metric(
        &pool.metrics(2).await,
        "verbhost_calls_total{direction=\"inbound\"}",
    );
    let outcome = caller.await.expect("sipp joined");
    let (succeeded, failed) = call_counts(&outcome);
    eprintln!(
        "failover: node-1 held {held} calls at SIGKILL; {failed} of {CALLS} calls failed; \
         the dispatcher marked node-1 inactive {detection:?} after the kill"
    );
    assert_eq!(succeeded + failed, CALLS, "{}", outcome.stdout);
    // Only calls node-1 held can fail: one more than it counted, for a call it was
    // answering at that instant.
    assert!(
        failed <= held + 1,
        "{failed} calls failed, node-1 held {held}:\n{}\n{}",
        outcome.describe(),
        pool.log()
    );
    // Every call node-2 took succeeded, including every call placed after detection.
    let survivor = pool.metrics(2).await;
    let node2_calls = metric(&survivor, "verbhost_calls_total{direction=\"inbound\"}");
    assert_eq!(
        metric(
            &survivor,
            "verbhost_verbs_total{verb=\"sip:refer\",outcome=\"TRANSFER_REFER_SUCCESS\"}"
        ),
        node2_calls,
        "{survivor}"
    );
    assert!(
        node2_calls > survivor_at_detection,
        "calls after detection went to node-2"
    );
    assert_eq!(
        node2_calls + taken_before,
        succeeded + failed,
        "every call was taken once"
    );
    // Every call that reported its transfer has exact hooks: all of node-2's, and node-1's
    // that finished before the kill. A call node-1 had just hung up when it was killed counts
    // as a success for the caller but lost its actionHook with the node.
    receiver
        .wait_for(4 * node2_calls as usize, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls: BTreeMap<_, _> = by_call(&receiver)
        .into_iter()
        .filter(|(_, posts)| posts.iter().any(|(path, _)| path == "/action"))
        .collect();
    let reported = calls.len() as u64;
    eprintln!(
        "failover: {} successful calls lost their actionHook with node-1",
        succeeded - reported.min(succeeded)
    );
    assert!(
        (node2_calls..=succeeded).contains(&reported),
        "{reported} calls reported, node-2 took {node2_calls}, {succeeded} succeeded"
    );
    assert_exact_posts(&calls, &pool.log());
    let _ = std::fs::remove_dir_all(app.parent().expect("app dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbhost_call_through_kamailio_transfers_a_baresip_transferee() {
    if !tools_present() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let pool = Pool::start("baresip", 28775, 1, &[]).await;
    let carol_port = 28783;
    let carol = sipp::SippPeer::start(
        &root().join("tests/sipp/uas-carol-answer.xml"),
        carol_port,
        sipp::Transport::Udp,
    )
    .expect("carol starts");
    let bob = baresip::BaresipPeer::start(28780).expect("baresip starts");
    let receiver = Receiver::start().await;
    let app_dir =
        std::env::temp_dir().join(format!("verbhost-kamailio-bob-{}", std::process::id()));
    std::fs::create_dir_all(&app_dir).expect("dir");
    let app = app_dir.join("app.json");
    std::fs::write(
        &app,
        json!([{"verb": "sip:refer", "referTo": format!("sip:carol@127.0.0.1:{carol_port}"), "actionHook": "/action"}])
            .to_string(),
    )
    .expect("app");
    let proxy = format!("127.0.0.1:{}", pool.proxy);
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_verbhost"))
        .arg("call")
        .arg(bob.uri())
        .arg("--app")
        .arg(&app)
        .args([
            "--proxy",
            &format!("sip:{proxy}"),
            "--base-url",
            &receiver.base(),
            "--sip-trace",
        ])
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("verbhost call ends within 40 s")
        .expect("verbhost call runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let trace = String::from_utf8_lossy(&output.stderr);
    // Carol hangs up herself; baresip would BYE her if it stopped first.
    let carol = tokio::task::spawn_blocking(move || carol.wait(Duration::from_secs(20)))
        .await
        .expect("carol joined");
    let bob_log = tokio::task::spawn_blocking(move || bob.stop())
        .await
        .expect("baresip stopped");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{trace}\n{bob_log}\n{}",
        pool.log()
    );
    assert!(carol.passed(), "{}", carol.describe());
    assert!(
        stdout.contains("\"event\":\"TRANSFER_REFER_SUCCESS\""),
        "{stdout}"
    );
    // Every message verbhost sent or received went through the proxy: the trace's address
    // lines (`... UDP A -> B (N bytes)`) all have the proxy on the far side.
    let lines: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains(" UDP ") && l.contains(" -> "))
        .collect();
    let mut methods = Vec::new();
    for (n, line) in trace.lines().enumerate() {
        if lines.contains(&line) {
            let (left, right) = line.split_once(" -> ").expect("arrow");
            let from = left.rsplit(' ').next().unwrap_or("");
            let to = right.split(' ').next().unwrap_or("");
            assert!(
                from == proxy || to == proxy,
                "bypassed the proxy: {line}\n{trace}"
            );
            if let Some(start) = trace.lines().nth(n + 1) {
                methods.push(start.to_owned());
            }
        }
    }
    for want in [
        "INVITE ",
        "ACK ",
        "REFER ",
        "SIP/2.0 202",
        "NOTIFY ",
        "BYE ",
    ] {
        assert!(
            methods.iter().any(|m| m.starts_with(want)),
            "{want} missing from the trace: {methods:?}"
        );
    }
    let notifies = methods.iter().filter(|m| m.starts_with("NOTIFY ")).count();
    assert!(
        notifies >= 2,
        "baresip's NOTIFY 100 and final NOTIFY: {methods:?}"
    );
    let hits = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(
        hits[0].json["event"], "TRANSFER_REFER_SUCCESS",
        "{}",
        hits[0].json
    );
    assert_eq!(hits[0].json["final_referred_call_status"], 200);
    let _ = std::fs::remove_dir_all(&app_dir);
}

/// `--proxy` must be a SIP URI: anything else stops `verbhost call` (exit 2) with the flag,
/// the key and the cause, before anything is dialled. Needs no external tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_not_a_sip_uri_stops_verbhost_call() {
    let dir = std::env::temp_dir().join(format!("verbhost-kamailio-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let app = dir.join("app.json");
    std::fs::write(
        &app,
        r#"[{"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1"}]"#,
    )
    .expect("app");
    for bad in ["127.0.0.1:28799", "<sip:127.0.0.1:28799;lr>"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_verbhost"))
            .args(["call", "sip:bob@127.0.0.1:28798", "--app"])
            .arg(&app)
            .args(["--proxy", bad])
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(20), output)
            .await
            .expect("exits in time")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "--proxy (sip.outbound_proxy) \"{bad}\" is not a SIP URI"
            )),
            "{bad}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
