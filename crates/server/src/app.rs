//! Applications: the JSON array of verbs a call runs, from a file, a call hook or an
//! actionHook's answer.

use serde_json::Value;
use verbhost_common::json::JsonError;
use verbhost_common::verb;
use verbhost_runtime::Webhook;

/// One verb of an application.
#[derive(Debug, Clone)]
pub struct AppVerb {
    /// The verb name, which picks the plugin.
    pub name: String,
    /// The verb's JSON as the plugin receives it.
    pub json: String,
    /// The verb's `id`, echoed as `verb_id` when the host reports a failure itself.
    pub id: Option<String>,
    /// The verb's actionHook as the host reads it, so a verb whose plugin fails still gets
    /// its one actionHook; `Err` names why it does not parse (the plugin reports that too).
    pub action_hook: Option<Result<Webhook, verb::HookError>>,
    /// Every hook of the verb as the host reads it: the top-level properties named `...Hook`
    /// (jambonz's convention: `actionHook`, `eventHook`, ...), each with its name, checked
    /// before any call whether or not the plugin checks verbs itself.
    pub hooks: Vec<(String, Result<Webhook, verb::HookError>)>,
}

/// Reads a hook the way the host delivers it.
fn read_hook(value: &Value) -> Result<Webhook, verb::HookError> {
    verb::parse_hook(value).map(|(hook, _)| Webhook {
        url: hook.url,
        method: hook.method,
        username: hook.username,
        password: hook.password,
    })
}

/// Why an application cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// Not JSON at all.
    #[error("the application is not valid JSON: {0}")]
    Json(JsonError),
    /// JSON, but not an array of verbs.
    #[error("the application must be a JSON array of verbs, got {0}")]
    NotArray(&'static str),
    /// An element is not a verb.
    #[error("verb {index} of the application: {why}")]
    Verb {
        index: usize,
        why: verb::VerbShapeError,
    },
}

/// Parses an application: a JSON array whose elements are verbs in either jambonz form.
/// Phone numbers written without quotes are accepted, as in verbs.
pub fn parse(bytes: &[u8]) -> Result<Vec<AppVerb>, AppError> {
    let text = String::from_utf8_lossy(bytes);
    let value = verbhost_common::json::parse(&text).map_err(AppError::Json)?;
    let Value::Array(items) = value else {
        return Err(AppError::NotArray(verb::kind(&value)));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let json = item.to_string();
            let (name, props) = verb::split(item).map_err(|why| AppError::Verb { index, why })?;
            let id = match props.get("id") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let action_hook = props.get("actionHook").map(read_hook);
            let hooks = props
                .iter()
                .filter(|(key, value)| key.ends_with("Hook") && !value.is_null())
                .map(|(key, value)| (key.clone(), read_hook(value)))
                .collect();
            Ok(AppVerb {
                name,
                json,
                id,
                action_hook,
                hooks,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_and_unquoted_numbers() {
        let app = parse(
            br#"[{"verb":"sip:refer","referTo":+4930123,"actionHook":"/a","id":"t1"},
                 {"sip:refer":{"referTo":"sip:x@y"}}]"#,
        )
        .unwrap();
        assert_eq!(app.len(), 2);
        assert_eq!(app[0].name, "sip:refer");
        assert_eq!(app[0].id.as_deref(), Some("t1"));
        assert_eq!(app[0].action_hook.clone().unwrap().unwrap().url, "/a");
        assert!(
            app[0].json.contains(r#""referTo":"+4930123""#),
            "{}",
            app[0].json
        );
        assert_eq!(app[1].name, "sip:refer");
        assert!(app[1].action_hook.is_none());
        let app = parse(br#"[{"verb":"v","actionHook":"/a","eventHook":{"uri":"/e"},"hook":"/x","statusHook":null}]"#).unwrap();
        let hooks: Vec<(&str, Result<&str, String>)> = app[0]
            .hooks
            .iter()
            .map(|(name, hook)| {
                (
                    name.as_str(),
                    hook.as_ref()
                        .map(|h| h.url.as_str())
                        .map_err(|e| e.to_string()),
                )
            })
            .collect();
        assert_eq!(
            hooks,
            [
                ("actionHook", Ok("/a")),
                ("eventHook", Err("unknown property uri".to_string()))
            ]
        );
    }

    #[test]
    fn bad_applications_name_the_cause() {
        let err = parse(b"{\"verb\":\"x\"}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the application must be a JSON array of verbs, got an object"
        );
        let err = parse(b"[{\"verb\":\"x\"},").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the application is not valid JSON"),
            "{err}"
        );
        let err = parse(b"[{\"verb\":\"x\"}, 7]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "verb 1 of the application: a verb is a JSON object, got a number"
        );
        assert!(parse(b"[]").unwrap().is_empty());
        // Not UTF-8: still a clear error, no panic.
        assert!(parse(&[0xff, 0xfe, b'[']).is_err());
    }
}
