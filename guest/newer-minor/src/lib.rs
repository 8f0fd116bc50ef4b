//! A plugin built for `verbhost:plugin@0.1.2` (its own `wit/`), a made-up later release of the
//! current track that adds `host.get-config`. A `0.1.1` host does not link that function: the
//! runtime must refuse the plugin at load and say the host is older than the plugin. Bound
//! with `wit_bindgen` directly, since the SDK binds `0.1.1`.

wit_bindgen::generate!({
    path: "wit",
    world: "verb-plugin",
});

use exports::verbhost::plugin::verb::{CallInfo, Completion, Guest, PluginInfo, VerbError};
use verbhost::plugin::host::{get_config, log};
use verbhost::plugin::types::Level;

struct NewerMinor;

impl Guest for NewerMinor {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "newer-minor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["newer".into()],
        }
    }

    fn run(_verb: String, _call: CallInfo) -> Result<Completion, VerbError> {
        let greeting = get_config("greeting").unwrap_or_default();
        log(Level::Info, &greeting);
        Ok(Completion {
            event: "DONE".into(),
            payload: "{}".into(),
            action_hook: None,
            call_left: false,
        })
    }
}

export!(NewerMinor);
