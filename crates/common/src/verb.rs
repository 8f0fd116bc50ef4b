//! The shape of verbs and hooks in an application, shared by the host (which picks a plugin
//! by verb name and reads a failed verb's actionHook) and the guest SDK (which reads the
//! verb's properties): one reading of both jambonz verb forms and of the hook forms.

use serde_json::{Map, Value};

/// Why a JSON value is not a verb in either jambonz form. The text names the property at
/// fault and what was found instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbShapeError {
    /// The verb is not a JSON object (the JSON type found).
    #[error("a verb is a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// `verb` is not a string (the JSON type found).
    #[error("verb: expected the verb name as a string, got {0}")]
    NameNotAString(&'static str),
    /// `verb` is an empty string.
    #[error("verb: the verb name is empty")]
    EmptyName,
    /// The `{"name": {...}}` form, but the value is not an object.
    #[error("{name}: expected the verb's properties as an object, got {found}")]
    PropertiesNotAnObject {
        /// The verb's name (the object's only key).
        name: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// Neither a `verb` property nor exactly one property named after the verb.
    #[error(
        "a verb needs a \"verb\" property naming it, or must be an object with one property \
         named after the verb"
    )]
    NoName,
}

/// Splits a verb in either jambonz form, `{"verb": "sip:refer", ...}` or
/// `{"sip:refer": {...}}`, into its name and its properties.
pub fn split(value: Value) -> Result<(String, Map<String, Value>), VerbShapeError> {
    let Value::Object(mut object) = value else {
        return Err(VerbShapeError::NotAnObject(kind(&value)));
    };
    if let Some(name) = object.remove("verb") {
        let Value::String(name) = name else {
            return Err(VerbShapeError::NameNotAString(kind(&name)));
        };
        if name.is_empty() {
            return Err(VerbShapeError::EmptyName);
        }
        return Ok((name, object));
    }
    let mut entries = object.into_iter();
    match (entries.next(), entries.next()) {
        (Some((name, Value::Object(props))), None) => Ok((name, props)),
        (Some((name, other)), None) => Err(VerbShapeError::PropertiesNotAnObject {
            name,
            found: kind(&other),
        }),
        _ => Err(VerbShapeError::NoName),
    }
}

/// The comment key jambonz allows in every verb: ignored, never an unknown property.
pub const COMMENT_KEY: &str = "_";

/// The first property of `props` that is neither in `known` nor the comment key `_`: the
/// unknown property a verb reader reports (a typo such as `referto` for `referTo`). Readers
/// call it before reading anything, so an unknown property is reported before a missing or
/// mistyped one.
pub fn first_unknown<'a>(props: &'a Map<String, Value>, known: &[&str]) -> Option<&'a str> {
    props
        .keys()
        .map(String::as_str)
        .find(|key| *key != COMMENT_KEY && !known.contains(key))
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

/// Why a hook cannot be read. The text names the hook property at fault; the caller adds the
/// verb and the hook's own name (`sip:refer: actionHook: url: missing`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// Neither a URL string nor an object (the JSON type found).
    #[error("expected a URL or an object with url, method, username, password; got {0}")]
    NotAHook(&'static str),
    /// The hook is a URL string that cannot be used.
    #[error("{0}")]
    Url(UrlError),
    /// The object's `url` cannot be used.
    #[error("url: {0}")]
    UrlProperty(UrlError),
    /// The object has no `url`.
    #[error("url: missing")]
    MissingUrl,
    /// A property of the object is not a string.
    #[error("{property}: expected a string, got {found}")]
    NotAString {
        /// `url`, `method`, `username` or `password`.
        property: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// `method` is neither GET nor POST (the method given).
    #[error("method: expected GET or POST, got {0:?}")]
    Method(String),
    /// The object has a property a hook does not have (its name).
    #[error("unknown property {0}")]
    UnknownProperty(String),
}

/// Why a hook's URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Empty, or only white space.
    #[error("the URL is empty")]
    Empty,
    /// It contains white space or control characters (the URL).
    #[error("the URL {0:?} contains white space or control characters")]
    Unsafe(String),
}

/// Keys that Cognigy's documentation places inside the actionHook object by mistake.
const DOCUMENTED_PAYLOAD_KEYS: [&str; 3] =
    ["referStatus", "final_referred_call_status", "eventHook"];

/// The hook properties, in the order they are read.
const HOOK_PROPERTIES: [&str; 4] = ["url", "method", "username", "password"];

/// Checks a hook URL.
fn check_url(url: &str) -> Result<String, UrlError> {
    if url.trim().is_empty() {
        Err(UrlError::Empty)
    } else if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(UrlError::Unsafe(url.to_owned()))
    } else {
        Ok(url.to_owned())
    }
}

/// Parses a hook; also returns the documented-by-mistake keys it ignored (Cognigy's
/// sip:refer example puts payload fields inside the actionHook object).
pub fn parse_hook(value: &Value) -> Result<(Hook, Vec<&'static str>), HookError> {
    let object = match value {
        Value::String(url) => {
            let hook = Hook {
                url: check_url(url).map_err(HookError::Url)?,
                method: "POST".into(),
                username: None,
                password: None,
            };
            return Ok((hook, Vec::new()));
        }
        Value::Object(object) => object,
        other => return Err(HookError::NotAHook(kind(other))),
    };
    let text = |property: &'static str| match object.get(property) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(HookError::NotAString {
            property,
            found: kind(other),
        }),
    };
    if let Some(unknown) = object.keys().find(|k| {
        !HOOK_PROPERTIES.contains(&k.as_str()) && !DOCUMENTED_PAYLOAD_KEYS.contains(&k.as_str())
    }) {
        return Err(HookError::UnknownProperty(unknown.clone()));
    }
    let ignored = DOCUMENTED_PAYLOAD_KEYS
        .into_iter()
        .filter(|k| object.contains_key(*k))
        .collect();
    let url = text("url")?.ok_or(HookError::MissingUrl)?;
    let method = match text("method")? {
        None => "POST".to_owned(),
        Some(m) if m.eq_ignore_ascii_case("POST") || m.eq_ignore_ascii_case("GET") => {
            m.to_ascii_uppercase()
        }
        Some(m) => return Err(HookError::Method(m)),
    };
    let hook = Hook {
        url: check_url(&url).map_err(HookError::UrlProperty)?,
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
            split(json!([])).unwrap_err().to_string(),
            "a verb is a JSON object, got an array"
        );
        assert_eq!(
            split(json!({"verb": 3})).unwrap_err(),
            VerbShapeError::NameNotAString("a number")
        );
        assert_eq!(
            split(json!({"verb": 3})).unwrap_err().to_string(),
            "verb: expected the verb name as a string, got a number"
        );
        assert_eq!(
            split(json!({"sip:refer": "x"})).unwrap_err().to_string(),
            "sip:refer: expected the verb's properties as an object, got a string"
        );
        assert_eq!(
            split(json!({"a": {}, "b": {}})).unwrap_err().to_string(),
            "a verb needs a \"verb\" property naming it, or must be an object with one \
             property named after the verb"
        );
    }

    #[test]
    fn the_first_unknown_property_is_found_and_the_comment_key_is_not_one() {
        let props = json!({"referTo": "x", "_": "note", "eventhook": "/e"});
        let Value::Object(props) = props else {
            unreachable!("an object")
        };
        assert_eq!(
            first_unknown(&props, &["referTo", "eventHook"]),
            Some("eventhook")
        );
        assert_eq!(first_unknown(&props, &["referTo", "eventhook"]), None);
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
            HookError::UnknownProperty("x".into())
        );
        let text = |value: Value| parse_hook(&value).unwrap_err().to_string();
        assert_eq!(text(json!({"url": "/a", "x": 1})), "unknown property x");
        assert_eq!(text(json!({"method": "POST"})), "url: missing");
        assert_eq!(text(json!("")), "the URL is empty");
        assert_eq!(text(json!({"url": " "})), "url: the URL is empty");
        assert_eq!(
            text(json!("/a b")),
            "the URL \"/a b\" contains white space or control characters"
        );
        assert_eq!(
            text(json!({"url": 1})),
            "url: expected a string, got a number"
        );
        assert_eq!(
            text(json!({"url": "/a", "method": "PUT"})),
            "method: expected GET or POST, got \"PUT\""
        );
        assert_eq!(
            text(json!(7)),
            "expected a URL or an object with url, method, username, password; got a number"
        );
    }
}
