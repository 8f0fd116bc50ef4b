//! The endpoint against itself and against a scripted raw-socket peer, over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use verbhost_sip::dialog::SubscriptionEvent;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig, ReferWait};
use verbhost_sip::message::{Message, Request, SipHeaders};
use verbhost_sip::wire;

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

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
    call.hangup().await.expect("BYE answered");
    assert!(call.is_ended());
    let theirs = tokio::time::timeout(Duration::from_secs(5), answering)
        .await
        .expect("bob sees the BYE")
        .expect("task");
    assert!(theirs.is_ended());
}

#[tokio::test]
async fn a_call_is_placed_answered_and_hung_up_over_udp() {
    call_and_hang_up(false).await;
}

#[tokio::test]
async fn a_call_is_placed_answered_and_hung_up_over_tcp() {
    call_and_hang_up(true).await;
}

/// A peer scripted with a raw UDP socket, for what a well-behaved endpoint never sends.
struct RawPeer {
    socket: UdpSocket,
}

impl RawPeer {
    async fn bind() -> RawPeer {
        RawPeer {
            socket: UdpSocket::bind(loopback()).await.expect("bind"),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    async fn recv(&self) -> (Message, SocketAddr) {
        let mut buffer = vec![0u8; 65536];
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), self.socket.recv_from(&mut buffer))
                .await
                .expect("a message in time")
                .expect("recv");
        (
            wire::parse(&buffer[..n]).expect("our endpoint sends valid SIP"),
            from,
        )
    }

    async fn recv_request(&self) -> (Request, SocketAddr) {
        loop {
            if let (Message::Request(request), from) = self.recv().await {
                return (request, from);
            }
        }
    }

    async fn send(&self, to: SocketAddr, text: &str) {
        self.socket
            .send_to(text.as_bytes(), to)
            .await
            .expect("send");
    }

    /// Answers `request` with `status`, built the way the stack builds its own responses.
    async fn respond(&self, to: SocketAddr, request: &Request, status: u16) {
        let response = verbhost_sip::message::Response::to(request, status, None);
        self.socket
            .send_to(&response.to_bytes(), to)
            .await
            .expect("send");
    }

    async fn expect_status(&self) -> u16 {
        match self.recv().await.0 {
            Message::Response(response) => response.status,
            Message::Request(request) => panic!("expected a response, got {}", request.method),
        }
    }
}

/// Answers an INVITE from `endpoint` and returns the peer with the dialog's (call-id, from-tag).
async fn answered_call(
    endpoint: &Endpoint,
) -> (
    RawPeer,
    verbhost_sip::endpoint::Call,
    String,
    String,
    SocketAddr,
) {
    let peer = RawPeer::bind().await;
    let target = format!("sip:bob@{}", peer.addr());
    let endpoint = endpoint.clone();
    let calling = tokio::spawn(async move {
        endpoint
            .call(&target, "<sip:alice@127.0.0.1>", SDP.to_vec())
            .await
    });
    let (invite, from) = peer.recv_request().await;
    let call_id = invite.call_id().expect("call-id").to_owned();
    let from_tag = invite.from_tag().expect("from tag").to_owned();
    let via = invite.headers.get("Via").expect("via").to_owned();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:alice@127.0.0.1>;tag={from_tag}\r\nTo: <sip:bob@{addr}>;tag=bob1\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{addr}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        addr = peer.addr(),
        len = SDP.len(),
        sdp = String::from_utf8_lossy(SDP)
    );
    peer.send(from, &ok).await;
    let (ack, _) = peer.recv_request().await;
    assert_eq!(ack.method, verbhost_sip::message::Method::Ack);
    let call = calling.await.expect("task").expect("answered");
    (peer, call, call_id, from_tag, from)
}

fn notify(
    call_id: &str,
    alice_tag: &str,
    peer: SocketAddr,
    branch: &str,
    cseq: u32,
    event: &str,
    state: &str,
    body: &str,
) -> String {
    format!(
        "NOTIFY sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch={branch}\r\nFrom: <sip:bob@{peer}>;tag=bob1\r\nTo: <sip:alice@127.0.0.1>;tag={alice_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nContact: <sip:bob@{peer}>\r\n{event}Subscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A call answered by a raw peer, with a REFER sent in it and received by the peer (not
/// answered yet): the endpoint, the peer, the call, Call-ID, our tag, our address, the REFER
/// and the task waiting for its answer.
#[allow(clippy::type_complexity)]
async fn referred_call() -> (
    Endpoint,
    RawPeer,
    verbhost_sip::endpoint::Call,
    String,
    String,
    SocketAddr,
    Request,
    tokio::task::JoinHandle<
        Result<verbhost_sip::endpoint::ReferAnswer, verbhost_sip::endpoint::ReferFailure>,
    >,
) {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let (peer, call, call_id, tag, from) = answered_call(&endpoint).await;
    let referring = {
        let call = call.clone();
        tokio::spawn(async move {
            call.refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
                .await
        })
    };
    let (refer, _) = peer.recv_request().await;
    (endpoint, peer, call, call_id, tag, from, refer, referring)
}

#[tokio::test]
async fn notify_before_202_retransmissions_and_bad_notifies() {
    let (endpoint, peer, call, call_id, tag, from, refer, referring) = referred_call().await;
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
    let (_endpoint, peer, call, call_id, tag, from, refer, referring) = referred_call().await;
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
