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
use crate::error::{ServerError, UnknownVerb};
use crate::session::{CallIds, Journal, Session, Shared, Summary};

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
            shared: Shared::new(config).await?,
        })
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Reads and checks an application file: JSON, an array, and a plugin for every verb.
    pub fn read_app(&self, path: &Path) -> Result<Vec<AppVerb>, ServerError> {
        read_app(path, &self.shared)
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

/// Reads and checks an application file: JSON, an array, and a plugin for every verb.
pub(crate) fn read_app(path: &Path, shared: &Shared) -> Result<Vec<AppVerb>, ServerError> {
    let bytes = std::fs::read(path).map_err(|source| ServerError::AppRead {
        path: path.to_owned(),
        source,
    })?;
    let verbs = app::parse(&bytes).map_err(|source| ServerError::AppInvalid {
        path: path.to_owned(),
        source,
    })?;
    check_verbs(&verbs, shared).map_err(|source| ServerError::AppVerb {
        path: path.to_owned(),
        source,
    })?;
    Ok(verbs)
}

/// Every verb of `verbs` has a plugin.
pub(crate) fn check_verbs(verbs: &[AppVerb], shared: &Shared) -> Result<(), UnknownVerb> {
    for (index, verb) in verbs.iter().enumerate() {
        if shared.plugins.get(&verb.name).is_none() {
            return Err(UnknownVerb {
                index,
                verb: verb.name.clone(),
                loaded: shared.plugins.verbs().join(", "),
            });
        }
    }
    Ok(())
}
