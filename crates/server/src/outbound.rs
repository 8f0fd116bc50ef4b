//! Placing a call and running an application on it: what `verbhost call` and the demo do.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use reqwest::Url;
use serde_json::json;
use verbhost_runtime::Direction;
use verbhost_sip::endpoint::{CallError, Endpoint};

use crate::app::{self, AppVerb};
use crate::config::Config;
use crate::error::{AppCheckError, ServerError, UnknownVerb};
use crate::native::NativeVerbs;
use crate::session::{CallIds, Journal, Session, Shared, Summary};
use crate::webhook::Webhooks;

/// An SDP offer/answer for a signalling-only leg: one audio stream, PCMU/PCMA, on the
/// endpoint's own address.
pub fn signalling_sdp(local: SocketAddr) -> Vec<u8> {
    let ip = local.ip();
    format!(
        "v=0\r\no=verbhost 1 1 IN IP4 {ip}\r\ns=verbhost\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// Places calls and runs applications on them, with the plugins, webhooks and limits of a
/// config: the outbound half of the server.
pub struct Dialer {
    shared: Arc<Shared>,
}

impl Dialer {
    /// Loads the plugins and builds the webhook client.
    pub async fn new(config: Config) -> Result<Dialer, ServerError> {
        Ok(Dialer {
            shared: Shared::new(config, NativeVerbs::default()).await?,
        })
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Reads and checks an application file ([`Dialer::check_app`] after JSON and the array),
    /// with `base` the URL its relative hooks resolve against.
    pub async fn read_app(
        &self,
        path: &Path,
        base: Option<&Url>,
    ) -> Result<Vec<AppVerb>, ServerError> {
        read_app(path, base, &self.shared).await
    }

    /// Checks an application before any of it runs: every verb by the plugin that implements
    /// it (without running it) and every hook URL against `base`.
    pub async fn check_app(
        &self,
        verbs: &[AppVerb],
        base: Option<&Url>,
    ) -> Result<(), AppCheckError> {
        check_app(verbs, base, &self.shared).await
    }

    /// Places a call to `target` from `from` and runs `verbs` on it until the call ends.
    pub async fn place(
        &self,
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
            .call(target, &from_header, signalling_sdp(endpoint.local_addr()))
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
        Ok(Session::new(self.shared.clone(), call, ids, base, journal)
            .run(verbs)
            .await)
    }
}

/// Reads and checks an application file: JSON, an array, and every verb checked
/// ([`check_app`]).
pub(crate) async fn read_app(
    path: &Path,
    base: Option<&Url>,
    shared: &Shared,
) -> Result<Vec<AppVerb>, ServerError> {
    let bytes = std::fs::read(path).map_err(|source| ServerError::AppRead {
        path: path.to_owned(),
        source,
    })?;
    let verbs = app::parse(&bytes).map_err(|source| ServerError::AppInvalid {
        path: path.to_owned(),
        source,
    })?;
    check_app(&verbs, base, shared)
        .await
        .map_err(|source| ServerError::AppVerb {
            path: path.to_owned(),
            source,
        })?;
    Ok(verbs)
}

/// Checks an application before any of it runs: no longer than one call may run
/// (`server.max_verbs_per_call`), then verb by verb in order, stopping at the first fault: a
/// plugin implements the verb; that plugin's `check` accepts it (a plugin built for
/// contract 0.1.0 has none, and only the rest applies); every hook property resolves against
/// `base`. The check runs under the plugin's run bounds and acts on no call.
pub(crate) async fn check_app(
    verbs: &[AppVerb],
    base: Option<&Url>,
    shared: &Shared,
) -> Result<(), AppCheckError> {
    let limit = shared.config.server.max_verbs_per_call;
    if verbs.len() > limit as usize {
        return Err(AppCheckError::TooLong {
            verbs: verbs.len(),
            limit,
        });
    }
    for (index, verb) in verbs.iter().enumerate() {
        let Some(version) = shared.plugins.get(&verb.name) else {
            return Err(UnknownVerb {
                index,
                verb: verb.name.clone(),
                loaded: shared.plugins.verbs().join(", "),
            }
            .into());
        };
        match version.plugin().check(&verb.json).await {
            Ok(()) => {}
            Err(verbhost_runtime::RunError::Verb(err)) => {
                let message = match &err {
                    verbhost_runtime::VerbError::InvalidVerb(why)
                    | verbhost_runtime::VerbError::Failed(why) => why,
                };
                // The plugin names the verb itself (`sip:refer: ...`); the index says it here.
                let cause = message
                    .strip_prefix(verb.name.as_str())
                    .and_then(|rest| rest.strip_prefix(": "))
                    .unwrap_or(message);
                return Err(AppCheckError::Refused {
                    index,
                    verb: verb.name.clone(),
                    cause: cause.to_owned(),
                });
            }
            Err(err @ verbhost_runtime::RunError::VerbTooLarge { .. }) => {
                return Err(AppCheckError::Refused {
                    index,
                    verb: verb.name.clone(),
                    cause: err.to_string(),
                });
            }
            Err(err) => {
                let plugin = format!("{} {}", version.name(), version.version());
                // The error names one line of cause; the backtrace and output go to the log.
                tracing::warn!(verb = %verb.name, index, %plugin, "the plugin's check of the verb failed: {err}");
                return Err(AppCheckError::PluginFailed {
                    index,
                    verb: verb.name.clone(),
                    plugin,
                    cause: crate::session::run_detail(&err),
                });
            }
        }
        for (property, hook) in &verb.hooks {
            let cause = match hook {
                Ok(hook) => match Webhooks::resolve(hook, base) {
                    Ok(_) => continue,
                    Err(err) => err.to_string(),
                },
                Err(err) => err.to_string(),
            };
            return Err(AppCheckError::Hook {
                index,
                verb: verb.name.clone(),
                property: property.clone(),
                cause,
            });
        }
    }
    Ok(())
}
