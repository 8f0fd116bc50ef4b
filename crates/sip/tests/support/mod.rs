//! Helpers shared by the endpoint tests: a peer scripted with a raw UDP socket (for what a
//! well-behaved endpoint never sends), calls set up against it, and NOTIFY/INVITE builders.
//! Each test binary uses a different subset.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use verbhost_sip::endpoint::{Call, Endpoint, EndpointConfig, ReferAnswer, ReferFailure};
use verbhost_sip::message::{Message, Method, Request, Response, SipHeaders};
use verbhost_sip::wire;

/// A small SDP offer/answer.
pub(crate) const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// 127.0.0.1, any port.
pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// A peer scripted with a raw UDP socket.
pub(crate) struct RawPeer {
    pub(crate) socket: UdpSocket,
}

impl RawPeer {
    pub(crate) async fn bind() -> RawPeer {
        RawPeer {
            socket: UdpSocket::bind(loopback()).await.expect("bind"),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    /// The next message, or `None` when nothing arrives within `within`.
    pub(crate) async fn recv_within(&self, within: Duration) -> Option<(Message, SocketAddr)> {
        let mut buffer = vec![0u8; 65536];
        let (n, from) = tokio::time::timeout(within, self.socket.recv_from(&mut buffer))
            .await
            .ok()?
            .expect("recv");
        Some((
            wire::parse(&buffer[..n]).expect("our endpoint sends valid SIP"),
            from,
        ))
    }

    /// The next message (5 s at most).
    pub(crate) async fn recv(&self) -> (Message, SocketAddr) {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("a message in time")
    }

    pub(crate) async fn recv_request(&self) -> (Request, SocketAddr) {
        loop {
            if let (Message::Request(request), from) = self.recv().await {
                return (request, from);
            }
        }
    }

    /// The next request with `method`, skipping anything else (retransmissions included).
    pub(crate) async fn recv_method(&self, method: Method) -> (Request, SocketAddr) {
        loop {
            let (request, from) = self.recv_request().await;
            if request.method == method {
                return (request, from);
            }
        }
    }

    /// The next response whose Call-ID is `call_id`, skipping anything else.
    pub(crate) async fn recv_response_to(&self, call_id: &str) -> Response {
        loop {
            if let (Message::Response(response), _) = self.recv().await
                && response.call_id() == Some(call_id)
            {
                return response;
            }
        }
    }

    pub(crate) async fn send(&self, to: SocketAddr, text: &str) {
        self.socket
            .send_to(text.as_bytes(), to)
            .await
            .expect("send");
    }

    /// Answers `request` with `status`, built the way the stack builds its own responses.
    pub(crate) async fn respond(&self, to: SocketAddr, request: &Request, status: u16) {
        let response = Response::to(request, status, None);
        self.socket
            .send_to(&response.to_bytes(), to)
            .await
            .expect("send");
    }

    pub(crate) async fn expect_status(&self) -> u16 {
        match self.recv().await.0 {
            Message::Response(response) => response.status,
            Message::Request(request) => panic!("expected a response, got {}", request.method),
        }
    }
}

/// The endpoint calls a raw peer, which answers 200 and receives the ACK: the peer, the call,
/// Call-ID, our tag and our address.
pub(crate) async fn answered_call(
    endpoint: &Endpoint,
) -> (RawPeer, Call, String, String, SocketAddr) {
    let peer = RawPeer::bind().await;
    let target = format!("sip:bob@{}", peer.addr());
    let endpoint = endpoint.clone();
    let calling = tokio::spawn(async move {
        endpoint
            .call(&target, "<sip:alice@127.0.0.1>", SDP.to_vec())
            .await
    });
    let (invite, from) = peer.recv_method(Method::Invite).await;
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
    // Retransmitted INVITEs (short timers) may come first.
    peer.recv_method(Method::Ack).await;
    let call = calling.await.expect("task").expect("answered");
    (peer, call, call_id, from_tag, from)
}

/// An in-dialog NOTIFY from the raw peer (tag `bob1`) to us (tag `alice_tag`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn notify(
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

/// A new INVITE from the raw peer at `peer` to the endpoint at `to`.
pub(crate) fn invite(peer: SocketAddr, to: SocketAddr, call_id: &str, branch: &str) -> String {
    format!(
        "INVITE sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@{peer}>;tag=bob-{call_id}\r\nTo: <sip:verbhost@{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{peer}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        len = SDP.len(),
        sdp = String::from_utf8_lossy(SDP)
    )
}

/// An in-dialog request from the caller at `peer` in a call that the endpoint at `to`
/// answered (dialog `id`: the caller's tag is the remote one), with `extra` headers (each
/// ending in CRLF) and `body`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn from_caller(
    method: &str,
    id: &verbhost_sip::dialog::DialogId,
    peer: SocketAddr,
    to: SocketAddr,
    branch: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@{peer}>;tag={remote}\r\nTo: <sip:verbhost@{to}>;tag={local}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:bob@{peer}>\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
        remote = id.remote_tag,
        local = id.local_tag,
        call_id = id.call_id,
        len = body.len(),
    )
}

/// The ACK for a response to [`invite`]: same branch for a non-2xx, a new one for a 2xx.
pub(crate) fn ack(peer: SocketAddr, to: SocketAddr, response: &Response, branch: &str) -> String {
    format!(
        "ACK sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {peer};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to_header}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        from = response.headers.get("From").expect("From"),
        to_header = response.headers.get("To").expect("To"),
        call_id = response.call_id().expect("Call-ID"),
    )
}

/// A call answered by a raw peer, with a REFER sent in it and received by the peer (not
/// answered yet).
pub(crate) struct Referred {
    pub(crate) endpoint: Endpoint,
    pub(crate) peer: RawPeer,
    pub(crate) call: Call,
    pub(crate) call_id: String,
    pub(crate) tag: String,
    pub(crate) from: SocketAddr,
    pub(crate) refer: Request,
    pub(crate) referring: tokio::task::JoinHandle<Result<ReferAnswer, ReferFailure>>,
}

/// [`Referred`] on an endpoint bound with `config`.
pub(crate) async fn referred_call_with(config: EndpointConfig) -> Referred {
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let (peer, call, call_id, tag, from) = answered_call(&endpoint).await;
    let referring = {
        let call = call.clone();
        tokio::spawn(async move {
            call.refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
                .await
        })
    };
    let (refer, _) = peer.recv_method(Method::Refer).await;
    Referred {
        endpoint,
        peer,
        call,
        call_id,
        tag,
        from,
        refer,
        referring,
    }
}

/// [`Referred`] on a UDP endpoint with the default configuration.
pub(crate) async fn referred_call() -> Referred {
    referred_call_with(EndpointConfig::udp(loopback())).await
}
