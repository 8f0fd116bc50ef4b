//! `verbhost call SIP-URI --app FILE`: place one call, run the application on it once
//! answered, print what happens as JSON lines, and exit when the call has ended.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use reqwest::Url;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use verbhost_runtime::Direction;
use verbhost_sip::endpoint::{CallError, Endpoint};

use crate::app::{self, AppVerb};
use crate::config::TransportName;
use crate::session::{CallIds, Journal, Session, Shared, Summary};

/// Exit codes of `verbhost call`.
pub(crate) mod exit {
    /// The application ran to its end.
    pub(crate) const OK: u8 = 0;
    /// The call ran, but a verb failed (no plugin, rejected by its plugin, plugin failure),
    /// or the call was hung up on reaching a `[server]` limit.
    pub(crate) const VERB_FAILED: u8 = 1;
    /// Bad input before any call: the application, the config, a plugin, the flags.
    pub(crate) const BAD_INPUT: u8 = 2;
    /// The call could not be placed or was not answered.
    pub(crate) const NOT_ANSWERED: u8 = 3;
}

/// An SDP offer/answer for a signalling-only leg: one audio stream, PCMU/PCMA, on the
/// endpoint's own address.
pub(crate) fn sdp(local: SocketAddr) -> Vec<u8> {
    let ip = local.ip();
    format!(
        "v=0\r\no=verbhost 1 1 IN IP4 {ip}\r\ns=verbhost\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// Reads and checks an application file: JSON, an array, and a plugin for every verb.
pub(crate) fn read_app(path: &Path, shared: &Shared) -> anyhow::Result<Vec<AppVerb>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the application {}", path.display()))?;
    let verbs = app::parse(&bytes).with_context(|| format!("application {}", path.display()))?;
    check_plugins(&verbs, shared).with_context(|| format!("application {}", path.display()))?;
    Ok(verbs)
}

/// Every verb of `verbs` has a plugin.
pub(crate) fn check_plugins(verbs: &[AppVerb], shared: &Shared) -> anyhow::Result<()> {
    for (index, verb) in verbs.iter().enumerate() {
        if shared.plugins.get(&verb.name).is_none() {
            anyhow::bail!(
                "verb {index} ({}): no plugin implements it (loaded: {}; add one with --plugins)",
                verb.name,
                shared.plugins.verbs().join(", ")
            );
        }
    }
    Ok(())
}

/// Places a call to `target` from `from` and runs `verbs` on it.
pub(crate) async fn place_and_run(
    shared: Arc<Shared>,
    endpoint: &Endpoint,
    target: &str,
    from: &str,
    verbs: Vec<AppVerb>,
    base: Option<Url>,
    journal: Journal,
) -> Result<Summary, CallError> {
    let from_header = format!("<{from}>");
    journal.record(json!({"type": "call.placing", "target": target, "from": from}));
    let call = endpoint
        .call(target, &from_header, sdp(endpoint.local_addr()))
        .await?;
    let ids = Arc::new(CallIds::new(
        &call.id().call_id,
        Direction::Outbound,
        &call.from,
        &call.to,
    ));
    journal.record(json!({
        "type": "call.answered",
        "call_sid": ids.call_sid,
        "call_id": ids.call_id,
        "from": ids.from,
        "to": ids.to,
        "direction": ids.direction_str(),
    }));
    tracing::info!(call_sid = %ids.call_sid, call_id = %ids.call_id, %target, "call answered");
    let summary = Session::new(shared, call, ids, base, journal)
        .run(verbs)
        .await;
    Ok(summary)
}

pub(crate) struct CallArgs {
    pub(crate) target: String,
    pub(crate) app: std::path::PathBuf,
    pub(crate) bind: SocketAddr,
    pub(crate) transport: TransportName,
    pub(crate) from: String,
    pub(crate) base: Option<Url>,
}

pub(crate) async fn run(shared: Arc<Shared>, args: CallArgs) -> anyhow::Result<ExitCode> {
    // Bad input is refused before any call is placed.
    if let Err(why) = crate::config::check_sip_uri(&args.target) {
        eprintln!(
            "verbhost: the target {:?} is not a SIP URI such as sip:bob@pbx.example:5060: {why}",
            args.target
        );
        return Ok(ExitCode::from(exit::BAD_INPUT));
    }
    let verbs = match read_app(&args.app, &shared) {
        Ok(verbs) if verbs.is_empty() => {
            eprintln!(
                "verbhost: the application {} is empty: there is nothing to run, so no call is placed",
                args.app.display()
            );
            return Ok(ExitCode::from(exit::BAD_INPUT));
        }
        Ok(verbs) => verbs,
        Err(err) => {
            eprintln!("verbhost: {err:#}");
            return Ok(ExitCode::from(exit::BAD_INPUT));
        }
    };
    let config = shared.config.sip.endpoint(args.bind, args.transport);
    let endpoint = Endpoint::bind(config)
        .await
        .with_context(|| format!("cannot bind SIP on {}", args.bind))?;
    let (lines, mut printer_rx) = mpsc::unbounded_channel::<Value>();
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = printer_rx.recv().await {
            let mut text = line.to_string();
            text.push('\n');
            if stdout.write_all(text.as_bytes()).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let journal = Journal::to(lines.clone());
    let result = place_and_run(
        shared,
        &endpoint,
        &args.target,
        &args.from,
        verbs,
        args.base,
        journal.clone(),
    )
    .await;
    let code = match &result {
        Ok(summary) if summary.failed_verbs.is_empty() && summary.limit.is_none() => exit::OK,
        Ok(Summary {
            limit: Some(limit), ..
        }) => {
            eprintln!(
                "verbhost: the call was hung up on reaching server.{limit} (see the log and the call.limited line)"
            );
            exit::VERB_FAILED
        }
        Ok(summary) => {
            eprintln!(
                "verbhost: the call ran, but these verbs failed: {} (see the log and the verb.failed lines)",
                summary.failed_verbs.join(", ")
            );
            exit::VERB_FAILED
        }
        Err(err) => {
            journal.record(
                json!({"type": "call.failed", "target": args.target, "error": err.to_string()}),
            );
            eprintln!("verbhost: the call to {} failed: {err}", args.target);
            exit::NOT_ANSWERED
        }
    };
    drop(journal);
    drop(lines);
    let _ = printer.await;
    Ok(ExitCode::from(code))
}
