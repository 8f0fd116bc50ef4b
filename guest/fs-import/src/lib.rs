//! A plugin that reads a file with `std::fs`, which imports `wasi:filesystem`: the runtime must
//! refuse to load it and name the import (plugins get no file system).

use verbhost_sdk::{CallInfo, Completion, Plugin, PluginInfo, VerbError, export_plugin};

struct FsImport;

impl Plugin for FsImport {
    type Verb = ();

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "fs-import".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["read-file".into()],
        }
    }

    fn parse(_verb: &str) -> Result<(), VerbError> {
        Ok(())
    }

    fn run(_verb: (), _call: &CallInfo) -> Result<Completion, VerbError> {
        let text = std::fs::read_to_string("/etc/passwd")
            .map_err(|err| VerbError::Failed(format!("cannot read /etc/passwd: {err}")))?;
        Ok(Completion {
            event: "READ".into(),
            payload: format!("{{\"bytes\":{}}}", text.len()),
            action_hook: None,
            call_left: false,
        })
    }
}

export_plugin!(FsImport);
