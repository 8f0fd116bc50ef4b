//! A plugin that reads the system clock, which imports `wasi:clocks`: the runtime must refuse
//! to load it and name the import.

use verbhost_sdk::{CallInfo, Completion, Plugin, PluginInfo, VerbError, export_plugin};

struct ClockImport;

impl Plugin for ClockImport {
    type Verb = ();

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "clock-import".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["clock".into()],
        }
    }

    fn parse(_verb: &str) -> Result<(), VerbError> {
        Ok(())
    }

    fn run(_verb: (), _call: &CallInfo) -> Result<Completion, VerbError> {
        let now = std::time::SystemTime::now();
        Ok(Completion {
            event: "CLOCK".into(),
            payload: format!("{{\"now\":\"{now:?}\"}}"),
            action_hook: None,
            call_left: false,
        })
    }
}

export_plugin!(ClockImport);
