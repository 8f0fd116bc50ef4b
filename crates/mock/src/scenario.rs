//! The scenario file format (JSON). See the README's "Mock host scenarios" section for a
//! walk-through; every field is documented here.

use serde::Deserialize;
use serde_json::Value;

use verbhost_runtime::{CallInfo, Direction, Identity};

/// One scripted run of a verb and what it must produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shown in reports.
    pub name: String,
    /// Free text for readers of the file.
    #[serde(default)]
    pub description: String,
    /// The call the verb runs on; every field has a default.
    #[serde(default)]
    pub call: CallSpec,
    /// The verb as JSON. Give this or `verb_text`.
    #[serde(default)]
    pub verb: Option<Value>,
    /// The verb as raw text, for input that is not valid JSON (such as jambonz's unquoted
    /// `+49...` numbers, or malformed verbs).
    #[serde(default)]
    pub verb_text: Option<String>,
    /// Pads the verb text with trailing spaces to this many bytes (large-input tests).
    #[serde(default)]
    pub pad_verb_to: Option<usize>,
    /// The answer to `send-refer`. Absent: the verb must not send a REFER.
    #[serde(default)]
    pub refer_response: Option<ReferResponseSpec>,
    /// What the REFER's subscription delivers, in order, to `on-notify`.
    #[serde(default)]
    pub notifies: Vec<ScriptedEvent>,
    /// What the run must produce.
    pub expect: Expect,
}

/// The call; defaults describe an inbound call from Alice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallSpec {
    /// `call-info.call-sid`.
    pub call_sid: String,
    /// `call-info.sip-call-id`.
    pub sip_call_id: String,
    /// `inbound` or `outbound`.
    pub direction: DirectionSpec,
    /// `call-info.from`.
    pub from: String,
    /// `call-info.to`.
    pub to: String,
    /// `call-info.remote-party`.
    pub remote_party: IdentitySpec,
    /// `call-info.default-domain`.
    pub default_domain: String,
}

impl Default for CallSpec {
    fn default() -> Self {
        CallSpec {
            call_sid: "8f3a1c52-6d0e-4b7a-9a51-2f6c0d9e7b10".into(),
            sip_call_id: "a84b4c76e66710@198.51.100.7".into(),
            direction: DirectionSpec::Inbound,
            from: "\"Alice\" <sip:+4930111@carrier.example>;tag=1928301774".into(),
            to: "<sip:+4930999@verbhost.example>;tag=a6c85cf".into(),
            remote_party: IdentitySpec {
                display_name: Some("Alice".into()),
                uri: "sip:+4930111@carrier.example".into(),
            },
            default_domain: "carrier.example".into(),
        }
    }
}

impl CallSpec {
    /// The contract's call-info.
    pub fn to_call_info(&self) -> CallInfo {
        CallInfo {
            call_sid: self.call_sid.clone(),
            sip_call_id: self.sip_call_id.clone(),
            direction: match self.direction {
                DirectionSpec::Inbound => Direction::Inbound,
                DirectionSpec::Outbound => Direction::Outbound,
            },
            from: self.from.clone(),
            to: self.to.clone(),
            remote_party: Identity {
                display_name: self.remote_party.display_name.clone(),
                uri: self.remote_party.uri.clone(),
            },
            default_domain: self.default_domain.clone(),
        }
    }
}

/// Call direction.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectionSpec {
    /// The far end called.
    Inbound,
    /// The platform called.
    Outbound,
}

/// A SIP identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// URI.
    pub uri: String,
}

/// The scripted answer to `send-refer`: a response, or an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferResponseSpec {
    /// Status code of the final response.
    #[serde(default)]
    pub status: Option<u16>,
    /// Reason phrase; defaults to the standard one for `status`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Response headers, e.g. `{"Refer-Sub": "false"}`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Instead of a response: `"timeout"`, `"dialog-gone"`, `{"transport": "..."}` or
    /// `{"rejected": "..."}`.
    #[serde(default)]
    pub error: Option<ReferErrorSpec>,
    /// When the response arrives, in ms since the verb started (default: at once).
    #[serde(default)]
    pub at_ms: u64,
    /// The REFER's id (its CSeq number) that NOTIFYs refer to.
    #[serde(default = "default_refer_id")]
    pub refer_id: u32,
}

fn default_refer_id() -> u32 {
    2
}

/// A scripted `send-refer` error.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferErrorSpec {
    /// Transaction timeout.
    Timeout,
    /// No dialog.
    DialogGone,
    /// Transport failure.
    Transport(String),
    /// The host refused.
    Rejected(String),
}

/// One event of the REFER's subscription: a NOTIFY or the dialog ending.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedEvent {
    /// When it arrives, in ms since the verb started. Default: right after the previous one.
    /// An event earlier than the REFER's response (a NOTIFY that beats the 202) is held and
    /// delivered by the first `on-notify`, as the real host does.
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// A NOTIFY.
    #[serde(default)]
    pub notify: Option<NotifySpec>,
    /// The peer's BYE arrives; give `{}`. As in production, the plugin learns that the
    /// dialog ended 300 ms later (the BYE grace), after the NOTIFYs that arrive within those
    /// 300 ms; events scripted later are never delivered. Only the first BYE counts.
    #[serde(default)]
    pub bye: Option<Empty>,
}

/// `{}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A NOTIFY as it arrives on the wire; the mock host parses it with the host's own code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// The Subscription-State header; absent: no such header.
    #[serde(default)]
    pub state: Option<String>,
    /// The Content-Type header; default `message/sipfrag;version=2.0`, `null` for none.
    #[serde(default = "default_content_type")]
    pub content_type: Option<String>,
    /// The body.
    #[serde(default)]
    pub body: String,
}

fn default_content_type() -> Option<String> {
    Some("message/sipfrag;version=2.0".into())
}

/// What the run must produce. Only what is given is checked.
///
/// ```json
/// "expect": {
///   "refer": {
///     "refer_to": "<sip:+4930555@carrier.example;user=phone>",
///     "referred_by": "\"Alice\" <sip:+4930111@carrier.example>",
///     "headers": { "X-Customer-Id": "4711" }
///   },
///   "events": [{ "event": "transfer-status", "call_status": "180" }],
///   "completion": {
///     "event": "TRANSFER_REFER_ERROR",
///     "payload": { "refer_status": 603, "completion_reason": "refer-rejected" },
///     "action_hook": { "url": "/refer-done", "method": "POST" },
///     "call_left": false
///   },
///   "notify_timeouts_ms": [],
///   "clock_ms": 40,
///   "logs_contain": ["603"]
/// }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The first REFER the verb asked for: an object whose keys (`refer_to`, `referred_by`,
    /// `headers`) are compared exactly, the ones left out are not compared. `refer_to` and
    /// `referred_by` are the header values as the plugin gave them (`referred_by` is `null`
    /// when it gave none); `headers` is an object of every extra header, name to value (all
    /// of them: `{}` means none). `null` instead of an object: no REFER may be sent.
    #[serde(default, deserialize_with = "present")]
    pub refer: Option<Value>,
    /// Every eventHook payload, in order, each compared exactly (as the plugin emitted it,
    /// before the host adds the call identifiers); `[]` means none may be emitted.
    #[serde(default)]
    pub events: Option<Vec<Value>>,
    /// The completion: an object whose keys are compared exactly, the ones left out are not
    /// compared: `event` (a string), `payload` (the whole actionHook payload object as the
    /// plugin returned it), `action_hook` (`{"url", "method"}` plus `"username"` and
    /// `"password"` when the hook has them, or `null` for no actionHook) and `call_left`
    /// (a boolean).
    #[serde(default)]
    pub completion: Option<Value>,
    /// The run fails instead: `{"kind": "invalid-verb", "message": "..."}` (the exact message)
    /// or `{"kind": "...", "message_contains": "..."}`, or the kind alone. Cannot be given
    /// with `completion`.
    #[serde(default)]
    pub error: Option<ErrorSpec>,
    /// The `timeout-ms` of every `on-notify` call, in order, e.g. `[40000, 40000]`.
    #[serde(default)]
    pub notify_timeouts_ms: Option<Vec<u32>>,
    /// The virtual clock, in ms since the verb started, when it completed or failed.
    #[serde(default)]
    pub clock_ms: Option<u64>,
    /// Pieces of text, each of which some log line of the plugin must contain.
    #[serde(default)]
    pub logs_contain: Vec<String>,
}

/// An expected failure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpec {
    /// `invalid-verb` (the plugin refused the verb), `failed` (the plugin gave up),
    /// `verb-too-large` (refused before the plugin ran), `trap` (a panic or a sandbox bound:
    /// the message names which), `invalid-completion` (the host refused what the plugin
    /// returned), `wall-clock`, `instantiate`, `overloaded`, or `no-plugin` (the verb is not
    /// one the plugin's `describe()` lists).
    pub kind: String,
    /// The exact message.
    #[serde(default)]
    pub message: Option<String>,
    /// Text the message must contain.
    #[serde(default)]
    pub message_contains: Option<String>,
}

/// Deserializes a field so that `null` is kept as `Some(Value::Null)` (absent stays `None`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not a valid scenario.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses a scenario from JSON text and checks it.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_json::from_str(text).map_err(|e| ScenarioError::Invalid(e.to_string()))?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Parses a scenario from a JSON value (handy with `serde_json::json!`).
    pub fn from_value(value: Value) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_json::from_value(value).map_err(|e| ScenarioError::Invalid(e.to_string()))?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Reads a scenario file: one scenario (an object) or several (an array of them).
    pub fn load_file(path: &std::path::Path) -> Result<Vec<Scenario>, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| ScenarioError::Invalid(e.to_string()))?;
        match value {
            Value::Array(items) => items.into_iter().map(Self::from_value).collect(),
            single => Ok(vec![Self::from_value(single)?]),
        }
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |why: &str| Err(ScenarioError::Invalid(format!("{}: {why}", self.name)));
        if self.verb.is_some() == self.verb_text.is_some() {
            return invalid("give exactly one of `verb` and `verb_text`");
        }
        if let Some(response) = &self.refer_response
            && response.status.is_some() == response.error.is_some()
        {
            return invalid("refer_response needs exactly one of `status` and `error`");
        }
        if let Some(status) = self.refer_response.as_ref().and_then(|r| r.status)
            && !(200..=699).contains(&status)
        {
            return invalid("refer_response.status must be a final status, 200..=699");
        }
        if self
            .notifies
            .iter()
            .any(|e| e.notify.is_some() == e.bye.is_some())
        {
            return invalid("each entry of `notifies` needs exactly one of `notify` and `bye`");
        }
        if self.expect.completion.is_some() && self.expect.error.is_some() {
            return invalid("expect either `completion` or `error`, not both");
        }
        Ok(())
    }

    /// The verb text the plugin receives.
    pub fn verb_text(&self) -> String {
        let mut text = match (&self.verb, &self.verb_text) {
            (Some(verb), _) => verb.to_string(),
            (None, Some(text)) => text.clone(),
            (None, None) => String::new(),
        };
        if let Some(size) = self.pad_verb_to {
            let pad = size.saturating_sub(text.len());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        text
    }
}
