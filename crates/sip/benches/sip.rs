//! Parse and serialise of a typical NOTIFY, and one REFER transaction over loopback UDP
//! (send, the peer's 202, the response matched to the transaction and handed back).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::net::UdpSocket;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig};
use verbhost_sip::message::{Message, SipHeaders};
use verbhost_sip::wire;

const NOTIFY: &[u8] = b"NOTIFY sip:alice@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK.3f71c2;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@127.0.0.1:5070>;tag=a1b2c3\r\n\
From: <sip:bob@127.0.0.1:5090>;tag=d4e5f6\r\n\
Call-ID: 1-4242@127.0.0.1\r\n\
CSeq: 14088 NOTIFY\r\n\
Contact: <sip:bob-0x55c1@127.0.0.1:5090>\r\n\
Event: refer;id=2\r\n\
Subscription-State: active;expires=60\r\n\
Content-Type: message/sipfrag;version=2.0\r\n\
Content-Length: 21\r\n\r\n\
SIP/2.0 180 Ringing\r\n";

fn parse_and_serialize(c: &mut Criterion) {
    c.bench_function("parse_notify", |b| {
        b.iter(|| {
            let Ok(Message::Request(notify)) = wire::parse(std::hint::black_box(NOTIFY)) else {
                panic!("parses")
            };
            notify
        })
    });
    let Ok(Message::Request(notify)) = wire::parse(NOTIFY) else {
        panic!("parses")
    };
    c.bench_function("serialize_notify", |b| {
        b.iter(|| std::hint::black_box(&notify).to_bytes())
    });
}

/// Answers every INVITE 200 and every REFER 202, as fast as it can.
async fn responder(socket: UdpSocket) {
    let mut buffer = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer).await else {
            return;
        };
        let Ok(Message::Request(request)) = wire::parse(&buffer[..n]) else {
            continue;
        };
        let status = match request.method {
            verbhost_sip::message::Method::Invite => 200,
            verbhost_sip::message::Method::Refer => 202,
            _ => continue,
        };
        let mut response = verbhost_sip::message::Response::to(&request, status, Some("peer"));
        response.headers.push(
            "Contact",
            format!("<sip:peer@{}>", socket.local_addr().expect("addr")),
        );
        let _ = request.cseq();
        let _ = socket.send_to(&response.to_bytes(), from).await;
    }
}

fn refer_transaction(c: &mut Criterion) {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let call = executor.block_on(async {
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let target = format!("sip:peer@{}", peer.local_addr().expect("addr"));
        tokio::spawn(responder(peer));
        let endpoint = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().expect("addr")))
            .await
            .expect("bind");
        tokio::time::timeout(
            Duration::from_secs(5),
            endpoint.call(&target, "<sip:bench@127.0.0.1>", Vec::new()),
        )
        .await
        .expect("in time")
        .expect("answered")
    });
    c.bench_function("refer_transaction_udp_loopback", |b| {
        b.iter(|| {
            executor.block_on(async {
                let answer = call
                    .refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
                    .await
                    .expect("answered");
                assert_eq!(answer.status, 202);
            })
        })
    });
}

criterion_group!(benches, parse_and_serialize, refer_transaction);
criterion_main!(benches);
