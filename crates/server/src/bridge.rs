//! The plugin's view of a live call: [`CallHost`] over the SIP stack's [`Call`].
//!
//! Each verb run gets its own `SipCallHost`. REFERs go out in the call's dialog; NOTIFYs come
//! from the dialog's subscriptions (already answered on the wire); eventHooks go to the call's
//! event queue, which delivers them in order without ever blocking the plugin (and drops
//! them, counted, past `webhooks.max_queued_events`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use verbhost_runtime::{
    CallHost, Header, Level, NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse,
    Webhook, notify_from_parts,
};
use verbhost_sip::dialog::SubscriptionEvent;
use verbhost_sip::endpoint::{Call, ReferFailure, ReferWait};

use crate::metrics::{Metrics, status_class};
use crate::session::{CallIds, EventQueue, Journal};

pub(crate) struct SipCallHost {
    pub(crate) call: Call,
    pub(crate) ids: Arc<CallIds>,
    pub(crate) verb: String,
    pub(crate) journal: Journal,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: EventQueue,
    pub(crate) started: Instant,
}

impl CallHost for SipCallHost {
    async fn send_refer(&mut self, request: ReferRequest) -> Result<ReferResponse, ReferError> {
        let mut headers = vec![("Refer-To".to_owned(), request.refer_to.clone())];
        if let Some(by) = &request.referred_by {
            headers.push(("Referred-By".to_owned(), by.clone()));
        }
        headers.extend(
            request
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone())),
        );
        self.journal.record(json!({
            "type": "refer.sent",
            "call_sid": self.ids.call_sid,
            "refer_to": request.refer_to,
            "referred_by": request.referred_by,
            "headers": request.headers.iter().map(|h| (h.name.clone(), Value::String(h.value.clone()))).collect::<Map<_, _>>(),
        }));
        match self.call.refer(headers).await {
            Ok(answer) => {
                self.metrics.refer_response(status_class(answer.status));
                self.journal.record(json!({
                    "type": "refer.response",
                    "call_sid": self.ids.call_sid,
                    "refer_id": answer.refer_id,
                    "status": answer.status,
                    "reason": answer.reason,
                }));
                Ok(ReferResponse {
                    refer_id: answer.refer_id,
                    status: answer.status,
                    reason: answer.reason,
                    headers: answer
                        .headers
                        .iter()
                        .map(|h| Header {
                            name: h.name.clone(),
                            value: h.value.clone(),
                        })
                        .collect(),
                })
            }
            Err(failure) => {
                let (class, error) = match &failure {
                    ReferFailure::Timeout => ("timeout", ReferError::Timeout),
                    ReferFailure::DialogGone => ("dialog_gone", ReferError::DialogGone),
                    ReferFailure::Transport(why) => {
                        ("transport", ReferError::Transport(why.clone()))
                    }
                };
                self.metrics.refer_response(class);
                self.journal.record(json!({
                    "type": "refer.failed",
                    "call_sid": self.ids.call_sid,
                    "error": failure.to_string(),
                }));
                Err(error)
            }
        }
    }

    async fn on_notify(
        &mut self,
        refer_id: u32,
        timeout: Duration,
    ) -> Result<ReferEvent, NotifyError> {
        let event = match self.call.next_refer_event(refer_id, timeout).await {
            ReferWait::Event(SubscriptionEvent::Notify {
                state,
                content_type,
                body,
            }) => {
                let notify = notify_from_parts(state.as_deref(), content_type.as_deref(), body);
                self.journal.record(json!({
                    "type": "notify",
                    "call_sid": self.ids.call_sid,
                    "refer_id": refer_id,
                    "subscription_state": state,
                    "content_type": content_type,
                    "sipfrag": notify.sipfrag.as_ref().map(|s| json!({"code": s.code, "reason": s.reason})),
                }));
                ReferEvent::Notify(notify)
            }
            ReferWait::Event(SubscriptionEvent::DialogEnded) => {
                self.journal.record(json!({
                    "type": "notify.dialog_ended",
                    "call_sid": self.ids.call_sid,
                    "refer_id": refer_id,
                }));
                ReferEvent::DialogEnded
            }
            ReferWait::TimedOut => {
                self.journal.record(json!({
                    "type": "notify.timeout",
                    "call_sid": self.ids.call_sid,
                    "refer_id": refer_id,
                    "after_ms": timeout.as_millis() as u64,
                }));
                ReferEvent::TimedOut
            }
            ReferWait::Unknown => return Err(NotifyError::UnknownRefer(refer_id)),
        };
        Ok(event)
    }

    fn emit_event(&mut self, hook: Webhook, mut payload: Map<String, Value>) {
        self.ids.stamp(&mut payload, &self.verb);
        self.events.post(hook, payload);
    }

    fn log(&mut self, level: Level, message: &str) {
        let (sid, verb) = (&self.ids.call_sid, &self.verb);
        match level {
            Level::Trace => tracing::trace!(call_sid = %sid, verb = %verb, "plugin: {message}"),
            Level::Debug => tracing::debug!(call_sid = %sid, verb = %verb, "plugin: {message}"),
            Level::Info => tracing::info!(call_sid = %sid, verb = %verb, "plugin: {message}"),
            Level::Warn => tracing::warn!(call_sid = %sid, verb = %verb, "plugin: {message}"),
            Level::Error => tracing::error!(call_sid = %sid, verb = %verb, "plugin: {message}"),
        }
    }

    fn clock_ms(&mut self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}
