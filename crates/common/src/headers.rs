//! SIP header names and values: compact forms, the headers the SIP stack owns, and the checks
//! a header supplied by a verb must pass before it goes on the wire.

use std::fmt;

/// Longest header value accepted from a verb, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;
/// Longest header name accepted from a verb, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Headers that the SIP stack builds itself. A verb may not set them: a second Via or CSeq
/// breaks the transaction, and Refer-To/Referred-By come from the verb's own properties.
pub const STACK_OWNED: [&str; 10] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Content-Length",
    "Refer-To",
    "Referred-By",
];

/// The long form of a compact header name (RFC 3261 §7.3.3 and the extensions that define
/// one: RFC 3265/6665 `o` and `u`, RFC 3515 `r`, RFC 3892 `b`, RFC 4028 `x`, ...).
pub fn expand_compact(name: &str) -> Option<&'static str> {
    let [byte] = name.as_bytes() else {
        return None;
    };
    Some(match byte.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

/// True when `a` and `b` name the same header: letter case ignored, compact forms expanded.
pub fn same_name(a: &str, b: &str) -> bool {
    let a = expand_compact(a).unwrap_or(a);
    let b = expand_compact(b).unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

/// The stack-owned header that `name` denotes, if any (in its canonical spelling).
pub fn stack_owned(name: &str) -> Option<&'static str> {
    STACK_OWNED.into_iter().find(|owned| same_name(owned, name))
}

/// Why a header may not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The name is empty, too long, or has characters outside the SIP `token` set.
    InvalidName(String),
    /// The value contains CR, LF or NUL (which would inject headers), or is too long.
    InvalidValue {
        /// The header whose value is bad.
        name: String,
        /// What is wrong with it.
        cause: &'static str,
    },
    /// The SIP stack builds this header itself.
    StackOwned(&'static str),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidName(name) => write!(
                f,
                "header name {name:?} is not a SIP token (letters, digits and -.!%*_+`'~, at most {MAX_NAME_LEN} bytes)"
            ),
            Self::InvalidValue { name, cause } => {
                write!(f, "header {name}: value {cause}")
            }
            Self::StackOwned(name) => write!(
                f,
                "header {name} is set by the SIP stack and cannot be given in `headers`"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Checks a header a verb wants to add to a request: a valid name that the stack does not own,
/// and a single-line value of sane length.
pub fn check_custom(name: &str, value: &str) -> Result<(), HeaderError> {
    let name_ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(is_token_byte);
    if !name_ok {
        return Err(HeaderError::InvalidName(name.to_owned()));
    }
    if let Some(owned) = stack_owned(name) {
        return Err(HeaderError::StackOwned(owned));
    }
    check_value(name, value)
}

/// Checks that a header value is one line (no CR, LF or NUL) and at most [`MAX_VALUE_LEN`].
pub fn check_value(name: &str, value: &str) -> Result<(), HeaderError> {
    let cause = if value.len() > MAX_VALUE_LEN {
        "is longer than 4096 bytes"
    } else if value.contains(['\r', '\n']) {
        "contains a line break"
    } else if value.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(HeaderError::InvalidValue {
        name: name.to_owned(),
        cause,
    })
}

/// RFC 3261 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_expand_in_either_case() {
        assert_eq!(expand_compact("r"), Some("Refer-To"));
        assert_eq!(expand_compact("B"), Some("Referred-By"));
        assert_eq!(expand_compact("o"), Some("Event"));
        assert_eq!(expand_compact("q"), None);
        assert_eq!(expand_compact("Via"), None);
        assert!(same_name("v", "VIA"));
        assert!(same_name("call-id", "i"));
        assert!(!same_name("To", "Tom"));
    }

    #[test]
    fn stack_owned_headers_are_refused_in_any_spelling() {
        for name in [
            "via",
            "FROM",
            "t",
            "i",
            "CSeq",
            "m",
            "max-forwards",
            "l",
            "Refer-To",
            "r",
            "referred-by",
            "b",
        ] {
            assert!(
                matches!(check_custom(name, "x"), Err(HeaderError::StackOwned(_))),
                "{name}"
            );
        }
        assert_eq!(
            check_custom("referred-BY", "x").unwrap_err().to_string(),
            "header Referred-By is set by the SIP stack and cannot be given in `headers`"
        );
    }

    #[test]
    fn custom_headers_pass_and_injection_does_not() {
        assert_eq!(check_custom("X-Customer-Id", "42"), Ok(()));
        assert_eq!(check_custom("Refer-Sub", "false"), Ok(()));
        assert_eq!(
            check_custom("User-to-User", "56a390f3d2b7310023a2;encoding=hex"),
            Ok(())
        );
        assert!(matches!(
            check_custom("X-A", "1\r\nVia: SIP/2.0/UDP evil"),
            Err(HeaderError::InvalidValue { .. })
        ));
        assert!(matches!(
            check_custom("X-A", "a\0b"),
            Err(HeaderError::InvalidValue { .. })
        ));
        assert!(matches!(
            check_custom("X-A", &"a".repeat(MAX_VALUE_LEN + 1)),
            Err(HeaderError::InvalidValue { .. })
        ));
        for bad in ["", "X A", "X-A:", "Ä", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(
                matches!(check_custom(bad, "1"), Err(HeaderError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }
}
