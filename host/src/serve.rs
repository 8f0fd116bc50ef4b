//! `verbhost serve`: answer inbound calls and run the application on each.
//!
//! The application is a file (`--app`, read and checked at start) or a call hook
//! (`--call-hook`, POSTed each call's details before it is answered, answering with the verb
//! array). On SIGTERM or SIGINT the server drains: new INVITEs get 503, calls in progress run
//! on for up to `server.drain_timeout_s`, then the rest are hung up and it exits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use verbhost_runtime::{Direction, Webhook};
use verbhost_sip::endpoint::{Call, Endpoint, IncomingCall};
use verbhost_sip::message::{SipHeaders, addr_uri};

use crate::app::{self, AppError, AppVerb};
use crate::call_cmd::{check_plugins, read_app, sdp};
use crate::metrics;
use crate::session::{self, CallIds, Journal, Session, Shared, post_hook};
use crate::webhook::{AnswerTooLarge, HookKind};

/// Where each call's application comes from.
#[derive(Clone)]
enum Source {
    /// Checked at start; relative hooks resolve against `base`.
    File {
        verbs: Vec<AppVerb>,
        base: Option<Url>,
    },
    /// POSTed per call; its own URL is the base of what it returns.
    Hook(Url),
}

/// Calls in progress, so a drain that runs out of time can hang them up.
type Active = Arc<Mutex<HashMap<String, Call>>>;

pub(crate) async fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let config = &shared.config;
    let source = match (&config.app.file, &config.app.call_hook) {
        (Some(_), Some(_)) => anyhow::bail!("give either --app or --call-hook, not both"),
        (None, None) => anyhow::bail!("no application: give --app FILE or --call-hook URL"),
        (Some(file), None) => Source::File {
            verbs: read_app(file, &shared)?,
            base: crate::base_url(config.app.base_url.as_deref())?,
        },
        (None, Some(url)) => Source::Hook(
            Url::parse(url).with_context(|| format!("--call-hook {url:?} is not a URL"))?,
        ),
    };
    let endpoint_config = config.sip.endpoint(config.sip.listen, config.sip.transport);
    let endpoint = Endpoint::bind(endpoint_config)
        .await
        .with_context(|| format!("cannot listen for SIP on {}", config.sip.listen))?;
    shared.metrics.watch_sip(endpoint.stats().clone());
    if let Some(addr) = config.admin.listen {
        let listener = metrics::bind_admin(addr).await?;
        tracing::info!(admin = %listener.local_addr()?, "serving /metrics and /health");
        tokio::spawn(metrics::serve_admin(listener, shared.metrics.clone()));
    }
    tracing::info!(sip = %endpoint.local_addr(), transport = ?config.sip.transport, verbs = %shared.plugins.verbs().join(","), "verbhost is serving");

    let active: Active = Arc::default();
    let mut calls = JoinSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                calls.spawn(handle(shared.clone(), incoming, source.clone(), active.clone()));
            }
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            signal = &mut shutdown => {
                tracing::info!(signal, calls = calls.len(), "draining: new calls are refused");
                break;
            }
        }
    }
    drain(&shared, &endpoint, calls, active).await;
    Ok(())
}

/// Refuses new calls, lets the calls in progress finish within the drain timeout, then hangs
/// up the rest and waits (bounded) for their sessions to report.
async fn drain(shared: &Shared, endpoint: &Endpoint, mut calls: JoinSet<()>, active: Active) {
    shared.metrics.set_draining();
    // From now on the endpoint refuses new INVITEs statelessly (503, Retry-After) and
    // answers OPTIONS probes 503, so a dispatcher takes this node out of rotation.
    endpoint.set_draining(true);
    let limit = Duration::from_secs(shared.config.server.drain_timeout_s);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                // Only calls admitted before the drain began are still queued here.
                if let Some(incoming) = incoming {
                    shared.metrics.call_rejected();
                    tracing::info!(from = %incoming.from, "INVITE refused with 503: draining");
                    incoming.reject(503).await;
                }
            }
            next = calls.join_next() => {
                if next.is_none() {
                    tracing::info!("drained: every call has ended");
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let remaining: Vec<Call> = active
        .lock()
        .map(|map| map.values().cloned().collect())
        .unwrap_or_default();
    tracing::warn!(
        calls = remaining.len(),
        "drain timeout ({limit:?}): hanging up the calls still in progress"
    );
    for call in remaining {
        let _ = call.hangup().await;
    }
    // Their sessions see the dialog end, report (actionHooks included) and finish.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while calls.join_next().await.is_some() {}
    })
    .await;
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::error!(error = %err, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// One inbound call, from INVITE to its end.
async fn handle(shared: Arc<Shared>, incoming: IncomingCall, source: Source, active: Active) {
    let invite = &incoming.invite;
    let header = |name: &str| invite.headers.get(name).unwrap_or_default().to_owned();
    let (from, to) = (header("From"), header("To"));
    let ids = Arc::new(CallIds::new(
        invite.call_id().unwrap_or_default(),
        Direction::Inbound,
        &from,
        &to,
    ));
    let sid = ids.call_sid.clone();
    tracing::info!(call_sid = %sid, call_id = %ids.call_id, from = %ids.from, to = %ids.to, source = %incoming.from, "inbound call");
    let (verbs, base) = match &source {
        Source::File { verbs, base } => (verbs.clone(), base.clone()),
        Source::Hook(url) => match fetch_app(&shared, url, &ids, &incoming).await {
            Ok(verbs) => (verbs, Some(url.clone())),
            Err(err) => {
                let status = err.sip_status();
                tracing::error!(call_sid = %sid, status, "call refused: {err}");
                shared.metrics.call_rejected();
                incoming.reject(status).await;
                return;
            }
        },
    };
    let Some(call) = incoming.answer(sdp(shared.config.sip.listen)).await else {
        tracing::warn!(call_sid = %sid, "the call was gone before it could be answered");
        return;
    };
    if let Ok(mut map) = active.lock() {
        map.insert(sid.clone(), call.clone());
    }
    let summary = Session::new(shared, call, ids, base, Journal::default())
        .run(verbs)
        .await;
    if let Ok(mut map) = active.lock() {
        map.remove(&sid);
    }
    tracing::info!(call_sid = %sid, completed = summary.completed_verbs, failed = ?summary.failed_verbs, by_remote = summary.ended_by_remote, "call ended");
}

/// Why the call hook gave no application for a call; the call is refused with
/// [`sip_status`](CallHookError::sip_status).
#[derive(Debug, thiserror::Error)]
enum CallHookError {
    /// Not delivered: every attempt failed (the hook error is logged on its own).
    #[error("the call hook {url} failed (see the hook error above)")]
    Failed { url: Url },
    /// Delivered, but the answer is over `webhooks.max_response_bytes`.
    #[error("the call hook {url} answered with no usable application: {source}")]
    TooLarge {
        url: Url,
        #[source]
        source: AnswerTooLarge,
    },
    /// Delivered, but the answer is not an application.
    #[error("the call hook {url} answered with no usable application: {source}")]
    NotAnApplication {
        url: Url,
        #[source]
        source: AppError,
    },
    /// The answer is an empty verb array: nothing to run.
    #[error("the call hook {url} answered with an empty application")]
    Empty { url: Url },
}

impl CallHookError {
    /// The final response the INVITE gets: 480 (Temporarily Unavailable) when the
    /// application is empty, 500 (Server Internal Error) otherwise.
    fn sip_status(&self) -> u16 {
        match self {
            CallHookError::Empty { .. } => 480,
            CallHookError::Failed { .. }
            | CallHookError::TooLarge { .. }
            | CallHookError::NotAnApplication { .. } => 500,
        }
    }
}

/// POSTs the call's details to the call hook and reads the application it answers with.
async fn fetch_app(
    shared: &Shared,
    url: &Url,
    ids: &CallIds,
    incoming: &IncomingCall,
) -> Result<Vec<AppVerb>, CallHookError> {
    let invite = &incoming.invite;
    let headers: Map<String, Value> = invite
        .headers
        .iter()
        .map(|h| (h.name.clone(), Value::String(h.value.clone())))
        .collect();
    let payload = json!({
        "call_sid": ids.call_sid,
        "call_id": ids.call_id,
        "direction": ids.direction_str(),
        "from": ids.from,
        "to": ids.to,
        "caller_name": ids.caller_name,
        "call_status": "trying",
        "sip_status": 100,
        "originating_sip_ip": incoming.from.ip().to_string(),
        "originating_sip_port": incoming.from.port(),
        "sip": {
            "method": "INVITE",
            "uri": invite.uri,
            "request_uri_user": session::user_part(addr_uri(&invite.uri)),
            "headers": headers,
        },
    });
    let hook = Webhook {
        url: url.to_string(),
        method: "POST".into(),
        username: None,
        password: None,
    };
    let delivered = post_hook(
        shared,
        HookKind::Call,
        &hook,
        None,
        &payload,
        &Journal::default(),
        &ids.call_sid,
    )
    .await
    .ok_or_else(|| CallHookError::Failed { url: url.clone() })?;
    let body = delivered.body.map_err(|source| CallHookError::TooLarge {
        url: url.clone(),
        source,
    })?;
    let verbs = app::parse(&body).map_err(|source| CallHookError::NotAnApplication {
        url: url.clone(),
        source,
    })?;
    if verbs.is_empty() {
        return Err(CallHookError::Empty { url: url.clone() });
    }
    // Unknown verbs are reported per verb when the call reaches them; log them up front too.
    if let Err(err) = check_plugins(&verbs, shared) {
        tracing::warn!(call_sid = %ids.call_sid, "the call hook's application: {err:#}");
    }
    Ok(verbs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_hook_errors_name_the_cause_and_map_to_a_sip_status() {
        let url = Url::parse("http://app.example/call").unwrap();
        let too_large = CallHookError::TooLarge {
            url: url.clone(),
            source: AnswerTooLarge::Streamed { limit: 1024 },
        };
        assert_eq!(too_large.sip_status(), 500);
        assert_eq!(
            too_large.to_string(),
            "the call hook http://app.example/call answered with no usable application: the \
             answer passed webhooks.max_response_bytes (1024 bytes); read no further"
        );
        let not_app = CallHookError::NotAnApplication {
            url: url.clone(),
            source: app::parse(b"{}").unwrap_err(),
        };
        assert_eq!(not_app.sip_status(), 500);
        assert!(std::error::Error::source(&not_app).is_some());
        assert_eq!(CallHookError::Empty { url: url.clone() }.sip_status(), 480);
        assert_eq!(CallHookError::Failed { url }.sip_status(), 500);
    }
}
