//! The native build of `sip:refer` (run by `verbhost_sdk::native`, as `benches/sandbox_cost.rs`
//! times it) does what its wasm build does in the mock host: for the bench's transfer and for
//! every scenario of the plugin's suite, the same completion (event, payload, actionHook,
//! call_left) or the same verb error, and the same host calls (REFERs, eventHook payloads,
//! `on-notify` timeouts, logs, final virtual clock). That is what makes the bench's
//! wasm/native ratio a measure of the sandbox and nothing else.

use std::path::Path;

use serde_json::{Map, Value};
use verbhost_mock::{MockCall, Scenario};
use verbhost_runtime::{Outcome, Plugin, RunError, VerbError};

/// The `sip:refer` plugin, `guest/sip-refer/src/lib.rs` compiled natively as a module of this
/// crate. (Not a dependency on the guest crate: an `rlib` crate type next to its `cdylib`
/// changes the code rustc generates for the wasm build, and the wasm build is the one measured.)
#[path = "../../../guest/sip-refer/src/lib.rs"]
mod sip_refer;
use sip_refer::SipReferPlugin;

#[path = "../benches/support/mod.rs"]
mod support;
use verbhost_runtime::native::{self, Native, Wait};

/// A completion as both runs give it.
#[derive(Debug, PartialEq)]
struct Done {
    event: String,
    payload: Map<String, Value>,
    /// The actionHook's URL and method.
    action_hook: Option<(String, String)>,
    call_left: bool,
}

/// A completion, or the verb's error in words.
type Ending = Result<Done, String>;

/// A REFER: Refer-To, Referred-By and the extra headers.
type Refer = (String, Option<String>, Vec<(String, String)>);

/// What both runs must agree on, in a form both give.
#[derive(Debug, PartialEq)]
struct Seen {
    outcome: Ending,
    refers: Vec<Refer>,
    events: Vec<(String, Map<String, Value>)>,
    notify_timeouts_ms: Vec<u32>,
    logs: Vec<String>,
    clock_ms: u64,
}

fn recorded(host: &MockCall, outcome: Ending) -> Seen {
    Seen {
        outcome,
        refers: host
            .refers
            .iter()
            .map(|r| {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect();
                (r.refer_to.clone(), r.referred_by.clone(), headers)
            })
            .collect(),
        events: host
            .events_emitted
            .iter()
            .map(|(hook, payload)| (hook.url.clone(), payload.clone()))
            .collect(),
        notify_timeouts_ms: host.notify_timeouts_ms.clone(),
        logs: host.logs.clone(),
        clock_ms: host.clock_ms(),
    }
}

/// A run's completion in the form both give, or `None` when it ended in something only a
/// sandbox gives (a bound, a trap), which a native run has no counterpart of.
fn ending(outcome: Result<Outcome, RunError>) -> Option<Ending> {
    Some(match outcome {
        Ok(o) => Ok(Done {
            event: o.event,
            payload: o.payload,
            action_hook: o.action_hook.map(|h| (h.url, h.method)),
            call_left: o.call_left,
        }),
        Err(RunError::Verb(VerbError::InvalidVerb(why))) => Err(format!("invalid verb: {why}")),
        Err(RunError::Verb(VerbError::Failed(why))) => Err(format!("failed: {why}")),
        Err(_) => return None,
    })
}

fn wasm_run(
    executor: &tokio::runtime::Runtime,
    plugin: &Plugin<MockCall>,
    scenario: &Scenario,
) -> Option<Seen> {
    let verb = scenario.verb_text();
    let call = scenario.call.to_call_info();
    let run = executor.block_on(plugin.run(MockCall::new(scenario), &verb, &call));
    Some(recorded(&run.host, ending(run.outcome)?))
}

/// The native run's record, its completion checked by `plugin`'s limits as the wasm run's is.
fn native_run(plugin: &Plugin<MockCall>, scenario: &Scenario) -> Seen {
    let verb = scenario.verb_text();
    let call = native::call_info(&scenario.call.to_call_info());
    let (host, outcome) = verbhost_sdk::native::run::<SipReferPlugin, _>(
        Native::new(MockCall::new(scenario), Wait::Ready),
        &verb,
        &call,
    );
    let outcome = ending(native::outcome(plugin, outcome))
        .expect("a native run ends in a completion or a verb error");
    recorded(host.get(), outcome)
}

#[test]
fn native_sip_refer_runs_as_the_wasm_build_does() {
    let (executor, plugin) = support::setup(verbhost_guests::SIP_REFER_WASM);

    // The bench's transfer first: the one whose times are compared.
    let bench = support::scenario();
    let wasm = wasm_run(&executor, &plugin, &bench).expect("the wasm run completes");
    let native = native_run(&plugin, &bench);
    assert_eq!(native, wasm);
    let done = native.outcome.as_ref().expect("a completion");
    assert_eq!(done.event, "TRANSFER_REFER_SUCCESS");
    assert!(done.call_left);
    assert_eq!(native.events.len(), 3);

    // Then the plugin's scenario suite.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios/sip-refer");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the scenario directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut compared, mut sandbox_only) = (0, Vec::new());
    for file in &files {
        for scenario in Scenario::load_file(file).expect("a valid scenario file") {
            let name = format!("{} / {}", file.display(), scenario.name);
            match wasm_run(&executor, &plugin, &scenario) {
                Some(wasm) => {
                    assert_eq!(native_run(&plugin, &scenario), wasm, "{name}");
                    compared += 1;
                }
                None => sandbox_only.push(name),
            }
        }
    }
    eprintln!(
        "{compared} scenarios compared; {} ended in a sandbox bound: {sandbox_only:?}",
        sandbox_only.len()
    );
    // Only a few scenarios test the sandbox's own bounds (a verb larger than the host takes).
    assert!(
        compared >= 90 && sandbox_only.len() <= 2,
        "{compared} compared; ended in a sandbox bound: {sandbox_only:#?}"
    );
}
