//! The test kit against real parts: the receiver over real HTTP, and a whole `sip:refer`
//! transfer placed by verbhost's own dialer (the built-in plugin) between the scripted
//! transferee and target, with the hooks on the receiver.

use std::time::Duration;

use reqwest::Url;
use verbhost_server::config::Config;
use verbhost_server::{Dialer, Journal};
use verbhost_sip::endpoint::{Endpoint, EndpointConfig};
use verbhost_sip::message::{Message, SipHeaders};
use verbhost_testkit::{Direction, Receiver, Reply, Seen, TransferTarget, Transferee};

#[tokio::test]
async fn the_receiver_records_every_request_in_order_and_answers_as_scripted() {
    let receiver = Receiver::try_start().await.unwrap();
    receiver.reply(
        "/hook",
        vec![Reply::status(503), Reply::ok(r#"[{"verb":"hangup"}]"#)],
    );
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for body in ["{\"n\":1}", "{\"n\":2}", "not json"] {
        let answer = http
            .post(receiver.url("/hook?x=1"))
            .body(body)
            .send()
            .await
            .unwrap();
        answers.push((answer.status().as_u16(), answer.text().await.unwrap()));
    }
    let other = http.get(receiver.url("/other")).send().await.unwrap();
    assert_eq!(other.status(), 200, "an unscripted path answers 200");
    // The scripted replies in turn, the last one repeating.
    let verbs = r#"[{"verb":"hangup"}]"#.to_owned();
    assert_eq!(
        answers,
        [(503, String::new()), (200, verbs.clone()), (200, verbs)]
    );
    let hits = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(
        receiver.paths(),
        ["/hook?x=1", "/hook?x=1", "/hook?x=1", "/other"]
    );
    assert_eq!(hits[0].method, "POST");
    assert_eq!(hits[1].json["n"], 2);
    assert!(
        hits[2].json.is_null(),
        "a body that is not JSON reads as null"
    );
    assert_eq!(hits[2].raw, b"not json");
    assert_eq!(hits[3].method, "GET");
}

#[tokio::test]
async fn the_receiver_refuses_a_body_over_2_mib_without_recording_it() {
    let receiver = Receiver::try_start().await.unwrap();
    let answer = reqwest::Client::new()
        .post(receiver.url("/big"))
        .body(vec![b'x'; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    assert!(receiver.hits().is_empty());
}

/// What a peer saw, as `(sent?, label)`: `REFER`, `202 REFER`, ...
fn ladder(seen: &[Seen]) -> Vec<(Direction, String)> {
    seen.iter()
        .map(|s| {
            let label = match &s.message {
                Message::Request(r) => r.method.to_string(),
                Message::Response(r) => format!(
                    "{} {}",
                    r.status,
                    r.cseq().map(|c| c.method.to_string()).unwrap_or_default()
                ),
            };
            (s.direction, label)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_runs_between_the_scripted_peers_without_sipp() {
    use Direction::{Received as In, Sent as Out};
    let hooks = Receiver::try_start().await.unwrap();
    let carol = TransferTarget::start().await.unwrap();
    let mut bob = Transferee::start().await.unwrap();
    assert_eq!(bob.uri(), format!("sip:bob@{}", bob.addr()));
    assert_eq!(carol.uri(), format!("sip:carol@{}", carol.addr()));

    let dialer = Dialer::new(Config::default()).await.unwrap();
    let endpoint = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let application = format!(
        r#"[{{"verb": "sip:refer", "referTo": "{}", "actionHook": "/action", "eventHook": "/event"}}]"#,
        carol.uri()
    );
    let verbs = verbhost_server::app::parse(application.as_bytes()).unwrap();
    let (lines, _journal) = tokio::sync::mpsc::unbounded_channel();
    let summary = tokio::time::timeout(
        Duration::from_secs(20),
        dialer.place(
            &endpoint,
            &bob.uri(),
            "sip:verbhost@127.0.0.1",
            verbs,
            Some(Url::parse(&hooks.base()).unwrap()),
            Journal::to(lines),
        ),
    )
    .await
    .expect("the call ends within 20 s")
    .unwrap();
    assert!(
        summary.failed_verbs.is_empty(),
        "{:?}",
        summary.failed_verbs
    );
    assert!(
        bob.finished(Duration::from_secs(5)).await,
        "bob hung up carol and stopped"
    );

    let ours = endpoint.local_addr();
    let bob_saw = bob.seen();
    assert!(
        bob_saw
            .iter()
            .all(|s| s.peer == ours || s.peer == carol.addr()),
        "bob talked to verbhost and carol only: {bob_saw:?}"
    );
    let with = |peer| -> Vec<_> {
        ladder(
            &bob_saw
                .iter()
                .filter(|s| s.peer == peer)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let s = |d, l: &str| (d, l.to_owned());
    // Verbhost's side (it may send ACK / 200s for NOTIFYs in between: keep the skeleton).
    let skeleton: Vec<_> = with(ours)
        .into_iter()
        .filter(|(_, l)| !l.starts_with("200 NOTIFY") && l != "ACK")
        .collect();
    assert_eq!(
        skeleton,
        [
            s(In, "INVITE"),
            s(Out, "200 INVITE"),
            s(In, "REFER"),
            s(Out, "202 REFER"),
            s(Out, "NOTIFY"),
            s(Out, "NOTIFY"),
            s(Out, "NOTIFY"),
            s(In, "BYE"),
            s(Out, "200 BYE"),
        ]
    );
    assert_eq!(
        with(carol.addr()),
        [
            s(Out, "INVITE"),
            s(In, "180 INVITE"),
            s(In, "200 INVITE"),
            s(Out, "ACK"),
            s(Out, "BYE"),
            s(In, "200 BYE"),
        ]
    );
    assert_eq!(
        ladder(&carol.seen()),
        [
            s(In, "INVITE"),
            s(Out, "180 INVITE"),
            s(Out, "200 INVITE"),
            s(In, "ACK"),
            s(In, "BYE"),
            s(Out, "200 BYE"),
        ]
    );
    assert!(bob_saw.windows(2).all(|w| w[0].at <= w[1].at), "in order");

    let hits = hooks.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(hooks.paths(), ["/event", "/event", "/event", "/action"]);
    assert_eq!(
        hits[3].json["event"], "TRANSFER_REFER_SUCCESS",
        "{}",
        hits[3].json
    );
    assert_eq!(hits[3].json["final_referred_call_status"], 200);
}
