//! The endpoint against itself and against a scripted raw-socket peer, over loopback.

mod support;

use std::time::Duration;

use support::{Referred, SDP, loopback, notify, referred_call};
use verbhost_sip::dialog::SubscriptionEvent;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig, ReferWait};
use verbhost_sip::message::SipHeaders;

async fn pair(tcp: bool) -> (Endpoint, Endpoint) {
    let config = |addr| {
        if tcp {
            EndpointConfig::tcp(addr)
        } else {
            EndpointConfig::udp(addr)
        }
    };
    let a = Endpoint::bind(config(loopback())).await.expect("bind a");
    let b = Endpoint::bind(config(loopback())).await.expect("bind b");
    (a, b)
}

async fn call_and_hang_up(tcp: bool) {
    let (alice, bob) = pair(tcp).await;
    let target = if tcp {
        format!("sip:bob@{};transport=tcp", bob.local_addr())
    } else {
        format!("sip:bob@{}", bob.local_addr())
    };
    let answering = tokio::spawn(async move {
        let incoming = bob.accept().await.expect("an INVITE arrives");
        assert_eq!(incoming.invite.body, SDP);
        let call = incoming.answer(SDP.to_vec()).await.expect("answered");
        call.ended().await;
        call
    });
    let call = tokio::time::timeout(
        Duration::from_secs(5),
        alice.call(&target, "\"Alice\" <sip:alice@127.0.0.1>", SDP.to_vec()),
    )
    .await
    .expect("in time")
    .expect("answered");
    assert_eq!(call.remote_sdp, SDP);
    assert!(!call.is_ended());
    // Our own endpoint does not take REFERs: 501, and no subscription is left behind.
    let answer = call
        .refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
        .await
        .expect("answered");
    assert_eq!(
        (answer.status, answer.reason.as_str()),
        (501, "Not Implemented")
    );
    assert_eq!(answer.refer_id, 2);
    assert_eq!(
        call.next_refer_event(2, Duration::from_millis(50)).await,
        ReferWait::Unknown
    );
    assert!(!call.ended_by_peer());
    call.hangup().await.expect("BYE answered");
    assert!(call.is_ended());
    // Who hung up: we did; for bob, the peer did.
    assert!(!call.ended_by_peer());
    let theirs = tokio::time::timeout(Duration::from_secs(5), answering)
        .await
        .expect("bob sees the BYE")
        .expect("task");
    assert!(theirs.is_ended());
    assert!(theirs.ended_by_peer());
}

#[tokio::test]
async fn a_call_is_placed_answered_and_hung_up_over_udp() {
    call_and_hang_up(false).await;
}

#[tokio::test]
async fn a_call_is_placed_answered_and_hung_up_over_tcp() {
    call_and_hang_up(true).await;
}

#[tokio::test]
async fn notify_before_202_retransmissions_and_bad_notifies() {
    let Referred {
        endpoint,
        peer,
        call,
        call_id,
        tag,
        from,
        refer,
        referring,
    } = referred_call().await;
    assert_eq!(refer.headers.get("Refer-To"), Some("<sip:carol@127.0.0.1>"));
    assert_eq!(
        refer.uri,
        format!("sip:bob@{}", peer.addr()),
        "the REFER goes to the Contact"
    );
    let refer_seq = refer.cseq().expect("cseq").seq;
    // NOTIFY before the 202: accepted; its retransmission is answered again but not delivered twice.
    let first = notify(
        &call_id,
        &tag,
        peer.addr(),
        "z9hG4bKn1",
        10,
        &format!("Event: refer;id={refer_seq}\r\n"),
        "active;expires=60",
        "SIP/2.0 100 Trying\r\n",
    );
    peer.send(from, &first).await;
    assert_eq!(peer.expect_status().await, 200);
    peer.send(from, &first).await;
    assert_eq!(peer.expect_status().await, 200);
    // Wrong package: 489; unknown id: 481; garbage that can be answered: 400.
    peer.send(
        from,
        &notify(
            &call_id,
            &tag,
            peer.addr(),
            "z9hG4bKn2",
            11,
            "Event: presence\r\n",
            "active",
            "",
        ),
    )
    .await;
    assert_eq!(peer.expect_status().await, 489);
    peer.send(
        from,
        &notify(
            &call_id,
            &tag,
            peer.addr(),
            "z9hG4bKn3",
            12,
            "Event: refer;id=99\r\n",
            "active",
            "",
        ),
    )
    .await;
    assert_eq!(peer.expect_status().await, 481);
    let truncated = notify(
        &call_id,
        &tag,
        peer.addr(),
        "z9hG4bKn4",
        13,
        "Event: refer\r\n",
        "active",
        "SIP/2.0 180 Ringing\r\n",
    );
    peer.send(from, &truncated[..truncated.len() - 4]).await;
    assert_eq!(peer.expect_status().await, 400);
    // Now the 202.
    peer.respond(from, &refer, 202).await;
    let answer = referring.await.expect("task").expect("answered");
    assert_eq!(
        (answer.status, answer.reason.as_str(), answer.refer_id),
        (202, "Accepted", refer_seq)
    );
    let final_notify = notify(
        &call_id,
        &tag,
        peer.addr(),
        "z9hG4bKn5",
        14,
        &format!("Event: refer;id={refer_seq}\r\n"),
        "terminated;reason=noresource",
        "SIP/2.0 200 OK\r\n",
    );
    peer.send(from, &final_notify).await;
    assert_eq!(peer.expect_status().await, 200);
    let mut bodies = Vec::new();
    loop {
        match call
            .next_refer_event(refer_seq, Duration::from_secs(2))
            .await
        {
            ReferWait::Event(SubscriptionEvent::Notify { body, .. }) => {
                bodies.push(String::from_utf8(body).expect("utf8"))
            }
            ReferWait::Unknown => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        bodies,
        ["SIP/2.0 100 Trying\r\n", "SIP/2.0 200 OK\r\n"],
        "each NOTIFY once, in order"
    );
    // After the terminated NOTIFY the subscription is gone: 481.
    peer.send(
        from,
        &notify(
            &call_id,
            &tag,
            peer.addr(),
            "z9hG4bKn6",
            15,
            &format!("Event: refer;id={refer_seq}\r\n"),
            "active",
            "SIP/2.0 200 OK\r\n",
        ),
    )
    .await;
    assert_eq!(peer.expect_status().await, 481);
    assert_eq!(
        endpoint
            .stats()
            .retransmissions
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        endpoint
            .stats()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_final_notify_right_after_bye_still_counts() {
    let Referred {
        peer,
        call,
        call_id,
        tag,
        from,
        refer,
        referring,
        ..
    } = referred_call().await;
    let refer_seq = refer.cseq().expect("cseq").seq;
    peer.respond(from, &refer, 202).await;
    referring.await.expect("task").expect("answered");
    peer.send(from, &format!(
        "BYE sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKbye\r\nFrom: <sip:bob@{addr}>;tag=bob1\r\nTo: <sip:alice@127.0.0.1>;tag={tag}\r\nCall-ID: {call_id}\r\nCSeq: 20 BYE\r\nContent-Length: 0\r\n\r\n",
        addr = peer.addr()
    )).await;
    assert_eq!(peer.expect_status().await, 200);
    peer.send(
        from,
        &notify(
            &call_id,
            &tag,
            peer.addr(),
            "z9hG4bKlate",
            21,
            &format!("Event: refer;id={refer_seq}\r\n"),
            "terminated",
            "SIP/2.0 200 OK\r\n",
        ),
    )
    .await;
    assert_eq!(peer.expect_status().await, 200, "inside the BYE grace");
    // The far end has hung up: the call is over for its owner at once, and a hangup of ours
    // sends no BYE of its own (the next message the peer sees is nothing at all).
    assert!(call.is_ended());
    call.hangup()
        .await
        .expect("hangup after the peer's BYE is a no-op");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), peer.expect_status())
            .await
            .is_err()
    );
    match call
        .next_refer_event(refer_seq, Duration::from_secs(2))
        .await
    {
        ReferWait::Event(SubscriptionEvent::Notify { body, .. }) => {
            assert_eq!(body, b"SIP/2.0 200 OK\r\n")
        }
        other => panic!("{other:?}"),
    }
    call.ended().await;
    assert!(call.is_ended());
}
