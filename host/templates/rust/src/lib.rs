//! The `{{verb}}` verb: reads a greeting, logs it, posts it to the eventHook and completes.

use verbhost_sdk::serde_json::json;
use verbhost_sdk::verb::Verb;
use verbhost_sdk::{
    CallInfo, Completion, Plugin, PluginInfo, VerbError, Webhook, export_plugin, host,
};

struct MyVerb;

/// The verb as `parse` read it: what `run` acts on.
struct Greet {
    greeting: String,
    event_hook: Option<Webhook>,
    action_hook: Option<Webhook>,
}

impl Plugin for MyVerb {
    type Verb = Greet;

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            verbs: vec!["{{verb}}".into()],
        }
    }

    /// Reads the verb without acting on a call. The host calls it for every verb of an
    /// application before any call (a typo is refused at start), and again before `run`.
    fn parse(verb: &str) -> Result<Greet, VerbError> {
        let verb = Verb::parse(verb)?;
        verb.expect_name("{{verb}}")?;
        // Unknown properties are refused first, naming them.
        let mut props = verb.props_known(&["greeting", "eventHook", "actionHook"])?;
        let greeting = props.string("greeting")?.unwrap_or_else(|| "hello".into());
        let event_hook = props.hook("eventHook")?;
        let action_hook = props.hook("actionHook")?;
        props.finish()?;
        Ok(Greet {
            greeting,
            event_hook,
            action_hook,
        })
    }

    fn run(verb: Greet, call: &CallInfo) -> Result<Completion, VerbError> {
        let greeting = verb.greeting;
        host::info(&format!("{greeting}, {}", call.remote_party.uri));
        if let Some(hook) = &verb.event_hook {
            host::emit_event(hook, &json!({ "event": "greeted", "greeting": greeting }))
                .map_err(|e| VerbError::Failed(e.message()))?;
        }
        Ok(Completion {
            event: "GREETED".into(),
            payload: json!({ "greeting": greeting }).to_string(),
            action_hook: verb.action_hook,
            call_left: false,
        })
    }
}

export_plugin!(MyVerb);
