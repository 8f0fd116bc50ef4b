//! The SIP stack against real peers on loopback: sipp playing scripted transferees (every
//! flow of `tests/sipp/`), and baresip as a real transferee calling a sipp transfer target.
//! Each test asserts both what our endpoint reports and what went over the wire.
//!
//! sipp and baresip come from Debian (`sip-tester`, `baresip-core`). With `CI=true` a missing
//! tool fails the test; elsewhere the test is skipped with a loud message.

#[path = "support/baresip.rs"]
mod baresip;
#[path = "support/sipp.rs"]
mod sipp;

use std::path::PathBuf;
use std::time::Duration;

use verbhost_common::sipfrag::parse_status_line;
use verbhost_sip::dialog::SubscriptionEvent;
use verbhost_sip::endpoint::{Call, Endpoint, EndpointConfig, ReferAnswer, ReferWait};

const SDP: &[u8] = b"v=0\r\no=verbhost 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// What one transfer looked like from our side.
#[derive(Debug)]
struct Transfer {
    answer: ReferAnswer,
    /// (Subscription-State, sipfrag status code) of each NOTIFY, in order.
    notifies: Vec<(String, u16)>,
    dialog_ended: bool,
}

/// Calls `target`, REFERs the call to `refer_to`, follows the subscription to its end and
/// hangs up, all bounded by `limit`.
async fn transfer(endpoint: &Endpoint, target: &str, refer_to: &str, limit: Duration) -> Transfer {
    tokio::time::timeout(limit, async {
        let call: Call = endpoint
            .call(
                target,
                "\"verbhost\" <sip:verbhost@127.0.0.1>",
                SDP.to_vec(),
            )
            .await
            .expect("the peer answers");
        let answer = call
            .refer(vec![
                ("Refer-To".into(), refer_to.into()),
                (
                    "Referred-By".into(),
                    "\"Alice\" <sip:alice@127.0.0.1>".into(),
                ),
            ])
            .await
            .expect("the REFER is answered");
        let mut notifies = Vec::new();
        let mut dialog_ended = false;
        loop {
            match call
                .next_refer_event(answer.refer_id, Duration::from_secs(15))
                .await
            {
                ReferWait::Event(SubscriptionEvent::Notify { state, body, .. }) => {
                    let code = parse_status_line(&body).map_or(0, |line| line.code);
                    notifies.push((state.unwrap_or_default(), code));
                }
                ReferWait::Event(SubscriptionEvent::DialogEnded) => dialog_ended = true,
                ReferWait::Unknown => break,
                ReferWait::TimedOut => panic!("no NOTIFY within 15 s; so far {notifies:?}"),
            }
        }
        call.hangup().await.expect("BYE answered");
        Transfer {
            answer,
            notifies,
            dialog_ended,
        }
    })
    .await
    .expect("the transfer finishes in time")
}

async fn endpoint(tcp: bool) -> Endpoint {
    let addr = "127.0.0.1:0".parse().expect("address");
    let config = if tcp {
        EndpointConfig::tcp(addr)
    } else {
        EndpointConfig::udp(addr)
    };
    Endpoint::bind(config).await.expect("bind")
}

/// Runs our endpoint against a sipp transferee playing `file` on `port`.
async fn against_sipp(
    file: &str,
    port: u16,
    tcp: bool,
    extra: &'static [&'static str],
) -> Option<(Transfer, sipp::SippOutcome)> {
    if !sipp::require("sipp") {
        return None;
    }
    let transport = if tcp {
        sipp::Transport::Tcp
    } else {
        sipp::Transport::Udp
    };
    let peer = sipp::SippPeer::start_with_args(&scenario(file), port, transport, extra)
        .expect("sipp starts");
    let endpoint = endpoint(tcp).await;
    let target = if tcp {
        format!("sip:bob@127.0.0.1:{port};transport=tcp")
    } else {
        format!("sip:bob@127.0.0.1:{port}")
    };
    let result = transfer(
        &endpoint,
        &target,
        "<sip:carol@127.0.0.1:5091>",
        Duration::from_secs(30),
    )
    .await;
    let outcome = tokio::task::spawn_blocking(move || peer.wait(Duration::from_secs(20)))
        .await
        .expect("sipp waited for");
    assert!(outcome.passed(), "{}", outcome.describe());
    let refer = outcome
        .received()
        .into_iter()
        .find(|m| m.starts_with("REFER "))
        .expect("sipp received the REFER")
        .to_owned();
    assert!(
        refer.contains("Refer-To: <sip:carol@127.0.0.1:5091>"),
        "{refer}"
    );
    assert!(
        refer.contains("Referred-By: \"Alice\" <sip:alice@127.0.0.1>"),
        "{refer}"
    );
    Some((result, outcome))
}

fn codes(transfer: &Transfer) -> Vec<u16> {
    transfer.notifies.iter().map(|(_, code)| *code).collect()
}

async fn accept(port: u16, tcp: bool) {
    let Some((transfer, outcome)) = against_sipp("uas-refer-accept.xml", port, tcp, &[]).await
    else {
        return;
    };
    assert_eq!(
        (transfer.answer.status, transfer.answer.reason.as_str()),
        (202, "Accepted")
    );
    assert_eq!(codes(&transfer), [100, 180, 200]);
    assert!(
        transfer.notifies[2].0.starts_with("terminated"),
        "{:?}",
        transfer.notifies
    );
    assert_eq!(
        outcome.received_count("SIP/2.0 200"),
        3,
        "each NOTIFY answered 200"
    );
    assert_eq!(outcome.received_count("BYE "), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_accept_over_udp() {
    accept(26000, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_accept_over_tcp() {
    accept(26010, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_decline_603() {
    let Some((transfer, outcome)) = against_sipp("uas-refer-decline.xml", 26020, false, &[]).await
    else {
        return;
    };
    assert_eq!(transfer.answer.status, 603);
    assert!(transfer.notifies.is_empty());
    assert_eq!(
        outcome.received_count("SIP/2.0 200"),
        0,
        "no NOTIFY to answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_busy_final_notify_486() {
    let Some((transfer, outcome)) = against_sipp("uas-refer-busy.xml", 26030, false, &[]).await
    else {
        return;
    };
    assert_eq!(transfer.answer.status, 202);
    assert_eq!(codes(&transfer), [100, 486]);
    assert_eq!(outcome.received_count("SIP/2.0 200"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_notify_before_202() {
    let Some((transfer, outcome)) =
        against_sipp("uas-refer-notify-before-202.xml", 26040, false, &[]).await
    else {
        return;
    };
    assert_eq!(transfer.answer.status, 202);
    assert_eq!(
        codes(&transfer),
        [100, 200],
        "the early NOTIFY is kept and comes first"
    );
    assert_eq!(outcome.received_count("SIP/2.0 200"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_refer_sub_false() {
    let Some((transfer, _)) = against_sipp("uas-refer-sub-false.xml", 26050, false, &[]).await
    else {
        return;
    };
    assert_eq!(transfer.answer.status, 202);
    assert_eq!(transfer.answer.headers.get("Refer-Sub"), Some("false"));
    assert!(
        transfer.notifies.is_empty(),
        "no subscription, nothing to wait for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_notify_retransmission_is_answered_twice_and_delivered_once() {
    let Some((transfer, outcome)) =
        against_sipp("uas-refer-notify-retransmit.xml", 26060, false, &["-nr"]).await
    else {
        return;
    };
    assert_eq!(transfer.answer.status, 202);
    assert_eq!(codes(&transfer), [200], "delivered once");
    assert_eq!(outcome.received_count("SIP/2.0 200"), 2, "answered twice");
}

/// baresip as the transferee, a sipp UAS as the transfer target.
async fn baresip_transfer(bob_port: u16, carol_port: u16, carol: &str) -> Option<Transfer> {
    if !sipp::require("sipp") || !sipp::require("baresip") {
        return None;
    }
    let target = sipp::SippPeer::start(&scenario(carol), carol_port, sipp::Transport::Udp)
        .expect("carol starts");
    let bob = baresip::BaresipPeer::start(bob_port).expect("baresip starts");
    let endpoint = endpoint(false).await;
    let result = transfer(
        &endpoint,
        &format!("sip:bob@127.0.0.1:{bob_port}"),
        &format!("<sip:carol@127.0.0.1:{carol_port}>"),
        Duration::from_secs(40),
    )
    .await;
    let carol_outcome = tokio::task::spawn_blocking(move || target.wait(Duration::from_secs(20)))
        .await
        .expect("carol waited for");
    let log = tokio::task::spawn_blocking(move || bob.stop())
        .await
        .expect("baresip stopped");
    assert!(
        carol_outcome.passed(),
        "{}\nbaresip log:\n{log}",
        carol_outcome.describe()
    );
    Some(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_transfers_to_a_target_that_answers() {
    let Some(transfer) = baresip_transfer(26100, 26120, "uas-carol-answer.xml").await else {
        return;
    };
    assert_eq!(transfer.answer.status, 202);
    // baresip sends 100 Trying, then the final NOTIFY, with LF-only sipfrag bodies.
    assert_eq!(codes(&transfer), [100, 200]);
    assert!(transfer.notifies[1].0.starts_with("terminated"));
    assert!(!transfer.dialog_ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_reports_a_busy_target() {
    let Some(transfer) = baresip_transfer(26140, 26160, "uas-carol-busy.xml").await else {
        return;
    };
    assert_eq!(codes(&transfer), [100, 486]);
}
