//! A plugin built for `verbhost:plugin@0.2.0` (its own `wit/`), a contract version this host
//! does not support: the runtime must refuse to load it and name both versions. Bound with
//! `wit_bindgen` directly, since the SDK binds `0.1.0`.

wit_bindgen::generate!({
    path: "wit",
    world: "verb-plugin",
});

use exports::verbhost::plugin::verb::{Guest, PluginInfo};
use verbhost::plugin::host::log;
use verbhost::plugin::types::Level;

struct FutureContract;

impl Guest for FutureContract {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "future-contract".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["future".into()],
        }
    }

    fn run(verb: Vec<u8>) -> Result<Vec<u8>, String> {
        log(Level::Info, "running a 0.2.0 verb");
        Ok(verb)
    }
}

export!(FutureContract);
