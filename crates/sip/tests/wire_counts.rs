//! Every message the endpoint drops or answers with an error is counted by cause, over a
//! real UDP socket on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig};

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A request to `to` from `from`; `via_params` follow the Via's sent-by, `extra` ends the head.
fn request(
    method: &str,
    to: SocketAddr,
    from: SocketAddr,
    via_params: &str,
    extra: &str,
) -> String {
    format!(
        "{method} sip:verbhost@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from}{via_params}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:verbhost@{to}>{extra}\r\n\
         Call-ID: c-{method}@127.0.0.1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sends `bytes` and returns the status of the answer, or `None` if none comes in 500 ms.
async fn status_of(socket: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Option<u16> {
    socket.send_to(bytes, to).await.unwrap();
    let mut buffer = [0u8; 4096];
    let received = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buffer));
    let n = received.await.ok()?.unwrap();
    std::str::from_utf8(&buffer[..n])
        .ok()?
        .get(8..11)?
        .parse()
        .ok()
}

#[tokio::test]
async fn drops_and_error_answers_are_counted_by_cause() {
    let endpoint = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let to = endpoint.local_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = socket.local_addr().unwrap();
    let stats = endpoint.stats();

    // Dropped without an answer: a keep-alive, garbage, a request without a Via branch, and
    // a response to no transaction of ours.
    assert_eq!(status_of(&socket, to, b"\r\n\r\n").await, None);
    assert_eq!(status_of(&socket, to, b"garbage\r\n\r\n").await, None);
    let no_branch = request("OPTIONS", to, from, "", "");
    assert_eq!(status_of(&socket, to, no_branch.as_bytes()).await, None);
    let stray = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {to};branch=z9hG4bK-never-sent\r\n\
         From: <sip:verbhost@{to}>;tag=a\r\nTo: <sip:x@{from}>;tag=b\r\nCall-ID: stray@x\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(status_of(&socket, to, stray.as_bytes()).await, None);
    assert_eq!(count(&stats.dropped_keepalive), 1);
    assert_eq!(count(&stats.dropped), 1);
    assert_eq!(count(&stats.dropped_no_branch), 1);
    assert_eq!(count(&stats.dropped_stray_response), 1);

    // Answered with an error: a method we do not implement (501) and a BYE in no dialog (481).
    let unknown = request("FOO", to, from, ";branch=z9hG4bK-foo", "");
    assert_eq!(status_of(&socket, to, unknown.as_bytes()).await, Some(501));
    let bye = request("BYE", to, from, ";branch=z9hG4bK-bye", ";tag=gone");
    assert_eq!(status_of(&socket, to, bye.as_bytes()).await, Some(481));
    assert_eq!(count(&stats.answered_not_implemented), 1);
    assert_eq!(count(&stats.answered_no_dialog), 1);
    // A good OPTIONS is answered 200 and counts nowhere.
    let options = request("OPTIONS", to, from, ";branch=z9hG4bK-ok", "");
    assert_eq!(status_of(&socket, to, options.as_bytes()).await, Some(200));
    assert_eq!(count(&stats.answered_no_dialog), 1);
    assert_eq!(count(&stats.rejected), 0);
}
