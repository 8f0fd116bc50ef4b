//! The `sip:refer` verb: its properties, and how its targets become Refer-To and Referred-By.
//!
//! Targets are formatted so that nothing is lost on the wire (the jambonz shortcomings are in
//! the repository's reference notes):
//! - `<...>` and name-addr forms (`"Carol" <sip:carol@x>`) are sent as given;
//! - `sip:`, `sips:` and `tel:` URIs (any letter case) are sent bracketed, so URI parameters and
//!   `?Replaces=` stay part of the URI;
//! - `user@host` becomes `<sip:user@host>`;
//! - a phone number becomes `<sip:+4930123@DOMAIN;user=phone>` (global numbers) or
//!   `<sip:030123@DOMAIN>`, and a user name `<sip:carol@DOMAIN>`, where DOMAIN is the
//!   platform's configured [`CallInfo::default_domain`].
//!
//! ```
//! use verbhost_sdk::refer::format_target;
//! assert_eq!(format_target("+49 30 123", "sip.example").unwrap(), "<sip:+4930123@sip.example;user=phone>");
//! assert_eq!(format_target("SIPS:carol@x;transport=tls", "d").unwrap(), "<sips:carol@x;transport=tls>");
//! assert_eq!(format_target(r#""Carol" <sip:c@x>"#, "d").unwrap(), r#""Carol" <sip:c@x>"#);
//! ```

use crate::sip::ReferRequest;
use crate::verb::Verb;
use crate::{CallInfo, Header, Identity, VerbError, Webhook};

/// The verb's name.
pub const VERB: &str = "sip:refer";
/// Every property of the verb (besides `_`, the comment key): any other is refused as
/// unknown before a missing or mistyped one is reported.
pub const PROPERTIES: [&str; 9] = [
    "id",
    "referTo",
    "referredBy",
    "referredByDisplayName",
    "headers",
    "actionHook",
    "eventHook",
    "notifyTimeout",
    "transferTimeout",
];
/// Default for `notifyTimeout`: Timer B (32 s, the transferee's INVITE timeout) plus margin,
/// so that a transferee reporting its INVITE's timeout is still heard.
pub const DEFAULT_NOTIFY_TIMEOUT_MS: u32 = 40_000;
/// Default for `transferTimeout`, the hard cap on waiting for the outcome.
pub const DEFAULT_TRANSFER_TIMEOUT_MS: u32 = 180_000;

/// A parsed `sip:refer` verb.
#[derive(Debug, Clone)]
pub struct SipRefer {
    /// `id`: echoed as `verb_id` in the payloads.
    pub id: Option<String>,
    /// `referTo`, trimmed.
    pub refer_to: String,
    /// `referredBy`, trimmed.
    pub referred_by: Option<String>,
    /// `referredByDisplayName`.
    pub referred_by_display_name: Option<String>,
    /// `headers`, checked.
    pub headers: Vec<Header>,
    /// `actionHook`.
    pub action_hook: Option<Webhook>,
    /// `eventHook`.
    pub event_hook: Option<Webhook>,
    /// `notifyTimeout` in ms: how long to wait for a NOTIFY after the REFER is accepted and
    /// after each provisional (1xx) NOTIFY.
    pub notify_timeout_ms: u32,
    /// `transferTimeout` in ms: the most the verb waits for the outcome after acceptance,
    /// however many provisional NOTIFYs arrive. It wins over a longer `notifyTimeout` (with a
    /// warning); when not given it is [`DEFAULT_TRANSFER_TIMEOUT_MS`], or `notifyTimeout` when
    /// that is longer.
    pub transfer_timeout_ms: u32,
    /// Things in the verb that were accepted but deserve a log line.
    pub warnings: Vec<String>,
}

impl SipRefer {
    /// Parses and checks the verb. Every error names the property at fault.
    pub fn parse(json: &str) -> Result<SipRefer, VerbError> {
        let verb = Verb::parse(json)?;
        verb.expect_name(VERB)?;
        let mut p = verb.props_known(&PROPERTIES)?;
        let id = p.string("id")?;
        let refer_to = p
            .phone_or_string("referTo")?
            .ok_or_else(|| p.error("referTo", "missing (the transfer target is required)"))?
            .trim()
            .to_owned();
        let referred_by = p
            .phone_or_string("referredBy")?
            .map(|s| s.trim().to_owned());
        let referred_by_display_name = p.string("referredByDisplayName")?;
        let headers = p.headers("headers")?;
        let action_hook = p.hook("actionHook")?;
        let event_hook = p.hook("eventHook")?;
        let notify_timeout_ms = p
            .seconds("notifyTimeout", 1..=3600)?
            .unwrap_or(DEFAULT_NOTIFY_TIMEOUT_MS);
        let given_transfer_timeout_ms = p.seconds("transferTimeout", 1..=3600)?;
        let transfer_timeout_ms = transfer_timeout(notify_timeout_ms, given_transfer_timeout_ms);
        // Check the target's form now, so a bad one is reported as a verb error before
        // anything is sent. The domain only matters for bare targets.
        format_target(&refer_to, "example.invalid").map_err(|e| p.error("referTo", e))?;
        if let Some(by) = &referred_by {
            format_target(by, "example.invalid").map_err(|e| p.error("referredBy", e))?;
        }
        if let Some(name) = &referred_by_display_name {
            verbhost_common::headers::check_value("Referred-By", name)
                .map_err(|e| p.error("referredByDisplayName", e))?;
        }
        let mut warnings = p.finish()?;
        if transfer_timeout_ms < notify_timeout_ms {
            warnings.push(format!(
                "{VERB}: notifyTimeout ({} s) is longer than transferTimeout ({} s); \
                 transferTimeout caps the wait",
                notify_timeout_ms / 1000,
                transfer_timeout_ms / 1000
            ));
        }
        Ok(SipRefer {
            id,
            refer_to,
            referred_by,
            referred_by_display_name,
            headers,
            action_hook,
            event_hook,
            notify_timeout_ms,
            transfer_timeout_ms,
            warnings,
        })
    }

    /// True when the verb's headers ask for no subscription (`Refer-Sub: false`, RFC 4488).
    pub fn asks_no_subscription(&self) -> bool {
        use crate::sip::HeaderList;
        self.headers
            .header("Refer-Sub")
            .is_some_and(verbhost_common::subscription::refer_sub_is_false)
    }

    /// The REFER to send on `call`.
    pub fn request(&self, call: &CallInfo) -> Result<ReferRequest, VerbError> {
        let domain = &call.default_domain;
        let refer_to = format_target(&self.refer_to, domain)
            .map_err(|e| VerbError::InvalidVerb(format!("{VERB}: referTo: {e}")))?;
        let referred_by = referred_by(
            self.referred_by.as_deref(),
            self.referred_by_display_name.as_deref(),
            &call.remote_party,
            domain,
        )
        .map_err(|e| VerbError::InvalidVerb(format!("{VERB}: referredBy: {e}")))?;
        Ok(ReferRequest {
            refer_to,
            referred_by,
            headers: self.headers.clone(),
        })
    }
}

/// The hard cap on the wait, in ms, from `notifyTimeout` and the `transferTimeout` given.
///
/// The rule: `transferTimeout`, when given, always caps the wait, even below `notifyTimeout`
/// (the wait then ends at `transferTimeout`). When it is not given, the cap is
/// [`DEFAULT_TRANSFER_TIMEOUT_MS`], or `notifyTimeout` when that is longer, so a lone
/// `notifyTimeout` above the default cap is honoured for the first wait.
fn transfer_timeout(notify_timeout_ms: u32, given_transfer_timeout_ms: Option<u32>) -> u32 {
    given_transfer_timeout_ms.unwrap_or(DEFAULT_TRANSFER_TIMEOUT_MS.max(notify_timeout_ms))
}

/// Why a target cannot be formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The target is empty.
    Empty,
    /// A `<` without its `>`, or an empty `<>`.
    Unbalanced,
    /// A URI scheme other than sip, sips or tel.
    Scheme(String),
    /// A character that cannot appear where it is.
    Character(char),
    /// A bare number or user, but no domain to put it in.
    NoDomain,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::Unbalanced => f.write_str("has a '<' without a matching '>' (or an empty <>)"),
            Self::Scheme(s) => write!(f, "unsupported URI scheme {s:?} (use sip:, sips: or tel:)"),
            Self::Character(c) => write!(f, "contains {c:?}, which is not allowed here"),
            Self::NoDomain => f.write_str(
                "is a bare number or user name, but the platform configured no domain for those",
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// Formats a transfer target as a header value (see the module docs for the rules).
pub fn format_target(target: &str, default_domain: &str) -> Result<String, TargetError> {
    let target = target.trim();
    if target.is_empty() {
        return Err(TargetError::Empty);
    }
    if let Some(c) = target.chars().find(|c| c.is_control()) {
        return Err(TargetError::Character(c));
    }
    if target.contains(['<', '>']) || target.starts_with('"') {
        check_name_addr(target)?;
        return Ok(target.to_owned());
    }
    Ok(format!("<{}>", target_uri(target, default_domain)?))
}

/// The URI for a target that is not already in name-addr form.
fn target_uri(target: &str, default_domain: &str) -> Result<String, TargetError> {
    if let Some(colon) = target.find(':') {
        let scheme = &target[..colon];
        let is_scheme = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            let lower = scheme.to_ascii_lowercase();
            if !matches!(lower.as_str(), "sip" | "sips" | "tel") {
                return Err(TargetError::Scheme(scheme.to_owned()));
            }
            let rest = &target[colon + 1..];
            if rest.is_empty() {
                return Err(TargetError::Empty);
            }
            if let Some(c) = rest.chars().find(|c| c.is_whitespace() || *c == '"') {
                return Err(TargetError::Character(c));
            }
            return Ok(format!("{lower}:{rest}"));
        }
    }
    if let Some(c) = target.chars().find(|c| c.is_whitespace() || *c == '"') {
        // Spaces are fine inside a phone number (handled below), nowhere else.
        if phone_number(target).is_none() {
            return Err(TargetError::Character(c));
        }
    }
    if target.contains('@') {
        return Ok(format!("sip:{target}"));
    }
    if default_domain.trim().is_empty() {
        return Err(TargetError::NoDomain);
    }
    let domain = default_domain.trim();
    if let Some(number) = phone_number(target) {
        let user_phone = if number.starts_with('+') {
            ";user=phone"
        } else {
            ""
        };
        return Ok(format!("sip:{number}@{domain}{user_phone}"));
    }
    if let Some(c) = target.chars().find(|c| !is_user_char(*c)) {
        return Err(TargetError::Character(c));
    }
    Ok(format!("sip:{target}@{domain}"))
}

/// The digits (with a leading `+` if given) of a phone number written with optional visual
/// separators (space, `-`, `.`, `(`, `)`), or `None` if `s` is not one.
fn phone_number(s: &str) -> Option<String> {
    let (plus, rest) = match s.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", s),
    };
    let mut digits = String::from(plus);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (digits.len() > plus.len()).then_some(digits)
}

/// RFC 3261 `user` characters (unreserved, user-unreserved and `%` escapes).
fn is_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c)
}

/// Checks a name-addr (`"Name" <uri>;params` or `<uri>`): one `<`, a `>` after it, a
/// non-empty URI with a supported scheme, and a display name that is a quoted string or
/// tokens.
fn check_name_addr(value: &str) -> Result<(), TargetError> {
    let open = value.find('<').ok_or(TargetError::Unbalanced)?;
    let close = value[open..]
        .find('>')
        .map(|i| open + i)
        .ok_or(TargetError::Unbalanced)?;
    let uri = value[open + 1..close].trim();
    if uri.is_empty() || value[close + 1..].contains(['<', '>']) || value[..open].contains('>') {
        return Err(TargetError::Unbalanced);
    }
    let scheme = uri.split(':').next().unwrap_or("");
    if !matches!(scheme.to_ascii_lowercase().as_str(), "sip" | "sips" | "tel") || !uri.contains(':')
    {
        return Err(TargetError::Scheme(scheme.to_owned()));
    }
    let display = value[..open].trim();
    if display.starts_with('"') && !(display.len() >= 2 && display.ends_with('"')) {
        return Err(TargetError::Character('"'));
    }
    Ok(())
}

/// A name-addr `"display" <uri>`, the display name quoted and escaped (RFC 3261 §25.1).
pub fn name_addr(display_name: Option<&str>, uri: &str) -> String {
    match display_name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => {
            let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{uri}>")
        }
        None => format!("<{uri}>"),
    }
}

/// The Referred-By value: the verb's `referredBy` (formatted like a target) or, when absent,
/// the identity of the party being transferred. `display_name` (the verb's
/// `referredByDisplayName`) applies whenever the value carries no display name of its own.
/// `None` when there is nothing to send.
pub fn referred_by(
    referred_by: Option<&str>,
    display_name: Option<&str>,
    remote_party: &Identity,
    default_domain: &str,
) -> Result<Option<String>, TargetError> {
    let Some(given) = referred_by else {
        let uri = remote_party.uri.trim();
        if uri.is_empty() {
            return Ok(None);
        }
        let name = display_name.or(remote_party.display_name.as_deref());
        return Ok(Some(name_addr(name, uri)));
    };
    let formatted = format_target(given, default_domain)?;
    match formatted.strip_prefix('<') {
        // No display name of its own: add the configured one.
        Some(_) if display_name.is_some() => {
            let close = formatted.find('>').ok_or(TargetError::Unbalanced)?;
            let uri = &formatted[1..close];
            let params = &formatted[close + 1..];
            Ok(Some(format!("{}{params}", name_addr(display_name, uri))))
        }
        _ => Ok(Some(formatted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sip.example.com";

    #[test]
    fn every_referto_form() {
        let cases = [
            ("sip:carol@example.com", "<sip:carol@example.com>"),
            ("SIP:carol@example.com", "<sip:carol@example.com>"),
            ("sips:carol@example.com", "<sips:carol@example.com>"),
            ("tel:+4930123", "<tel:+4930123>"),
            ("TEL:+4930123", "<tel:+4930123>"),
            ("  sip:carol@example.com  ", "<sip:carol@example.com>"),
            (
                "sip:carol@10.0.0.1:5070;transport=tcp",
                "<sip:carol@10.0.0.1:5070;transport=tcp>",
            ),
            (
                "sip:carol@example.com?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2",
                "<sip:carol@example.com?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>",
            ),
            (
                "<sip:carol@example.com;transport=tcp>",
                "<sip:carol@example.com;transport=tcp>",
            ),
            (
                "\"Carol \\\"C\\\"\" <sip:carol@example.com>",
                "\"Carol \\\"C\\\"\" <sip:carol@example.com>",
            ),
            (
                "Carol <sip:carol@example.com>",
                "Carol <sip:carol@example.com>",
            ),
            ("carol@example.com", "<sip:carol@example.com>"),
            (
                "+4915112345678",
                "<sip:+4915112345678@sip.example.com;user=phone>",
            ),
            (
                "+49 (151) 123-45.678",
                "<sip:+4915112345678@sip.example.com;user=phone>",
            ),
            ("015112345678", "<sip:015112345678@sip.example.com>"),
            ("4930123", "<sip:4930123@sip.example.com>"),
            ("support-queue", "<sip:support-queue@sip.example.com>"),
        ];
        for (given, want) in cases {
            assert_eq!(format_target(given, D).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn bad_targets_say_why() {
        let cases = [
            ("", TargetError::Empty),
            ("   ", TargetError::Empty),
            ("sip:", TargetError::Empty),
            ("<sip:carol@example.com", TargetError::Unbalanced),
            ("<>", TargetError::Unbalanced),
            ("\"Carol\" sip:carol@x", TargetError::Unbalanced),
            ("<http://example.com>", TargetError::Scheme("http".into())),
            ("<carol>", TargetError::Scheme("carol".into())),
            ("http://example.com/x", TargetError::Scheme("http".into())),
            ("sip:carol @example.com", TargetError::Character(' ')),
            ("carol smith", TargetError::Character(' ')),
            ("sip:carol@x\r\nVia: x", TargetError::Character('\r')),
            ("caröl", TargetError::Character('ö')),
        ];
        for (given, want) in cases {
            assert_eq!(format_target(given, D), Err(want), "{given:?}");
        }
        assert_eq!(format_target("+4930123", " "), Err(TargetError::NoDomain));
        assert_eq!(format_target("sip:carol@x", ""), Ok("<sip:carol@x>".into()));
    }

    fn party(name: Option<&str>, uri: &str) -> Identity {
        Identity {
            display_name: name.map(Into::into),
            uri: uri.into(),
        }
    }

    #[test]
    fn referred_by_defaults_to_the_transferred_party_with_escaped_name() {
        let alice = party(
            Some("Alice \"Al\" \\ Smith"),
            "sip:+4930111@carrier.example",
        );
        assert_eq!(
            referred_by(None, None, &alice, D).unwrap().unwrap(),
            r#""Alice \"Al\" \\ Smith" <sip:+4930111@carrier.example>"#
        );
        assert_eq!(
            referred_by(None, Some("Front Desk"), &alice, D)
                .unwrap()
                .unwrap(),
            r#""Front Desk" <sip:+4930111@carrier.example>"#
        );
        assert_eq!(
            referred_by(None, None, &party(None, "tel:+1"), D)
                .unwrap()
                .unwrap(),
            "<tel:+1>"
        );
        assert_eq!(referred_by(None, None, &party(None, ""), D).unwrap(), None);
    }

    #[test]
    fn referred_by_given_is_formatted_and_keeps_its_own_name() {
        let nobody = party(None, "");
        assert_eq!(
            referred_by(Some("+4930999"), Some("Sales"), &nobody, D)
                .unwrap()
                .unwrap(),
            r#""Sales" <sip:+4930999@sip.example.com;user=phone>"#
        );
        assert_eq!(
            referred_by(Some("sip:bob@x;transport=tcp"), None, &nobody, D)
                .unwrap()
                .unwrap(),
            "<sip:bob@x;transport=tcp>"
        );
        assert_eq!(
            referred_by(Some("<sip:bob@x>;tag=1"), Some("Bob"), &nobody, D)
                .unwrap()
                .unwrap(),
            r#""Bob" <sip:bob@x>;tag=1"#
        );
        assert_eq!(
            referred_by(Some("\"Bobby\" <sip:bob@x>"), Some("Bob"), &nobody, D)
                .unwrap()
                .unwrap(),
            r#""Bobby" <sip:bob@x>"#
        );
        assert!(referred_by(Some("<sip:bob@x"), None, &nobody, D).is_err());
    }

    fn invalid(json: &str) -> String {
        match SipRefer::parse(json) {
            Err(VerbError::InvalidVerb(why)) => why,
            other => panic!("expected InvalidVerb, got {other:?}"),
        }
    }

    #[test]
    fn the_verb_parses_with_defaults() {
        let v = SipRefer::parse(r#"{"verb":"sip:refer","referTo":+4930123}"#).unwrap();
        assert_eq!(v.refer_to, "+4930123");
        assert_eq!(
            (v.notify_timeout_ms, v.transfer_timeout_ms),
            (40_000, 180_000)
        );
        assert!(!v.asks_no_subscription());
        let v = SipRefer::parse(
            r#"{"sip:refer":{"referTo":"sip:c@x","headers":{"refer-sub":"False"},"notifyTimeout":5,"transferTimeout":5}}"#,
        )
        .unwrap();
        assert!(v.asks_no_subscription());
        assert_eq!((v.notify_timeout_ms, v.transfer_timeout_ms), (5_000, 5_000));
    }

    #[test]
    fn transfer_timeout_caps_the_wait_and_stretches_only_by_default() {
        let v = SipRefer::parse(
            r#"{"verb":"sip:refer","referTo":"x","notifyTimeout":10,"transferTimeout":5}"#,
        )
        .unwrap();
        assert_eq!(
            (v.notify_timeout_ms, v.transfer_timeout_ms),
            (10_000, 5_000)
        );
        assert_eq!(
            v.warnings,
            [
                "sip:refer: notifyTimeout (10 s) is longer than transferTimeout (5 s); transferTimeout caps the wait"
            ]
        );
        let v =
            SipRefer::parse(r#"{"verb":"sip:refer","referTo":"x","notifyTimeout":300}"#).unwrap();
        assert_eq!(
            (v.notify_timeout_ms, v.transfer_timeout_ms),
            (300_000, 300_000)
        );
        assert!(v.warnings.is_empty());
        assert_eq!(transfer_timeout(40_000, None), DEFAULT_TRANSFER_TIMEOUT_MS);
        assert_eq!(transfer_timeout(40_000, Some(1_000)), 1_000);
    }

    #[test]
    fn an_unknown_property_is_reported_before_a_missing_one() {
        // The README's own example: a typo'd referTo is named, not reported as missing.
        assert_eq!(
            invalid(r#"{"verb":"sip:refer","referto":"+4930123"}"#),
            "sip:refer: unknown property referto"
        );
        assert_eq!(
            invalid(r#"{"verb":"sip:refer","referTo":["x"],"eventhook":"/e"}"#),
            "sip:refer: unknown property eventhook"
        );
    }

    #[test]
    fn the_verb_names_what_is_wrong() {
        assert_eq!(
            invalid(r#"{"verb":"sip:refer"}"#),
            "sip:refer: referTo: missing (the transfer target is required)"
        );
        assert_eq!(
            invalid(r#"{"verb":"sip:refer","referTo":["x"]}"#),
            "sip:refer: referTo: expected a string or a phone number, got an array"
        );
        assert_eq!(
            invalid(r#"{"verb":"sip:refer","referTo":"x","referto":"y"}"#),
            "sip:refer: unknown property referto"
        );
        assert_eq!(
            invalid(r#"{"verb":"sip:refer","referTo":"<sip:x"}"#),
            "sip:refer: referTo: has a '<' without a matching '>' (or an empty <>)"
        );
        assert_eq!(
            invalid(r#"{"verb":"sip:decline","status":603}"#),
            "this plugin implements sip:refer, not sip:decline"
        );
    }
}
