//! verbhost end to end: the `verbhost` binary against real SIP peers (sipp, baresip, our own
//! endpoint) and a real HTTP webhook receiver, all on loopback.
//!
//! sipp and baresip come from Debian (`sip-tester`, `baresip-core`). With `CI=true` a missing
//! tool fails the test; elsewhere the test is skipped with a loud message. Ports 28000-28999.

#[path = "support/baresip.rs"]
mod baresip;
#[path = "support/serve.rs"]
mod serve;
#[path = "support/sipp.rs"]
mod sipp;

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use serve::{Server, TempFile, root, verbhost};
use sha2::Sha256;
use verbhost_sip::endpoint::CallError;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig};
use verbhost_testkit::{Big, BigAnswers, Hit, Receiver, Reply};

fn scenario(name: &str) -> PathBuf {
    root().join("tests/sipp").join(name)
}

/// What `verbhost call` did.
struct CallRun {
    code: i32,
    lines: Vec<Value>,
    stderr: String,
}

impl CallRun {
    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.of_type(kind);
        assert_eq!(
            found.len(),
            1,
            "exactly one {kind} line; output:\n{}",
            self.describe()
        );
        found[0]
    }

    fn describe(&self) -> String {
        let lines: Vec<String> = self.lines.iter().map(Value::to_string).collect();
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            lines.join("\n"),
            self.stderr
        )
    }
}

async fn call(target: &str, app: &str, extra: &[&str]) -> CallRun {
    let app = TempFile::new("app.json", app);
    let mut command = verbhost();
    command
        .arg("call")
        .arg(target)
        .arg("--app")
        .arg(&app.path)
        .args(extra);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("verbhost call finishes within 60 s")
        .expect("verbhost runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    CallRun {
        code: output.status.code().unwrap_or(-1),
        lines: stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn refer_app(receiver: &Receiver, refer_to: &str) -> String {
    json!([{
        "verb": "sip:refer",
        "id": "transfer-1",
        "referTo": refer_to,
        "actionHook": receiver.url("/action"),
        "eventHook": receiver.url("/event"),
    }])
    .to_string()
}

/// The identifiers every payload carries, from the `call.answered` line.
fn ids(run: &CallRun) -> Value {
    let answered = run.one("call.answered");
    json!({
        "call_sid": answered["call_sid"],
        "call_id": answered["call_id"],
        "direction": "outbound",
        "from": "verbhost",
        "to": "bob",
    })
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut out = base.as_object().unwrap().clone();
    out.extend(extra.as_object().unwrap().clone());
    Value::Object(out)
}

fn bodies(hits: &[Hit]) -> Vec<(String, Value)> {
    hits.iter()
        .map(|h| (h.path.clone(), h.json.clone()))
        .collect()
}

/// Runs `verbhost call` against a sipp transferee; `None` when sipp is missing locally.
async fn call_sipp(
    xml: &str,
    port: u16,
    receiver: &Receiver,
    extra: &[&str],
) -> Option<(CallRun, sipp::SippOutcome)> {
    if !sipp::require("sipp") {
        return None;
    }
    let peer =
        sipp::SippPeer::start(&scenario(xml), port, sipp::Transport::Udp).expect("sipp starts");
    let run = call(
        &format!("sip:bob@127.0.0.1:{port}"),
        &refer_app(receiver, "sip:carol@carrier.example"),
        extra,
    )
    .await;
    let outcome = tokio::task::spawn_blocking(move || peer.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(
        outcome.passed(),
        "{}\n{}",
        outcome.describe(),
        run.describe()
    );
    Some((run, outcome))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_a_transfer_and_shows_the_ladder_and_the_webhooks() {
    let output = tokio::time::timeout(Duration::from_secs(60), verbhost().arg("demo").output())
        .await
        .expect("the demo finishes within 60 s")
        .expect("verbhost runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The ladder, in order: verbhost's call, the REFER, bob's NOTIFYs as carol answers,
    // verbhost's BYE and bob's BYE to carol.
    let expected = [
        "|------------ INVITE ------------>|",
        "|<------- 200 OK (INVITE) --------|",
        "|------------- REFER ------------>|",
        "|<---- 202 Accepted (REFER) ------|",
        "|<----- NOTIFY (100 Trying) ------|",
        "|------------ INVITE ------------>|",
        "|<---- NOTIFY (180 Ringing) ------|",
        "|<------- NOTIFY (200 OK) --------|",
        "|-------------- BYE ------------->|",
    ];
    let mut rest = stdout.as_ref();
    for step in expected {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{stdout}"));
        rest = &rest[at + step.len()..];
    }
    let webhooks: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  POST /"))
        .collect();
    assert_eq!(
        webhooks,
        [
            "  POST /event",
            "  POST /event",
            "  POST /event",
            "  POST /action"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""event": "TRANSFER_REFER_SUCCESS""#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""final_referred_call_status": 200"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("result: TRANSFER_REFER_SUCCESS"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_transfers_through_a_sipp_transferee_with_exact_webhooks() {
    let receiver = Receiver::start().await;
    let Some((run, outcome)) = call_sipp(
        "uas-refer-accept.xml",
        28000,
        &receiver,
        &["--webhook-secret", "s3cret"],
    )
    .await
    else {
        return;
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    let ids = ids(&run);
    // What happened, as JSON lines.
    let kinds: Vec<&str> = run
        .lines
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    let wanted = [
        "call.placing",
        "call.answered",
        "verb.start",
        "refer.sent",
        "refer.response",
        "notify",
        "notify",
        "notify",
        "verb.completed",
        "bye.sent",
        "call.ended",
    ];
    let core: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| !k.starts_with("hook."))
        .collect();
    assert_eq!(core, wanted, "{}", run.describe());
    assert_eq!(
        run.one("refer.sent")["refer_to"],
        "<sip:carol@carrier.example>"
    );
    assert_eq!(run.one("refer.response")["status"], 202);
    let codes: Vec<&Value> = run
        .of_type("notify")
        .iter()
        .map(|n| &n["sipfrag"]["code"])
        .collect();
    assert_eq!(codes, [100, 180, 200]);
    // The webhooks, exactly and in order: one eventHook per NOTIFY, then the actionHook once.
    let hits = receiver.wait_for(4, Duration::from_secs(5)).await;
    let event = |code: &str| {
        merged(
            &ids,
            json!({"event": "transfer-status", "call_status": code, "verb_id": "transfer-1"}),
        )
    };
    let action = merged(
        &ids,
        json!({
            "event": "TRANSFER_REFER_SUCCESS",
            "refer_status": 202,
            "referStatus": 202,
            "refer_reason": "Accepted",
            "final_referred_call_status": 200,
            "final_referred_call_reason": "OK",
            "completion_reason": "final-notify",
            "verb_id": "transfer-1",
            "call_status": "completed",
        }),
    );
    assert_eq!(
        bodies(&hits),
        [
            ("/event".to_owned(), event("100")),
            ("/event".to_owned(), event("180")),
            ("/event".to_owned(), event("200")),
            ("/action".to_owned(), action.clone()),
        ]
    );
    // The completion line carries the same payload as the actionHook.
    assert_eq!(run.one("verb.completed")["payload"], action);
    // Every request is signed: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<body>").
    for hit in &hits {
        let signature = &hit.headers["verbhost-signature"];
        let (t, v1) = signature.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&hit.raw);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, hex, "signature of {}", hit.path);
    }
    // verbhost ended its leg after the transfer: sipp received our BYE.
    assert_eq!(outcome.received_count("BYE "), 1);
    assert_eq!(run.one("call.ended")["by"], "verbhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reports_a_declined_refer_and_hangs_up_when_the_application_ends() {
    let receiver = Receiver::start().await;
    let Some((run, outcome)) = call_sipp("uas-refer-decline.xml", 28010, &receiver, &[]).await
    else {
        return;
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    let completed = run.one("verb.completed");
    assert_eq!(completed["event"], "TRANSFER_REFER_ERROR");
    assert_eq!(completed["payload"]["refer_status"], 603);
    assert_eq!(completed["payload"]["call_status"], "in-progress");
    assert_eq!(completed["call_left"], false);
    assert_eq!(receiver.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    assert_eq!(receiver.paths(), ["/action"]);
    assert_eq!(outcome.received_count("BYE "), 1);
    assert_eq!(run.one("call.ended")["by"], "verbhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reports_a_busy_target_from_the_final_notify() {
    let receiver = Receiver::start().await;
    let Some((run, _)) = call_sipp("uas-refer-busy.xml", 28020, &receiver, &[]).await else {
        return;
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    let payload = &run.one("verb.completed")["payload"];
    assert_eq!(payload["event"], "TRANSFER_REFER_ERROR");
    assert_eq!(payload["final_referred_call_status"], 486);
    let hits = receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(
        receiver.paths(),
        ["/event", "/event", "/action"],
        "{:?}",
        bodies(&hits)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_counts_a_notify_that_arrives_before_the_202() {
    let receiver = Receiver::start().await;
    let Some((run, _)) = call_sipp("uas-refer-notify-before-202.xml", 28030, &receiver, &[]).await
    else {
        return;
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(run.one("verb.completed")["event"], "TRANSFER_REFER_SUCCESS");
    let codes: Vec<&Value> = run
        .of_type("notify")
        .iter()
        .map(|n| &n["sipfrag"]["code"])
        .collect();
    assert_eq!(codes, [100, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_honours_refer_sub_false() {
    let receiver = Receiver::start().await;
    let Some((run, _)) = call_sipp("uas-refer-sub-false.xml", 28040, &receiver, &[]).await else {
        return;
    };
    assert_eq!(run.code, 0, "{}", run.describe());
    let payload = &run.one("verb.completed")["payload"];
    assert_eq!(payload["event"], "TRANSFER_REFER_SUCCESS");
    assert_eq!(payload["completion_reason"], "refer-sub-false");
    assert!(run.of_type("notify").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_baresip_as_the_real_transferee() {
    if !sipp::require("sipp") || !sipp::require("baresip") {
        return;
    }
    let receiver = Receiver::start().await;
    let carol = sipp::SippPeer::start(
        &scenario("uas-carol-answer.xml"),
        28060,
        sipp::Transport::Udp,
    )
    .expect("carol starts");
    let bob = baresip::BaresipPeer::start(28050).expect("baresip starts");
    let run = call(
        "sip:bob@127.0.0.1:28050",
        &refer_app(&receiver, "sip:carol@127.0.0.1:28060"),
        &[],
    )
    .await;
    let carol = tokio::task::spawn_blocking(move || carol.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    let log = tokio::task::spawn_blocking(move || bob.stop())
        .await
        .unwrap();
    assert!(
        carol.passed(),
        "{}\nbaresip:\n{log}\n{}",
        carol.describe(),
        run.describe()
    );
    assert_eq!(run.code, 0, "{}\nbaresip:\n{log}", run.describe());
    let payload = &run.one("verb.completed")["payload"];
    assert_eq!(
        payload["event"],
        "TRANSFER_REFER_SUCCESS",
        "{}",
        run.describe()
    );
    assert_eq!(payload["final_referred_call_status"], 200);
    let hits = receiver.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(
        receiver.paths(),
        ["/event", "/event", "/action"],
        "{:?}",
        bodies(&hits)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_applications_are_refused_before_any_call_with_the_cause() {
    for (app, cause) in [
        ("[{\"verb\": \"sip:refer\",", "is not valid JSON"),
        (
            "{\"verb\": \"sip:refer\"}",
            "must be a JSON array of verbs, got an object",
        ),
        (
            "[{\"verb\": \"say\", \"text\": \"hi\"}]",
            "verb 0 (say): no plugin implements it",
        ),
        (
            "[42]",
            "verb 0 of the application: a verb is a JSON object, got a number",
        ),
    ] {
        // Nobody listens on this port: a call would fail with exit 3, not 2.
        let run = call("sip:nobody@127.0.0.1:28999", app, &[]).await;
        assert_eq!(run.code, 2, "{app}: {}", run.describe());
        assert!(run.stderr.contains(cause), "{app}: {}", run.describe());
        assert!(run.lines.is_empty(), "{app}: {}", run.describe());
    }
}

/// Our own endpoint as a callee that answers and waits for the BYE.
async fn answering_callee() -> (Endpoint, tokio::task::JoinHandle<bool>) {
    let endpoint = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let accepting = endpoint.clone();
    let task = tokio::spawn(async move {
        let Some(incoming) = accepting.accept().await else {
            return false;
        };
        let Some(call) = incoming.answer(b"v=0\r\n".to_vec()).await else {
            return false;
        };
        tokio::time::timeout(Duration::from_secs(20), call.ended())
            .await
            .is_ok()
    });
    (endpoint, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verb_its_plugin_rejects_fails_loudly_posts_its_action_hook_and_the_call_ends_cleanly() {
    // An application file is checked before the call, so the bad verb comes the only way
    // that is not checked: an actionHook's answer, which replaces the rest of the application.
    let receiver = Receiver::start().await;
    let (callee, ended) = answering_callee().await;
    let bad = json!([
        {"verb": "sip:refer", "id": "t9", "actionHook": receiver.url("/failed"), "colour": "red"},
    ])
    .to_string();
    receiver.reply("/action", vec![Reply::ok(bad)]);
    let app = json!([
        {"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1", "actionHook": receiver.url("/action")},
    ])
    .to_string();
    let run = call(&format!("sip:bob@{}", callee.local_addr()), &app, &[]).await;
    assert_eq!(run.code, 1, "{}", run.describe());
    let failed = run.one("verb.failed");
    assert_eq!(failed["reason"], "invalid-verb");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("unknown property colour"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("these verbs failed: sip:refer"),
        "{}",
        run.describe()
    );
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    let failed: Vec<&Hit> = hits.iter().filter(|h| h.path == "/failed").collect();
    assert_eq!(failed.len(), 1, "{}", run.describe());
    assert_eq!(failed[0].json["event"], "VERB_ERROR");
    assert_eq!(failed[0].json["completion_reason"], "invalid-verb");
    assert_eq!(failed[0].json["verb_id"], "t9");
    assert_eq!(
        failed[0].json["call_sid"],
        run.one("call.answered")["call_sid"]
    );
    assert!(ended.await.unwrap(), "verbhost hung up the call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_call_exits_3_with_the_cause() {
    let callee = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let rejecting = callee.clone();
    tokio::spawn(async move {
        if let Some(incoming) = rejecting.accept().await {
            incoming.reject(486).await;
        }
    });
    // An empty application is refused before dialling (exit 2), so give it a verb that never runs.
    let app = r#"[{"verb": "sip:refer", "referTo": "sip:carol@carrier.example"}]"#;
    let run = call(&format!("sip:bob@{}", callee.local_addr()), app, &[]).await;
    assert_eq!(run.code, 3, "{}", run.describe());
    assert!(run.stderr.contains("486"), "{}", run.describe());
    assert!(
        run.one("call.failed")["error"]
            .as_str()
            .unwrap()
            .contains("486")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_hook_answering_with_verbs_replaces_the_application() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    // Cognigy-style failover: the failed transfer's actionHook sends the call elsewhere.
    receiver.reply(
        "/action1",
        vec![Reply::ok(
            json!([{"verb": "sip:refer", "referTo": "sip:backup@carrier.example", "actionHook": "/action2"}])
                .to_string(),
        )],
    );
    let app = json!([
        {"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/action1"},
        {"verb": "sip:refer", "referTo": "sip:never@carrier.example", "actionHook": "/never"},
    ])
    .to_string();
    let peer = sipp::SippPeer::start(
        &scenario("uas-refer-failover.xml"),
        28070,
        sipp::Transport::Udp,
    )
    .expect("sipp starts");
    let run = call(
        "sip:bob@127.0.0.1:28070",
        &app,
        &["--base-url", &receiver.base()],
    )
    .await;
    let outcome = tokio::task::spawn_blocking(move || peer.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(
        outcome.passed(),
        "{}\n{}",
        outcome.describe(),
        run.describe()
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    // Relative hooks resolved against --base-url; the replacement ran, the original
    // second verb did not.
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(receiver.paths(), ["/action1", "/action2"]);
    assert_eq!(hits[0].json["event"], "TRANSFER_REFER_ERROR");
    assert_eq!(hits[0].json["refer_status"], 603);
    assert_eq!(hits[1].json["event"], "TRANSFER_REFER_SUCCESS");
    assert_eq!(hits[0].json["call_sid"], hits[1].json["call_sid"]);
    assert_eq!(run.one("app.replaced")["verbs"], json!(["sip:refer"]));
    let refers: Vec<&Value> = run
        .of_type("refer.sent")
        .iter()
        .map(|r| &r["refer_to"])
        .collect();
    assert_eq!(
        refers,
        [
            "<sip:carol@carrier.example>",
            "<sip:backup@carrier.example>"
        ]
    );
}

/// Starts a sipp caller against `host_port`.
fn sipp_caller(xml: &str, port: u16, host_port: u16) -> sipp::SippPeer {
    sipp::SippPeer::start_with_args(
        &scenario(xml),
        port,
        sipp::Transport::Udp,
        &[&format!("127.0.0.1:{host_port}")],
    )
    .expect("sipp starts")
}

fn inbound_ids(hit: &Hit) -> Value {
    json!({
        "call_sid": hit.json["call_sid"],
        "call_id": hit.json["call_id"],
        "direction": "inbound",
        "from": "+4930111",
        "to": "app",
        "caller_name": "Alice",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_an_application_file_on_an_inbound_call_and_counts_it() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "+4930999", "actionHook": "/action", "eventHook": "/event"}]).to_string(),
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28100",
            "--app",
            app.path.to_str().unwrap(),
            "--base-url",
            &receiver.base(),
            "--default-domain",
            "pstn.example",
        ],
        28101,
    )
    .await;
    let caller = sipp_caller("uac-transferee-accept.xml", 28110, 28100);
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    // A bare number went to the configured domain, never to an address of ours.
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
    let hits = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(
        receiver.paths(),
        ["/event", "/event", "/event", "/action"],
        "{}",
        server.log()
    );
    let ids = inbound_ids(&hits[3]);
    assert_eq!(
        hits[3].json,
        merged(
            &ids,
            json!({
                "event": "TRANSFER_REFER_SUCCESS",
                "refer_status": 202,
                "referStatus": 202,
                "refer_reason": "Accepted",
                "final_referred_call_status": 200,
                "final_referred_call_reason": "OK",
                "completion_reason": "final-notify",
                "call_status": "completed",
            })
        )
    );
    assert_eq!(
        hits[0].json,
        merged(
            &ids,
            json!({"event": "transfer-status", "call_status": "100"})
        )
    );
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "verbhost_calls_total{direction=\"inbound\"} 1",
        "verbhost_verbs_total{verb=\"sip:refer\",outcome=\"TRANSFER_REFER_SUCCESS\"} 1",
        "verbhost_refer_responses_total{class=\"2xx\"} 1",
        "verbhost_hooks_posted_total{kind=\"eventHook\"} 3",
        "verbhost_hooks_posted_total{kind=\"actionHook\"} 1",
        "verbhost_calls_active 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing from:\n{metrics}"
        );
    }
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_asks_the_call_hook_for_the_application() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    // The call hook's answer uses a relative actionHook: it resolves against the hook's URL.
    receiver.reply(
        "/call",
        vec![Reply::ok(json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "action"}]).to_string())],
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28120",
            "--call-hook",
            &receiver.url("/call"),
        ],
        28121,
    )
    .await;
    let caller = sipp_caller("uac-transferee-decline.xml", 28130, 28120);
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(receiver.paths(), ["/call", "/action"], "{}", server.log());
    let call = &hits[0].json;
    for (key, value) in inbound_ids(&hits[0]).as_object().unwrap() {
        assert_eq!(&call[key], value, "call hook {key}");
    }
    assert_eq!(call["call_status"], "trying");
    assert_eq!(call["originating_sip_ip"], "127.0.0.1");
    assert_eq!(call["originating_sip_port"], 28130);
    assert!(call["sip"]["headers"]["Call-ID"].is_string(), "{call}");
    let action = &hits[1].json;
    assert_eq!(action["call_sid"], call["call_sid"]);
    assert_eq!(action["event"], "TRANSFER_REFER_ERROR");
    assert_eq!(action["refer_status"], 603);
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_racing_the_final_notify_still_reports_the_transfer_exactly_once() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new("app.json", &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": receiver.url("/action")}]).to_string());
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28140",
            "--app",
            app.path.to_str().unwrap(),
        ],
        28141,
    )
    .await;
    let caller = sipp_caller("uac-transferee-bye-race.xml", 28150, 28140);
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    // Give a second actionHook every chance to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hits = receiver.hits();
    assert_eq!(receiver.paths(), ["/action"], "{}", server.log());
    assert_eq!(hits[0].json["event"], "TRANSFER_REFER_SUCCESS");
    assert_eq!(hits[0].json["final_referred_call_status"], 200);
    assert_eq!(hits[0].json["call_status"], "completed");
    // The far end hung up first: verbhost sent no BYE of its own.
    assert_eq!(outcome.received_count("BYE "), 0);
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_hook_refuses_that_call_only() {
    let receiver = Receiver::start().await;
    let app = json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/action"}]).to_string();
    receiver.reply(
        "/call",
        vec![
            Reply::ok("this is not an application"),
            Reply::status(500),
            Reply::status(503),
            Reply::ok(app.clone()).after(Duration::from_millis(1500)),
            Reply::ok(app.clone()).after(Duration::from_millis(1500)),
            Reply::ok(app),
        ],
    );
    let config = TempFile::new(
        "verbhost.toml",
        "[webhooks]\ntimeout_ms = 400\nretries = 1\nbackoff_ms = 50\n",
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28160",
            "--call-hook",
            &receiver.url("/call"),
            "--config",
            config.path.to_str().unwrap(),
        ],
        28161,
    )
    .await;
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let mut results = Vec::new();
    for n in 0..4 {
        let result = caller
            .call(
                "sip:app@127.0.0.1:28160",
                &format!("<sip:caller{n}@127.0.0.1>"),
                b"v=0\r\n".to_vec(),
            )
            .await;
        results.push(result);
    }
    let rejected = |r: &Result<_, CallError>| match r {
        Err(CallError::Rejected { status, .. }) => Some(*status),
        _ => None,
    };
    // Garbage, two 5xx answers, two timeouts: each refuses its own call with 500.
    assert_eq!(rejected(&results[0]), Some(500), "{}", server.log());
    assert_eq!(rejected(&results[1]), Some(500), "{}", server.log());
    assert_eq!(rejected(&results[2]), Some(500), "{}", server.log());
    // The next call is unaffected: answered, its REFER refused by our endpoint (501), the
    // application ends and verbhost hangs up.
    let call = results
        .pop()
        .unwrap()
        .unwrap_or_else(|e| panic!("the fourth call: {e}\n{}", server.log()));
    tokio::time::timeout(Duration::from_secs(10), call.ended())
        .await
        .expect("verbhost hung up");
    let log = server.log();
    assert!(
        log.contains("answered with no usable application: the application is not valid JSON"),
        "{log}"
    );
    assert!(
        log.contains("HTTP 503 Service Unavailable (after 2 attempt(s))"),
        "{log}"
    );
    assert!(log.contains("timed out"), "{log}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("verbhost_calls_rejected_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("verbhost_hook_failures_total{kind=\"callHook\"} 2"),
        "{metrics}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_calls_in_progress_and_refuses_new_ones() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": receiver.url("/action"), "eventHook": receiver.url("/event")}]).to_string(),
    );
    let mut server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28170",
            "--app",
            app.path.to_str().unwrap(),
        ],
        28171,
    )
    .await;
    let caller = sipp_caller("uac-transferee-slow.xml", 28180, 28170);
    // The transfer is under way (NOTIFY 100 and 180 posted) when SIGTERM arrives.
    let hits = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2, "{}", server.log());
    server.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.get("/health").await.0, 503);
    let late = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let refused = late
        .call(
            "sip:app@127.0.0.1:28170",
            "<sip:late@127.0.0.1>",
            b"v=0\r\n".to_vec(),
        )
        .await;
    assert!(
        matches!(refused, Err(CallError::Rejected { status: 503, .. })),
        "{:?}",
        refused.err()
    );
    // The call in progress runs to its end: final NOTIFY, actionHook, BYE.
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("exits once drained")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert_eq!(receiver.paths(), ["/event", "/event", "/event", "/action"]);
    assert!(
        server.log().contains("drained: every call has ended"),
        "{}",
        server.log()
    );
}

/// A field of /proc/PID/status, in KiB (`VmHWM`: peak resident memory; `VmRSS`: now).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Places a call from our own endpoint; its REFERs are refused with 501.
async fn place(
    caller: &Endpoint,
    port: u16,
    n: usize,
) -> Result<verbhost_sip::endpoint::Call, CallError> {
    caller
        .call(
            &format!("sip:app@127.0.0.1:{port}"),
            &format!("<sip:caller{n}@127.0.0.1>"),
            b"v=0\r\n".to_vec(),
        )
        .await
}

impl Server {
    /// /metrics once it has `line` (the session of a call that just ended may still be
    /// finishing); panics after `timeout`.
    async fn metrics_with(&self, line: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, metrics) = self.get("/metrics").await;
            if metrics.lines().any(|l| l == line) {
                return metrics;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{line} not there after {timeout:?}:\n{metrics}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The lines of `metrics` that are missing.
fn missing<'a>(metrics: &str, lines: &[&'a str]) -> Vec<&'a str> {
    lines
        .iter()
        .copied()
        .filter(|line| !metrics.lines().any(|l| l == *line))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_answers_over_the_cap_are_not_read_and_memory_stays_bounded() {
    const HUGE: usize = 50 << 20;
    let app = json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/action"}]).to_string();
    // Five call hook answers of 50 MB (three chunked, two with a Content-Length), then an
    // application whose actionHook answers 50 MB too.
    let big = BigAnswers::start(vec![
        (
            "/call",
            vec![
                Big::Chunked(HUGE),
                Big::Chunked(HUGE),
                Big::Chunked(HUGE),
                Big::Declared(HUGE),
                Big::Declared(HUGE),
                Big::Json(app),
            ],
        ),
        ("/action", vec![Big::Chunked(HUGE)]),
    ])
    .await;
    let server = Server::start(
        &["--sip", "127.0.0.1:28200", "--call-hook", &big.url("/call")],
        28201,
    )
    .await;
    let pid = server.child.id().expect("running");
    let rss_before = proc_status_kib(pid, "VmRSS");
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    // The five at once: each is refused, as for any failing call hook.
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..5 {
        let caller = caller.clone();
        calls.spawn(async move { place(&caller, 28200, n).await.err() });
    }
    while let Some(result) = calls.join_next().await {
        let err = result.unwrap();
        assert!(
            matches!(err, Some(CallError::Rejected { status: 500, .. })),
            "{err:?}\n{}",
            server.log()
        );
    }
    // The next call is unaffected: answered, its REFER refused (501), the actionHook's 50 MB
    // answer ignored (the verb's result stands), and verbhost hangs up.
    let call = place(&caller, 28200, 5)
        .await
        .unwrap_or_else(|e| panic!("the sixth call: {e}\n{}", server.log()));
    tokio::time::timeout(Duration::from_secs(10), call.ended())
        .await
        .expect("verbhost hung up");
    let peak = proc_status_kib(pid, "VmHWM");
    eprintln!(
        "verbhost RSS {rss_before} KiB before the calls, peak {peak} KiB after; {} body bytes written",
        big.written()
    );
    assert!(
        peak < rss_before + 40 * 1024,
        "peak RSS {peak} KiB, {rss_before} KiB before the calls\n{}",
        server.log()
    );
    // Each answer was abandoned at the cap: far less than the 300 MB offered was written.
    assert!(big.written() < 64 << 20, "{} bytes written", big.written());
    assert_eq!(
        big.requests("/action"),
        1,
        "a delivered answer is not retried"
    );
    let metrics = server
        .metrics_with("verbhost_calls_active 0", Duration::from_secs(5))
        .await;
    let lines = [
        "verbhost_calls_rejected_total 5",
        r#"verbhost_hook_answers_too_large_total{kind="callHook",cause="body"} 3"#,
        r#"verbhost_hook_answers_too_large_total{kind="callHook",cause="content_length"} 2"#,
        r#"verbhost_hook_answers_too_large_total{kind="actionHook",cause="body"} 1"#,
        r#"verbhost_verbs_total{verb="sip:refer",outcome="TRANSFER_REFER_ERROR"} 1"#,
        "verbhost_calls_active 0",
    ];
    assert!(
        missing(&metrics, &lines).is_empty(),
        "{:?} missing from:\n{metrics}",
        missing(&metrics, &lines)
    );
    let log = server.log();
    assert!(
        log.contains("answered with no usable application: the answer passed webhooks.max_response_bytes (262144 bytes)"),
        "{log}"
    );
    assert!(
        log.contains(
            "the answer declares 52428800 bytes (Content-Length), over webhooks.max_response_bytes"
        ),
        "{log}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_hook_loop_and_a_long_application_end_at_the_call_limits() {
    let receiver = Receiver::start().await;
    // Call 1: an actionHook that answers the same failing transfer forever.
    let looping = json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/loop"}]).to_string();
    // Call 2: a failing transfer whose actionHook answers with ten verbs nobody implements,
    // with made-up names (a call hook's application is checked before the call, so they come
    // as a replacement, which is not).
    let long: Vec<Value> = (0..10)
        .map(|n| json!({"verb": format!("made-up-{n}"), "actionHook": "/made-up"}))
        .collect();
    let transfer = json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/long"}]).to_string();
    receiver.reply(
        "/call",
        vec![Reply::ok(looping.clone()), Reply::ok(transfer)],
    );
    receiver.reply("/loop", vec![Reply::ok(looping)]);
    receiver.reply("/long", vec![Reply::ok(Value::from(long).to_string())]);
    let config = TempFile::new(
        "verbhost.toml",
        "[server]\nmax_verbs_per_call = 7\nmax_app_replacements = 3\n",
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28210",
            "--call-hook",
            &receiver.url("/call"),
            "--config",
            config.path.to_str().unwrap(),
        ],
        28211,
    )
    .await;
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    for n in 0..2 {
        let call = place(&caller, 28210, n)
            .await
            .unwrap_or_else(|e| panic!("call {n}: {e}\n{}", server.log()));
        tokio::time::timeout(Duration::from_secs(10), call.ended())
            .await
            .unwrap_or_else(|_| panic!("verbhost hung up call {n}\n{}", server.log()));
    }
    // The first verb and three replacements ran; the fourth replacement ended the call.
    let paths = receiver.paths();
    let count = |path: &str| paths.iter().filter(|p| *p == path).count();
    assert_eq!(count("/loop"), 4, "{paths:?}\n{}", server.log());
    // Seven verbs ran (the transfer and six made-up ones), the eighth ended the call.
    assert_eq!(count("/long"), 1, "{paths:?}\n{}", server.log());
    assert_eq!(count("/made-up"), 6, "{paths:?}\n{}", server.log());
    let metrics = server
        .metrics_with("verbhost_calls_active 0", Duration::from_secs(5))
        .await;
    let lines = [
        r#"verbhost_calls_limited_total{limit="max_app_replacements"} 1"#,
        r#"verbhost_calls_limited_total{limit="max_verbs_per_call"} 1"#,
        r#"verbhost_verbs_total{verb="sip:refer",outcome="TRANSFER_REFER_ERROR"} 5"#,
        // Made-up verb names are not labels.
        r#"verbhost_verbs_total{verb="other",outcome="no-plugin"} 6"#,
        "verbhost_calls_active 0",
    ];
    assert!(
        missing(&metrics, &lines).is_empty(),
        "{:?} missing from:\n{metrics}",
        missing(&metrics, &lines)
    );
    assert!(!metrics.contains("made-up"), "{metrics}");
    let log = server.log();
    assert!(
        log.contains("the call reached server.max_app_replacements (3); hanging up"),
        "{log}"
    );
    assert!(
        log.contains("the call reached server.max_verbs_per_call (7); hanging up"),
        "{log}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retry_of_a_delivery_carries_its_one_delivery_id() {
    let receiver = Receiver::start().await;
    receiver.reply(
        "/call",
        vec![Reply::ok(json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/action"}]).to_string())],
    );
    // Accepts the request and times out twice, then answers.
    receiver.reply(
        "/action",
        vec![
            Reply::ok("").after(Duration::from_millis(1500)),
            Reply::ok("").after(Duration::from_millis(1500)),
            Reply::ok(""),
        ],
    );
    let config = TempFile::new(
        "verbhost.toml",
        "[webhooks]\ntimeout_ms = 400\nretries = 2\nbackoff_ms = 50\n",
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28220",
            "--call-hook",
            &receiver.url("/call"),
            "--config",
            config.path.to_str().unwrap(),
        ],
        28221,
    )
    .await;
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let call = place(&caller, 28220, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    tokio::time::timeout(Duration::from_secs(10), call.ended())
        .await
        .expect("verbhost hung up");
    let hits = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(
        receiver.paths(),
        ["/call", "/action", "/action", "/action"],
        "{}",
        server.log()
    );
    let id = |hit: &Hit| {
        hit.headers
            .get("verbhost-delivery-id")
            .cloned()
            .unwrap_or_default()
    };
    let action = id(&hits[1]);
    // A UUID (version 4), the same on every retry, another for the call hook's delivery.
    assert_eq!(action.len(), 36, "{action:?}");
    assert_eq!(action.matches('-').count(), 4, "{action:?}");
    assert_eq!(&action[14..15], "4", "{action:?}");
    assert_eq!(id(&hits[2]), action);
    assert_eq!(id(&hits[3]), action);
    assert_eq!(id(&hits[0]).len(), 36);
    assert_ne!(id(&hits[0]), action);
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_hook_is_signed_over_the_query_it_sends() {
    let receiver = Receiver::start().await;
    receiver.reply(
        "/call",
        vec![Reply::ok(
            json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example",
                    "actionHook": {"url": "/action?tenant=a%20b", "method": "GET"}}])
            .to_string(),
        )],
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28230",
            "--call-hook",
            &receiver.url("/call"),
            "--webhook-secret",
            "s3cret",
        ],
        28231,
    )
    .await;
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let call = place(&caller, 28230, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    tokio::time::timeout(Duration::from_secs(10), call.ended())
        .await
        .expect("verbhost hung up");
    let hits = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 2, "{}", server.log());
    let hmac = |t: &str, signed: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(signed);
        let digest = mac.finalize().into_bytes();
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for hit in &hits {
        let signature = &hit.headers["verbhost-signature"];
        let (t, v1) = signature.split_once(",v1=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        // POST: the body. GET: the query string exactly as received, which carries the payload.
        let signed = match hit.method.as_str() {
            "GET" => hit
                .path
                .split_once('?')
                .expect("a query")
                .1
                .as_bytes()
                .to_vec(),
            _ => hit.raw.clone(),
        };
        assert_eq!(
            v1,
            hmac(t, &signed),
            "signature of {} {}",
            hit.method,
            hit.path
        );
    }
    let get = &hits[1];
    assert_eq!(get.method, "GET");
    assert!(
        get.path.starts_with("/action?tenant=a%20b&"),
        "{}",
        get.path
    );
    assert!(
        get.path.contains("event=TRANSFER_REFER_ERROR"),
        "{}",
        get.path
    );
    assert!(get.raw.is_empty());
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_event_hooks_neither_keep_calls_active_nor_hold_up_the_drain() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    // The eventHook URL accepts requests and never answers.
    receiver.reply(
        "/event",
        vec![Reply::ok("").after(Duration::from_secs(120))],
    );
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example",
                 "actionHook": receiver.url("/action"), "eventHook": receiver.url("/event")}])
        .to_string(),
    );
    let config = TempFile::new(
        "verbhost.toml",
        "[webhooks]\ntimeout_ms = 2000\nretries = 2\nbackoff_ms = 50\nevent_flush_ms = 200\n\
         event_drain_ms = 500\nmax_queued_events = 1\n",
    );
    let mut server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28240",
            "--app",
            app.path.to_str().unwrap(),
            "--config",
            config.path.to_str().unwrap(),
        ],
        28241,
    )
    .await;
    // Call A: three NOTIFYs, three eventHooks. The first is in flight for good; the queue
    // holds one, so the other two are dropped; when the call ends the first is abandoned.
    let caller = sipp_caller("uac-transferee-accept.xml", 28250, 28240);
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    // The bound is 500 ms; 3 s is a hang guard (without the bound: 3 x 6 s of retries).
    let metrics = server
        .metrics_with("verbhost_calls_active 0", Duration::from_secs(3))
        .await;
    let lines = [
        r#"verbhost_event_hooks_abandoned_total{cause="queue_full"} 2"#,
        r#"verbhost_event_hooks_abandoned_total{cause="drain_timeout"} 1"#,
        r#"verbhost_hooks_posted_total{kind="actionHook"} 1"#,
    ];
    assert!(
        missing(&metrics, &lines).is_empty(),
        "{:?} missing from:\n{metrics}",
        missing(&metrics, &lines)
    );
    assert!(receiver.paths().contains(&"/action".to_owned()));
    // Call B: SIGTERM once its first eventHook is stuck; the call runs to its end and the
    // server exits promptly, not after the eventHook's timeouts and retries.
    let events_before = receiver.paths().iter().filter(|p| *p == "/event").count();
    let caller = sipp_caller("uac-transferee-accept.xml", 28260, 28240);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.paths().iter().filter(|p| *p == "/event").count() == events_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no eventHook for call B\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.sigterm();
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let status = tokio::time::timeout(Duration::from_secs(5), server.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still draining 5 s after the last call ended\n{}",
                server.log()
            )
        })
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        server.log().contains("drained: every call has ended"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_calls_a_new_invite_gets_503_at_once_and_the_admitted_call_completes() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": receiver.url("/action")}]).to_string(),
    );
    let config = TempFile::new("verbhost.toml", "[sip]\nmax_calls = 1\nretry_after_s = 7\n");
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28270",
            "--app",
            app.path.to_str().unwrap(),
            "--config",
            config.path.to_str().unwrap(),
        ],
        28271,
    )
    .await;
    // /health and /metrics say how plugins are allocated (on-demand would slow everything).
    let (status, health) = server.get("/health").await;
    assert_eq!(
        (status, health.as_str()),
        (200, "ok\nplugin allocator: pooling (128 slots)\n")
    );
    server
        .metrics_with(
            r#"verbhost_plugin_allocator_info{kind="pooling",slots="128"} 1"#,
            Duration::from_secs(1),
        )
        .await;
    // One call in progress: the slow transferee holds the transfer for 2.5 s.
    let caller = sipp_caller("uac-transferee-slow.xml", 28280, 28270);
    server
        .metrics_with("verbhost_calls_active 1", Duration::from_secs(10))
        .await;
    // The second caller is refused at once, with no 100 Trying first, and counted.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:app@127.0.0.1:28270 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-second\r\n\
         Max-Forwards: 70\r\nFrom: <sip:second@127.0.0.1>;tag=s1\r\nTo: <sip:app@127.0.0.1>\r\n\
         Call-ID: second@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:second@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let sent = std::time::Instant::now();
    socket
        .send_to(invite.as_bytes(), "127.0.0.1:28270")
        .unwrap();
    let mut buffer = [0u8; 4096];
    let (n, _) = socket
        .recv_from(&mut buffer)
        .expect("an answer to the INVITE");
    let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(
        answer.starts_with("SIP/2.0 503"),
        "the first answer is the 503, not 100 Trying:\n{answer}"
    );
    assert!(answer.contains("\r\nRetry-After: 7\r\n"), "{answer}");
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
    server
        .metrics_with(
            r#"verbhost_sip_calls_refused_total{cause="max_calls"} 1"#,
            Duration::from_secs(5),
        )
        .await;
    // The admitted call is unaffected: its transfer completes and its actionHook arrives.
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].json["event"], "TRANSFER_REFER_SUCCESS");
    // With the call ended, a new one is admitted again.
    server
        .metrics_with("verbhost_calls_active 0", Duration::from_secs(10))
        .await;
    let again = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let admitted = place(&again, 28270, 3).await;
    assert!(admitted.is_ok(), "{:?}\n{}", admitted.err(), server.log());
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

/// Sends `bytes` to `to` and returns the answer, or `None` when none comes within 2 s.
fn udp_exchange(socket: &std::net::UdpSocket, to: &str, bytes: &[u8]) -> Option<String> {
    socket.send_to(bytes, to).unwrap();
    let mut buffer = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_trace_shows_garbage_a_bad_request_and_an_options_with_their_causes() {
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example"}]).to_string(),
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28940",
            "--app",
            app.path.to_str().unwrap(),
            "--sip-trace",
        ],
        28941,
    )
    .await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let host = "127.0.0.1:28940";
    let head = |method: &str, branch: &str, extra: &str| {
        format!(
            "{method} sip:app@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:app@{host}>\r\n\
             Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 {method}\r\n{extra}\r\n"
        )
    };
    // Garbage, with a terminal escape in it: dropped (there is nothing to answer).
    let garbage = b"\x01\x02hello \x1b[31mworld\r\n\r\n";
    assert_eq!(udp_exchange(&socket, host, garbage), None);
    // A request with a Content-Length that is not a number: answered 400 with the cause.
    let bad = head("OPTIONS", "bad", "Content-Length: many\r\n");
    let answer = udp_exchange(&socket, host, bad.as_bytes()).expect("an answer to the bad one");
    assert!(answer.starts_with("SIP/2.0 400 Bad Request"), "{answer}");
    // A good OPTIONS: answered 200.
    let options = head("OPTIONS", "good", "Content-Length: 0\r\n");
    let answer = udp_exchange(&socket, host, options.as_bytes()).expect("an answer to OPTIONS");
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");

    let metrics = server
        .metrics_with(
            r#"verbhost_sip_messages_dropped_total{cause="unparseable"} 1"#,
            Duration::from_secs(5),
        )
        .await;
    let expected = [
        r#"verbhost_sip_messages_dropped_total{cause="keepalive"} 0"#,
        "verbhost_sip_requests_rejected_total 1",
        r#"verbhost_sip_requests_answered_error_total{cause="no_dialog"} 0"#,
    ];
    assert_eq!(
        missing(&metrics, &expected),
        Vec::<&str>::new(),
        "{metrics}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");

    // Each message is there under its sngrep-style header line, in order.
    let inbound = format!("UDP {local} -> {host} (");
    let outbound = format!("UDP {host} -> {local} (");
    let garbage_at = log
        .find(&format!(
            "{inbound}{} bytes)\n\\x01\\x02hello \\x1b[31mworld\n\n",
            garbage.len()
        ))
        .unwrap_or_else(|| panic!("the garbage datagram, escaped:\n{log}"));
    let dropped_at = log
        .find(&format!(
            "UDP {local} -> {host} DROPPED (unparseable): bad start line"
        ))
        .unwrap_or_else(|| panic!("the drop and its cause:\n{log}"));
    let bad_at = log
        .find(&format!(
            "{inbound}{} bytes)\nOPTIONS sip:app@{host} SIP/2.0\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bad\n",
            bad.len()
        ))
        .unwrap_or_else(|| panic!("the bad request:\n{log}"));
    let answered_at = log
        .find(&format!(
            "UDP {host} -> {local} ANSWERED 400: bad Content-Length \"many\""
        ))
        .unwrap_or_else(|| panic!("the 400 and its cause:\n{log}"));
    let rejected_at = log
        .find(&outbound)
        .filter(|&at| log[at..].contains("bytes)\nSIP/2.0 400 Bad Request"))
        .unwrap_or_else(|| panic!("the 400 sent:\n{log}"));
    let options_at = log
        .find(&format!(
            "{inbound}{} bytes)\nOPTIONS sip:app@{host} SIP/2.0\n",
            options.len()
        ))
        .filter(|&at| log[at..].contains("branch=z9hG4bK-good\n"))
        .unwrap_or_else(|| panic!("the OPTIONS:\n{log}"));
    let ok_at = log
        .rfind(&outbound)
        .filter(|&at| log[at..].contains("bytes)\nSIP/2.0 200 OK\n"))
        .unwrap_or_else(|| panic!("the 200 sent:\n{log}"));
    assert!(
        garbage_at < dropped_at
            && dropped_at < bad_at
            && bad_at < answered_at
            && answered_at < rejected_at
            && rejected_at < options_at
            && options_at < ok_at,
        "{log}"
    );
    // A header line starts with the date and time, to the microsecond.
    let line_start = log[..garbage_at].rfind('\n').map_or(0, |at| at + 1);
    let stamp = &log[line_start..garbage_at];
    assert_eq!(
        stamp.len(),
        "2026-12-01 21:26:02.123456 ".len(),
        "{stamp:?}"
    );
    assert!(
        stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[19] == b'.',
        "{stamp:?}"
    );
    // Nothing hostile reaches the terminal as is.
    assert!(!log.contains('\x1b') && !log.contains('\x01'), "{log:?}");
}

/// Sends an out-of-dialog OPTIONS (a dispatcher's probe) from `socket` to `to` and returns the
/// answer's first line and the whole answer.
fn probe_options(socket: &std::net::UdpSocket, to: &str, branch: &str) -> (String, String) {
    let local = socket.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:dispatcher@127.0.0.1>;tag=d1\r\nTo: <sip:{to}>\r\n\
         Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    socket.send_to(options.as_bytes(), to).unwrap();
    let mut buffer = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buffer).expect("an answer to OPTIONS");
    let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
    let first = answer.lines().next().unwrap_or_default().to_owned();
    (first, answer)
}

/// Issue 9: a Kamailio dispatcher probes with OPTIONS. While serving the answer is 200; once
/// SIGTERM starts the drain it is 503 with Retry-After (the node goes inactive), a new INVITE
/// is a stateless 503 counted as `draining`, and the call in progress still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_sigterm_drain_options_probes_get_503() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": receiver.url("/action"), "eventHook": receiver.url("/event")}]).to_string(),
    );
    let config = TempFile::new("verbhost.toml", "[sip]\nretry_after_s = 9\n");
    let mut server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28290",
            "--app",
            app.path.to_str().unwrap(),
            "--config",
            config.path.to_str().unwrap(),
        ],
        28291,
    )
    .await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (first, answer) = probe_options(&socket, "127.0.0.1:28290", "z9hG4bK-probe1");
    assert_eq!(first, "SIP/2.0 200 OK", "{answer}");
    let caller = sipp_caller("uac-transferee-slow.xml", 28300, 28290);
    // The transfer is under way (NOTIFY 100 and 180 posted) when SIGTERM arrives.
    let hits = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2, "{}", server.log());
    server.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (first, answer) = probe_options(&socket, "127.0.0.1:28290", "z9hG4bK-probe2");
    assert!(
        first.starts_with("SIP/2.0 503"),
        "{answer}\n{}",
        server.log()
    );
    assert!(answer.contains("\r\nRetry-After: 9\r\n"), "{answer}");
    let invite = format!(
        "INVITE sip:app@127.0.0.1:28290 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-late\r\n\
         Max-Forwards: 70\r\nFrom: <sip:late@127.0.0.1>;tag=l1\r\nTo: <sip:app@127.0.0.1>\r\n\
         Call-ID: late@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:late@{local}>\r\n\
         Content-Length: 0\r\n\r\n",
        local = socket.local_addr().unwrap()
    );
    socket
        .send_to(invite.as_bytes(), "127.0.0.1:28290")
        .unwrap();
    let mut buffer = [0u8; 4096];
    let (n, _) = socket
        .recv_from(&mut buffer)
        .expect("an answer to the INVITE");
    let refused = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(
        refused.starts_with("SIP/2.0 503"),
        "the first answer is the 503, not 100 Trying:\n{refused}"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"verbhost_sip_calls_refused_total{cause="draining"} 1"#),
        "{metrics}"
    );
    // The call in progress runs to its end: final NOTIFY, actionHook, BYE.
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("exits once drained")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert_eq!(receiver.paths(), ["/event", "/event", "/event", "/action"]);
}

/// Issue 11: a call still in progress when the drain times out is hung up by verbhost, and
/// the call is reported as ended by verbhost (`by_remote=false`), not by the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_hung_up_at_the_drain_timeout_is_reported_as_verbhosts_hangup() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": receiver.url("/action"), "eventHook": receiver.url("/event")}]).to_string(),
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28860",
            "--app",
            app.path.to_str().unwrap(),
            "--drain-timeout",
            "1",
        ],
        28861,
    )
    .await;
    // The slow transferee pauses 2.5 s before its final NOTIFY: past the 1 s drain timeout.
    let caller = sipp_caller("uac-transferee-slow.xml", 28870, 28860);
    let hits = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2, "{}", server.log());
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
    // sipp expected the final NOTIFY's answer, not our BYE: its own outcome is not the point.
    let _ = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45))).await;
    assert!(log.contains("drain timeout"), "{log}");
    assert!(
        log.contains("hanging up: server.drain_timeout_s passed"),
        "{log}"
    );
    let ended: Vec<&str> = log.lines().filter(|l| l.contains("call ended")).collect();
    assert_eq!(ended.len(), 1, "{log}");
    assert!(ended[0].contains("by_remote=false"), "{log}");
}

/// `verbhost call --hep` exports too: the INVITE it sends reaches the HEP socket as a HEP v3
/// packet (the packet format itself is checked by sngrep in the test below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbhost_call_exports_its_sip_messages_as_hep() {
    let hep = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    hep.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let callee = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let app = json!([{"verb": "sip:refer", "referTo": "+4930123"}]).to_string();
    let file = TempFile::new("app.json", &app);
    let mut child = verbhost()
        .arg("call")
        .arg(format!("sip:bob@{}", callee.local_addr().unwrap()))
        .arg("--app")
        .arg(&file.path)
        .arg("--hep")
        .arg(hep.local_addr().unwrap().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let received = tokio::task::spawn_blocking(move || {
        hep.recv_from(&mut buf).map(|(len, _)| buf[..len].to_vec())
    })
    .await
    .unwrap();
    let _ = child.kill().await;
    let packet = received.expect("a HEP packet from verbhost call");
    assert!(packet.starts_with(b"HEP3"), "{packet:?}");
    // The total length in the header is the datagram's.
    assert_eq!(
        u16::from_be_bytes([packet[4], packet[5]]) as usize,
        packet.len()
    );
    let text = String::from_utf8_lossy(&packet);
    assert!(text.contains("INVITE sip:bob@"), "{text}");
}

/// Issue 11: every SIP message sent and received goes to `--hep ADDR` as a HEP v3 packet, and
/// sngrep, listening for HEP (`-L udp:ADDR`), decodes it and writes it to its pcap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hep_export_is_received_and_decoded_by_sngrep() {
    if !sipp::require("sngrep") {
        return;
    }
    let pcap = TempFile::new("hep.pcap", "");
    let hep_port = 28862;
    let mut sngrep = tokio::process::Command::new("sngrep")
        .args(["-N", "-q", "-L", &format!("udp:127.0.0.1:{hep_port}"), "-O"])
        .arg(&pcap.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sngrep starts");
    // sngrep is listening once its port can no longer be bound.
    let mut listening = false;
    for _ in 0..250 {
        if std::net::UdpSocket::bind(("127.0.0.1", hep_port)).is_err() {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listening, "sngrep did not bind 127.0.0.1:{hep_port}");
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example"}]).to_string(),
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28863",
            "--app",
            app.path.to_str().unwrap(),
            // A host name, resolved at start.
            "--hep",
            &format!("localhost:{hep_port}"),
        ],
        28864,
    )
    .await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let branch = format!("z9hG4bK-hep-{}", std::process::id());
    let (first, _) = probe_options(&socket, "127.0.0.1:28863", &branch);
    assert_eq!(first, "SIP/2.0 200 OK");
    // The export is asynchronous: both packets are out once the counter says so.
    let sent = r#"verbhost_sip_hep_packets_total{result="sent"} 2"#;
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = server.get("/metrics").await.1;
        if metrics.contains(sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(sent), "{metrics}");
    assert!(
        metrics.contains(r#"verbhost_sip_hep_packets_total{result="queue_full"} 0"#),
        "{metrics}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
    // sngrep flushes its pcap when it exits on SIGTERM.
    let pid = sngrep.id().expect("sngrep running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = tokio::time::timeout(Duration::from_secs(10), sngrep.wait()).await;
    let captured = std::fs::read(&pcap.path).unwrap();
    let text = String::from_utf8_lossy(&captured);
    let call_id = format!("Call-ID: {branch}@127.0.0.1");
    assert!(
        text.contains("OPTIONS sip:127.0.0.1:28863 SIP/2.0\r\nVia: SIP/2.0/UDP"),
        "sngrep's pcap lacks the OPTIONS ({} bytes):\n{text}",
        captured.len()
    );
    assert!(text.contains("SIP/2.0 200 OK\r\n"), "no 200 OK:\n{text}");
    assert_eq!(text.matches(&call_id).count(), 2, "{text}");
    // sngrep rebuilds each packet's IPv4 and UDP headers from the HEP address chunks: the
    // 8-byte UDP header right before each message has the ports it crossed between.
    let probe = socket.local_addr().unwrap().port();
    let ports_before = |needle: &[u8]| {
        let at = captured
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the message is in the pcap");
        let udp = &captured[at - 8..at];
        let ip = &captured[at - 28..at - 8];
        (
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
            ip[12..20].to_vec(),
        )
    };
    let loopback = vec![127, 0, 0, 1, 127, 0, 0, 1];
    assert_eq!(
        ports_before(b"OPTIONS sip:"),
        (probe, 28863, loopback.clone())
    );
    assert_eq!(ports_before(b"SIP/2.0 200 OK"), (28863, probe, loopback));
}

/// Issue 11: socket addresses take host names (resolved at start), in flags and in the config
/// file, and relative paths in the config file are relative to the file's directory, not to
/// the working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_take_host_names_and_config_paths_are_relative_to_the_file() {
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example"}]).to_string(),
    );
    let config = app.dir.join("verbhost.toml");
    std::fs::write(
        &config,
        "[sip]\nlisten = \"localhost:28865\"\n[app]\nfile = \"app.json\"\n",
    )
    .unwrap();
    // The working directory is the repository root, where there is no app.json.
    let server = Server::start(&["--config", config.to_str().unwrap()], 28866).await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (first, _) = probe_options(&socket, "127.0.0.1:28865", "z9hG4bK-names");
    assert_eq!(first, "SIP/2.0 200 OK");
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
    // The same with flags: --sip and --admin as names.
    let child = verbhost()
        .args([
            "serve",
            "--sip",
            "localhost:28867",
            "--admin",
            "localhost:28868",
            "--app",
        ])
        .arg(&app.path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("verbhost serve starts");
    let server = Server {
        child,
        admin: "127.0.0.1:28868".into(),
        log: TempFile::new("unused.log", ""),
    };
    let mut up = false;
    for _ in 0..300 {
        if reqwest::get("http://127.0.0.1:28868/health").await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "verbhost serve --sip localhost:... --admin localhost:... did not come up"
    );
    let (first, _) = probe_options(&socket, "127.0.0.1:28867", "z9hG4bK-flags");
    assert_eq!(first, "SIP/2.0 200 OK");
    let (code, _) = server.stop().await;
    assert_eq!(code, 0);
}

/// Issue 9: behind a record-routing proxy a REFER sent right behind the 200 can overtake it.
/// The host holds its REFER until the ACK: a caller that ACKs 300 ms late gets no REFER
/// before its ACK (the scenario fails on one) and the transfer still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_acks_late_gets_the_refer_only_after_its_ack() {
    if !sipp::require("sipp") {
        return;
    }
    let receiver = Receiver::start().await;
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": receiver.url("/action")}]).to_string(),
    );
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28310",
            "--app",
            app.path.to_str().unwrap(),
        ],
        28311,
    )
    .await;
    let caller = sipp_caller("uac-transferee-late-ack.xml", 28320, 28310);
    let outcome = tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(45)))
        .await
        .unwrap();
    assert!(outcome.passed(), "{}\n{}", outcome.describe(), server.log());
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].json["event"], "TRANSFER_REFER_SUCCESS");
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

/// Runs `verbhost plugins ARGS`: (exit code, stdout, stderr).
async fn plugins_cmd(args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        verbhost().arg("plugins").args(args).output(),
    )
    .await
    .expect("verbhost plugins exits within 60 s")
    .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugins_command_lists_pushes_and_rolls_back_through_the_admin_api() {
    let dir = TempFile::new(
        "app.json",
        r#"[{"verb": "sip:refer", "referTo": "+4930999"}]"#,
    );
    let plugins = dir.dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28620",
            "--app",
            dir.path.to_str().unwrap(),
            "--plugins",
            plugins.to_str().unwrap(),
            "--admin-token",
            "t0ken",
        ],
        28621,
    )
    .await;
    let admin = ["--admin", "127.0.0.1:28621", "--token", "t0ken"];
    let with = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(admin.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        plugins_cmd(&args).await
    };

    let (code, out, err) = run(with(&["list"])).await;
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(header.starts_with("VERB"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("sip:refer") && l.contains("builtin:sip-refer")),
        "{out}"
    );

    // A wrong token is bad input (2); an unreachable server is 3.
    let (code, _, err) = plugins_cmd(&["list", "--admin", "127.0.0.1:28621", "--token", "x"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refused the token"), "{err}");
    let (code, _, err) = plugins_cmd(&["list", "--admin", "127.0.0.1:9"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");

    // A file that is not a plugin is refused (1) with the cause; nothing changes.
    let junk = dir.dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (code, out, err) = run(with(&[
        "push",
        junk.to_str().unwrap(),
        "--name",
        "sip:refer",
    ]))
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.starts_with("rejected: "), "{err}");
    // The misbehave plugin, pushed under its plugin name, serves and is saved.
    let (code, out, err) = run(with(&[
        "push",
        verbhost_guests::MISBEHAVE,
        "--name",
        "misbehave",
    ]))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("ok: misbehave is now misbehave 0.1.0"),
        "{out}"
    );
    assert!(plugins.join("misbehave.wasm").exists(), "{out}");
    let (code, out, err) = run(with(&["rollback", "misbehave"])).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no previous version"), "{err}");
    let (code, out, _) = run(with(&["list", "--json"])).await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let verbs: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["verb"].as_str())
        .collect();
    assert_eq!(verbs, ["misbehave", "sip:refer"], "{out}");
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

/// `verbhost serve ARGS`, which must refuse to start: its exit code and stderr.
async fn serve_refused(args: &[&str]) -> (i32, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        verbhost().arg("serve").args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("verbhost serve {args:?} started instead of refusing"))
    .expect("verbhost runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Applications that pass the JSON and verb-name checks but that their plugin (or the host's
/// hook check) refuses, each with the words that must name the fault.
fn apps_failing_their_check() -> Vec<(String, &'static str)> {
    vec![
        (
            json!([{"verb": "sip:refer", "referTo": "+4930123", "eventhook": "https://app.example/e"}]).to_string(),
            "verb 0 (sip:refer): unknown property eventhook",
        ),
        (
            // The README's example: the typo is named, not reported as a missing referTo.
            json!([{"verb": "sip:refer", "referto": "+4930123"}]).to_string(),
            "verb 0 (sip:refer): unknown property referto",
        ),
        (
            json!([{"verb": "sip:refer", "referTo": "+4930123", "actionHook": "ht!tp://bad url"}]).to_string(),
            "verb 0 (sip:refer): actionHook: the URL \"ht!tp://bad url\" contains white space",
        ),
        (
            json!([{"verb": "sip:refer", "referTo": "+4930123", "actionHook": {"uri": "/x"}}]).to_string(),
            "verb 0 (sip:refer): actionHook: unknown property uri",
        ),
        (
            // A relative hook and no --base-url: it could never be delivered.
            json!([{"verb": "sip:refer", "referTo": "+4930123", "actionHook": "/done"}]).to_string(),
            "verb 0 (sip:refer): actionHook: bad hook URL \"/done\": relative URL and the application has no base URL",
        ),
        (
            json!([
                {"verb": "sip:refer", "referTo": "+4930123"},
                {"sip:refer": {"referTo": "sip:carol@pbx.example", "colour": "red"}}
            ])
            .to_string(),
            "verb 1 (sip:refer): unknown property colour",
        ),
        (
            // Longer than one call may run (server.max_verbs_per_call, 1000): it could never
            // finish, and checking it verb by verb would cost the plugin 1001 sandboxes.
            serde_json::to_string(&vec![json!({"verb": "sip:refer", "referTo": "+4930123"}); 1001])
                .unwrap(),
            "the application has 1001 verbs, more than one call may run (server.max_verbs_per_call = 1000)",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_with_an_application_that_fails_its_check() {
    for (app, cause) in apps_failing_their_check() {
        let file = TempFile::new("app.json", &app);
        let (code, stderr) = serve_refused(&[
            "--sip",
            "127.0.0.1:28840",
            "--app",
            file.path.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 2, "{app}: {stderr}");
        assert!(
            stderr.contains(cause),
            "{app}: expected {cause:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("application {}", file.path.display())),
            "{stderr}"
        );
        assert!(!stderr.contains("verbhost is serving"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_refuses_an_application_that_fails_its_check_without_dialling() {
    // A real UDP socket as the callee: nothing may reach it.
    let callee = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("sip:bob@{}", callee.local_addr().unwrap());
    for (app, cause) in apps_failing_their_check() {
        let run = call(&target, &app, &[]).await;
        assert_eq!(run.code, 2, "{app}: {}", run.describe());
        assert!(run.stderr.contains(cause), "{app}: {}", run.describe());
        assert!(run.lines.is_empty(), "{app}: {}", run.describe());
    }
    // With a base URL the relative hook resolves, so only the check stood in the way: the
    // same application then dials (and the socket sees the INVITE).
    callee
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    match callee.recv_from(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the callee received something: {other:?}"),
    }
    let app =
        json!([{"verb": "sip:refer", "referTo": "+4930123", "actionHook": "/done"}]).to_string();
    let file = TempFile::new("app.json", &app);
    let mut command = verbhost();
    command
        .args(["call", &target, "--app"])
        .arg(&file.path)
        .args(["--base-url", "http://127.0.0.1:9/"]);
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    callee
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (len, _) = callee
        .recv_from(&mut buf)
        .expect("the checked application dials");
    assert!(
        buf[..len].starts_with(b"INVITE "),
        "{}",
        String::from_utf8_lossy(&buf[..len])
    );
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_hook_application_that_fails_its_check_refuses_that_call_only() {
    let receiver = Receiver::start().await;
    let typo =
        json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "eventhook": "/e"}])
            .to_string();
    let good = json!([{"verb": "sip:refer", "referTo": "sip:carol@carrier.example", "actionHook": "/action"}]).to_string();
    receiver.reply("/call", vec![Reply::ok(typo), Reply::ok(good)]);
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28841",
            "--call-hook",
            &receiver.url("/call"),
        ],
        28842,
    )
    .await;
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let refused = place(&caller, 28841, 0).await;
    assert!(
        matches!(refused, Err(CallError::Rejected { status: 500, .. })),
        "{:?}\n{}",
        refused.as_ref().map(|_| "answered"),
        server.log()
    );
    let log = server.log();
    assert!(
        log.contains(&format!(
            "call refused: the call hook {} answered with an application that fails its check: verb 0 (sip:refer): unknown property eventhook",
            receiver.url("/call")
        )),
        "{log}"
    );
    // The next call is unaffected: answered, its REFER refused by our endpoint (501), and the
    // relative actionHook (resolved against the call hook's URL) posted.
    let call = place(&caller, 28841, 1)
        .await
        .unwrap_or_else(|e| panic!("the second call: {e}\n{}", server.log()));
    tokio::time::timeout(Duration::from_secs(10), call.ended())
        .await
        .expect("verbhost hung up");
    let hits = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert!(hits.iter().any(|h| h.path == "/action"), "{}", server.log());
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("verbhost_calls_rejected_total 1"),
        "{metrics}"
    );
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_for_contract_0_1_0_still_loads_and_serves_checked_by_the_host_only() {
    let receiver = Receiver::start().await;
    let plugins = TempFile::new("old.wasm", "");
    std::fs::copy(verbhost_guests::CONTRACT_0_1_0, &plugins.path).unwrap();
    // The host checks what it can: the verb has a plugin, and the hook resolves.
    let app = TempFile::new(
        "app.json",
        &json!([{"verb": "old:greet", "actionHook": receiver.url("/action")}]).to_string(),
    );
    let dir = plugins.dir.to_str().unwrap();
    let server = Server::start(
        &[
            "--sip",
            "127.0.0.1:28843",
            "--plugins",
            dir,
            "--app",
            app.path.to_str().unwrap(),
        ],
        28844,
    )
    .await;
    let log = server.log();
    assert!(
        log.contains("exports no verbhost:plugin/verb-check") && log.contains("contract-0-1-0"),
        "{log}"
    );
    let caller = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let call = place(&caller, 28843, 0)
        .await
        .unwrap_or_else(|e| panic!("the call: {e}\n{}", server.log()));
    tokio::time::timeout(Duration::from_secs(10), call.ended())
        .await
        .expect("verbhost hung up once the application ended");
    let hits = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].path, "/action");
    assert_eq!(hits[0].json["direction"], "inbound", "{}", server.log());
    let log = server.log();
    assert!(log.contains("verb=old:greet event=GREETED"), "{log}");
    let (code, log) = server.stop().await;
    assert_eq!(code, 0, "{log}");
    // A relative hook with no base URL is still refused at start for such a plugin.
    let bad = TempFile::new(
        "app.json",
        &json!([{"verb": "old:greet", "actionHook": "/action"}]).to_string(),
    );
    let (code, stderr) = serve_refused(&[
        "--sip",
        "127.0.0.1:28843",
        "--plugins",
        dir,
        "--app",
        bad.path.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("verb 0 (old:greet): actionHook: bad hook URL"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_traps_refuses_the_application_naming_the_plugin() {
    let plugins = TempFile::new("misbehave.wasm", "");
    std::fs::copy(verbhost_guests::MISBEHAVE, &plugins.path).unwrap();
    for (mode, cause) in [
        (
            "panic-in-parse",
            "the check by plugin misbehave 0.1.0 failed: plugin trapped (panic): the plugin \
             gave up while reading the verb",
        ),
        (
            // The cause ends the line, after the frame of the wasm backtrace that made it.
            "host-call-in-parse",
            "the check by plugin misbehave 0.1.0 failed: plugin trapped (host call limit): ",
        ),
        (
            "loop-in-parse",
            "the check by plugin misbehave 0.1.0 failed: plugin trapped (cpu budget exceeded)",
        ),
    ] {
        let app = TempFile::new(
            "app.json",
            &json!([{"verb": "misbehave", "mode": mode}]).to_string(),
        );
        let (code, stderr) = serve_refused(&[
            "--sip",
            "127.0.0.1:28845",
            "--plugins",
            plugins.dir.to_str().unwrap(),
            "--app",
            app.path.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 2, "{mode}: {stderr}");
        assert!(
            stderr.contains(&format!("verb 0 (misbehave): {cause}")),
            "{mode}: {stderr}"
        );
        if mode == "host-call-in-parse" {
            assert!(
                stderr.contains("check: describe() and check() may not call the host"),
                "{stderr}"
            );
        }
    }
}
