//! A natively built plugin (its unchanged source compiled for the host, run by
//! [`verbhost_sdk::native::run`]) answered by any [`CallHost`]: the same host a wasm run of it
//! gets, the SDK's types converted to the runtime's and back, and the completion checked as a
//! wasm run's is.
//!
//! This exists to measure what the sandbox costs: the mock host's bench and parity test run a
//! plugin both ways against one scripted call, and the feature server can be built (in code,
//! by the load harness, never from config) to serve a verb natively so the two can be compared
//! under load. It is not a way to serve untrusted plugins: a native run has no store, no CPU
//! meter, no memory bound and no per-run limits on host calls; it runs on the thread that
//! calls it and blocks that thread while the host works.

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde_json::{Map, Value};
use verbhost_sdk as sdk;
use verbhost_sdk::host::EventError;
use verbhost_sdk::native::NativeHost;

use crate::{
    CallHost, CallInfo, Direction, Header, Level, NotifyError, Outcome, Plugin, ReferError,
    ReferEvent, ReferRequest, RunError, SubscriptionStatus, VerbError, Webhook,
};

/// How a [`Native`] host waits for a host call's future.
#[derive(Debug, Clone)]
pub enum Wait {
    /// The host answers every call at once (the mock host's scripted call, on its virtual
    /// clock); a future that is still pending is a bug and panics.
    Ready,
    /// Block the calling thread on the runtime behind this handle: for a host whose calls wait
    /// on the network. The calling thread must not be one of the runtime's workers (run the
    /// plugin in `spawn_blocking`).
    On(tokio::runtime::Handle),
}

impl Wait {
    fn wait<T>(&self, future: impl Future<Output = T>) -> T {
        match self {
            Wait::Ready => {
                let mut future = pin!(future);
                match future
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                {
                    Poll::Ready(value) => value,
                    Poll::Pending => panic!("a Wait::Ready host call did not answer at once"),
                }
            }
            Wait::On(handle) => handle.block_on(future),
        }
    }
}

/// A [`CallHost`] as a natively built plugin's host.
pub struct Native<H> {
    host: H,
    wait: Wait,
}

impl<H: CallHost> Native<H> {
    /// `host`, its futures awaited as `wait` says.
    pub fn new(host: H, wait: Wait) -> Self {
        Native { host, wait }
    }

    /// The host, with whatever it recorded.
    pub fn into_inner(self) -> H {
        self.host
    }

    /// The host.
    pub fn get(&self) -> &H {
        &self.host
    }
}

impl<H: CallHost> NativeHost for Native<H> {
    fn log(&mut self, level: sdk::Level, message: &str) {
        let level = match level {
            sdk::Level::Trace => Level::Trace,
            sdk::Level::Debug => Level::Debug,
            sdk::Level::Info => Level::Info,
            sdk::Level::Warn => Level::Warn,
            sdk::Level::Error => Level::Error,
        };
        self.host.log(level, message);
    }

    /// Parses the payload into a JSON object, as the runtime's `emit-event` does for a wasm
    /// run (a native run has no payload size bound).
    fn emit_event(&mut self, hook: &sdk::Webhook, payload: &str) -> Result<(), EventError> {
        let payload: Map<String, Value> = serde_json::from_str(payload)
            .map_err(|err| EventError::InvalidPayload(err.to_string()))?;
        self.host.emit_event(webhook(hook), payload);
        Ok(())
    }

    fn clock_ms(&mut self) -> u64 {
        self.host.clock_ms()
    }

    fn send_refer(
        &mut self,
        request: &sdk::sip::ReferRequest,
    ) -> Result<sdk::sip::ReferResponse, sdk::sip::ReferError> {
        let request = ReferRequest {
            refer_to: request.refer_to.clone(),
            referred_by: request.referred_by.clone(),
            headers: request
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
        };
        match self.wait.wait(self.host.send_refer(request)) {
            Ok(response) => Ok(sdk::sip::ReferResponse {
                refer_id: response.refer_id,
                status: response.status,
                reason: response.reason,
                headers: response
                    .headers
                    .into_iter()
                    .map(|h| sdk::Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
            }),
            Err(ReferError::Timeout) => Err(sdk::sip::ReferError::Timeout),
            Err(ReferError::DialogGone) => Err(sdk::sip::ReferError::DialogGone),
            Err(ReferError::Rejected(why)) => Err(sdk::sip::ReferError::Rejected(why)),
            Err(ReferError::Transport(why)) => Err(sdk::sip::ReferError::Transport(why)),
        }
    }

    fn on_notify(
        &mut self,
        refer_id: u32,
        timeout_ms: u32,
    ) -> Result<sdk::sip::ReferEvent, sdk::sip::NotifyError> {
        use sdk::sip as s;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        match self.wait.wait(self.host.on_notify(refer_id, timeout)) {
            Ok(ReferEvent::Notify(notify)) => Ok(s::ReferEvent::Notify(s::Notify {
                state: notify.state.map(|state| s::SubscriptionState {
                    status: match state.status {
                        SubscriptionStatus::Active => s::SubscriptionStatus::Active,
                        SubscriptionStatus::Pending => s::SubscriptionStatus::Pending,
                        SubscriptionStatus::Terminated => s::SubscriptionStatus::Terminated,
                    },
                    expires: state.expires,
                    reason: state.reason,
                }),
                content_type: notify.content_type,
                body: notify.body,
                sipfrag: notify.sipfrag.map(|status| s::SipfragStatus {
                    code: status.code,
                    reason: status.reason,
                }),
            })),
            Ok(ReferEvent::DialogEnded) => Ok(s::ReferEvent::DialogEnded),
            Ok(ReferEvent::TimedOut) => Ok(s::ReferEvent::TimedOut),
            Err(NotifyError::UnknownRefer(id)) => Err(s::NotifyError::UnknownRefer(id)),
        }
    }
}

fn webhook(hook: &sdk::Webhook) -> Webhook {
    Webhook {
        url: hook.url.clone(),
        method: hook.method.clone(),
        username: hook.username.clone(),
        password: hook.password.clone(),
    }
}

/// The SDK's view of the call the runtime passes a wasm run.
pub fn call_info(call: &CallInfo) -> sdk::CallInfo {
    sdk::CallInfo {
        call_sid: call.call_sid.clone(),
        sip_call_id: call.sip_call_id.clone(),
        direction: match call.direction {
            Direction::Inbound => sdk::Direction::Inbound,
            Direction::Outbound => sdk::Direction::Outbound,
        },
        from: call.from.clone(),
        to: call.to.clone(),
        remote_party: sdk::Identity {
            display_name: call.remote_party.display_name.clone(),
            uri: call.remote_party.uri.clone(),
        },
        default_domain: call.default_domain.clone(),
    }
}

/// A native run's result as the runtime gives a wasm run's: the completion checked by
/// `plugin`'s limits exactly as its wasm build's would be, or the verb's error.
pub fn outcome<H: CallHost>(
    plugin: &Plugin<H>,
    result: Result<sdk::Completion, sdk::VerbError>,
) -> Result<Outcome, RunError> {
    match result {
        Ok(done) => plugin.check_completion(
            done.event,
            &done.payload,
            done.action_hook.as_ref().map(webhook),
            done.call_left,
        ),
        Err(sdk::VerbError::InvalidVerb(why)) => Err(RunError::Verb(VerbError::InvalidVerb(why))),
        Err(sdk::VerbError::Failed(why)) => Err(RunError::Verb(VerbError::Failed(why))),
    }
}
