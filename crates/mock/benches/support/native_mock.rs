//! The mock host's scripted call, answering a natively built plugin: a
//! [`verbhost_sdk::native::NativeHost`] over [`MockCall`], so the native run of a plugin meets
//! exactly the responses, NOTIFYs and virtual clock its wasm run meets in the mock host.
//!
//! Each host call converts the SDK's types to the runtime's and back, and `emit-event` parses
//! the payload text into a JSON object, as the runtime's host functions do for a wasm run; what
//! the native run leaves out is the sandbox: the store, instantiation, the canonical ABI, the
//! CPU meter and the per-run bounds.

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde_json::{Map, Value};
use verbhost_mock::MockCall;
use verbhost_runtime as rt;
use verbhost_runtime::CallHost;
use verbhost_sdk::host::EventError;
use verbhost_sdk::native::NativeHost;
use verbhost_sdk::sip::{
    Notify, NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse, SipfragStatus,
    SubscriptionState, SubscriptionStatus,
};
use verbhost_sdk::{CallInfo, Direction, Header, Identity, Level, Webhook};

/// A [`MockCall`] as a native plugin's host.
pub(crate) struct NativeMock(pub(crate) MockCall);

/// The mock call answers every host call at once; its futures never wait.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the mock call answers at once"),
    }
}

impl NativeHost for NativeMock {
    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => rt::Level::Trace,
            Level::Debug => rt::Level::Debug,
            Level::Info => rt::Level::Info,
            Level::Warn => rt::Level::Warn,
            Level::Error => rt::Level::Error,
        };
        self.0.log(level, message);
    }

    fn emit_event(&mut self, hook: &Webhook, payload: &str) -> Result<(), EventError> {
        let payload: Map<String, Value> = serde_json::from_str(payload)
            .map_err(|err| EventError::InvalidPayload(err.to_string()))?;
        let hook = rt::Webhook {
            url: hook.url.clone(),
            method: hook.method.clone(),
            username: hook.username.clone(),
            password: hook.password.clone(),
        };
        self.0.emit_event(hook, payload);
        Ok(())
    }

    fn clock_ms(&mut self) -> u64 {
        CallHost::clock_ms(&mut self.0)
    }

    fn send_refer(&mut self, request: &ReferRequest) -> Result<ReferResponse, ReferError> {
        let request = rt::ReferRequest {
            refer_to: request.refer_to.clone(),
            referred_by: request.referred_by.clone(),
            headers: request
                .headers
                .iter()
                .map(|h| rt::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
        };
        match ready(self.0.send_refer(request)) {
            Ok(response) => Ok(ReferResponse {
                refer_id: response.refer_id,
                status: response.status,
                reason: response.reason,
                headers: response
                    .headers
                    .into_iter()
                    .map(|h| Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect(),
            }),
            Err(rt::ReferError::Timeout) => Err(ReferError::Timeout),
            Err(rt::ReferError::DialogGone) => Err(ReferError::DialogGone),
            Err(rt::ReferError::Rejected(why)) => Err(ReferError::Rejected(why)),
            Err(rt::ReferError::Transport(why)) => Err(ReferError::Transport(why)),
        }
    }

    fn on_notify(&mut self, refer_id: u32, timeout_ms: u32) -> Result<ReferEvent, NotifyError> {
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        match ready(self.0.on_notify(refer_id, timeout)) {
            Ok(rt::ReferEvent::Notify(notify)) => Ok(ReferEvent::Notify(Notify {
                state: notify.state.map(|s| SubscriptionState {
                    status: match s.status {
                        rt::SubscriptionStatus::Active => SubscriptionStatus::Active,
                        rt::SubscriptionStatus::Pending => SubscriptionStatus::Pending,
                        rt::SubscriptionStatus::Terminated => SubscriptionStatus::Terminated,
                    },
                    expires: s.expires,
                    reason: s.reason,
                }),
                content_type: notify.content_type,
                body: notify.body,
                sipfrag: notify.sipfrag.map(|s| SipfragStatus {
                    code: s.code,
                    reason: s.reason,
                }),
            })),
            Ok(rt::ReferEvent::DialogEnded) => Ok(ReferEvent::DialogEnded),
            Ok(rt::ReferEvent::TimedOut) => Ok(ReferEvent::TimedOut),
            Err(rt::NotifyError::UnknownRefer(id)) => Err(NotifyError::UnknownRefer(id)),
        }
    }
}

/// The SDK's view of the call the runtime passes a wasm run.
pub(crate) fn call_info(call: &rt::CallInfo) -> CallInfo {
    CallInfo {
        call_sid: call.call_sid.clone(),
        sip_call_id: call.sip_call_id.clone(),
        direction: match call.direction {
            rt::Direction::Inbound => Direction::Inbound,
            rt::Direction::Outbound => Direction::Outbound,
        },
        from: call.from.clone(),
        to: call.to.clone(),
        remote_party: Identity {
            display_name: call.remote_party.display_name.clone(),
            uri: call.remote_party.uri.clone(),
        },
        default_domain: call.default_domain.clone(),
    }
}
