//! The `Subscription-State` header (RFC 6665 §8.2.3):
//! `active;expires=60`, `pending`, `terminated;reason=noresource`; and how long a REFER's
//! subscription outlives the peer's BYE ([`BYE_GRACE`]).

use std::time::Duration;

/// How long after the peer's BYE a NOTIFY still counts. A transferee often sends the final
/// NOTIFY and the BYE back to back, and they can arrive in either order; so the dialog is held
/// for this long after a BYE, NOTIFYs that arrive meanwhile are delivered, and only then does
/// the subscription learn that the dialog ended. The SIP stack (`verbhost-sip`'s
/// `EndpointConfig::bye_grace`) and the mock host both use this value, so a scenario completes
/// under the mock exactly as on the wire.
pub const BYE_GRACE: Duration = Duration::from_millis(300);

/// Whether a `Refer-Sub` header value says "no subscription" (RFC 4488:
/// `refer-sub-value *(SEMI exten)`, so `false;x=1` means false too). The value token is
/// compared case-insensitively.
///
/// ```
/// use verbhost_common::subscription::refer_sub_is_false;
/// assert!(refer_sub_is_false("false"));
/// assert!(refer_sub_is_false(" FALSE ;x=1"));
/// assert!(!refer_sub_is_false("true"));
/// assert!(!refer_sub_is_false("falsey"));
/// ```
pub fn refer_sub_is_false(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|token| token.trim().eq_ignore_ascii_case("false"))
}

/// The substate value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `active`
    Active,
    /// `pending`
    Pending,
    /// `terminated`
    Terminated,
}

/// A parsed `Subscription-State` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    /// The substate value.
    pub status: Status,
    /// The `expires` parameter in seconds, when present and a valid number.
    pub expires: Option<u32>,
    /// The `reason` parameter, lower-cased, when present.
    pub reason: Option<String>,
}

/// Parses a `Subscription-State` header value. Returns `None` for a substate other than
/// active, pending or terminated (RFC 6665 lets the subscriber treat those as unknown).
///
/// ```
/// use verbhost_common::subscription::{parse, Status};
/// let s = parse("terminated;reason=noresource").unwrap();
/// assert_eq!(s.status, Status::Terminated);
/// assert_eq!(s.reason.as_deref(), Some("noresource"));
/// ```
pub fn parse(value: &str) -> Option<SubscriptionState> {
    let mut parts = value.split(';');
    let status = match parts.next()?.trim().to_ascii_lowercase().as_str() {
        "active" => Status::Active,
        "pending" => Status::Pending,
        "terminated" => Status::Terminated,
        _ => return None,
    };
    let mut state = SubscriptionState {
        status,
        expires: None,
        reason: None,
    };
    for param in parts {
        let (name, val) = param.split_once('=').unwrap_or((param, ""));
        let val = val.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "expires" => state.expires = val.parse().ok(),
            "reason" if !val.is_empty() => state.reason = Some(val.to_ascii_lowercase()),
            _ => {}
        }
    }
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_substates_with_parameters() {
        assert_eq!(
            parse("active;expires=60"),
            Some(SubscriptionState {
                status: Status::Active,
                expires: Some(60),
                reason: None
            })
        );
        assert_eq!(parse(" Pending ").map(|s| s.status), Some(Status::Pending));
        assert_eq!(
            parse("TERMINATED ; Reason=NoResource;retry-after=5"),
            Some(SubscriptionState {
                status: Status::Terminated,
                expires: None,
                reason: Some("noresource".into())
            })
        );
    }

    #[test]
    fn unknown_substates_and_bad_parameters_do_not_fail_loudly() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("waiting"), None);
        let s = parse("active;expires=soon;reason").expect("substate is valid");
        assert_eq!((s.expires, s.reason), (None, None));
        assert_eq!(
            parse("active;expires=99999999999").and_then(|s| s.expires),
            None
        );
    }
}
