//! Reading a verb's JSON: both jambonz forms, typed properties, and errors that name the
//! property at fault.
//!
//! ```
//! use verbhost_sdk::verb::Verb;
//! let verb = Verb::parse(r#"{"sip:refer": {"referTo": +4930123, "colour": "red"}}"#).unwrap();
//! assert_eq!(verb.name(), "sip:refer");
//! let mut props = verb.props();
//! assert_eq!(props.phone_or_string("referTo").unwrap().as_deref(), Some("+4930123"));
//! assert_eq!(
//!     props.finish().unwrap_err().message(),
//!     "sip:refer: unknown property colour"
//! );
//! ```

use serde_json::{Map, Value};

use crate::{Header, VerbError, Webhook};

/// A verb: its name and its properties.
#[derive(Debug, Clone)]
pub struct Verb {
    name: String,
    props: Map<String, Value>,
}

impl Verb {
    /// Parses a verb in either jambonz form: `{"verb": "sip:refer", ...}` or
    /// `{"sip:refer": {...}}`. Phone numbers written without quotes are accepted (see
    /// [`verbhost_common::json`]).
    pub fn parse(json: &str) -> Result<Verb, VerbError> {
        let value = verbhost_common::json::parse(json)
            .map_err(|e| VerbError::InvalidVerb(format!("verb is not valid JSON: {e}")))?;
        let (name, props) = verbhost_common::verb::split(value)
            .map_err(|e| VerbError::InvalidVerb(e.to_string()))?;
        Ok(Verb { name, props })
    }

    /// The verb's name, e.g. `sip:refer`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails unless the verb is called `name`.
    pub fn expect_name(&self, name: &str) -> Result<(), VerbError> {
        if self.name == name {
            Ok(())
        } else {
            Err(VerbError::InvalidVerb(format!(
                "this plugin implements {name}, not {}",
                self.name
            )))
        }
    }

    /// A reader over the properties that first refuses every property not in `known` (`_`,
    /// jambonz's comment key, excepted), so that a typo is reported as what it is:
    /// `{"referto": "+4930123"}` gives `sip:refer: unknown property referto`, not
    /// `referTo: missing`. List every property the verb has; [`Props::finish`] still refuses
    /// what was not read.
    ///
    /// ```
    /// use verbhost_sdk::verb::Verb;
    /// let verb = Verb::parse(r#"{"verb": "sip:refer", "referto": "+4930123"}"#).unwrap();
    /// assert_eq!(
    ///     verb.props_known(&["referTo"]).unwrap_err().message(),
    ///     "sip:refer: unknown property referto"
    /// );
    /// ```
    pub fn props_known(&self, known: &[&str]) -> Result<Props<'_>, VerbError> {
        match verbhost_common::verb::first_unknown(&self.props, known) {
            Some(unknown) => Err(unknown_property(&self.name, unknown)),
            None => Ok(self.props()),
        }
    }

    /// A reader over the properties that remembers which ones were read, so that
    /// [`Props::finish`] can refuse the rest. Prefer [`Verb::props_known`], which reports an
    /// unknown property before a missing one.
    pub fn props(&self) -> Props<'_> {
        Props {
            verb: &self.name,
            map: &self.props,
            read: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Reads a verb's properties one by one. Every reader returns `Ok(None)` when the property is
/// absent (or `null`) and an error naming the verb and the property when it has the wrong type.
#[derive(Debug)]
pub struct Props<'a> {
    verb: &'a str,
    map: &'a Map<String, Value>,
    read: Vec<&'a str>,
    warnings: Vec<String>,
}

impl<'a> Props<'a> {
    /// An error about property `key`.
    pub fn error(&self, key: &str, message: impl std::fmt::Display) -> VerbError {
        VerbError::InvalidVerb(format!("{}: {key}: {message}", self.verb))
    }

    fn take(&mut self, key: &'a str) -> Option<&'a Value> {
        self.read.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional string.
    pub fn string(&mut self, key: &'a str) -> Result<Option<String>, VerbError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(key, format!("expected a string, got {}", kind(other)))),
        }
    }

    /// An optional string that may also be written as a number, the way phone numbers are
    /// (`"referTo": +4930123` or `"referTo": 4930123`).
    pub fn phone_or_string(&mut self, key: &'a str) -> Result<Option<String>, VerbError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => Ok(Some(n.to_string())),
                None => Err(self.error(
                    key,
                    format!("the number {n} is not a phone number; write the target as a string"),
                )),
            },
            Some(other) => Err(self.error(
                key,
                format!("expected a string or a phone number, got {}", kind(other)),
            )),
        }
    }

    /// An optional whole number within `range`.
    pub fn integer(
        &mut self,
        key: &'a str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, VerbError> {
        self.whole(key, &range, "a whole number")
    }

    /// An optional whole number of seconds within `range`, returned in milliseconds.
    pub fn seconds(
        &mut self,
        key: &'a str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<u32>, VerbError> {
        let wide = u64::from(*range.start())..=u64::from(*range.end());
        let Some(secs) = self.whole(key, &wide, "a whole number of seconds")? else {
            return Ok(None);
        };
        // Within `range`, so it fits a u32; only ranges past 4294967 s overflow the product.
        match u32::try_from(secs).ok().and_then(|s| s.checked_mul(1000)) {
            Some(ms) => Ok(Some(ms)),
            None => Err(self.error(key, format!("{secs} seconds is too long in milliseconds"))),
        }
    }

    /// An optional whole number within `range`; `what` names it in the error.
    fn whole(
        &mut self,
        key: &'a str,
        range: &std::ops::RangeInclusive<u64>,
        what: &str,
    ) -> Result<Option<u64>, VerbError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(self.error(
                key,
                format!(
                    "expected {what} from {} to {}, got {value}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// An optional webhook: a URL string, or `{url, method, username, password}`.
    ///
    /// Cognigy's `sip:refer` page shows the actionHook object with the payload's fields
    /// (`referStatus`, `final_referred_call_status`, `eventHook`) inside it. Those keys are
    /// ignored with a warning, so the documented example runs; any other unknown key is an
    /// error.
    pub fn hook(&mut self, key: &'a str) -> Result<Option<Webhook>, VerbError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let (hook, ignored) = parse_hook(value).map_err(|why| self.error(key, why))?;
        for name in ignored {
            self.warnings.push(format!(
                "{}: {key}.{name} describes the hook's payload, not the hook; ignored",
                self.verb
            ));
        }
        Ok(Some(hook))
    }

    /// Optional extra SIP headers: an object of header names to values. Strings, numbers and
    /// booleans are accepted as values (`"Refer-Sub": false`). Each header passes
    /// [`verbhost_common::headers::check_custom`], and no name may be given twice in any
    /// letter case.
    pub fn headers(&mut self, key: &'a str) -> Result<Vec<Header>, VerbError> {
        let Some(value) = self.take(key) else {
            return Ok(Vec::new());
        };
        let Value::Object(map) = value else {
            return Err(self.error(
                key,
                format!(
                    "expected an object of header names to values, got {}",
                    kind(value)
                ),
            ));
        };
        let mut headers: Vec<Header> = Vec::with_capacity(map.len());
        for (name, value) in map {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.error(
                        key,
                        format!(
                            "{name}: expected a string, number or boolean, got {}",
                            kind(other)
                        ),
                    ));
                }
            };
            verbhost_common::headers::check_custom(name, &value).map_err(|e| self.error(key, e))?;
            if headers
                .iter()
                .any(|h| verbhost_common::headers::same_name(&h.name, name))
            {
                return Err(self.error(key, format!("header {name} is given twice")));
            }
            headers.push(Header {
                name: name.clone(),
                value,
            });
        }
        Ok(headers)
    }

    /// Fails on the first property that was not read (`_`, jambonz's comment key, excepted);
    /// otherwise returns the warnings collected while reading, for the plugin to log.
    pub fn finish(self) -> Result<Vec<String>, VerbError> {
        match verbhost_common::verb::first_unknown(self.map, &self.read) {
            Some(unknown) => Err(unknown_property(self.verb, unknown)),
            None => Ok(self.warnings),
        }
    }
}

/// `VERB: unknown property NAME`.
fn unknown_property(verb: &str, name: &str) -> VerbError {
    VerbError::InvalidVerb(format!("{verb}: unknown property {name}"))
}

/// Parses a hook; also returns the documented-by-mistake keys it ignored.
fn parse_hook(
    value: &Value,
) -> Result<(Webhook, Vec<&'static str>), verbhost_common::verb::HookError> {
    let (hook, ignored) = verbhost_common::verb::parse_hook(value)?;
    let hook = Webhook {
        url: hook.url,
        method: hook.method,
        username: hook.username,
        password: hook.password,
    };
    Ok((hook, ignored))
}

pub use verbhost_common::verb::kind;

impl VerbError {
    /// The error's text, without the variant name.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidVerb(why) | Self::Failed(why) => why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(result: Result<impl std::fmt::Debug, VerbError>) -> String {
        match result {
            Err(VerbError::InvalidVerb(why)) => why,
            other => panic!("expected InvalidVerb, got {other:?}"),
        }
    }

    #[test]
    fn both_jambonz_forms_give_the_same_verb() {
        let flat = Verb::parse(r#"{"verb":"sip:refer","referTo":"x"}"#).unwrap();
        let nested = Verb::parse(r#"{"sip:refer":{"referTo":"x"}}"#).unwrap();
        assert_eq!(flat.name(), "sip:refer");
        assert_eq!(nested.name(), "sip:refer");
        assert_eq!(flat.props, nested.props);
    }

    #[test]
    fn malformed_verbs_name_the_cause() {
        assert!(invalid(Verb::parse("{")).starts_with("verb is not valid JSON: EOF"));
        assert_eq!(
            invalid(Verb::parse("[]")),
            "a verb is a JSON object, got an array"
        );
        assert_eq!(
            invalid(Verb::parse(r#"{"verb": 7}"#)),
            "verb: expected the verb name as a string, got a number"
        );
        assert_eq!(
            invalid(Verb::parse(r#"{"sip:refer": "x"}"#)),
            "sip:refer: expected the verb's properties as an object, got a string"
        );
        assert!(invalid(Verb::parse(r#"{"a": {}, "b": {}}"#)).contains("\"verb\" property"));
        assert!(invalid(Verb::parse("{}")).contains("\"verb\" property"));
    }

    #[test]
    fn property_readers_check_types() {
        let verb = Verb::parse(
            r#"{"verb":"v","s":1,"p":-3,"f":1.5,"h":[],"t":99,"hk":{"url":"/a","x":1},"hs":{"X-A":null}}"#,
        )
        .unwrap();
        let mut p = verb.props();
        assert_eq!(
            invalid(p.string("s")),
            "v: s: expected a string, got a number"
        );
        assert!(invalid(p.phone_or_string("p")).contains("-3 is not a phone number"));
        assert!(invalid(p.phone_or_string("f")).contains("1.5 is not a phone number"));
        assert_eq!(
            invalid(p.phone_or_string("h")),
            "v: h: expected a string or a phone number, got an array"
        );
        assert_eq!(
            invalid(p.seconds("t", 1..=60)),
            "v: t: expected a whole number of seconds from 1 to 60, got 99"
        );
        assert_eq!(invalid(p.hook("hk")), "v: hk: unknown property x");
        assert_eq!(
            invalid(p.headers("hs")),
            "v: hs: X-A: expected a string, number or boolean, got null"
        );
        assert_eq!(p.string("absent").unwrap(), None);
    }

    #[test]
    fn hooks_take_both_forms() {
        let verb = Verb::parse(
            r#"{"verb":"v","a":"https://app.example/refer","b":{"url":"/status","method":"get","username":"u","password":"p"},"c":"","d":{"method":"POST"},"e":{"url":"/x","method":"PUT"}}"#,
        )
        .unwrap();
        let mut p = verb.props();
        let a = p.hook("a").unwrap().unwrap();
        assert_eq!(
            (a.url.as_str(), a.method.as_str()),
            ("https://app.example/refer", "POST")
        );
        let b = p.hook("b").unwrap().unwrap();
        assert_eq!(
            (
                b.url.as_str(),
                b.method.as_str(),
                b.username.as_deref(),
                b.password.as_deref()
            ),
            ("/status", "GET", Some("u"), Some("p"))
        );
        assert_eq!(invalid(p.hook("c")), "v: c: the URL is empty");
        assert_eq!(invalid(p.hook("d")), "v: d: url: missing");
        assert_eq!(
            invalid(p.hook("e")),
            "v: e: method: expected GET or POST, got \"PUT\""
        );
    }

    #[test]
    fn cognigy_documented_payload_keys_in_a_hook_are_ignored_with_a_warning() {
        let verb = Verb::parse(
            r#"{"verb":"sip:refer","actionHook":{"url":"/action","referStatus":"202","final_referred_call_status":"200","eventHook":{"event":"transfer-status"}}}"#,
        )
        .unwrap();
        let mut p = verb.props();
        assert_eq!(p.hook("actionHook").unwrap().unwrap().url, "/action");
        assert_eq!(
            p.finish().unwrap(),
            [
                "sip:refer: actionHook.referStatus describes the hook's payload, not the hook; ignored",
                "sip:refer: actionHook.final_referred_call_status describes the hook's payload, not the hook; ignored",
                "sip:refer: actionHook.eventHook describes the hook's payload, not the hook; ignored",
            ]
        );
        let verb = Verb::parse(r#"{"verb":"v","h":{"url":"/a","referstatus":"202"}}"#).unwrap();
        assert_eq!(
            invalid(verb.props().hook("h")),
            "v: h: unknown property referstatus"
        );
    }

    #[test]
    fn headers_are_checked_and_unique() {
        let verb = Verb::parse(
            r#"{"verb":"v","ok":{"X-Id":42,"Refer-Sub":false},"dup":{"X-A":"1","x-a":"2"},"own":{"CSeq":"1 REFER"},"inj":{"X-A":"1\r\nVia: x"}}"#,
        )
        .unwrap();
        let mut p = verb.props();
        let ok = p.headers("ok").unwrap();
        assert_eq!(
            ok.iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect::<Vec<_>>(),
            [("Refer-Sub", "false"), ("X-Id", "42")]
        );
        assert_eq!(
            invalid(p.headers("dup")),
            "v: dup: header x-a is given twice"
        );
        assert_eq!(
            invalid(p.headers("own")),
            "v: own: header CSeq is set by the SIP stack and cannot be given in `headers`"
        );
        assert_eq!(
            invalid(p.headers("inj")),
            "v: inj: header X-A: value contains a line break"
        );
    }

    #[test]
    fn props_known_reports_an_unknown_property_before_anything_is_read() {
        let verb = Verb::parse(r#"{"verb":"v","referto":"x","_":"c"}"#).unwrap();
        assert_eq!(
            invalid(verb.props_known(&["referTo"])),
            "v: unknown property referto"
        );
        let verb = Verb::parse(r#"{"verb":"v","referTo":"x","_":"c"}"#).unwrap();
        let mut p = verb.props_known(&["referTo"]).unwrap();
        assert_eq!(p.string("referTo").unwrap().as_deref(), Some("x"));
        assert!(p.finish().unwrap().is_empty());
    }

    #[test]
    fn finish_refuses_unread_properties_but_not_the_comment_key() {
        let verb = Verb::parse(r#"{"verb":"v","a":"1","_":"comment"}"#).unwrap();
        let mut p = verb.props();
        p.string("a").unwrap();
        assert!(p.finish().unwrap().is_empty());
        let verb = Verb::parse(r#"{"verb":"v","a":"1","zz":2}"#).unwrap();
        let mut p = verb.props();
        p.string("a").unwrap();
        assert_eq!(invalid(p.finish()), "v: unknown property zz");
    }
}
