//! A plugin that opens a TCP connection with `std::net`, which imports `wasi:sockets`: the
//! runtime must refuse to load it and name the import (plugins get no network).

use verbhost_sdk::{CallInfo, Completion, Plugin, PluginInfo, VerbError, export_plugin};

struct SocketImport;

impl Plugin for SocketImport {
    type Verb = ();

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "socket-import".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["connect".into()],
        }
    }

    fn parse(_verb: &str) -> Result<(), VerbError> {
        Ok(())
    }

    fn run(_verb: (), _call: &CallInfo) -> Result<Completion, VerbError> {
        let stream = std::net::TcpStream::connect("127.0.0.1:9")
            .map_err(|err| VerbError::Failed(format!("cannot connect to 127.0.0.1:9: {err}")))?;
        Ok(Completion {
            event: "CONNECTED".into(),
            payload: format!("{{\"peer\":\"{:?}\"}}", stream.peer_addr().ok()),
            action_hook: None,
            call_left: false,
        })
    }
}

export_plugin!(SocketImport);
