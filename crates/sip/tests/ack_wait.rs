//! Issue 9: on an inbound call, requests of ours (REFER, BYE) wait for the ACK of our 200, so
//! through a record-routing proxy they cannot overtake the 200; without an ACK within Timer H
//! the dialog never came up. And OPTIONS says 503 while the endpoint drains.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{RawPeer, SDP, ack, invite, loopback};
use verbhost_sip::endpoint::{Call, Endpoint, EndpointConfig, ReferFailure};
use verbhost_sip::message::{Message, Method, Request, Response, SipHeaders};
use verbhost_sip::transaction::Timers;

/// A raw peer calls the endpoint, which answers 200 at once: the peer, the call, and the 200
/// (the peer has not ACKed it).
async fn inbound_call(endpoint: &Endpoint, call_id: &str) -> (RawPeer, Call, Response) {
    let to = endpoint.local_addr();
    let peer = RawPeer::bind().await;
    peer.send(to, &invite(peer.addr(), to, call_id, "z9hG4bKinv"))
        .await;
    let incoming = tokio::time::timeout(Duration::from_secs(5), endpoint.accept())
        .await
        .expect("offered in time")
        .expect("offered");
    let call = incoming.answer(SDP.to_vec()).await.expect("answered");
    let ok = loop {
        let response = peer.recv_response_to(call_id).await;
        if response.status == 200 {
            break response;
        }
    };
    (peer, call, ok)
}

/// Every request the peer receives within `within` (responses and 200 retransmissions are
/// skipped).
async fn requests_within(peer: &RawPeer, within: Duration) -> Vec<Request> {
    let deadline = tokio::time::Instant::now() + within;
    let mut requests = Vec::new();
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match peer.recv_within(left).await {
            Some((Message::Request(request), _)) => requests.push(request),
            Some((Message::Response(_), _)) => {}
            None => break,
        }
    }
    requests
}

fn refer_to() -> Vec<(String, String)> {
    vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())]
}

/// Item 9.1: a REFER made right after the 200 is held until the ACK arrives (300 ms later),
/// then goes out at once; a BYE made before the ACK goes out after it, behind the REFER.
#[tokio::test]
async fn a_refer_made_before_the_ack_goes_out_only_when_the_ack_arrives() {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let (peer, call, ok) = inbound_call(&endpoint, "ackwait").await;
    let referring = {
        let call = call.clone();
        tokio::spawn(async move { call.refer(refer_to()).await })
    };
    let early = requests_within(&peer, Duration::from_millis(300)).await;
    assert!(
        early.is_empty(),
        "requests before the ACK: {:?}",
        early.iter().map(|r| &r.method).collect::<Vec<_>>()
    );
    assert!(!referring.is_finished(), "the REFER waits for the ACK");
    peer.send(to, &ack(peer.addr(), to, &ok, "z9hG4bKack"))
        .await;
    let acked_at = Instant::now();
    let (refer, from) = peer.recv_method(Method::Refer).await;
    let waited = acked_at.elapsed();
    eprintln!("REFER {waited:?} after the ACK");
    assert_eq!(refer.headers.get("Refer-To"), Some("<sip:carol@127.0.0.1>"));
    peer.respond(from, &refer, 202).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), referring)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    assert_eq!(answer.status, 202);
    assert_eq!(answer.refer_id, refer.cseq().expect("cseq").seq);
    // Confirmed now: a BYE goes out at once.
    let hanging_up = {
        let call = call.clone();
        tokio::spawn(async move { call.hangup().await })
    };
    let (bye, from) = peer.recv_method(Method::Bye).await;
    peer.respond(from, &bye, 200).await;
    let hung_up = tokio::time::timeout(Duration::from_secs(5), hanging_up)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(hung_up, Ok(()));
    assert!(call.is_ended());
}

/// Item 9.1: a hangup before the ACK waits for it too, and REFER and BYE keep their order.
#[tokio::test]
async fn requests_queued_before_the_ack_go_out_in_order_after_it() {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let (peer, call, ok) = inbound_call(&endpoint, "ackorder").await;
    let referring = {
        let call = call.clone();
        tokio::spawn(async move { call.refer(refer_to()).await })
    };
    // Let the REFER reach the core first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let hanging_up = {
        let call = call.clone();
        tokio::spawn(async move { call.hangup().await })
    };
    let early = requests_within(&peer, Duration::from_millis(300)).await;
    assert!(early.is_empty(), "{} requests before the ACK", early.len());
    peer.send(to, &ack(peer.addr(), to, &ok, "z9hG4bKack"))
        .await;
    let (first, from) = peer.recv_request().await;
    let (second, _) = peer.recv_request().await;
    assert_eq!(
        (&first.method, &second.method),
        (&Method::Refer, &Method::Bye)
    );
    assert!(first.cseq().expect("cseq").seq < second.cseq().expect("cseq").seq);
    peer.respond(from, &first, 202).await;
    peer.respond(from, &second, 200).await;
    let hung_up = tokio::time::timeout(Duration::from_secs(5), hanging_up)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(hung_up, Ok(()));
    let _ = tokio::time::timeout(Duration::from_secs(5), referring).await;
    assert!(call.is_ended());
}

/// Item 9.1: a peer that never ACKs never gets the REFER; the REFER fails with DialogGone by
/// Timer H, the session is ended with a BYE (RFC 3261 §13.3.1.4), and it is counted.
#[tokio::test]
async fn without_an_ack_the_refer_is_never_sent_and_fails_with_dialog_gone() {
    let mut config = EndpointConfig::udp(loopback());
    config.timers = Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
        t4: Duration::from_millis(100),
    };
    let timer_h = config.timers.timeout();
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let (peer, call, _ok) = inbound_call(&endpoint, "noack").await;
    let started = Instant::now();
    let referring = {
        let call = call.clone();
        tokio::spawn(async move { call.refer(refer_to()).await })
    };
    // Everything the endpoint sends until well after Timer H (it retransmits its 200).
    let requests = requests_within(&peer, timer_h + Duration::from_millis(700)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), referring)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(outcome, Err(ReferFailure::DialogGone));
    assert!(
        started.elapsed() >= timer_h - Duration::from_millis(100),
        "failed before Timer H"
    );
    let methods: Vec<&Method> = requests.iter().map(|r| &r.method).collect();
    assert!(!methods.contains(&&Method::Refer), "{methods:?}");
    assert!(methods.contains(&&Method::Bye), "no BYE: {methods:?}");
    assert!(call.is_ended());
    assert_eq!(endpoint.stats().unacked_answers.load(Ordering::Relaxed), 1);
    // Too late now.
    assert_eq!(call.refer(refer_to()).await, Err(ReferFailure::DialogGone));
}

fn options(peer: std::net::SocketAddr, to: std::net::SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{peer}>;tag=p1\r\nTo: <sip:verbhost@{to}>\r\nCall-ID: probe-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Item 9.2: OPTIONS outside a dialog is 200 while serving and 503 with Retry-After while
/// draining; a new INVITE is then a stateless 503 counted as `draining`; the call in progress
/// goes on; ending the drain restores both.
#[tokio::test]
async fn while_draining_options_and_new_invites_get_503_and_calls_go_on() {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let (peer, call, ok) = inbound_call(&endpoint, "indrain").await;
    peer.send(to, &ack(peer.addr(), to, &ok, "z9hG4bKack"))
        .await;
    let probe = RawPeer::bind().await;
    probe
        .send(to, &options(probe.addr(), to, "z9hG4bKo1"))
        .await;
    assert_eq!(probe.recv_response_to("probe-z9hG4bKo1").await.status, 200);

    assert!(!endpoint.is_draining());
    endpoint.set_draining(true);
    assert!(endpoint.is_draining());
    probe
        .send(to, &options(probe.addr(), to, "z9hG4bKo2"))
        .await;
    let answer = probe.recv_response_to("probe-z9hG4bKo2").await;
    assert_eq!(answer.status, 503);
    assert!(answer.headers.get("Retry-After").is_some());

    let caller = RawPeer::bind().await;
    caller
        .send(to, &invite(caller.addr(), to, "late", "z9hG4bKlate"))
        .await;
    let refused = caller.recv_response_to("late").await;
    assert_eq!(refused.status, 503, "no 100 Trying first: stateless");
    assert!(refused.headers.get("Retry-After").is_some());
    assert_eq!(endpoint.stats().refused_draining.load(Ordering::Relaxed), 1);

    // The call in progress is unaffected: its REFER goes out and is answered.
    let referring = {
        let call = call.clone();
        tokio::spawn(async move { call.refer(refer_to()).await })
    };
    let (refer, from) = peer.recv_method(Method::Refer).await;
    peer.respond(from, &refer, 202).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), referring)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    assert_eq!(answer.status, 202);

    endpoint.set_draining(false);
    probe
        .send(to, &options(probe.addr(), to, "z9hG4bKo3"))
        .await;
    assert_eq!(probe.recv_response_to("probe-z9hG4bKo3").await.status, 200);
}
