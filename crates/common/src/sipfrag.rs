//! The status line of a `message/sipfrag` body (RFC 3420), read leniently.
//!
//! Real notifiers disagree on framing: sipp ends the line with CRLF, baresip with a bare LF,
//! some send no line end at all, and some put blank lines first. Only the first non-blank line
//! counts; whatever follows it (headers, a body) is ignored.

/// A SIP status line: code and reason phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// Status code, 100..=699.
    pub code: u16,
    /// Reason phrase as sent (may be empty). Bytes that are not UTF-8 are replaced.
    pub reason: String,
}

/// Parses the status line at the start of a sipfrag body.
///
/// Accepts `SIP/2.0` in any letter case, CRLF, LF or no line end, leading blank lines, and an
/// empty or missing reason phrase. Returns `None` when the first non-blank line is not a
/// status line with a code in 100..=699.
///
/// ```
/// use verbhost_common::sipfrag::parse_status_line;
/// let line = parse_status_line(b"SIP/2.0 180 Ringing\n").unwrap();
/// assert_eq!((line.code, line.reason.as_str()), (180, "Ringing"));
/// assert!(parse_status_line(b"INVITE sip:a@b SIP/2.0\r\n").is_none());
/// ```
pub fn parse_status_line(body: &[u8]) -> Option<StatusLine> {
    let start = body.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let rest = &body[start..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(rest.len());
    let line = &rest[..end];

    let version = line.get(..7)?;
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return None;
    }
    let after_version = &line[7..];
    // At least one space between the version and the code; tolerate several.
    let code_start = after_version.iter().position(|b| *b != b' ')?;
    if code_start == 0 {
        return None;
    }
    let digits = after_version.get(code_start..code_start + 3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return None;
    }
    let tail = &after_version[code_start + 3..];
    // A fourth digit (`SIP/2.0 2000 OK`) is not a status code.
    if tail.first().is_some_and(|b| *b != b' ' && *b != b'\t') {
        return None;
    }
    let reason = String::from_utf8_lossy(tail).trim().to_owned();
    Some(StatusLine { code, reason })
}

/// True when `content_type` names `message/sipfrag`, in any letter case and with any
/// parameters (`message/sipfrag;version=2.0`).
pub fn is_sipfrag_content_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("message/sipfrag")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &[u8]) -> Option<(u16, String)> {
        parse_status_line(body).map(|l| (l.code, l.reason))
    }

    #[test]
    fn accepts_every_framing_seen_in_the_field() {
        let want = Some((200, "OK".to_owned()));
        assert_eq!(parsed(b"SIP/2.0 200 OK\r\n"), want);
        assert_eq!(parsed(b"SIP/2.0 200 OK\n"), want);
        assert_eq!(parsed(b"SIP/2.0 200 OK"), want);
        assert_eq!(parsed(b"\r\n\r\nSIP/2.0 200 OK\r\n"), want);
        assert_eq!(parsed(b"sip/2.0 200 OK\r\n"), want);
        assert_eq!(parsed(b"SIP/2.0  200 OK  \r\n"), want);
        assert_eq!(
            parsed(b"SIP/2.0 200 OK\r\nContact: <sip:c@h>\r\n\r\n"),
            want
        );
    }

    #[test]
    fn keeps_the_reason_phrase_as_sent() {
        assert_eq!(
            parsed(b"SIP/2.0 486 Busy Here\n"),
            Some((486, "Busy Here".to_owned()))
        );
        assert_eq!(
            parsed(b"SIP/2.0 500 Connection timed out\n"),
            Some((500, "Connection timed out".to_owned()))
        );
        assert_eq!(parsed(b"SIP/2.0 183 \r\n"), Some((183, String::new())));
        assert_eq!(parsed(b"SIP/2.0 183"), Some((183, String::new())));
    }

    #[test]
    fn rejects_what_is_not_a_status_line() {
        for body in [
            &b""[..],
            b"\r\n",
            b"INVITE sip:carol@example.com SIP/2.0\r\n",
            b"SIP/2.0 99 Odd\r\n",
            b"SIP/2.0 700 Odd\r\n",
            b"SIP/2.0 2000 OK\r\n",
            b"SIP/2.0 20 OK\r\n",
            b"SIP/2.0 abc OK\r\n",
            b"SIP/2.0200 OK\r\n",
            b"SIP/3.0 200 OK\r\n",
            b"SIP/2.0\r\n200 OK\r\n",
            b"hello",
            b"\xff\xfe\x00",
        ] {
            assert_eq!(parsed(body), None, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn survives_non_utf8_reasons() {
        assert_eq!(
            parsed(b"SIP/2.0 603 D\xe9clin\r\n"),
            Some((603, "D\u{fffd}clin".to_owned()))
        );
    }

    #[test]
    fn recognises_the_media_type_leniently() {
        assert!(is_sipfrag_content_type("message/sipfrag"));
        assert!(is_sipfrag_content_type("message/sipfrag;version=2.0"));
        assert!(is_sipfrag_content_type("Message/SipFrag ; version=2.0"));
        assert!(!is_sipfrag_content_type("application/sdp"));
        assert!(!is_sipfrag_content_type("message/sipfragment"));
        assert!(!is_sipfrag_content_type(""));
    }
}
