//! The `{{verb}}` verb: reads a greeting, logs it, posts it to the eventHook and completes.

use verbhost_sdk::serde_json::json;
use verbhost_sdk::verb::Verb;
use verbhost_sdk::{CallInfo, Completion, Plugin, PluginInfo, VerbError, export_plugin, host};

struct MyVerb;

impl Plugin for MyVerb {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["{{verb}}".into()],
        }
    }

    fn run(verb: &str, call: &CallInfo) -> Result<Completion, VerbError> {
        let verb = Verb::parse(verb)?;
        verb.expect_name("{{verb}}")?;
        let mut props = verb.props();
        let greeting = props.string("greeting")?.unwrap_or_else(|| "hello".into());
        let event_hook = props.hook("eventHook")?;
        let action_hook = props.hook("actionHook")?;
        props.finish()?; // unknown properties are errors that name them

        host::info(&format!("{greeting}, {}", call.remote_party.uri));
        if let Some(hook) = &event_hook {
            host::emit_event(hook, &json!({ "event": "greeted", "greeting": greeting }))
                .map_err(|e| VerbError::Failed(e.message()))?;
        }
        Ok(Completion {
            event: "GREETED".into(),
            payload: json!({ "greeting": greeting }).to_string(),
            action_hook,
            call_left: false,
        })
    }
}

export_plugin!(MyVerb);
