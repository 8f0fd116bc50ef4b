//! The shape of verbs and hooks in an application, shared by the host (which picks a plugin
//! by verb name and reads a failed verb's actionHook) and the guest SDK (which reads the
//! verb's properties): one reading of both jambonz verb forms and of the hook forms.

use serde_json::{Map, Value};

/// Splits a verb in either jambonz form, `{"verb": "sip:refer", ...}` or
/// `{"sip:refer": {...}}`, into its name and its properties.
pub fn split(value: Value) -> Result<(String, Map<String, Value>), String> {
    let Value::Object(mut object) = value else {
        return Err(format!("a verb is a JSON object, got {}", kind(&value)));
    };
    if let Some(name) = object.remove("verb") {
        let Value::String(name) = name else {
            return Err(format!(
                "verb: expected the verb name as a string, got {}",
                kind(&name)
            ));
        };
        if name.is_empty() {
            return Err("verb: the verb name is empty".into());
        }
        return Ok((name, object));
    }
    let mut entries = object.into_iter();
    match (entries.next(), entries.next()) {
        (Some((name, Value::Object(props))), None) => Ok((name, props)),
        (Some((name, other)), None) => Err(format!(
            "{name}: expected the verb's properties as an object, got {}",
            kind(&other)
        )),
        _ => Err(
            "a verb needs a \"verb\" property naming it, or must be an object with one \
             property named after the verb"
                .into(),
        ),
    }
}

/// A webhook as an application writes it: a URL string, or `{url, method, username,
/// password}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Absolute, or relative to the application's base URL.
    pub url: String,
    /// `POST` or `GET`, upper case.
    pub method: String,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
}

/// Keys that Cognigy's documentation places inside the actionHook object by mistake.
const DOCUMENTED_PAYLOAD_KEYS: [&str; 3] =
    ["referStatus", "final_referred_call_status", "eventHook"];

/// Parses a hook; also returns the documented-by-mistake keys it ignored (Cognigy's
/// sip:refer example puts payload fields inside the actionHook object).
pub fn parse_hook(value: &Value) -> Result<(Hook, Vec<&'static str>), String> {
    let check_url = |url: &str| {
        if url.trim().is_empty() {
            Err("the URL is empty".to_owned())
        } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!(
                "the URL {url:?} contains white space or control characters"
            ))
        } else {
            Ok(url.to_owned())
        }
    };
    let object = match value {
        Value::String(url) => {
            let hook = Hook {
                url: check_url(url)?,
                method: "POST".into(),
                username: None,
                password: None,
            };
            return Ok((hook, Vec::new()));
        }
        Value::Object(object) => object,
        other => {
            return Err(format!(
                "expected a URL or an object with url, method, username, password; got {}",
                kind(other)
            ));
        }
    };
    let text = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key}: expected a string, got {}", kind(other))),
    };
    if let Some(unknown) = object.keys().find(|k| {
        !matches!(k.as_str(), "url" | "method" | "username" | "password")
            && !DOCUMENTED_PAYLOAD_KEYS.contains(&k.as_str())
    }) {
        return Err(format!("unknown property {unknown}"));
    }
    let ignored = DOCUMENTED_PAYLOAD_KEYS
        .into_iter()
        .filter(|k| object.contains_key(*k))
        .collect();
    let url = text("url")?.ok_or("url: missing")?;
    let method = match text("method")? {
        None => "POST".to_owned(),
        Some(m) if m.eq_ignore_ascii_case("POST") || m.eq_ignore_ascii_case("GET") => {
            m.to_ascii_uppercase()
        }
        Some(m) => return Err(format!("method: expected GET or POST, got {m:?}")),
    };
    let hook = Hook {
        url: check_url(&url).map_err(|e| format!("url: {e}"))?,
        method,
        username: text("username")?,
        password: text("password")?,
    };
    Ok((hook, ignored))
}

/// The JSON type of `value`, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_verb_forms_split() {
        let (name, props) = split(json!({"verb": "sip:refer", "referTo": "x"})).unwrap();
        assert_eq!((name.as_str(), props.len()), ("sip:refer", 1));
        let (name, props) = split(json!({"sip:refer": {"referTo": "x"}})).unwrap();
        assert_eq!(
            (name.as_str(), props["referTo"].as_str()),
            ("sip:refer", Some("x"))
        );
        assert_eq!(
            split(json!([])).unwrap_err(),
            "a verb is a JSON object, got an array"
        );
        assert_eq!(
            split(json!({"verb": 3})).unwrap_err(),
            "verb: expected the verb name as a string, got a number"
        );
        assert!(
            split(json!({"a": {}, "b": {}}))
                .unwrap_err()
                .contains("one property")
        );
    }

    #[test]
    fn hooks_parse_in_both_forms() {
        let (hook, ignored) = parse_hook(&json!("/action")).unwrap();
        assert_eq!(
            (hook.url.as_str(), hook.method.as_str()),
            ("/action", "POST")
        );
        assert!(ignored.is_empty());
        let (hook, ignored) =
            parse_hook(&json!({"url": "/a", "method": "get", "username": "u", "referStatus": 1}))
                .unwrap();
        assert_eq!(
            (hook.method.as_str(), hook.username.as_deref(), ignored),
            ("GET", Some("u"), vec!["referStatus"])
        );
        assert_eq!(
            parse_hook(&json!({"url": "/a", "x": 1})).unwrap_err(),
            "unknown property x"
        );
        assert_eq!(
            parse_hook(&json!({"method": "POST"})).unwrap_err(),
            "url: missing"
        );
    }
}
