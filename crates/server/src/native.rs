//! Serving a verb with a natively built plugin instead of its wasm build, so the load harness
//! can put a figure on what the sandbox costs end to end (`tests/bench/load`, `--plugin
//! native`). Set only in code, through [`crate::ServerBuilder::native_plugin`]; never from the
//! config file or the command line, because a native run is not sandboxed (see
//! [`verbhost_runtime::native`]).
//!
//! Everything around the run stays as it is: the wasm build of the same plugin is still
//! loaded and checks the application's verbs, the session posts the same webhooks and keeps
//! the same journal, and the run's host is the same [`SipCallHost`]. Only the run itself
//! differs: the plugin's code runs on a blocking thread (`spawn_blocking`), which waits on the
//! host's futures through the runtime's handle, where a wasm run is a fiber on a worker.

use std::collections::HashMap;

use verbhost_runtime::native::{self, Native, Wait};
use verbhost_runtime::{CallInfo, Outcome, Plugin, RunError, VerbError};
use verbhost_sdk as sdk;

use crate::bridge::SipCallHost;

/// A plugin's natively compiled `run`, over the live call's host.
type NativeRun = fn(
    Native<SipCallHost>,
    &str,
    &sdk::CallInfo,
) -> (Native<SipCallHost>, Result<sdk::Completion, sdk::VerbError>);

/// The verbs served natively, each with its plugin's run.
#[derive(Clone, Default)]
pub(crate) struct NativeVerbs(HashMap<String, NativeRun>);

impl NativeVerbs {
    /// Serves every verb `P` declares with `P` compiled natively.
    pub(crate) fn insert<P: sdk::Plugin>(&mut self) {
        for verb in P::describe().verbs {
            self.0
                .insert(verb, sdk::native::run::<P, Native<SipCallHost>>);
        }
    }

    pub(crate) fn get(&self, verb: &str) -> Option<NativeRun> {
        self.0.get(verb).copied()
    }

    pub(crate) fn verbs(&self) -> Vec<&str> {
        let mut verbs: Vec<&str> = self.0.keys().map(String::as_str).collect();
        verbs.sort_unstable();
        verbs
    }
}

/// Runs `verb` natively on `host`'s call, its completion checked by the limits of `plugin`
/// (the wasm build that serves the verb otherwise) as a wasm run's would be.
pub(crate) async fn run(
    run: NativeRun,
    host: SipCallHost,
    verb: &str,
    call: &CallInfo,
    plugin: &Plugin<SipCallHost>,
) -> Result<Outcome, RunError> {
    let wait = Wait::On(tokio::runtime::Handle::current());
    let verb = verb.to_owned();
    let call = native::call_info(call);
    match tokio::task::spawn_blocking(move || run(Native::new(host, wait), &verb, &call).1).await {
        Ok(result) => native::outcome(plugin, result),
        Err(err) => Err(RunError::Verb(VerbError::Failed(format!(
            "the natively built plugin did not finish: {err}"
        )))),
    }
}
