//! The endpoint against hostile and overloading peers, over real loopback sockets: a stream
//! that cannot be framed, a NOTIFY flood, INVITE floods past the admission limits, slowloris
//! and idle TCP connections, calls dropped unanswered, and in-dialog requests that time out.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{RawPeer, Referred, ack, answered_call, invite, loopback, notify, referred_call};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use verbhost_sip::dialog::{MAX_PROGRESS_NOTIFIES, MAX_QUEUED_EVENTS, SubscriptionEvent};
use verbhost_sip::endpoint::{
    Admission, Endpoint, EndpointConfig, ReferFailure, ReferWait, TcpLimits,
};
use verbhost_sip::message::{Method, SipHeaders};
use verbhost_sip::transaction::Timers;

/// An endpoint on a runtime of its own with one worker thread, so that a test can watch it
/// from outside with blocking sockets even if one of its tasks never yields.
fn endpoint_on_its_own_runtime(config: EndpointConfig) -> Endpoint {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let endpoint = Endpoint::bind(config).await.expect("bind");
            tx.send(endpoint).expect("hand over");
            std::future::pending::<()>().await
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("bound")
}

fn options(to: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p-{branch}\r\nTo: <sip:verbhost@{to}>\r\nCall-ID: {branch}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads from a blocking stream until a whole head has arrived (or the timeout).
fn read_head_blocking(stream: &mut std::net::TcpStream) -> std::io::Result<String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Item: `Content-Length: 18446744073709551000` once wrapped the frame length, and the TCP
/// reader spun at 100% CPU on frames of length 0; every later TCP call failed.
#[test]
fn a_content_length_that_wraps_does_not_disable_tcp() {
    let endpoint = endpoint_on_its_own_runtime(EndpointConfig::tcp(loopback()));
    let addr = endpoint.local_addr();
    let mut hostile = std::net::TcpStream::connect(addr).expect("connect");
    hostile
        .write_all(include_bytes!("corpus/tcp-content-length-wraps.sip"))
        .expect("write");
    hostile
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // A stream that cannot be framed is closed (and nothing spins).
    let mut buffer = [0u8; 1024];
    match hostile.read(&mut buffer) {
        Ok(0) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the unframeable connection is still open: {other:?}"),
    }
    // The one worker thread is free: a new connection's OPTIONS is answered.
    let mut honest = std::net::TcpStream::connect(addr).expect("connect");
    honest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    honest
        .write_all(options(addr, "z9hG4bKhonest").as_bytes())
        .expect("write");
    let answer = read_head_blocking(&mut honest).expect("an answer in time");
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer:?}");
    assert_eq!(count(&endpoint.stats().tcp_unframeable), 1);
}

/// Item: 50,000 in-dialog NOTIFYs were all queued for the plugin. Repeats are answered and
/// dropped, the rest past the limit are answered and counted, and the final one still arrives.
#[tokio::test]
async fn a_notify_flood_is_answered_bounded_and_keeps_the_final_notify() {
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
    let refer_seq = refer.cseq().expect("cseq").seq;
    peer.respond(from, &refer, 202).await;
    referring.await.expect("task").expect("answered");
    const FLOOD: u32 = 20_000;
    // Small enough that a batch fits the socket's receive buffer.
    const BATCH: u32 = 50;
    let event = format!("Event: refer;id={refer_seq}\r\n");
    let mut sent = 0;
    while sent < FLOOD {
        for i in sent..sent + BATCH {
            // Every NOTIFY twice in a row (new transactions): half are repeats.
            let body = format!("SIP/2.0 180 Ringing\r\nX-Step: {}\r\n", i / 2);
            let text = notify(
                &call_id,
                &tag,
                peer.addr(),
                &format!("z9hG4bKflood{i}"),
                100 + i,
                &event,
                "active;expires=60",
                &body,
            );
            peer.send(from, &text).await;
        }
        // Each one is answered 200 (so a sane peer does not retransmit).
        for _ in 0..BATCH {
            assert_eq!(peer.expect_status().await, 200);
        }
        sent += BATCH;
    }
    let last = notify(
        &call_id,
        &tag,
        peer.addr(),
        "z9hG4bKfinal",
        100 + FLOOD,
        &event,
        "terminated;reason=noresource",
        "SIP/2.0 200 OK\r\n",
    );
    peer.send(from, &last).await;
    assert_eq!(peer.expect_status().await, 200);
    let mut events = Vec::new();
    loop {
        match call
            .next_refer_event(refer_seq, Duration::from_secs(2))
            .await
        {
            ReferWait::Event(event) => events.push(event),
            ReferWait::Unknown => break,
            ReferWait::TimedOut => panic!("no final event after {} events", events.len()),
        }
        assert!(
            events.len() <= 64,
            "unbounded: {} events so far",
            events.len()
        );
    }
    assert!(
        events.len() <= 33,
        "{} events reached the consumer",
        events.len()
    );
    match events.last() {
        Some(SubscriptionEvent::Notify { state, body, .. }) => {
            assert_eq!(state.as_deref(), Some("terminated;reason=noresource"));
            assert_eq!(body, b"SIP/2.0 200 OK\r\n");
        }
        other => panic!("the final NOTIFY is lost: {other:?}"),
    }
    // Of the flood, MAX_PROGRESS_NOTIFIES were queued (the oldest of them coalesced away);
    // the repeats among those were dropped as duplicates, everything after them as excess.
    let stats = endpoint.stats();
    let progress = MAX_PROGRESS_NOTIFIES as u64;
    assert_eq!(events.len(), MAX_QUEUED_EVENTS + 1);
    assert_eq!(count(&stats.notify_duplicates), progress);
    assert_eq!(count(&stats.notify_excess), u64::from(FLOOD) - 2 * progress);
    assert_eq!(
        count(&stats.notify_coalesced),
        progress - MAX_QUEUED_EVENTS as u64
    );
}

/// The first response to a new INVITE from `peer`, and whether a 100 Trying came before it.
async fn first_final(
    peer: &RawPeer,
    call_id: &str,
) -> (u16, bool, verbhost_sip::message::Response) {
    let mut trying = false;
    loop {
        let response = peer.recv_response_to(call_id).await;
        if response.status == 100 {
            trying = true;
            continue;
        }
        return (response.status, trying, response);
    }
}

/// The first response to a new INVITE (provisional or final).
async fn first_response(peer: &RawPeer, call_id: &str) -> u16 {
    peer.recv_response_to(call_id).await.status
}

/// Item: past the cap on calls in progress, a new INVITE gets 503 with Retry-After at once,
/// statelessly (no 100, retransmissions get the same answer, the ACK is absorbed), while the
/// call already admitted completes a REFER, its NOTIFY and a BYE.
#[tokio::test]
async fn past_max_calls_new_invites_get_503_while_admitted_calls_complete() {
    let mut config = EndpointConfig::udp(loopback());
    config.admission = Admission {
        max_calls: Some(1),
        max_calls_per_sec: None,
        max_queue_delay: None,
        retry_after: Duration::from_secs(7),
    };
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let to = endpoint.local_addr();
    let peer = RawPeer::bind().await;
    peer.send(to, &invite(peer.addr(), to, "admitted", "z9hG4bKi1"))
        .await;
    assert_eq!(first_response(&peer, "admitted").await, 100);
    let incoming = tokio::time::timeout(Duration::from_secs(5), endpoint.accept())
        .await
        .expect("in time")
        .expect("the first call is offered");
    let call = incoming
        .answer(support::SDP.to_vec())
        .await
        .expect("answered");
    let ok = peer.recv_response_to("admitted").await;
    assert_eq!(ok.status, 200);
    peer.send(to, &ack(peer.addr(), to, &ok, "z9hG4bKa1")).await;
    // The ACK found its INVITE (by Call-ID and CSeq): the 200 is not retransmitted (Timer G
    // would fire at T1 = 500 ms).
    assert!(
        peer.recv_within(Duration::from_millis(700)).await.is_none(),
        "the 200 is retransmitted after its ACK"
    );

    // The second call is refused at once, with no 100 Trying.
    let refused = invite(peer.addr(), to, "refused", "z9hG4bKi2");
    let started = std::time::Instant::now();
    peer.send(to, &refused).await;
    let (status, trying, response) = first_final(&peer, "refused").await;
    assert_eq!((status, trying), (503, false));
    assert!(started.elapsed() < Duration::from_secs(2), "not at once");
    assert_eq!(response.reason, "Service Unavailable");
    assert_eq!(response.headers.get("Retry-After"), Some("7"));
    let tag = response.to_tag().expect("a To tag").to_owned();
    // A retransmission gets the same answer; the ACK for it is absorbed silently.
    peer.send(to, &refused).await;
    let (status, trying, again) = first_final(&peer, "refused").await;
    assert_eq!((status, trying), (503, false));
    assert_eq!(
        again.to_tag(),
        Some(tag.as_str()),
        "stateless: the same To tag"
    );
    peer.send(to, &ack(peer.addr(), to, &again, "z9hG4bKi2"))
        .await;
    assert!(
        peer.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing answers the ACK of a 503"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), endpoint.accept())
            .await
            .is_err(),
        "a refused INVITE never reaches the application"
    );
    assert_eq!(count(&endpoint.stats().refused_max_calls), 2);

    // The admitted call still works: REFER, NOTIFY, BYE.
    let referring = {
        let call = call.clone();
        tokio::spawn(async move {
            call.refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
                .await
        })
    };
    let (refer, from) = peer.recv_method(Method::Refer).await;
    peer.respond(from, &refer, 202).await;
    let answer = referring.await.expect("task").expect("answered");
    let notify = notify_from_caller(&call, peer.addr(), to, answer.refer_id);
    peer.send(to, &notify).await;
    assert_eq!(peer.expect_status().await, 200);
    assert!(matches!(
        call.next_refer_event(answer.refer_id, Duration::from_secs(2))
            .await,
        ReferWait::Event(SubscriptionEvent::Notify { .. })
    ));
    let hanging_up = {
        let call = call.clone();
        tokio::spawn(async move { call.hangup().await })
    };
    let (bye, from) = peer.recv_method(Method::Bye).await;
    peer.respond(from, &bye, 200).await;
    hanging_up.await.expect("task").expect("BYE answered");

    // The call has ended: a new one is admitted again.
    peer.send(to, &invite(peer.addr(), to, "later", "z9hG4bKi3"))
        .await;
    assert_eq!(first_response(&peer, "later").await, 100);
}

/// A final NOTIFY from the caller in a call the endpoint answered.
fn notify_from_caller(
    call: &verbhost_sip::endpoint::Call,
    peer: SocketAddr,
    to: SocketAddr,
    refer_id: u32,
) -> String {
    let extra = format!(
        "Event: refer;id={refer_id}\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\n"
    );
    support::from_caller(
        "NOTIFY",
        call.id(),
        peer,
        to,
        "z9hG4bKcallernotify",
        2,
        &extra,
        "SIP/2.0 200 OK\r\n",
    )
}

/// Item: when the application's queue of calls to accept was full, a new INVITE got 100
/// Trying and then "486 Busy Here (no capacity)"; it gets the same stateless 503.
#[tokio::test]
async fn when_the_application_queue_is_full_new_invites_get_503() {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let peer = RawPeer::bind().await;
    // Nobody accepts: the queue (64 calls) fills up.
    for i in 0..65 {
        peer.send(
            to,
            &invite(peer.addr(), to, &format!("q{i}"), &format!("z9hG4bKq{i}")),
        )
        .await;
    }
    for i in 0..64 {
        assert_eq!(first_response(&peer, &format!("q{i}")).await, 100);
    }
    let (status, trying, response) = first_final(&peer, "q64").await;
    assert_eq!((status, trying), (503, false));
    assert_eq!(response.headers.get("Retry-After"), Some("5"));
    assert_eq!(count(&endpoint.stats().refused_no_capacity), 1);
}

/// Item: the rate of new calls is a token bucket; past it, 503 at once.
#[tokio::test]
async fn past_max_calls_per_sec_new_invites_get_503() {
    let mut config = EndpointConfig::udp(loopback());
    config.admission = Admission {
        max_calls: None,
        max_calls_per_sec: Some(2),
        max_queue_delay: None,
        retry_after: Duration::from_secs(1),
    };
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let to = endpoint.local_addr();
    let peer = RawPeer::bind().await;
    for i in 0..5 {
        peer.send(
            to,
            &invite(
                peer.addr(),
                to,
                &format!("rate{i}"),
                &format!("z9hG4bKr{i}"),
            ),
        )
        .await;
    }
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(first_response(&peer, &format!("rate{i}")).await);
    }
    assert_eq!(statuses, [100, 100, 503, 503, 503]);
    assert_eq!(count(&endpoint.stats().refused_rate), 3);
}

/// Item: an INVITE that waited too long in the inbound queue is refused the same way, while
/// out-of-dialog OPTIONS and in-dialog requests are never shed.
#[tokio::test]
async fn invites_that_waited_too_long_are_shed_but_nothing_else_is() {
    let mut config = EndpointConfig::udp(loopback());
    config.admission = Admission {
        max_calls: None,
        max_calls_per_sec: None,
        // Every message waits longer than this.
        max_queue_delay: Some(Duration::from_nanos(1)),
        retry_after: Duration::from_secs(3),
    };
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let to = endpoint.local_addr();
    let (peer, call, call_id, tag, from) = answered_call(&endpoint).await;
    peer.send(to, &invite(peer.addr(), to, "late", "z9hG4bKlate"))
        .await;
    let (status, trying, response) = first_final(&peer, "late").await;
    assert_eq!((status, trying), (503, false));
    assert_eq!(response.headers.get("Retry-After"), Some("3"));
    assert_eq!(count(&endpoint.stats().refused_queue_delay), 1);
    // In-dialog: a NOTIFY for no subscription (481, but answered) and a BYE.
    peer.send(
        from,
        &notify(
            &call_id,
            &tag,
            peer.addr(),
            "z9hG4bKind",
            5,
            "Event: refer;id=77\r\n",
            "active",
            "",
        ),
    )
    .await;
    assert_eq!(peer.expect_status().await, 481);
    peer.send(from, &format!(
        "BYE sip:alice@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKbye\r\nFrom: <sip:bob@{addr}>;tag=bob1\r\nTo: <sip:alice@127.0.0.1>;tag={tag}\r\nCall-ID: {call_id}\r\nCSeq: 20 BYE\r\nContent-Length: 0\r\n\r\n",
        addr = peer.addr()
    )).await;
    assert_eq!(peer.expect_status().await, 200);
    assert!(call.is_ended());
}

/// Item: an IncomingCall dropped without an answer left its INVITE at 100 Trying forever; it
/// is answered 500, and an answered or rejected call never gets a second answer.
#[tokio::test]
async fn an_incoming_call_dropped_unanswered_is_answered_500() {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let peer = RawPeer::bind().await;
    peer.send(to, &invite(peer.addr(), to, "dropped", "z9hG4bKd1"))
        .await;
    let incoming = tokio::time::timeout(Duration::from_secs(5), endpoint.accept())
        .await
        .expect("in time")
        .expect("offered");
    drop(incoming);
    let (status, trying, response) = first_final(&peer, "dropped").await;
    assert_eq!((status, trying), (500, true));
    peer.send(to, &ack(peer.addr(), to, &response, "z9hG4bKd1"))
        .await;
    assert_eq!(count(&endpoint.stats().unanswered_calls), 1);

    // A rejected call gets its one answer and nothing else.
    peer.send(to, &invite(peer.addr(), to, "rejected", "z9hG4bKd2"))
        .await;
    let incoming = tokio::time::timeout(Duration::from_secs(5), endpoint.accept())
        .await
        .expect("in time")
        .expect("offered");
    incoming.reject(486).await;
    let (status, _, response) = first_final(&peer, "rejected").await;
    assert_eq!(status, 486);
    peer.send(to, &ack(peer.addr(), to, &response, "z9hG4bKd2"))
        .await;
    assert!(
        peer.recv_within(Duration::from_millis(300)).await.is_none(),
        "no second answer"
    );
    assert_eq!(count(&endpoint.stats().unanswered_calls), 1);
}

/// Item (RFC 5057 §5.1, RFC 3261 §12.2.1.2): a 481, a 408 or no answer at all (Timer F) to an
/// in-dialog REFER means the dialog is gone: the call ends.
#[tokio::test]
async fn a_refer_answered_481_or_408_or_timing_out_ends_the_dialog() {
    for answer in [Some(481), Some(408), None] {
        let mut config = EndpointConfig::udp(loopback());
        config.timers = Timers {
            t1: Duration::from_millis(20),
            t2: Duration::from_millis(80),
            t4: Duration::from_millis(100),
        };
        let Referred {
            peer,
            call,
            from,
            refer,
            referring,
            ..
        } = support::referred_call_with(config).await;
        if let Some(status) = answer {
            peer.respond(from, &refer, status).await;
        }
        let outcome = tokio::time::timeout(Duration::from_secs(5), referring)
            .await
            .expect("in time")
            .expect("task");
        match answer {
            Some(status) => assert_eq!(outcome.expect("answered").status, status),
            None => assert_eq!(outcome, Err(ReferFailure::Timeout)),
        }
        assert!(call.is_ended(), "{answer:?} leaves the dialog up");
    }
}

/// Opens a TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().expect("ip"), 0))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Whether the endpoint closes `stream` within `within` (reads give EOF or an error).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends an OPTIONS on `stream` and returns the status line of the answer.
async fn options_on(stream: &mut TcpStream, to: SocketAddr, branch: &str) -> String {
    stream
        .write_all(options(to, branch).as_bytes())
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed instead of answering");
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn tcp_config(limits: TcpLimits) -> EndpointConfig {
    let mut config = EndpointConfig::tcp(loopback());
    config.tcp = limits;
    config
}

/// Item: no cap on TCP connections. Past the cap in total or per peer address, a new
/// connection is closed at once; one that closes makes room.
#[tokio::test]
async fn tcp_connections_are_capped_in_total_and_per_peer() {
    let endpoint = Endpoint::bind(tcp_config(TcpLimits {
        max_connections: Some(3),
        max_connections_per_ip: Some(2),
        message_timeout: None,
        idle_timeout: None,
    }))
    .await
    .expect("bind");
    let to = endpoint.local_addr();
    let mut a1 = connect_from("127.0.0.1", to).await;
    let mut a2 = connect_from("127.0.0.1", to).await;
    assert!(
        options_on(&mut a1, to, "z9hG4bKa1")
            .await
            .starts_with("SIP/2.0 200")
    );
    assert!(
        options_on(&mut a2, to, "z9hG4bKa2")
            .await
            .starts_with("SIP/2.0 200")
    );
    let mut a3 = connect_from("127.0.0.1", to).await;
    assert!(
        closed_within(&mut a3, Duration::from_secs(3)).await,
        "a third connection from one address stays open"
    );
    let mut b1 = connect_from("127.0.0.2", to).await;
    assert!(
        options_on(&mut b1, to, "z9hG4bKb1")
            .await
            .starts_with("SIP/2.0 200")
    );
    let mut c1 = connect_from("127.0.0.3", to).await;
    assert!(
        closed_within(&mut c1, Duration::from_secs(3)).await,
        "a fourth connection in all stays open"
    );
    assert_eq!(count(&endpoint.stats().tcp_refused_per_ip), 1);
    assert_eq!(count(&endpoint.stats().tcp_refused_max), 1);
    // Closing one makes room (the endpoint notices the close asynchronously).
    drop(a1);
    let mut answered = false;
    for attempt in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut fresh = connect_from("127.0.0.1", to).await;
        if fresh
            .write_all(options(to, &format!("z9hG4bKf{attempt}")).as_bytes())
            .await
            .is_err()
        {
            continue;
        }
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), fresh.read(&mut chunk)).await
            && n > 0
        {
            assert!(chunk.starts_with(b"SIP/2.0 200"));
            answered = true;
            break;
        }
    }
    assert!(answered, "no room after a connection closed");
}

/// Item: slowloris connections (a message started, never finished) stayed open forever.
/// They are closed after the message timeout, and an honest OPTIONS is answered meanwhile.
#[tokio::test]
async fn slowloris_connections_are_closed_after_the_message_timeout() {
    let endpoint = Endpoint::bind(tcp_config(TcpLimits {
        message_timeout: Some(Duration::from_millis(500)),
        idle_timeout: None,
        ..TcpLimits::default()
    }))
    .await
    .expect("bind");
    let to = endpoint.local_addr();
    let mut slow = Vec::new();
    for _ in 0..10 {
        let stream = connect_from("127.0.0.1", to).await;
        let (mut read, mut write) = stream.into_split();
        write
            .write_all(b"OPTIONS sip:verbhost@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")
            .await
            .expect("write");
        let dripping = tokio::spawn(async move {
            // One byte every 100 ms for at most 5 s: never idle, never complete.
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write.write_all(b"1").await.is_err() {
                    return;
                }
            }
        });
        let closed = tokio::spawn(async move {
            let mut buffer = [0u8; 256];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), read.read(&mut buffer)).await,
                Ok(Ok(0) | Err(_))
            )
        });
        slow.push((dripping, closed));
    }
    let mut honest = connect_from("127.0.0.1", to).await;
    assert!(
        options_on(&mut honest, to, "z9hG4bKhonest")
            .await
            .starts_with("SIP/2.0 200")
    );
    for (dripping, closed) in slow {
        assert!(
            closed.await.expect("task"),
            "a slowloris connection stays open"
        );
        dripping.abort();
    }
    assert_eq!(count(&endpoint.stats().tcp_message_timeouts), 10);
    assert!(
        options_on(&mut honest, to, "z9hG4bKhonest2")
            .await
            .starts_with("SIP/2.0 200")
    );
}

/// Item: idle connections stayed open forever. A silent one is closed after the idle timeout;
/// one that sends CRLF keep-alives (RFC 5626) stays open.
#[tokio::test]
async fn idle_tcp_connections_are_closed_but_keep_alives_keep_them_open() {
    let endpoint = Endpoint::bind(tcp_config(TcpLimits {
        idle_timeout: Some(Duration::from_millis(800)),
        ..TcpLimits::default()
    }))
    .await
    .expect("bind");
    let to = endpoint.local_addr();
    let mut silent = connect_from("127.0.0.1", to).await;
    assert!(
        options_on(&mut silent, to, "z9hG4bKs")
            .await
            .starts_with("SIP/2.0 200")
    );
    let mut alive = connect_from("127.0.0.1", to).await;
    assert!(
        options_on(&mut alive, to, "z9hG4bKk")
            .await
            .starts_with("SIP/2.0 200")
    );
    let keeping = tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            alive.write_all(b"\r\n\r\n").await.expect("keep-alive");
        }
        alive
    });
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "an idle connection stays open"
    );
    let mut alive = keeping.await.expect("task");
    assert!(
        options_on(&mut alive, to, "z9hG4bKk2")
            .await
            .starts_with("SIP/2.0 200"),
        "keep-alives keep a connection open"
    );
    assert_eq!(count(&endpoint.stats().tcp_idle_timeouts), 1);
}

/// Sends `count` OPTIONS with big answers (each answer copies the request's 40 long Via
/// headers, about 4 KB) on `write` without reading; returns how many went out before the
/// endpoint closed the connection, and the write half, still open.
async fn flood_without_reading(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    to: SocketAddr,
    count: usize,
) -> (usize, tokio::net::tcp::OwnedWriteHalf) {
    let vias: String = (0..40)
        .map(|i| {
            format!(
                "Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKv{i};x={}\r\n",
                "p".repeat(80)
            )
        })
        .collect();
    for i in 0..count {
        let text = format!(
            "OPTIONS sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKw{i}\r\n{vias}Max-Forwards: 70\r\nFrom: <sip:p@127.0.0.1>;tag=w\r\nTo: <sip:verbhost@{to}>\r\nCall-ID: w{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        if write.write_all(text.as_bytes()).await.is_err() {
            return (i, write);
        }
    }
    (count, write)
}

/// Whether reading `read` reaches the end of the stream (or an error) within `within`.
async fn reaches_eof_within(read: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A peer that sends requests but never reads the answers made the endpoint queue them
/// without bound. The queue is bounded, and a connection whose peer takes nothing within the
/// message timeout is closed; other connections are served meanwhile.
#[tokio::test]
async fn a_tcp_peer_that_does_not_read_is_cut_off() {
    let endpoint = Endpoint::bind(tcp_config(TcpLimits {
        message_timeout: Some(Duration::from_millis(500)),
        idle_timeout: None,
        ..TcpLimits::default()
    }))
    .await
    .expect("bind");
    let to = endpoint.local_addr();
    let (mut read, write) = connect_from("127.0.0.1", to).await.into_split();
    let flooding = tokio::spawn(flood_without_reading(write, to, 5_000));
    // Wait until the endpoint gives up on the writer (bounded).
    for _ in 0..100 {
        if count(&endpoint.stats().tcp_write_timeouts) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&endpoint.stats().tcp_write_timeouts), 1);
    assert!(
        reaches_eof_within(&mut read, Duration::from_secs(10)).await,
        "the connection of a peer that does not read stays open"
    );
    let (sent, _still_open) = flooding.await.expect("task");
    assert!(sent > 0);
    let mut honest = connect_from("127.0.0.1", to).await;
    assert!(
        options_on(&mut honest, to, "z9hG4bKafter")
            .await
            .starts_with("SIP/2.0 200")
    );
}

/// Item: the endpoint opened TCP connections inline, so a peer whose connect hangs (a full
/// accept queue, a black-holed address) stalled every call on the endpoint for up to 5 s.
/// Now the connect runs in a task of its own: other peers are answered meanwhile, and the
/// call that needed the connection fails with the cause when the connect times out, instead
/// of waiting for Timer B.
#[tokio::test]
async fn a_tcp_connect_that_hangs_stalls_nothing_else_and_fails_the_call_it_was_for() {
    // A listener that never accepts, with its accept queue full: connects to it hang.
    let blackhole = TcpSocket::new_v4().expect("socket");
    blackhole.bind(loopback()).expect("bind");
    let blackhole = blackhole.listen(0).expect("listen");
    let blackhole_addr = blackhole.local_addr().expect("addr");
    let _queued = TcpStream::connect(blackhole_addr)
        .await
        .expect("fills the queue");

    let endpoint = Endpoint::bind(tcp_config(TcpLimits::default()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let started = tokio::time::Instant::now();
    let calling = {
        let endpoint = endpoint.clone();
        let target = format!("sip:bob@{blackhole_addr};transport=tcp");
        tokio::spawn(async move {
            endpoint
                .call(&target, "<sip:alice@127.0.0.1>", support::SDP.to_vec())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While that connect hangs, another peer is served at once, several times over.
    let mut other = TcpStream::connect(to).await.expect("connect");
    for n in 0..3 {
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            options_on(&mut other, to, &format!("z9hG4bK-while-{n}")),
        )
        .await
        .expect("answered while another peer's connect hangs");
        assert_eq!(answered, "SIP/2.0 200 OK");
    }
    let failed = tokio::time::timeout(Duration::from_secs(15), calling)
        .await
        .expect("the call fails in time")
        .expect("task");
    let cause = match failed {
        Err(verbhost_sip::endpoint::CallError::Transport(cause)) => cause,
        Err(other) => panic!("a transport failure, got {other}"),
        Ok(_) => panic!("a black hole answered"),
    };
    assert!(
        cause.contains("timed out") && cause.contains(&blackhole_addr.to_string()),
        "{cause}"
    );
    // At the connect timeout (5 s), not at Timer B (32 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
