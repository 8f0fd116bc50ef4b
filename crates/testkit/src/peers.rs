//! Scripted SIP peers for a transfer, over UDP on loopback: [`Transferee`] (bob, who gets
//! the REFER) and [`TransferTarget`] (carol, whom bob is referred to). They do what a phone
//! does and no more: no retransmissions, no authentication, one call each.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use verbhost_sip::message::{Headers, Message, Method, Request, Response, SipHeaders, addr_uri};
use verbhost_sip::wire;

use crate::{Error, lock};

/// How long a [`Transferee`] plays its part at most: after this it stops answering.
const TRANSFEREE_LIFETIME: Duration = Duration::from_secs(15);
/// How long a [`TransferTarget`] rings (180) before it answers (200).
const RINGING: Duration = Duration::from_millis(300);

/// Whether a peer sent or received a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer sent it.
    Sent,
    /// The peer received it.
    Received,
}

/// One SIP message a peer sent or received, in the order it happened. Received datagrams
/// that do not parse as SIP are ignored and not recorded.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When: just before sending, or just after receiving.
    pub at: Instant,
    /// Sent or received.
    pub direction: Direction,
    /// The other side: where it went to, or where it came from.
    pub peer: SocketAddr,
    /// The message.
    pub message: Message,
}

type Record = Arc<Mutex<Vec<Seen>>>;

/// Bob, the transferee: a scripted user agent on its own UDP socket on 127.0.0.1.
///
/// It answers the first INVITE (200 with SDP), accepts a REFER (202), sends
/// `NOTIFY (100 Trying)`, INVITEs the `Refer-To` target (which must be a `sip:user@ip:port`
/// address), sends a NOTIFY for each of the target's answers from 180 on (the final one
/// terminates the subscription) and ACKs a 2xx. On the transferor's BYE it answers 200 and
/// hangs up the target (if it answered), then stops. It stops after 15 s in any case.
pub struct Transferee {
    addr: SocketAddr,
    seen: Record,
    task: JoinHandle<()>,
}

impl Transferee {
    /// Binds 127.0.0.1 on an ephemeral port and starts playing its part.
    pub async fn start() -> Result<Transferee, Error> {
        let (socket, addr) = bind("transferee").await?;
        let seen = Record::default();
        let agent = Agent {
            socket,
            local: addr,
            seen: seen.clone(),
            branch: 0,
        };
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(TRANSFEREE_LIFETIME, bob(agent)).await;
        });
        Ok(Transferee { addr, seen, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URI to call it at: `sip:bob@127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("sip:bob@{}", self.addr)
    }

    /// Every message it sent or received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// Waits (at most `timeout`) until it has played its part (or given up); true when it
    /// has stopped.
    pub async fn finished(&mut self, timeout: Duration) -> bool {
        self.task.is_finished() || tokio::time::timeout(timeout, &mut self.task).await.is_ok()
    }
}

impl Drop for Transferee {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carol, the transfer target: a scripted user agent on its own UDP socket on 127.0.0.1.
///
/// To every INVITE it answers 180 at once and 200 (with SDP) 300 ms later; it answers a BYE
/// with 200 and then stops. It ignores everything else (ACK included, which it records).
pub struct TransferTarget {
    addr: SocketAddr,
    seen: Record,
    task: JoinHandle<()>,
}

impl TransferTarget {
    /// Binds 127.0.0.1 on an ephemeral port and starts answering.
    pub async fn start() -> Result<TransferTarget, Error> {
        let (socket, addr) = bind("transfer target").await?;
        let seen = Record::default();
        let agent = Agent {
            socket,
            local: addr,
            seen: seen.clone(),
            branch: 0,
        };
        let task = tokio::spawn(async move {
            let _ = carol(agent).await;
        });
        Ok(TransferTarget { addr, seen, task })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URI to refer a call to: `sip:carol@127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        format!("sip:carol@{}", self.addr)
    }

    /// Every message it sent or received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }
}

impl Drop for TransferTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind(party: &'static str) -> Result<(UdpSocket, SocketAddr), Error> {
    let err = |source| Error::Bind { party, source };
    let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(err)?;
    let addr = socket.local_addr().map_err(err)?;
    Ok((socket, addr))
}

/// An SDP offer/answer for a signalling-only phone: one audio stream, PCMU, on its address.
fn sdp(local: SocketAddr) -> Vec<u8> {
    let ip = local.ip();
    format!(
        "v=0\r\no=testkit 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// A user agent socket that records what it sends and receives.
struct Agent {
    socket: UdpSocket,
    local: SocketAddr,
    seen: Record,
    branch: u32,
}

impl Agent {
    async fn send(&mut self, to: SocketAddr, message: Message) {
        let bytes = match &message {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        };
        self.note(Direction::Sent, to, message);
        let _ = self.socket.send_to(&bytes, to).await;
    }

    /// The next message that parses, or `None` when the socket fails.
    async fn recv(&mut self) -> Option<(Message, SocketAddr)> {
        let mut buffer = vec![0; wire::MAX_MESSAGE_BYTES];
        loop {
            let (n, from) = self.socket.recv_from(&mut buffer).await.ok()?;
            if let Ok(message) = wire::parse(&buffer[..n]) {
                self.note(Direction::Received, from, message.clone());
                return Some((message, from));
            }
        }
    }

    fn note(&self, direction: Direction, peer: SocketAddr, message: Message) {
        lock(&self.seen).push(Seen {
            at: Instant::now(),
            direction,
            peer,
            message,
        });
    }

    /// A new request from this agent.
    fn request(
        &mut self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Message {
        self.branch += 1;
        let mut all = Headers::new();
        all.push(
            "Via",
            format!(
                "SIP/2.0/UDP {};branch=z9hG4bK-testkit-{}",
                self.local, self.branch
            ),
        );
        all.push("Max-Forwards", "70");
        for (name, value) in headers {
            all.push(*name, value.clone());
        }
        Message::Request(Request {
            method,
            uri: uri.to_owned(),
            headers: all,
            body: body.to_vec(),
        })
    }
}

/// The `host:port` of a SIP URI on loopback (`sip:carol@127.0.0.1:5070` gives the address).
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let hostport = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
    hostport.split(';').next()?.parse().ok()
}

fn response(
    request: &Request,
    status: u16,
    tag: &str,
    extra: &[(&str, String)],
    body: &[u8],
) -> Message {
    let mut response = Response::to(request, status, Some(tag));
    for (name, value) in extra {
        response.headers.push(*name, value.clone());
    }
    response.body = body.to_vec();
    Message::Response(response)
}

/// The dialog with the transferor, from bob's side.
#[derive(Clone)]
struct Dialog {
    /// The transferor's address.
    addr: SocketAddr,
    /// Its Contact URI (where in-dialog requests go).
    contact: String,
    /// Bob's From: the INVITE's To with bob's tag.
    from: String,
    /// Bob's To: the INVITE's From.
    to: String,
    call_id: String,
}

/// Bob's script (see [`Transferee`]). `None` when the socket fails or the script cannot go
/// on (a REFER before the INVITE, a `Refer-To` that is not an address).
async fn bob(mut agent: Agent) -> Option<()> {
    let local = agent.local;
    let contact = format!("<sip:bob@{local}>");
    let sdp = sdp(local);
    let mut carol: Option<SocketAddr> = None;
    let mut with_transferor: Option<Dialog> = None;
    let mut refer_id = 0;
    let mut cseq = 0;
    let carol_call = format!("testkit-{}", uuid::Uuid::new_v4());
    let mut carol_to = String::new();
    let mut carol_uri = String::new();
    loop {
        let (message, from) = agent.recv().await?;
        let from_carol = Some(from) == carol;
        match message {
            Message::Request(request) => match request.method {
                Method::Invite => {
                    let reply = response(
                        &request,
                        200,
                        "bob",
                        &[
                            ("Contact", contact.clone()),
                            ("Content-Type", "application/sdp".into()),
                        ],
                        &sdp,
                    );
                    with_transferor = Some(Dialog {
                        addr: from,
                        contact: request.contact_uri().unwrap_or_default().to_owned(),
                        from: format!("{};tag=bob", request.headers.get("To").unwrap_or_default()),
                        to: request.headers.get("From").unwrap_or_default().to_owned(),
                        call_id: request.call_id().unwrap_or_default().to_owned(),
                    });
                    agent.send(from, reply).await;
                }
                Method::Refer => {
                    let reply =
                        response(&request, 202, "bob", &[("Contact", contact.clone())], b"");
                    agent.send(from, reply).await;
                    refer_id = request.cseq().map(|c| c.seq).unwrap_or(0);
                    carol_uri =
                        addr_uri(request.headers.get("Refer-To").unwrap_or_default()).to_owned();
                    carol = uri_addr(&carol_uri);
                    let dialog = with_transferor.clone()?;
                    cseq += 1;
                    let notify = agent.request(
                        Method::Notify,
                        &dialog.contact,
                        &notify_headers(&dialog, cseq, &contact, refer_id, "active;expires=60"),
                        b"SIP/2.0 100 Trying\r\n",
                    );
                    agent.send(dialog.addr, notify).await;
                    let referred_by = request
                        .headers
                        .get("Referred-By")
                        .unwrap_or_default()
                        .to_owned();
                    let invite = agent.request(
                        Method::Invite,
                        &carol_uri,
                        &[
                            ("From", format!("<sip:bob@{local}>;tag=bob-c")),
                            ("To", format!("<{carol_uri}>")),
                            ("Call-ID", carol_call.clone()),
                            ("CSeq", "1 INVITE".into()),
                            ("Contact", contact.clone()),
                            ("Referred-By", referred_by),
                            ("Content-Type", "application/sdp".into()),
                        ],
                        &sdp,
                    );
                    agent.send(carol?, invite).await;
                }
                Method::Bye if !from_carol => {
                    let reply = response(&request, 200, "bob", &[], b"");
                    agent.send(from, reply).await;
                    let Some(carol) = carol.filter(|_| !carol_to.is_empty()) else {
                        return Some(());
                    };
                    let bye = agent.request(
                        Method::Bye,
                        &carol_uri,
                        &[
                            ("From", format!("<sip:bob@{local}>;tag=bob-c")),
                            ("To", carol_to.clone()),
                            ("Call-ID", carol_call.clone()),
                            ("CSeq", "2 BYE".into()),
                        ],
                        b"",
                    );
                    agent.send(carol, bye).await;
                }
                _ => {}
            },
            Message::Response(reply) if from_carol => {
                let method = reply.cseq().map(|c| c.method);
                if method == Some(Method::Bye) {
                    return Some(());
                }
                if method != Some(Method::Invite) || reply.status < 180 {
                    continue;
                }
                let dialog = with_transferor.clone()?;
                let state = if reply.status >= 200 {
                    "terminated;reason=noresource"
                } else {
                    "active;expires=60"
                };
                if (200..300).contains(&reply.status) {
                    carol_to = reply.headers.get("To").unwrap_or_default().to_owned();
                    let ack = agent.request(
                        Method::Ack,
                        &carol_uri,
                        &[
                            ("From", format!("<sip:bob@{local}>;tag=bob-c")),
                            ("To", carol_to.clone()),
                            ("Call-ID", carol_call.clone()),
                            ("CSeq", "1 ACK".into()),
                        ],
                        b"",
                    );
                    agent.send(from, ack).await;
                }
                cseq += 1;
                let frag = format!("SIP/2.0 {} {}\r\n", reply.status, reply.reason);
                let notify = agent.request(
                    Method::Notify,
                    &dialog.contact,
                    &notify_headers(&dialog, cseq, &contact, refer_id, state),
                    frag.as_bytes(),
                );
                agent.send(dialog.addr, notify).await;
            }
            Message::Response(_) => {}
        }
    }
}

fn notify_headers(
    dialog: &Dialog,
    cseq: u32,
    contact: &str,
    refer_id: u32,
    state: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("From", dialog.from.clone()),
        ("To", dialog.to.clone()),
        ("Call-ID", dialog.call_id.clone()),
        ("CSeq", format!("{cseq} NOTIFY")),
        ("Contact", contact.to_owned()),
        ("Event", format!("refer;id={refer_id}")),
        ("Subscription-State", state.to_owned()),
        ("Content-Type", "message/sipfrag;version=2.0".into()),
    ]
}

/// Carol's script (see [`TransferTarget`]). `None` when the socket fails.
async fn carol(mut agent: Agent) -> Option<()> {
    let local = agent.local;
    let sdp = sdp(local);
    loop {
        let (message, from) = agent.recv().await?;
        let Message::Request(request) = message else {
            continue;
        };
        match request.method {
            Method::Invite => {
                let ringing = Response::to(&request, 180, Some("carol"));
                agent.send(from, Message::Response(ringing)).await;
                tokio::time::sleep(RINGING).await;
                let ok = response(
                    &request,
                    200,
                    "carol",
                    &[
                        ("Contact", format!("<sip:carol@{local}>")),
                        ("Content-Type", "application/sdp".into()),
                    ],
                    &sdp,
                );
                agent.send(from, ok).await;
            }
            Method::Bye => {
                let ok = response(&request, 200, "carol", &[], b"");
                agent.send(from, ok).await;
                return Some(());
            }
            _ => {}
        }
    }
}
