//! A plugin built against the frozen `verbhost:plugin@0.1.0` (`wit/frozen/0.1.0`), the release
//! before `verb-check`: it exports only `describe` and `run`. A `0.1.1` host must keep loading
//! and serving it, checking its verbs only for what the host can check itself. Bound with
//! `wit_bindgen` directly, since the SDK binds the current release.
//!
//! Its verb, `old:greet`, logs a greeting and completes with `GREETED`, posting the actionHook
//! when there is one. It refuses a verb with a `fail` property when it runs, so a test can tell
//! that such a verb reached `run` (no check could have refused it earlier).

wit_bindgen::generate!({
    path: "../../wit/frozen/0.1.0",
    world: "verb-plugin",
});

use exports::verbhost::plugin::verb::{CallInfo, Completion, Guest, PluginInfo, VerbError};
use verbhost::plugin::host::log;
use verbhost::plugin::types::{Level, Webhook};

struct Contract010;

impl Guest for Contract010 {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-0-1-0".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["old:greet".into()],
        }
    }

    fn run(verb: String, call: CallInfo) -> Result<Completion, VerbError> {
        if verb.contains("\"fail\"") {
            return Err(VerbError::InvalidVerb(
                "old:greet: unknown property fail".into(),
            ));
        }
        log(Level::Info, &format!("hello, {}", call.remote_party.uri));
        // A hook string is found without a JSON parser: this plugin stays dependency-free.
        let action_hook = verb
            .split_once("\"actionHook\":\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(url, _)| Webhook {
                url: url.into(),
                method: "POST".into(),
                username: None,
                password: None,
            });
        Ok(Completion {
            event: "GREETED".into(),
            payload: "{}".into(),
            action_hook,
            call_left: false,
        })
    }
}

export!(Contract010);
