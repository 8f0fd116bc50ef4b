//! The feature server: answers inbound calls and runs the application on each.
//!
//! The application is a file (`app.file`, read and checked at start) or a call hook
//! (`app.call_hook`, POSTed each call's details before it is answered, answering with the verb
//! array). [`ServerHandle::shutdown`] drains: new INVITEs and OPTIONS probes get 503, calls in
//! progress run on for up to `server.drain_timeout_s`, then the rest are hung up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use verbhost_runtime::{Direction, Webhook};
use verbhost_sip::endpoint::{Call, Endpoint, IncomingCall};
use verbhost_sip::hep::Capture;
use verbhost_sip::message::{SipHeaders, addr_uri};

use crate::app::{self, AppError, AppVerb};
use crate::config::Config;
use crate::error::AppCheckError;
use crate::error::ServerError;
use crate::native::NativeVerbs;
use crate::outbound::{check_app, read_app, signalling_sdp};
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

/// The feature server. Start one with [`Server::builder`].
pub struct Server;

impl Server {
    /// A server for `config`; nothing runs until [`ServerBuilder::start`].
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            native: NativeVerbs::default(),
        }
    }
}

/// What [`Server::builder`] returns.
pub struct ServerBuilder {
    config: Config,
    native: NativeVerbs,
}

impl ServerBuilder {
    /// Serves every verb plugin `P` declares with `P` compiled natively (its source built
    /// into the caller, run through `verbhost_sdk::native`) instead of its wasm build: for
    /// the load harness, which compares the two end to end. The verbs' wasm build must still
    /// be loaded (it checks the application's verbs, and its limits check the completions).
    /// A native run is not sandboxed: no CPU, memory or host-call bounds. Never serve a plugin
    /// you do not trust this way; nothing in the config file or the command line can.
    pub fn native_plugin<P: verbhost_sdk::Plugin>(mut self) -> Self {
        self.native.insert::<P>();
        self
    }

    /// Loads the plugins, reads and checks the application, binds SIP (and the admin API when
    /// `admin.listen` is set) and starts taking calls. Port 0 binds a free port:
    /// [`ServerHandle::sip_addr`] and [`ServerHandle::admin_addr`] say which.
    pub async fn start(self) -> Result<ServerHandle, ServerError> {
        self.config.check()?;
        let shared = Shared::new(self.config, self.native).await?;
        let config = &shared.config;
        let source = match (&config.app.file, &config.app.call_hook) {
            (Some(_), Some(_)) => return Err(ServerError::TwoApplications),
            (None, None) => return Err(ServerError::NoApplication),
            (Some(file), None) => {
                let base = config.app.base_url()?;
                Source::File {
                    verbs: read_app(file, base.as_ref(), &shared).await?,
                    base,
                }
            }
            (None, Some(url)) => {
                Source::Hook(Url::parse(url).map_err(|source| ServerError::Url {
                    what: "--call-hook (app.call_hook)",
                    value: url.clone(),
                    source,
                })?)
            }
        };
        let listen = config.sip.listen;
        let mut endpoint_config = config.sip.endpoint(listen, config.sip.transport);
        if let Some(capture) = hep_capture(&config.log).await? {
            shared.metrics.watch_hep(capture.stats().clone());
            endpoint_config.capture = Some(capture);
        }
        let endpoint =
            Endpoint::bind(endpoint_config)
                .await
                .map_err(|source| ServerError::SipBind {
                    addr: listen,
                    source,
                })?;
        shared.metrics.watch_sip(endpoint.stats().clone());
        let (stop, stopping) = watch::channel(false);
        let admin_addr = match config.admin.listen {
            Some(addr) => {
                let listener = crate::admin::bind(addr).await?;
                let local = listener
                    .local_addr()
                    .map_err(|source| ServerError::AdminBind { addr, source })?;
                tracing::info!(admin = %local, "serving /metrics and /health");
                // The admin API outlives the drain, so /health reports it to a load balancer.
                let mut done = stop.subscribe();
                tokio::spawn(crate::admin::serve(listener, shared.clone(), async move {
                    let _ = done.wait_for(|&done| done).await;
                }));
                Some(local)
            }
            None => None,
        };
        let sip_addr = endpoint.local_addr();
        tracing::info!(sip = %sip_addr, transport = ?config.sip.transport, verbs = %shared.plugins.verbs().join(","), "verbhost is serving");
        let native = shared.native.verbs();
        if !native.is_empty() {
            tracing::warn!(verbs = %native.join(","), "these verbs run natively built plugins, without the sandbox (ServerBuilder::native_plugin)");
        }
        let (drain, draining) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), endpoint, source, draining, stop));

        Ok(ServerHandle {
            shared,
            sip_addr,
            admin_addr,
            drain,
            task,
            stopped: stopping,
        })
    }
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    sip_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    drain: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stopped: watch::Receiver<bool>,
}

impl ServerHandle {
    /// Where SIP is served.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Where the admin API is served, when it is.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Every verb with the plugin version serving it, as `GET /plugins` lists them.
    pub fn plugins(&self) -> Vec<verbhost_runtime::VersionInfo> {
        self.shared.plugins.list()
    }

    /// Drains and stops: new calls are refused (503 with Retry-After, and OPTIONS 503 so a
    /// dispatcher takes this node out of rotation), calls in progress run on for up to
    /// `server.drain_timeout_s`, then the rest are hung up and their sessions report. Returns
    /// once the server has stopped.
    pub async fn shutdown(self) {
        let _ = self.drain.send(true);
        let _ = self.task.await;
    }

    /// Resolves when the server has stopped (after [`shutdown`](Self::shutdown), or if its
    /// SIP endpoint closed).
    pub async fn stopped(&mut self) {
        let _ = self.stopped.wait_for(|&stopped| stopped).await;
    }
}

/// Takes calls until asked to drain, then drains.
async fn run(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    source: Source,
    mut draining: watch::Receiver<bool>,
    stopped: watch::Sender<bool>,
) {
    let active: Active = Arc::default();
    let mut calls = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                calls.spawn(handle(shared.clone(), incoming, source.clone(), active.clone()));
            }
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            _ = draining.wait_for(|&drain| drain) => {
                tracing::info!(calls = calls.len(), "draining: new calls are refused");
                break;
            }
        }
    }
    drain(&shared, &endpoint, calls, active).await;
    let _ = stopped.send(true);
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
    let remaining: Vec<(String, Call)> = active
        .lock()
        .map(|map| {
            map.iter()
                .map(|(sid, call)| (sid.clone(), call.clone()))
                .collect()
        })
        .unwrap_or_default();
    tracing::warn!(
        calls = remaining.len(),
        "drain timeout ({limit:?}): hanging up the calls still in progress"
    );
    for (sid, call) in remaining {
        // verbhost's hangup, not the caller's: the session reports the call as ended by
        // verbhost (`Call::ended_by_peer` stays false).
        tracing::info!(call_sid = %sid, "hanging up: server.drain_timeout_s passed");
        let _ = call.hangup().await;
    }
    // Their sessions see the dialog end, report (actionHooks included) and finish.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while calls.join_next().await.is_some() {}
    })
    .await;
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
    let Some(call) = incoming
        .answer(signalling_sdp(shared.config.sip.listen))
        .await
    else {
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
    /// The answer is an application that fails its check (a verb no plugin implements or
    /// its plugin refuses, a hook that cannot be delivered): refused before it runs.
    #[error("the call hook {url} answered with an application that fails its check: {source}")]
    Refused {
        url: Url,
        #[source]
        source: AppCheckError,
    },
}

impl CallHookError {
    /// The final response the INVITE gets: 480 (Temporarily Unavailable) when the
    /// application is empty, 500 (Server Internal Error) otherwise.
    fn sip_status(&self) -> u16 {
        match self {
            CallHookError::Empty { .. } => 480,
            CallHookError::Failed { .. }
            | CallHookError::TooLarge { .. }
            | CallHookError::NotAnApplication { .. }
            | CallHookError::Refused { .. } => 500,
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
    // Checked like an application file, with the call hook's URL as the base of its hooks.
    check_app(&verbs, Some(url), shared)
        .await
        .map_err(|source| CallHookError::Refused {
            url: url.clone(),
            source,
        })?;
    Ok(verbs)
}

/// Starts the HEP v3 export that `log.hep` asks for (`--hep`), if any: set the result as
/// [`verbhost_sip::endpoint::EndpointConfig::capture`] of the endpoint that should export.
/// `serve` and `verbhost call` both use it.
pub async fn hep_capture(log: &crate::config::LogConfig) -> Result<Option<Capture>, ServerError> {
    let Some(target) = log.hep else {
        return Ok(None);
    };
    let capture = Capture::start(target, log.hep_agent_id)
        .await
        .map_err(|source| ServerError::Hep {
            addr: target,
            source,
        })?;
    tracing::info!(hep = %target, agent_id = log.hep_agent_id, "exporting every SIP message as HEP v3");
    Ok(Some(capture))
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
