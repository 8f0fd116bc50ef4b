//! Issue 9: the endpoint behind a record-routing proxy, in both directions. A raw UDP socket
//! plays the proxy: every message that should pass the proxy must arrive at that socket, with
//! the Route headers RFC 3261 §12 asks for.
//! - Inbound: the 200 carries the INVITE's Record-Route (§12.1.1), and our REFER and BYE go to
//!   the first route with the whole route set in Route and the caller's Contact as
//!   Request-URI; the 200s to the caller's NOTIFYs go back to the proxy that sent them.
//! - Outbound: with an outbound proxy the INVITE goes to it with a pre-loaded Route (§8.1.2);
//!   the ACK, REFER and BYE follow the 2xx's Record-Route, reversed; a 2xx without
//!   Record-Route means the proxy left the path, and the ACK goes straight to the Contact.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{RawPeer, SDP, loopback};
use verbhost_sip::endpoint::{Call, Endpoint, EndpointConfig};
use verbhost_sip::message::{Message, Method, Request, SipHeaders};

/// An INVITE as a record-routing proxy at `proxy` relays it: the proxy's Via on top of the
/// caller's, two Record-Route headers (the proxy's own first, then a second value), and the
/// caller's Contact at `caller`.
fn proxied_invite(proxy: SocketAddr, caller: SocketAddr, to: SocketAddr, call_id: &str) -> String {
    format!(
        "INVITE sip:app@{to} SIP/2.0\r\n\
         Record-Route: <sip:{proxy};lr;r2=on>, <sip:edge.example;lr>\r\n\
         Record-Route: <sip:core.example;lr>\r\n\
         Via: SIP/2.0/UDP {proxy};branch=z9hG4bKproxy1\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bKcaller1;rport\r\n\
         Max-Forwards: 69\r\nFrom: <sip:alice@{caller}>;tag=alice1\r\nTo: <sip:app@{to}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{caller}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        len = SDP.len(),
        sdp = String::from_utf8_lossy(SDP)
    )
}

/// The three route values of [`proxied_invite`], in order.
fn route_set(proxy: SocketAddr) -> Vec<String> {
    vec![
        format!("<sip:{proxy};lr;r2=on>"),
        "<sip:edge.example;lr>".into(),
        "<sip:core.example;lr>".into(),
    ]
}

/// The next request with `method` at `peer` (responses and other requests are skipped).
async fn next_request(peer: &RawPeer, method: Method) -> (Request, SocketAddr) {
    peer.recv_method(method).await
}

/// Inbound through the proxy: the answer, and every request of ours, pass the proxy.
#[tokio::test]
async fn inbound_calls_through_a_record_routing_proxy_keep_the_proxy_on_the_path() {
    let endpoint = Endpoint::bind(EndpointConfig::udp(loopback()))
        .await
        .expect("bind");
    let to = endpoint.local_addr();
    let proxy = RawPeer::bind().await;
    // The caller's own address: nothing of ours may go there, the proxy relays everything.
    let caller = RawPeer::bind().await;
    let call_id = "rr-inbound";
    proxy
        .send(
            to,
            &proxied_invite(proxy.addr(), caller.addr(), to, call_id),
        )
        .await;
    let incoming = tokio::time::timeout(Duration::from_secs(5), endpoint.accept())
        .await
        .expect("offered in time")
        .expect("offered");
    let call = incoming.answer(SDP.to_vec()).await.expect("answered");
    let ok = loop {
        let response = proxy.recv_response_to(call_id).await;
        if response.status == 200 {
            break response;
        }
    };
    // §12.1.1: all Record-Route values, in order (however they were split into headers).
    assert_eq!(
        ok.headers.all("Record-Route").collect::<Vec<_>>(),
        route_set(proxy.addr()),
        "the 200 must copy the INVITE's Record-Route:\n{}",
        String::from_utf8_lossy(&ok.to_bytes())
    );
    // Both Vias go back, so the proxy can relay the 200 to the caller.
    assert_eq!(ok.headers.all("Via").count(), 2);

    // The caller's ACK, relayed by the proxy (loose routing keeps the Request-URI).
    let contact = ok.contact_uri().expect("Contact").to_owned();
    let ack = format!(
        "ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {proxy};branch=z9hG4bKproxyack\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bKcallerack\r\nMax-Forwards: 69\r\n\
         From: {from}\r\nTo: {to_header}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        proxy = proxy.addr(),
        caller = caller.addr(),
        from = ok.headers.get("From").expect("From"),
        to_header = ok.headers.get("To").expect("To"),
    );
    let referring = {
        let call = call.clone();
        tokio::spawn(async move {
            call.refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
                .await
        })
    };
    proxy.send(to, &ack).await;
    let (refer, from) = next_request(&proxy, Method::Refer).await;
    assert_eq!(from, to, "the REFER comes from the endpoint");
    assert_in_dialog(&refer, &caller, proxy.addr());
    // The proxy relays the 202 back (its own Via popped: only ours is left).
    proxy.respond(to, &refer, 202).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), referring)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    assert_eq!(answer.status, 202);

    // The caller's NOTIFY through the proxy: its 200 goes back to the proxy.
    let notify = format!(
        "NOTIFY {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {proxy};branch=z9hG4bKproxyn1\r\n\
         Via: SIP/2.0/UDP {caller};branch=z9hG4bKcallern1\r\nMax-Forwards: 69\r\n\
         From: <sip:alice@{caller}>;tag=alice1\r\nTo: {to_header}\r\nCall-ID: {call_id}\r\n\
         CSeq: 2 NOTIFY\r\nContact: <sip:alice@{caller}>\r\nEvent: refer;id={id}\r\n\
         Subscription-State: terminated;reason=noresource\r\n\
         Content-Type: message/sipfrag;version=2.0\r\nContent-Length: 16\r\n\r\n\
         SIP/2.0 200 OK\r\n",
        proxy = proxy.addr(),
        caller = caller.addr(),
        to_header = ok.headers.get("To").expect("To"),
        id = answer.refer_id,
    );
    proxy.send(to, &notify).await;
    let notify_ok = loop {
        match proxy.recv().await {
            (Message::Response(response), _)
                if response.cseq().map(|c| c.method.clone()) == Some(Method::Notify) =>
            {
                break response;
            }
            _ => {}
        }
    };
    assert_eq!(notify_ok.status, 200);
    assert_eq!(
        notify_ok.headers.all("Via").count(),
        2,
        "both Vias, for the proxy to relay it"
    );

    // BYE: the same route set.
    let hanging_up = {
        let call = call.clone();
        tokio::spawn(async move { call.hangup().await })
    };
    let (bye, _) = next_request(&proxy, Method::Bye).await;
    assert_in_dialog(&bye, &caller, proxy.addr());
    proxy.respond(to, &bye, 200).await;
    let hung_up = tokio::time::timeout(Duration::from_secs(5), hanging_up)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(hung_up, Ok(()));
    assert!(
        caller
            .recv_within(Duration::from_millis(100))
            .await
            .is_none(),
        "nothing of ours may bypass the proxy"
    );
}

/// An in-dialog request of ours on the inbound call: Request-URI the caller's Contact, the
/// route set in Route, in order.
fn assert_in_dialog(request: &Request, caller: &RawPeer, proxy: SocketAddr) {
    assert_eq!(request.uri, format!("sip:alice@{}", caller.addr()));
    assert_eq!(
        request.headers.all("Route").collect::<Vec<_>>(),
        route_set(proxy),
        "{}",
        String::from_utf8_lossy(&request.to_bytes())
    );
}

/// The endpoint with `proxy` as its outbound proxy calls `bob@callee`; the proxy receives the
/// INVITE and answers 200 with `record_route` (if any) and bob's Contact. Returns the INVITE,
/// the 200 and the call.
async fn call_through(
    proxy: &RawPeer,
    proxy_uri: &str,
    callee: SocketAddr,
    record_route: Option<&str>,
) -> (Endpoint, Request, Call) {
    let mut config = EndpointConfig::udp(loopback());
    config.outbound_proxy = Some(proxy_uri.to_owned());
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let calling = {
        let endpoint = endpoint.clone();
        let target = format!("sip:bob@{callee}");
        tokio::spawn(async move {
            endpoint
                .call(&target, "<sip:verbhost@127.0.0.1>", SDP.to_vec())
                .await
        })
    };
    let (invite, from) = next_request(proxy, Method::Invite).await;
    let rr = record_route.map_or(String::new(), |rr| format!("Record-Route: {rr}\r\n"));
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\n{rr}From: {from_header}\r\nTo: <sip:bob@{callee}>;tag=bob1\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{callee}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        via = invite.headers.get("Via").expect("Via"),
        from_header = invite.headers.get("From").expect("From"),
        call_id = invite.call_id().expect("Call-ID"),
        len = SDP.len(),
        sdp = String::from_utf8_lossy(SDP)
    );
    proxy.send(from, &ok).await;
    let call = tokio::time::timeout(Duration::from_secs(5), calling)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    (endpoint, invite, call)
}

/// Outbound through a record-routing outbound proxy: INVITE, ACK, REFER and BYE all go to it.
#[tokio::test]
async fn outbound_calls_go_through_the_outbound_proxy_and_follow_its_record_route() {
    let proxy = RawPeer::bind().await;
    let callee = RawPeer::bind().await;
    let record_route = format!("<sip:{};lr;ftag=x>", proxy.addr());
    let (_endpoint, invite, call) = call_through(
        &proxy,
        &format!("sip:{}", proxy.addr()),
        callee.addr(),
        Some(&record_route),
    )
    .await;
    // §8.1.2: Request-URI the target, the proxy as a pre-loaded loose route.
    assert_eq!(invite.uri, format!("sip:bob@{}", callee.addr()));
    assert_eq!(
        invite.headers.all("Route").collect::<Vec<_>>(),
        [format!("<sip:{};lr>", proxy.addr())]
    );
    let (ack, _) = next_request(&proxy, Method::Ack).await;
    assert_eq!(ack.uri, format!("sip:bob@{}", callee.addr()));
    assert_eq!(
        ack.headers.all("Route").collect::<Vec<_>>(),
        std::slice::from_ref(&record_route)
    );

    let referring = {
        let call = call.clone();
        tokio::spawn(async move {
            call.refer(vec![("Refer-To".into(), "<sip:carol@127.0.0.1>".into())])
                .await
        })
    };
    let (refer, from) = next_request(&proxy, Method::Refer).await;
    assert_eq!(refer.uri, format!("sip:bob@{}", callee.addr()));
    assert_eq!(
        refer.headers.all("Route").collect::<Vec<_>>(),
        std::slice::from_ref(&record_route)
    );
    proxy.respond(from, &refer, 202).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), referring)
        .await
        .expect("in time")
        .expect("task")
        .expect("answered");
    assert_eq!(answer.status, 202);
    let hanging_up = {
        let call = call.clone();
        tokio::spawn(async move { call.hangup().await })
    };
    let (bye, from) = next_request(&proxy, Method::Bye).await;
    assert_eq!(bye.headers.all("Route").collect::<Vec<_>>(), [record_route]);
    proxy.respond(from, &bye, 200).await;
    let hung_up = tokio::time::timeout(Duration::from_secs(5), hanging_up)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(hung_up, Ok(()));
    assert!(
        callee
            .recv_within(Duration::from_millis(100))
            .await
            .is_none(),
        "nothing may bypass a record-routing proxy"
    );
}

/// A proxy that does not record-route leaves the path: the ACK goes to the Contact, without
/// Route. An outbound proxy given with brackets and `;lr` is used as it is.
#[tokio::test]
async fn without_record_route_the_dialog_goes_straight_to_the_contact() {
    let proxy = RawPeer::bind().await;
    let callee = RawPeer::bind().await;
    let (_endpoint, invite, _call) = call_through(
        &proxy,
        &format!("<sip:{};lr>", proxy.addr()),
        callee.addr(),
        None,
    )
    .await;
    assert_eq!(
        invite.headers.all("Route").collect::<Vec<_>>(),
        [format!("<sip:{};lr>", proxy.addr())]
    );
    let (ack, _) = next_request(&callee, Method::Ack).await;
    assert_eq!(ack.headers.all("Route").count(), 0);
    assert_eq!(ack.uri, format!("sip:bob@{}", callee.addr()));
}

/// An outbound proxy that does not resolve fails the call with the proxy named.
#[tokio::test]
async fn an_unresolvable_outbound_proxy_is_named_in_the_error() {
    let mut config = EndpointConfig::udp(loopback());
    config.outbound_proxy = Some("sip:no-such-host.invalid:5060".into());
    let endpoint = Endpoint::bind(config).await.expect("bind");
    let failed = endpoint
        .call(
            "sip:bob@127.0.0.1:9",
            "<sip:verbhost@127.0.0.1>",
            SDP.to_vec(),
        )
        .await
        .err()
        .expect("no call without the proxy");
    assert!(
        failed
            .to_string()
            .contains("outbound proxy <sip:no-such-host.invalid:5060;lr>"),
        "{failed}"
    );
}
