//! Running a plugin natively, without wasm: the plugin's unchanged code, compiled for the host,
//! calling a [`NativeHost`] where the wasm build calls the contract's imports.
//!
//! This exists to measure what the sandbox costs (the same verb run as a component and as
//! native code, against the same in-memory host) and to test plugin logic in plain Rust. It is
//! not a way to serve calls: nothing here bounds what the plugin does. The module exists only
//! when not building for wasm32; a wasm build of a plugin calls the imports exactly as before.
//!
//! ```ignore
//! let (host, outcome) = verbhost_sdk::native::run::<MyPlugin, _>(my_host, verb_json, &call);
//! ```
//!
//! [`run`] installs the host for the current thread while [`Plugin::parse`] and
//! [`Plugin::run`] execute, so [`crate::host`] and [`crate::sip`] reach it; outside a run (in
//! `parse` alone, say) they panic, as the wasm build traps when it calls the host with no call.

use std::any::Any;
use std::cell::RefCell;

use crate::host::EventError;
use crate::sip::{NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse};
use crate::{CallInfo, Completion, Level, Plugin, VerbError, Webhook};

/// What a natively built plugin calls instead of the contract's imports (`host` and `sip` in
/// `wit/plugin.wit`): one method per import, with the SDK's types, as the host sees them.
pub trait NativeHost: Any {
    /// `host.log`: a line of the plugin's log.
    fn log(&mut self, level: Level, message: &str);

    /// `host.emit-event`: post `payload` (the JSON text the plugin serialised) to `hook`.
    fn emit_event(&mut self, hook: &Webhook, payload: &str) -> Result<(), EventError>;

    /// `host.clock-ms`: milliseconds since the verb started.
    fn clock_ms(&mut self) -> u64;

    /// `sip.send-refer`: send the REFER and return its final response.
    fn send_refer(&mut self, request: &ReferRequest) -> Result<ReferResponse, ReferError>;

    /// `sip.on-notify`: the next event of REFER `refer_id`'s subscription, or
    /// [`ReferEvent::TimedOut`] after `timeout_ms`.
    fn on_notify(&mut self, refer_id: u32, timeout_ms: u32) -> Result<ReferEvent, NotifyError>;
}

thread_local! {
    /// The host of the run in progress on this thread.
    static HOST: RefCell<Option<Box<dyn NativeHost>>> = const { RefCell::new(None) };
}

/// Clears the thread's host however the run ends (a panicking plugin included).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        // `try_with`: the thread-local may already be gone when a thread exits mid-run.
        let _ = HOST.try_with(|slot| slot.borrow_mut().take());
    }
}

/// Runs one verb natively, as the exported `run` does in a wasm build: [`Plugin::parse`], then
/// [`Plugin::run`], with `host` answering every host call. Returns the host (with whatever it
/// recorded) and how the verb completed.
///
/// # Panics
///
/// When a run is already in progress on this thread (runs do not nest).
pub fn run<P: Plugin, H: NativeHost>(
    host: H,
    verb: &str,
    call: &CallInfo,
) -> (H, Result<Completion, VerbError>) {
    HOST.with(|slot| {
        let mut slot = slot.borrow_mut();
        assert!(
            slot.is_none(),
            "verbhost_sdk::native::run: a run is already in progress on this thread"
        );
        *slot = Some(Box::new(host));
    });
    let installed = Installed;
    let outcome = P::parse(verb).and_then(|parsed| P::run(parsed, call));
    let host: Box<dyn Any> = HOST
        .with(|slot| slot.borrow_mut().take())
        .expect("the run's host is installed until it ends");
    drop(installed);
    let host = host
        .downcast::<H>()
        .expect("the host installed is the one given");
    (*host, outcome)
}

/// Calls the host of the run in progress; what `crate::host` and `crate::sip` do natively.
pub(crate) fn with_host<T>(import: &str, call: impl FnOnce(&mut dyn NativeHost) -> T) -> T {
    HOST.with(|slot| {
        let mut slot = slot.borrow_mut();
        let host = slot.as_deref_mut().unwrap_or_else(|| {
            panic!(
                "verbhost_sdk: {import} called with no host: natively, host calls work only \
                 inside verbhost_sdk::native::run"
            )
        });
        call(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PluginInfo;

    /// Logs, reads the clock and posts one event; completes with what it saw.
    struct Echo;

    impl Plugin for Echo {
        type Verb = String;
        fn describe() -> PluginInfo {
            PluginInfo {
                name: "echo".into(),
                version: "0".into(),
                verbs: vec!["echo".into()],
            }
        }
        fn parse(verb: &str) -> Result<String, VerbError> {
            match verb {
                "bad" => Err(VerbError::InvalidVerb("bad".into())),
                verb => Ok(verb.to_owned()),
            }
        }
        fn run(verb: String, call: &CallInfo) -> Result<Completion, VerbError> {
            crate::host::info(&verb);
            let hook = Webhook {
                url: "/e".into(),
                method: "POST".into(),
                username: None,
                password: None,
            };
            crate::host::emit_event(&hook, &serde_json::json!({ "n": 1 }))
                .map_err(|e| VerbError::Failed(e.message()))?;
            Ok(Completion {
                event: format!("{}@{}", call.call_sid, crate::host::clock_ms()),
                payload: "{}".into(),
                action_hook: None,
                call_left: false,
            })
        }
    }

    #[derive(Default)]
    struct Recorder {
        logs: Vec<String>,
        events: Vec<String>,
    }

    impl NativeHost for Recorder {
        fn log(&mut self, _: Level, message: &str) {
            self.logs.push(message.into());
        }
        fn emit_event(&mut self, hook: &Webhook, payload: &str) -> Result<(), EventError> {
            self.events.push(format!("{} {payload}", hook.url));
            Ok(())
        }
        fn clock_ms(&mut self) -> u64 {
            7
        }
        fn send_refer(&mut self, _: &ReferRequest) -> Result<ReferResponse, ReferError> {
            Err(ReferError::DialogGone)
        }
        fn on_notify(&mut self, refer_id: u32, _: u32) -> Result<ReferEvent, NotifyError> {
            Err(NotifyError::UnknownRefer(refer_id))
        }
    }

    fn call() -> CallInfo {
        CallInfo {
            call_sid: "sid".into(),
            sip_call_id: "cid".into(),
            direction: crate::Direction::Inbound,
            from: "a".into(),
            to: "b".into(),
            remote_party: crate::Identity {
                display_name: None,
                uri: "sip:a@x".into(),
            },
            default_domain: "x".into(),
        }
    }

    #[test]
    fn a_native_run_reaches_its_host_and_returns_it() {
        let (host, outcome) = run::<Echo, _>(Recorder::default(), "hi", &call());
        assert_eq!(outcome.expect("completes").event, "sid@7");
        assert_eq!(host.logs, ["hi"]);
        assert_eq!(host.events, [r#"/e {"n":1}"#]);
        // The host is uninstalled after the run, and a refused verb never reaches `run`.
        let (host, outcome) = run::<Echo, _>(Recorder::default(), "bad", &call());
        assert!(matches!(outcome, Err(VerbError::InvalidVerb(_))));
        assert!(host.logs.is_empty());
    }

    #[test]
    #[should_panic(expected = "called with no host")]
    fn a_host_call_outside_a_run_panics() {
        crate::host::clock_ms();
    }
}
