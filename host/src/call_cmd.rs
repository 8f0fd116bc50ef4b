//! `verbhost call SIP-URI --app FILE`: place one call, run the application on it once
//! answered, print what happens as JSON lines, and exit when the call has ended.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Url;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use verbhost_server::config::TransportName;
use verbhost_server::{Dialer, Journal, Summary};
use verbhost_sip::endpoint::Endpoint;

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

pub(crate) struct CallArgs {
    pub(crate) target: String,
    pub(crate) app: std::path::PathBuf,
    pub(crate) bind: SocketAddr,
    pub(crate) transport: TransportName,
    pub(crate) from: String,
    pub(crate) base: Option<Url>,
}

pub(crate) async fn run(dialer: Dialer, args: CallArgs) -> anyhow::Result<ExitCode> {
    // Bad input is refused before any call is placed.
    if let Err(why) = verbhost_server::config::check_sip_uri(&args.target) {
        eprintln!(
            "verbhost: the target {:?} is not a SIP URI such as sip:bob@pbx.example:5060: {why}",
            args.target
        );
        return Ok(ExitCode::from(exit::BAD_INPUT));
    }
    let verbs = match dialer.read_app(&args.app, args.base.as_ref()).await {
        Ok(verbs) if verbs.is_empty() => {
            eprintln!(
                "verbhost: the application {} is empty: there is nothing to run, so no call is placed",
                args.app.display()
            );
            return Ok(ExitCode::from(exit::BAD_INPUT));
        }
        Ok(verbs) => verbs,
        Err(err) => {
            eprintln!("verbhost: {:#}", anyhow::Error::new(err));
            return Ok(ExitCode::from(exit::BAD_INPUT));
        }
    };
    let mut config = dialer.config().sip.endpoint(args.bind, args.transport);
    config.capture = verbhost_server::hep_capture(&dialer.config().log).await?;
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
    let result = dialer
        .place(
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
