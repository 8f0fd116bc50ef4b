//! `verbhost demo`: a whole transfer on loopback, with nothing to set up.
//!
//! verbhost calls a built-in transferee (bob) and runs a one-verb application on the call:
//! `sip:refer` to a built-in transfer target (carol), with its hooks pointing at a built-in
//! webhook receiver. Bob and carol are small scripted user agents on their own UDP sockets;
//! bob does what a phone does with a REFER (202, NOTIFY 100, INVITE carol, NOTIFY with
//! carol's answers). Everything is real UDP SIP and real HTTP; the demo prints the SIP
//! ladder bob saw, then the webhooks the application received.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method as HttpMethod, Uri};
use reqwest::Url;
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use verbhost_common::sipfrag::parse_status_line;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig};
use verbhost_sip::message::{Headers, Message, Method, Request, Response, SipHeaders, addr_uri};
use verbhost_sip::wire;

use verbhost_server::config::{Config, LogFormat};
use verbhost_server::{Dialer, Journal, signalling_sdp};

/// The three parties of the ladder, in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Verbhost = 0,
    Bob = 1,
    Carol = 2,
}

/// One message on the ladder.
#[derive(Debug, Clone)]
struct Hop {
    at: Duration,
    from: Party,
    to: Party,
    label: String,
}

type Ladder = Arc<Mutex<Vec<Hop>>>;

/// A webhook the demo application received.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

pub(crate) async fn run(sip_trace: bool) -> anyhow::Result<ExitCode> {
    let mut config = Config::default();
    config.log.level = "warn".into();
    config.log.sip_trace = sip_trace;
    config.log.format = LogFormat::Text;
    config.webhooks.timeout_ms = 2_000;
    crate::init_logging(&config);
    let started = Instant::now();

    let received: Received = Arc::default();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the demo's webhook receiver")?;
    let base = Url::parse(&format!("http://{}/", http.local_addr()?))?;
    let app = Router::new().fallback(receive).with_state(received.clone());
    tokio::spawn(async move { axum::serve(http, app).await });

    let ladder: Ladder = Arc::default();
    let bob = UdpSocket::bind("127.0.0.1:0").await?;
    let carol = UdpSocket::bind("127.0.0.1:0").await?;
    let (bob_addr, carol_addr) = (bob.local_addr()?, carol.local_addr()?);
    let bob_task = tokio::spawn(transferee(bob, ladder.clone(), started));
    let carol_task = tokio::spawn(target(carol));

    let dialer = Dialer::new(config).await?;
    let endpoint = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse()?))
        .await
        .context("cannot bind verbhost's SIP endpoint")?;
    let application = format!(
        r#"[{{"verb": "sip:refer", "id": "demo-transfer", "referTo": "sip:carol@{carol_addr}", "actionHook": "/action", "eventHook": "/event"}}]"#
    );
    let verbs = verbhost_server::app::parse(application.as_bytes())?;
    let (lines, mut journal_rx) = mpsc::unbounded_channel();
    let summary = dialer
        .place(
            &endpoint,
            &format!("sip:bob@{bob_addr}"),
            "sip:verbhost@127.0.0.1",
            verbs,
            Some(base.clone()),
            Journal::to(lines),
        )
        .await
        .context("verbhost could not call the built-in transferee")?;
    // Bob hangs up carol after verbhost's BYE; give the peers a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), bob_task).await;
    carol_task.abort();

    let mut event = None;
    while let Ok(line) = journal_rx.try_recv() {
        if line["type"] == "verb.completed" {
            event = line["event"].as_str().map(str::to_owned);
        }
    }

    println!("verbhost demo: a transfer on loopback, run by the built-in sip:refer plugin\n");
    println!("application ({base} is the demo's webhook receiver):\n  {application}\n");
    print!(
        "{}",
        render(&ladder.lock().map(|l| l.clone()).unwrap_or_default())
    );
    let received = received.lock().map(|r| r.clone()).unwrap_or_default();
    println!("\nwebhooks received by the application, in order:");
    for (request, body) in &received {
        println!("\n  {request}");
        let pretty = serde_json::to_string_pretty(body).unwrap_or_default();
        for line in pretty.lines() {
            println!("  {line}");
        }
    }
    let ok = event.as_deref() == Some("TRANSFER_REFER_SUCCESS")
        && summary.failed_verbs.is_empty()
        && received.iter().any(|(r, _)| r.ends_with("/action"));
    match (&event, ok) {
        (Some(event), true) => println!(
            "\nresult: {event}: bob was transferred to carol, and verbhost hung up its leg."
        ),
        _ => println!(
            "\nresult: the transfer did not complete as expected ({}); rerun with RUST_LOG=debug",
            event.as_deref().unwrap_or("no completion")
        ),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The demo application's webhook endpoint: records every request, answers 200 with no verbs.
async fn receive(
    State(received): State<Received>,
    method: HttpMethod,
    uri: Uri,
    body: Bytes,
) -> &'static str {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if let Ok(mut received) = received.lock() {
        received.push((format!("{method} {uri}"), body));
    }
    ""
}

/// Draws the ladder: one column per party, one row per message, with its time.
fn render(hops: &[Hop]) -> String {
    const WIDTH: usize = 34;
    let columns = [2, 2 + WIDTH, 2 + 2 * WIDTH];
    let line_width = columns[2] + 1;
    let centred = |texts: [&str; 3]| {
        let mut line = vec![' '; line_width + 12];
        for (text, column) in texts.iter().zip(columns) {
            let start = column.saturating_sub(text.len() / 2);
            for (i, c) in text.chars().enumerate() {
                line[start + i] = c;
            }
        }
        line.into_iter().collect::<String>().trim_end().to_owned()
    };
    let lifelines = || {
        let mut line = vec![' '; line_width];
        for column in columns {
            line[column] = '|';
        }
        line
    };
    let mut out = String::new();
    out.push_str(&format!(
        "{:10}{}\n",
        "",
        centred(["verbhost", "bob", "carol"])
    ));
    out.push_str(&format!(
        "{:10}{}\n",
        "",
        centred(["(transferor)", "(transferee)", "(transfer target)"])
    ));
    out.push_str(&format!(
        "{:10}{}\n",
        "",
        lifelines().into_iter().collect::<String>()
    ));
    for hop in hops {
        let mut line = lifelines();
        let (a, b) = (columns[hop.from as usize], columns[hop.to as usize]);
        let (left, right) = (a.min(b), a.max(b));
        for cell in &mut line[left + 1..right] {
            *cell = '-';
        }
        if b > a {
            line[right - 1] = '>';
        } else {
            line[left + 1] = '<';
        }
        let room = right - left - 5;
        let label: String = format!(" {} ", hop.label).chars().take(room).collect();
        let start = left + 1 + (right - left - 1 - label.chars().count()) / 2;
        for (i, c) in label.chars().enumerate() {
            line[start + i] = c;
        }
        let time = format!("{:>6.1} ms", hop.at.as_secs_f64() * 1e3);
        out.push_str(&format!(
            "{time:10}{}\n",
            line.into_iter().collect::<String>()
        ));
    }
    out.push_str(&format!(
        "{:10}{}\n",
        "",
        lifelines().into_iter().collect::<String>()
    ));
    out
}

/// What a message says on the ladder.
fn label(message: &Message) -> String {
    match message {
        Message::Request(request) => {
            let frag = (request.method == Method::Notify)
                .then(|| parse_status_line(&request.body))
                .flatten()
                .map(|s| format!(" ({} {})", s.code, s.reason))
                .unwrap_or_default();
            format!("{}{frag}", request.method)
        }
        Message::Response(response) => {
            let to = response
                .cseq()
                .map(|c| c.method.to_string())
                .unwrap_or_default();
            format!("{} {} ({to})", response.status, response.reason)
        }
    }
}

/// A user agent socket that records what it sends and receives.
struct Agent {
    socket: UdpSocket,
    ladder: Ladder,
    started: Instant,
    me: Party,
    branch: u32,
}

impl Agent {
    async fn send(&mut self, to: SocketAddr, party: Party, message: Message) {
        let bytes = match &message {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        };
        self.note(self.me, party, &message);
        let _ = self.socket.send_to(&bytes, to).await;
    }

    async fn recv(
        &mut self,
        party_of: impl Fn(SocketAddr) -> Party,
    ) -> Option<(Message, SocketAddr)> {
        let mut buffer = vec![0; wire::MAX_MESSAGE_BYTES];
        loop {
            let (n, from) = self.socket.recv_from(&mut buffer).await.ok()?;
            if let Ok(message) = wire::parse(&buffer[..n]) {
                self.note(party_of(from), self.me, &message);
                return Some((message, from));
            }
        }
    }

    fn note(&self, from: Party, to: Party, message: &Message) {
        if let Ok(mut ladder) = self.ladder.lock() {
            ladder.push(Hop {
                at: self.started.elapsed(),
                from,
                to,
                label: label(message),
            });
        }
    }

    /// A new request from this agent.
    fn request(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Message {
        self.branch += 1;
        let local = self
            .socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut all = Headers::new();
        all.push(
            "Via",
            format!("SIP/2.0/UDP {local};branch=z9hG4bK-demo-{}", self.branch),
        );
        all.push("Max-Forwards", "70");
        for (name, value) in headers {
            all.push(*name, value.clone());
        }
        Message::Request(Request {
            method: Method::parse(method),
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

/// Bob: answers verbhost's call, accepts its REFER, calls carol and reports her answers to
/// verbhost in NOTIFYs, answers verbhost's BYE and hangs up carol. Ends when done or after
/// 15 s.
async fn transferee(socket: UdpSocket, ladder: Ladder, started: Instant) {
    let _ = tokio::time::timeout(Duration::from_secs(15), bob(socket, ladder, started)).await;
}

async fn bob(socket: UdpSocket, ladder: Ladder, started: Instant) -> Option<()> {
    let local = socket.local_addr().ok()?;
    let contact = format!("<sip:bob@{local}>");
    let mut agent = Agent {
        socket,
        ladder,
        started,
        me: Party::Bob,
        branch: 0,
    };
    let sdp = signalling_sdp(local);
    let mut carol: Option<SocketAddr> = None;
    // The dialog with verbhost, from bob's side: (verbhost's address, its Contact URI,
    // bob's From (the INVITE's To + tag), bob's To (the INVITE's From), Call-ID).
    let mut with_verbhost: Option<(SocketAddr, String, String, String, String)> = None;
    let mut refer_id = 0;
    let mut cseq = 0;
    let carol_call = format!("demo-{}", uuid::Uuid::new_v4());
    let mut carol_to = String::new();
    let mut carol_uri = String::new();
    loop {
        let carol_now = carol;
        let (message, from) = agent
            .recv(|from| {
                if Some(from) == carol_now {
                    Party::Carol
                } else {
                    Party::Verbhost
                }
            })
            .await?;
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
                    with_verbhost = Some((
                        from,
                        request.contact_uri().unwrap_or_default().to_owned(),
                        format!("{};tag=bob", request.headers.get("To").unwrap_or_default()),
                        request.headers.get("From").unwrap_or_default().to_owned(),
                        request.call_id().unwrap_or_default().to_owned(),
                    ));
                    agent.send(from, Party::Verbhost, reply).await;
                }
                Method::Refer => {
                    let reply =
                        response(&request, 202, "bob", &[("Contact", contact.clone())], b"");
                    agent.send(from, Party::Verbhost, reply).await;
                    refer_id = request.cseq().map(|c| c.seq).unwrap_or(0);
                    carol_uri =
                        addr_uri(request.headers.get("Refer-To").unwrap_or_default()).to_owned();
                    carol = uri_addr(&carol_uri);
                    let (addr, uri, my_from, my_to, call_id) = with_verbhost.clone()?;
                    cseq += 1;
                    let notify = agent.request(
                        "NOTIFY",
                        &uri,
                        &notify_headers(
                            &my_from,
                            &my_to,
                            &call_id,
                            cseq,
                            &contact,
                            refer_id,
                            "active;expires=60",
                        ),
                        b"SIP/2.0 100 Trying\r\n",
                    );
                    agent.send(addr, Party::Verbhost, notify).await;
                    let referred_by = request
                        .headers
                        .get("Referred-By")
                        .unwrap_or_default()
                        .to_owned();
                    let invite = agent.request(
                        "INVITE",
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
                    agent.send(carol?, Party::Carol, invite).await;
                }
                Method::Bye if !from_carol => {
                    let reply = response(&request, 200, "bob", &[], b"");
                    agent.send(from, Party::Verbhost, reply).await;
                    let Some(carol) = carol.filter(|_| !carol_to.is_empty()) else {
                        return Some(());
                    };
                    let bye = agent.request(
                        "BYE",
                        &carol_uri,
                        &[
                            ("From", format!("<sip:bob@{local}>;tag=bob-c")),
                            ("To", carol_to.clone()),
                            ("Call-ID", carol_call.clone()),
                            ("CSeq", "2 BYE".into()),
                        ],
                        b"",
                    );
                    agent.send(carol, Party::Carol, bye).await;
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
                let (addr, uri, my_from, my_to, call_id) = with_verbhost.clone()?;
                let state = if reply.status >= 200 {
                    "terminated;reason=noresource"
                } else {
                    "active;expires=60"
                };
                if (200..300).contains(&reply.status) {
                    carol_to = reply.headers.get("To").unwrap_or_default().to_owned();
                    let ack = agent.request(
                        "ACK",
                        &carol_uri,
                        &[
                            ("From", format!("<sip:bob@{local}>;tag=bob-c")),
                            ("To", carol_to.clone()),
                            ("Call-ID", carol_call.clone()),
                            ("CSeq", "1 ACK".into()),
                        ],
                        b"",
                    );
                    agent.send(from, Party::Carol, ack).await;
                }
                cseq += 1;
                let frag = format!("SIP/2.0 {} {}\r\n", reply.status, reply.reason);
                let notify = agent.request(
                    "NOTIFY",
                    &uri,
                    &notify_headers(&my_from, &my_to, &call_id, cseq, &contact, refer_id, state),
                    frag.as_bytes(),
                );
                agent.send(addr, Party::Verbhost, notify).await;
            }
            Message::Response(_) => {}
        }
    }
}

fn notify_headers(
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    contact: &str,
    refer_id: u32,
    state: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("From", from.to_owned()),
        ("To", to.to_owned()),
        ("Call-ID", call_id.to_owned()),
        ("CSeq", format!("{cseq} NOTIFY")),
        ("Contact", contact.to_owned()),
        ("Event", format!("refer;id={refer_id}")),
        ("Subscription-State", state.to_owned()),
        ("Content-Type", "message/sipfrag;version=2.0".into()),
    ]
}

/// Carol: rings for a moment, answers, and answers the BYE.
async fn target(socket: UdpSocket) -> Option<()> {
    let local = socket.local_addr().ok()?;
    let sdp = signalling_sdp(local);
    let mut buffer = vec![0; wire::MAX_MESSAGE_BYTES];
    loop {
        let (n, from) = socket.recv_from(&mut buffer).await.ok()?;
        let Ok(Message::Request(request)) = wire::parse(&buffer[..n]) else {
            continue;
        };
        match request.method {
            Method::Invite => {
                let ringing = Response::to(&request, 180, Some("carol"));
                let _ = socket.send_to(&ringing.to_bytes(), from).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut ok = Response::to(&request, 200, Some("carol"));
                ok.headers.push("Contact", format!("<sip:carol@{local}>"));
                ok.headers.push("Content-Type", "application/sdp");
                ok.body = sdp.clone();
                let _ = socket.send_to(&ok.to_bytes(), from).await;
            }
            Method::Bye => {
                let ok = Response::to(&request, 200, Some("carol"));
                let _ = socket.send_to(&ok.to_bytes(), from).await;
                return Some(());
            }
            _ => {}
        }
    }
}
