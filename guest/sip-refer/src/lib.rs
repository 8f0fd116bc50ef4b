//! The `sip:refer` verb: transfer the call by sending a REFER in its dialog, follow the
//! transfer through the NOTIFYs that come back, and report the outcome once.
//!
//! The outcome (the actionHook payload) carries:
//! - `event`: `TRANSFER_REFER_SUCCESS` when the REFER was accepted (any 2xx, RFC 7647) and
//!   the transfer target answered (a final sipfrag 2xx), or the 2xx carried
//!   `Refer-Sub: false` (RFC 4488: no NOTIFY will follow); `TRANSFER_REFER_ERROR` otherwise;
//! - `refer_status` (and its documented spelling `referStatus`) and `refer_reason`: the final
//!   response to the REFER; absent when none arrived;
//! - `final_referred_call_status` and `final_referred_call_reason`: the final sipfrag status,
//!   when one arrived;
//! - `completion_reason`: why the verb ended (see [`Ending`]);
//! - `verb_id`: the verb's `id`, when given;
//! - `plugin_build`: only in builds tagged for deployment tests (see [`BUILD_TAG`]).

use serde_json::{Map, Value, json};
use verbhost_sdk::refer::SipRefer;
use verbhost_sdk::sip::{self, HeaderList, ReferError, ReferEvent, SubscriptionStatus};
use verbhost_sdk::{CallInfo, Completion, Plugin, PluginInfo, VerbError, export_plugin, host};

/// A tag that builds made for deployment tests set (`VERBHOST_SIP_REFER_BUILD=a cargo build
/// ...`): it appears as `plugin_build` in every payload, so a test can tell which build served
/// a call. Unset in a normal build, which adds no field.
const BUILD_TAG: Option<&str> = option_env!("VERBHOST_SIP_REFER_BUILD");

/// The plugin. `pub(crate)` so that the sandbox-cost bench, which compiles this file natively
/// as a module of its own (`crates/mock/benches/sandbox_cost.rs`), can run it through
/// `verbhost_sdk::native::run`; the crate stays a `cdylib` only, so its wasm build is untouched.
pub(crate) struct SipReferPlugin;

impl Plugin for SipReferPlugin {
    type Verb = SipRefer;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "sip-refer".into(),
            version: match BUILD_TAG {
                Some(build) => format!("{}+{build}", env!("CARGO_PKG_VERSION")),
                None => env!("CARGO_PKG_VERSION").into(),
            },
            verbs: vec![verbhost_sdk::refer::VERB.into()],
        }
    }

    /// Every property checked (the target's form included), so the host's check of an
    /// application finds what a run would refuse.
    fn parse(verb: &str) -> Result<SipRefer, VerbError> {
        SipRefer::parse(verb)
    }

    fn run(verb: SipRefer, call: &CallInfo) -> Result<Completion, VerbError> {
        for warning in &verb.warnings {
            host::warn(warning);
        }
        let request = verb.request(call)?;
        let outcome = transfer(&verb, &request)?;
        Ok(outcome.completion(&verb))
    }
}

export_plugin!(SipReferPlugin);

/// Why the verb ended; reported as `completion_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A NOTIFY carried a final (>= 200) sipfrag status.
    FinalNotify,
    /// The REFER got a 3xx-6xx response.
    ReferRejected,
    /// The REFER's transaction timed out with no response (a local 408): like a 408, this
    /// ends the dialog (RFC 3261 §12.2.1.2).
    ReferTimeout,
    /// The 2xx carried `Refer-Sub: false`: accepted, and no NOTIFY will follow.
    ReferSubFalse,
    /// The subscription was terminated without a final status.
    SubscriptionTerminated,
    /// The dialog ended (BYE) before a final NOTIFY.
    ByeBeforeFinalNotify,
    /// No NOTIFY within `notifyTimeout`, or no final one within `transferTimeout`.
    NotifyTimeout,
    /// The call's dialog is gone: it was gone before the REFER could be sent, or the REFER
    /// got 481 or 408, which end the dialog (RFC 3261 §12.2.1.2, RFC 5057 §5.1).
    DialogGone,
    /// The REFER could not be sent.
    TransportError,
    /// The host lost the subscription.
    SubscriptionLost,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Self::FinalNotify => "final-notify",
            Self::ReferRejected => "refer-rejected",
            Self::ReferTimeout => "refer-timeout",
            Self::ReferSubFalse => "refer-sub-false",
            Self::SubscriptionTerminated => "subscription-terminated",
            Self::ByeBeforeFinalNotify => "bye-before-final-notify",
            Self::NotifyTimeout => "notify-timeout",
            Self::DialogGone => "dialog-gone",
            Self::TransportError => "transport-error",
            Self::SubscriptionLost => "subscription-lost",
        }
    }
}

/// What is known when the verb ends.
#[derive(Debug)]
struct Outcome {
    ending: Ending,
    /// Final response to the REFER (status, reason).
    refer: Option<(u16, String)>,
    /// Final sipfrag status (code, reason).
    final_status: Option<(u16, String)>,
    /// A cause in words, when there is no status to tell it.
    detail: Option<String>,
    /// The dialog ended while the verb ran.
    dialog_ended: bool,
}

impl Outcome {
    fn new(ending: Ending) -> Self {
        Outcome {
            ending,
            refer: None,
            final_status: None,
            detail: None,
            dialog_ended: false,
        }
    }

    fn accepted(&self) -> bool {
        self.refer
            .as_ref()
            .is_some_and(|(code, _)| (200..300).contains(code))
    }

    fn succeeded(&self) -> bool {
        self.accepted()
            && match self.ending {
                Ending::ReferSubFalse => true,
                Ending::FinalNotify => self
                    .final_status
                    .as_ref()
                    .is_some_and(|(code, _)| (200..300).contains(code)),
                _ => false,
            }
    }

    fn completion(&self, verb: &SipRefer) -> Completion {
        let succeeded = self.succeeded();
        let event = if succeeded {
            "TRANSFER_REFER_SUCCESS"
        } else {
            "TRANSFER_REFER_ERROR"
        };
        let mut payload = Map::new();
        payload.insert("event".into(), event.into());
        if let Some((code, reason)) = &self.refer {
            payload.insert("refer_status".into(), (*code).into());
            payload.insert("referStatus".into(), (*code).into());
            payload.insert("refer_reason".into(), reason.as_str().into());
        }
        if let Some((code, reason)) = &self.final_status {
            payload.insert("final_referred_call_status".into(), (*code).into());
            payload.insert("final_referred_call_reason".into(), reason.as_str().into());
        }
        payload.insert("completion_reason".into(), self.ending.as_str().into());
        if let Some(detail) = &self.detail {
            payload.insert("completion_detail".into(), detail.as_str().into());
        }
        if let Some(id) = &verb.id {
            payload.insert("verb_id".into(), id.as_str().into());
        }
        if let Some(build) = BUILD_TAG {
            payload.insert("plugin_build".into(), build.into());
        }
        Completion {
            event: event.into(),
            payload: Value::Object(payload).to_string(),
            action_hook: verb.action_hook.clone(),
            // On success the transferee has moved to the target; after a BYE or a vanished
            // dialog there is no leg left either.
            call_left: succeeded || self.dialog_ended,
        }
    }
}

/// Sends the REFER and follows its subscription to the end.
fn transfer(verb: &SipRefer, request: &sip::ReferRequest) -> Result<Outcome, VerbError> {
    let response = match sip::send_refer(request) {
        Ok(response) => response,
        Err(ReferError::Timeout) => {
            let mut outcome = Outcome::new(Ending::ReferTimeout);
            outcome.refer = Some((408, "Request Timeout".into()));
            outcome.detail = Some(ReferError::Timeout.message());
            outcome.dialog_ended = true;
            return Ok(outcome);
        }
        Err(ReferError::DialogGone) => {
            let mut outcome = Outcome::new(Ending::DialogGone);
            outcome.detail = Some(ReferError::DialogGone.message());
            outcome.dialog_ended = true;
            return Ok(outcome);
        }
        Err(err @ ReferError::Transport(_)) => {
            let mut outcome = Outcome::new(Ending::TransportError);
            outcome.detail = Some(err.message());
            return Ok(outcome);
        }
        // The host refused what the verb asked for: that is the verb's error, not an outcome.
        Err(err @ ReferError::Rejected(_)) => {
            return Err(VerbError::Failed(format!("sip:refer: {}", err.message())));
        }
    };

    let mut outcome = Outcome::new(Ending::ReferRejected);
    outcome.refer = Some((response.status, response.reason.clone()));
    if matches!(response.status, 408 | 481) {
        // A 481 or 408 to a request in a dialog ends the dialog (RFC 3261 §12.2.1.2): the
        // far end has no call with us any more, so the leg has left.
        outcome.ending = Ending::DialogGone;
        outcome.detail = Some(format!(
            "the REFER got {} {}: the call's dialog no longer exists",
            response.status, response.reason
        ));
        outcome.dialog_ended = true;
        return Ok(outcome);
    }
    if !outcome.accepted() {
        return Ok(outcome);
    }
    let no_subscription = response
        .headers
        .header("Refer-Sub")
        .is_some_and(verbhost_sdk::common::subscription::refer_sub_is_false);
    if no_subscription {
        outcome.ending = Ending::ReferSubFalse;
        return Ok(outcome);
    }
    if verb.asks_no_subscription() {
        // RFC 4488 §4: without Refer-Sub: false in the 2xx the subscription exists.
        host::info("Refer-Sub: false was not echoed in the 2xx; waiting for NOTIFYs");
    }

    let accepted_at = host::clock_ms();
    let hard_deadline = accepted_at.saturating_add(u64::from(verb.transfer_timeout_ms));
    let notify_timeout = u64::from(verb.notify_timeout_ms);
    // The next deadline, and whether transferTimeout cut it short of notifyTimeout.
    let next_deadline = |from: u64| {
        let wanted = from.saturating_add(notify_timeout);
        (wanted.min(hard_deadline), hard_deadline < wanted)
    };
    let (mut deadline, mut capped) = next_deadline(accepted_at);
    loop {
        let now = host::clock_ms();
        if now >= deadline {
            outcome.ending = Ending::NotifyTimeout;
            outcome.detail = Some(if capped {
                format!(
                    "no final NOTIFY within transferTimeout ({} ms)",
                    verb.transfer_timeout_ms
                )
            } else {
                format!(
                    "no NOTIFY within notifyTimeout ({} ms)",
                    verb.notify_timeout_ms
                )
            });
            return Ok(outcome);
        }
        let wait = u32::try_from(deadline - now).unwrap_or(u32::MAX);
        let notify = match sip::on_notify(response.refer_id, wait) {
            Ok(ReferEvent::Notify(notify)) => notify,
            Ok(ReferEvent::TimedOut) => continue,
            Ok(ReferEvent::DialogEnded) => {
                outcome.ending = Ending::ByeBeforeFinalNotify;
                outcome.dialog_ended = true;
                return Ok(outcome);
            }
            Err(sip::NotifyError::UnknownRefer(id)) => {
                outcome.ending = Ending::SubscriptionLost;
                outcome.detail = Some(format!("the host has no subscription for REFER {id}"));
                return Ok(outcome);
            }
        };
        match &notify.sipfrag {
            Some(status) => {
                if let Some(hook) = &verb.event_hook {
                    let mut payload = json!({
                        "event": "transfer-status",
                        "call_status": status.code.to_string(),
                    });
                    if let Some(id) = &verb.id {
                        payload["verb_id"] = id.as_str().into();
                    }
                    if let Some(build) = BUILD_TAG {
                        payload["plugin_build"] = build.into();
                    }
                    if let Err(err) = host::emit_event(hook, &payload) {
                        host::warn(&format!("eventHook not posted: {}", err.message()));
                    }
                }
                if status.code >= 200 {
                    outcome.ending = Ending::FinalNotify;
                    outcome.final_status = Some((status.code, status.reason.clone()));
                    return Ok(outcome);
                }
                (deadline, capped) = next_deadline(host::clock_ms());
            }
            None => host::warn(&format!(
                "NOTIFY without a sipfrag status line (Content-Type {:?}, {} body bytes); ignored",
                notify.content_type.as_deref().unwrap_or("none"),
                notify.body.len()
            )),
        }
        if notify
            .state
            .as_ref()
            .is_some_and(|s| s.status == SubscriptionStatus::Terminated)
        {
            outcome.ending = Ending::SubscriptionTerminated;
            let reason = notify.state.and_then(|s| s.reason);
            outcome.detail = Some(format!(
                "subscription terminated (reason {}) without a final status",
                reason.as_deref().unwrap_or("none")
            ));
            return Ok(outcome);
        }
    }
}
