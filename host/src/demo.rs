//! `verbhost demo`: a whole transfer on loopback, with nothing to set up.
//!
//! verbhost calls a built-in transferee (bob) and runs a one-verb application on the call:
//! `sip:refer` to a built-in transfer target (carol), with its hooks pointing at a built-in
//! webhook receiver. Bob, carol and the receiver come from `verbhost-testkit` (the same ones
//! the tests use); bob does what a phone does with a REFER (202, NOTIFY 100, INVITE carol,
//! NOTIFY with carol's answers). Everything is real UDP SIP and real HTTP; the demo prints
//! the SIP ladder bob saw, then the webhooks the application received.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Url;
use serde_json::Value;
use tokio::sync::mpsc;
use verbhost_common::sipfrag::parse_status_line;
use verbhost_sip::endpoint::{Endpoint, EndpointConfig};
use verbhost_sip::message::{Message, Method, SipHeaders};
use verbhost_testkit::{Direction, Receiver, Seen, TransferTarget, Transferee};

use verbhost_server::config::{Config, LogFormat};
use verbhost_server::{Dialer, Journal};

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

pub(crate) async fn run(sip_trace: bool) -> anyhow::Result<ExitCode> {
    let mut config = Config::default();
    config.log.level = "warn".into();
    config.log.sip_trace = sip_trace;
    config.log.format = LogFormat::Text;
    config.webhooks.timeout_ms = 2_000;
    crate::init_logging(&config);
    let started = Instant::now();

    let receiver = Receiver::try_start().await?;
    let base = Url::parse(&receiver.base())?;
    let mut bob = Transferee::start().await?;
    let carol = TransferTarget::start().await?;

    let dialer = Dialer::new(config).await?;
    let endpoint = Endpoint::bind(EndpointConfig::udp("127.0.0.1:0".parse()?))
        .await
        .context("cannot bind verbhost's SIP endpoint")?;
    let application = format!(
        r#"[{{"verb": "sip:refer", "id": "demo-transfer", "referTo": "{}", "actionHook": "/action", "eventHook": "/event"}}]"#,
        carol.uri()
    );
    let verbs = verbhost_server::app::parse(application.as_bytes())?;
    let (lines, mut journal_rx) = mpsc::unbounded_channel();
    let summary = dialer
        .place(
            &endpoint,
            &bob.uri(),
            "sip:verbhost@127.0.0.1",
            verbs,
            Some(base.clone()),
            Journal::to(lines),
        )
        .await
        .context("verbhost could not call the built-in transferee")?;
    // Bob hangs up carol after verbhost's BYE; give the peers a moment to finish.
    bob.finished(Duration::from_secs(5)).await;
    let ladder = hops(&bob.seen(), bob.addr(), carol.addr(), started);
    drop(carol);

    let mut event = None;
    while let Ok(line) = journal_rx.try_recv() {
        if line["type"] == "verb.completed" {
            event = line["event"].as_str().map(str::to_owned);
        }
    }

    println!("verbhost demo: a transfer on loopback, run by the built-in sip:refer plugin\n");
    println!("application ({base} is the demo's webhook receiver):\n  {application}\n");
    print!("{}", render(&ladder));
    // Each request as `METHOD /path`, with its body (as JSON, or else as text).
    let received: Vec<(String, Value)> = receiver
        .hits()
        .into_iter()
        .map(|hit| {
            let body = serde_json::from_slice(&hit.raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&hit.raw).into_owned()));
            (format!("{} {}", hit.method, hit.path), body)
        })
        .collect();
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

/// The ladder from what bob saw: each message between bob and verbhost or carol, with its
/// time since the demo started.
fn hops(seen: &[Seen], bob: SocketAddr, carol: SocketAddr, started: Instant) -> Vec<Hop> {
    let party = |addr| match addr {
        a if a == carol => Party::Carol,
        a if a == bob => Party::Bob,
        _ => Party::Verbhost,
    };
    seen.iter()
        .map(|seen| {
            let (from, to) = match seen.direction {
                Direction::Sent => (Party::Bob, party(seen.peer)),
                Direction::Received => (party(seen.peer), Party::Bob),
            };
            Hop {
                at: seen.at.saturating_duration_since(started),
                from,
                to,
                label: label(&seen.message),
            }
        })
        .collect()
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
