//! Wire hygiene around rsip: framing by Content-Length ([`frame`] for one buffer,
//! [`StreamFramer`] for a TCP stream as it arrives), a normalising pre-pass (folded
//! headers unfolded, compact names expanded, LF-only lines accepted, `Name :` spacing
//! tolerated), a size cap (a Content-Length past it is refused before any arithmetic on it),
//! mandatory-header checks, then rsip's parse. What comes out is a
//! [`Message`] of our own types; what does not parse comes out as a [`ParseError`] that names
//! the cause, and [`error_response`] answers it when the request can be answered at all.
//!
//! rsip 0.4.0 on its own takes everything after the first blank line as the body, fails on
//! compact forms, folding and unknown methods, and rewrites reason phrases (see the
//! repository's reference notes); none of that reaches the rest of the stack.

use verbhost_common::headers::expand_compact;

use crate::message::{Headers, Message, Method, Request, Response, SipHeaders};

/// Largest message accepted, in bytes (headers and body).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Headers every request and response must carry (RFC 3261 §8.1.1).
const MANDATORY: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];

/// Why bytes are not a usable SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Only CR/LF (a keep-alive) or nothing.
    #[error("empty message (keep-alive)")]
    Empty,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is larger than {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// No blank line ends the headers.
    #[error("no blank line after the headers")]
    NoHeaderEnd,
    /// The headers are not UTF-8.
    #[error("headers are not valid UTF-8")]
    NotUtf8,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line {0:?}")]
    StartLine(String),
    /// The SIP version is not 2.0.
    #[error("unsupported SIP version {0:?}")]
    Version(String),
    /// A header line without a name and colon.
    #[error("bad header line {0:?}")]
    HeaderLine(String),
    /// Content-Length is not a number.
    #[error("bad Content-Length {0:?}")]
    ContentLength(String),
    /// Fewer body bytes than Content-Length announces.
    #[error("Content-Length {declared} but only {available} body bytes")]
    Truncated {
        /// Announced.
        declared: usize,
        /// Present.
        available: usize,
    },
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// CSeq is malformed or does not match the request method.
    #[error("bad CSeq {0:?}")]
    CSeq(String),
    /// rsip refused the message.
    #[error("malformed message: {0}")]
    Syntax(String),
}

/// The lines of a message's head, normalised, and where its body starts.
struct Head {
    start: String,
    headers: Headers,
    body_start: usize,
}

/// Reads the head of the message at the start of `bytes` (leading CR/LF skipped).
fn read_head(bytes: &[u8]) -> Result<Head, ParseError> {
    let skip = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .ok_or(ParseError::Empty)?;
    let rest = &bytes[skip..];
    let (head_len, sep_len) = find_head_end(rest).ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&rest[..head_len]).map_err(|_| ParseError::NotUtf8)?;
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t']) {
            // A folded continuation line (RFC 3261 §7.3.1).
            // The start line cannot be continued.
            let header_lines = lines.len();
            match lines.last_mut() {
                Some(previous) if header_lines > 1 => {
                    previous.push(' ');
                    previous.push_str(line.trim());
                }
                _ => return Err(ParseError::HeaderLine(line.to_owned())),
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    let mut lines = lines.into_iter();
    let start = lines.next().unwrap_or_default();
    let mut headers = Headers::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::HeaderLine(line.clone()))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ParseError::HeaderLine(line.clone()));
        }
        let name = expand_compact(name).unwrap_or(name);
        headers.push(name, value.trim());
    }
    Ok(Head {
        start,
        headers,
        body_start: skip + head_len + sep_len,
    })
}

/// Length of the head and of the blank-line separator (CRLFCRLF or LFLF).
fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if bytes[i + 1] == b'\r' && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        if bytes[i] == b'\r'
            && bytes[i + 1] == b'\n'
            && bytes.get(i + 2) == Some(&b'\r')
            && bytes.get(i + 3) == Some(&b'\n')
        {
            return Some((i, 4));
        }
        i += 1;
    }
    None
}

/// The Content-Length of a head whose body starts at `body_start`. A length that would take
/// the message past [`MAX_MESSAGE_BYTES`] is refused here, before any arithmetic on it.
fn content_length(headers: &Headers, body_start: usize) -> Result<Option<usize>, ParseError> {
    let Some(value) = headers.get("Content-Length") else {
        return Ok(None);
    };
    let length: usize = value
        .parse()
        .map_err(|_| ParseError::ContentLength(value.to_owned()))?;
    match body_start.checked_add(length) {
        Some(total) if total <= MAX_MESSAGE_BYTES => Ok(Some(length)),
        total => Err(ParseError::TooLarge(total.unwrap_or(usize::MAX))),
    }
}

/// How much of a stream buffer the message at its start takes.
enum Measure {
    /// No blank line yet: the head is incomplete.
    Head,
    /// The message (leading CR/LF included) is this long; the buffer may hold less.
    Total(usize),
}

/// Measures the message at the start of `buffer` (not empty). Leading CR/LF keep-alives with
/// nothing after them count as a message of their own length.
fn measure(buffer: &[u8]) -> Result<Measure, ParseError> {
    if buffer.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        return Ok(Measure::Total(buffer.len()));
    }
    let head = match read_head(buffer) {
        Ok(head) => head,
        Err(ParseError::NoHeaderEnd) if buffer.len() <= MAX_MESSAGE_BYTES => {
            return Ok(Measure::Head);
        }
        Err(ParseError::NoHeaderEnd) => return Err(ParseError::TooLarge(buffer.len())),
        Err(err) => return Err(err),
    };
    // On a stream, Content-Length is mandatory (RFC 3261 §18.3); without it, no body.
    // `content_length` caps the sum, so it cannot overflow.
    let body = content_length(&head.headers, head.body_start)?.unwrap_or(0);
    Ok(Measure::Total(head.body_start + body))
}

/// Stream framing (TCP): the length of the complete message at the start of `buffer`,
/// `Ok(None)` when more bytes are needed, or an error when the stream cannot be framed (the
/// connection should then be closed). Leading CR/LF keep-alives count as a message of their
/// own length with no content: the caller skips them. A length is never 0 and never more
/// than the buffer; apart from a run of keep-alives, never more than [`MAX_MESSAGE_BYTES`].
pub fn frame(buffer: &[u8]) -> Result<Option<usize>, ParseError> {
    if buffer.is_empty() {
        return Ok(None);
    }
    Ok(match measure(buffer)? {
        Measure::Total(total) if buffer.len() >= total => Some(total),
        Measure::Total(_) | Measure::Head => None,
    })
}

/// Cuts a TCP byte stream into messages, as bytes arrive: what the transport's reader runs.
/// Keep-alives (CR/LF between messages) are consumed silently. Each byte is searched for the
/// end of a head once, however slowly the bytes arrive, so a peer that sends a byte at a time
/// cannot make it rescan the buffer.
///
/// ```
/// use verbhost_sip::wire::StreamFramer;
/// let mut framer = StreamFramer::new();
/// framer.push(b"\r\n\r\nOPTIONS sip:a@h SIP/2.0\r\nContent-Length: 2\r\n\r\nh");
/// assert_eq!(framer.next_message(), Ok(None), "one body byte missing");
/// framer.push(b"iOPT");
/// let message = framer.next_message().unwrap().unwrap();
/// assert!(message.ends_with(b"\r\n\r\nhi"));
/// assert_eq!(framer.buffered(), 3, "the start of the next message waits");
/// ```
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
    /// How far the buffer has been searched for the end of the head without finding it.
    searched: usize,
    /// The length of the message at the start of the buffer, once its head is complete.
    total: Option<usize>,
}

impl StreamFramer {
    /// An empty framer.
    pub fn new() -> Self {
        StreamFramer::default()
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received that are not yet part of a complete message (0 between messages).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed, or an error when the
    /// stream cannot be framed (the connection should then be closed).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, ParseError> {
        if self.total.is_none() {
            // Keep-alives before a message are dropped, so a lone CRLF does not wait.
            let skip = self
                .buffer
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if skip > 0 {
                self.buffer.drain(..skip);
                self.searched = self.searched.saturating_sub(skip);
            }
            if self.buffer.is_empty() {
                return Ok(None);
            }
            // Only bytes that arrived since the last search can complete the head (a blank
            // line is LF LF or LF CR LF; look two bytes back for one that straddles).
            let from = self.searched.saturating_sub(2);
            let blank_line = self.buffer[from..].windows(2).enumerate().any(|(i, w)| {
                w == b"\n\n" || (w == b"\n\r" && self.buffer.get(from + i + 2) == Some(&b'\n'))
            });
            if !blank_line {
                self.searched = self.buffer.len();
                if self.buffer.len() > MAX_MESSAGE_BYTES {
                    return Err(ParseError::TooLarge(self.buffer.len()));
                }
                return Ok(None);
            }
            match measure(&self.buffer)? {
                Measure::Head => {
                    self.searched = self.buffer.len();
                    return Ok(None);
                }
                Measure::Total(total) => self.total = Some(total),
            }
        }
        match self.total {
            Some(total) if self.buffer.len() >= total => {
                self.total = None;
                self.searched = 0;
                Ok(Some(self.buffer.drain(..total).collect()))
            }
            _ => Ok(None),
        }
    }
}

/// Parses one message: a datagram, or a frame cut by [`frame`]. Bytes after the body that
/// Content-Length announces are ignored (RFC 3261 §18.3); fewer bytes are an error.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let head = read_head(bytes)?;
    // `read_head` ends the head within `bytes`.
    let available = bytes.len().saturating_sub(head.body_start);
    let body_len = content_length(&head.headers, head.body_start)?.unwrap_or(available);
    if body_len > available {
        return Err(ParseError::Truncated {
            declared: body_len,
            available,
        });
    }
    let body = bytes[head.body_start..head.body_start + body_len].to_vec();
    let message = start_line(&head.start, head.headers, body)?;
    for name in MANDATORY {
        if !message.headers().has(name) {
            return Err(ParseError::Missing(name));
        }
    }
    if let Message::Request(request) = &message {
        let cseq_value = request.headers.get("CSeq").unwrap_or_default();
        match request.cseq() {
            Some(cseq) if cseq.method == request.method => {}
            _ => return Err(ParseError::CSeq(cseq_value.to_owned())),
        }
        if let Method::Other(_) = request.method {
            // rsip cannot parse unknown methods; the caller answers 501 from what we have.
            return Ok(message);
        }
    }
    check_with_rsip(&message)?;
    Ok(message)
}

/// Builds our message from the start line, or explains why it is not one.
fn start_line(start: &str, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    let bad = || ParseError::StartLine(start.chars().take(120).collect());
    if let Some(rest) = start.strip_prefix("SIP/") {
        let (version, rest) = rest.split_once(' ').ok_or_else(bad)?;
        if version != "2.0" {
            return Err(ParseError::Version(format!("SIP/{version}")));
        }
        let rest = rest.trim_start();
        let code = rest.get(..3).ok_or_else(bad)?;
        let status: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&status) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let tail = &rest[3..];
        if !(tail.is_empty() || tail.starts_with(' ')) {
            return Err(bad());
        }
        return Ok(Message::Response(Response {
            status,
            reason: tail.trim().to_owned(),
            headers,
            body,
        }));
    }
    let mut parts = start.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad());
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::Version(version.to_owned()));
    }
    Ok(Message::Request(Request {
        method: Method::parse(method),
        uri: uri.to_owned(),
        headers,
        body,
    }))
}

/// Has rsip check what our pre-pass takes on trust: the Request-URI, the top Via (typed:
/// protocol, sent-by, parameters) and CSeq (typed). rsip parses each header on its own, so
/// the message is not serialised and parsed a second time. A panic inside rsip (none is
/// known) is contained and reported as a syntax error.
fn check_with_rsip(message: &Message) -> Result<(), ParseError> {
    let checked = std::panic::catch_unwind(|| -> Result<(), String> {
        use rsip::prelude::*;
        if let Message::Request(request) = message {
            rsip::Uri::try_from(request.uri.as_str()).map_err(|e| format!("Request-URI: {e}"))?;
        }
        let headers = message.headers();
        let via = headers.all("Via").next().unwrap_or_default();
        rsip::headers::Via::new(via)
            .typed()
            .map_err(|e| format!("Via: {e}"))?;
        let cseq = headers.get("CSeq").unwrap_or_default();
        rsip::headers::CSeq::new(cseq)
            .typed()
            .map_err(|e| format!("CSeq: {e}"))?;
        Ok(())
    });
    match checked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(ParseError::Syntax(why)),
        Err(_) => Err(ParseError::Syntax("the parser failed".into())),
    }
}

/// The response to send for bytes that did not parse, when the request can be answered:
/// 505 for another SIP version, 400 naming the cause otherwise. `None` for responses, and
/// for requests whose Via/From/To/Call-ID/CSeq cannot be found (those are dropped).
pub fn error_response(bytes: &[u8], err: &ParseError) -> Option<Response> {
    let head = read_head(bytes).ok()?;
    // Any request line will do here, whatever its version: the answer may be "505".
    let mut parts = head.start.split(' ').filter(|p| !p.is_empty());
    let (method, uri) = (parts.next()?, parts.next()?);
    if method.starts_with("SIP/") || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let request = Request {
        method: Method::parse(method),
        uri: uri.to_owned(),
        headers: head.headers,
        body: Vec::new(),
    };
    if MANDATORY.iter().any(|name| !request.headers.has(name)) {
        return None;
    }
    let mut response = match err {
        ParseError::Version(_) => Response::to(&request, 505, None),
        _ => {
            let mut response = Response::to(&request, 400, None);
            response.reason = format!("Bad Request ({err})").chars().take(200).collect();
            response
        }
    };
    response.headers.push("Server", "verbhost");
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:alice@127.0.0.1:5070 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKn1;rport\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:bob@127.0.0.1:5090>;tag=b1\r\n\
        To: <sip:alice@127.0.0.1:5070>;tag=a1\r\n\
        Call-ID: c1@127.0.0.1\r\n\
        CSeq: 14088 NOTIFY\r\n\
        Contact: <sip:bob-0x55@127.0.0.1:5090>\r\n\
        Event: refer;id=2\r\n\
        Subscription-State: active;expires=60\r\n\
        Content-Type: message/sipfrag\r\n\
        Content-Length: 20\r\n\r\n\
        SIP/2.0 100 Trying\r\n";

    fn request(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_real_notify() {
        let notify = request(NOTIFY);
        assert_eq!(notify.method, Method::Notify);
        assert_eq!(notify.headers.get("Event"), Some("refer;id=2"));
        assert_eq!(
            notify.headers.get("subscription-state"),
            Some("active;expires=60")
        );
        assert_eq!(notify.body, b"SIP/2.0 100 Trying\r\n");
        assert_eq!(notify.via_branch(), Some("z9hG4bKn1"));
    }

    #[test]
    fn unfolds_and_expands_compact_forms_and_accepts_lf_only() {
        let text = "NOTIFY sip:a@h SIP/2.0\nv: SIP/2.0/UDP h;branch=z9hG4bK1\nf: <sip:b@h>;tag=1\nt: <sip:a@h>;\n tag=2\ni: x\nCSeq: 1 NOTIFY\no: refer\nSubscription-State :\tterminated;\n\treason=noresource\nl: 0\n\n";
        let notify = request(text);
        assert_eq!(notify.to_tag(), Some("2"));
        assert_eq!(notify.headers.get("Event"), Some("refer"));
        assert_eq!(
            notify.headers.get("Subscription-State"),
            Some("terminated; reason=noresource")
        );
        assert!(notify.body.is_empty());
    }

    #[test]
    fn content_length_frames_the_body() {
        let mut datagram = NOTIFY.as_bytes().to_vec();
        datagram.extend_from_slice(b"trailing junk");
        assert_eq!(
            request(std::str::from_utf8(&datagram).unwrap()).body,
            b"SIP/2.0 100 Trying\r\n"
        );
        let cut = &NOTIFY.as_bytes()[..NOTIFY.len() - 5];
        assert_eq!(
            parse(cut),
            Err(ParseError::Truncated {
                declared: 20,
                available: 15
            })
        );
    }

    #[test]
    fn stream_framing_splits_concatenated_messages() {
        let two = format!("{NOTIFY}{NOTIFY}");
        let first = frame(two.as_bytes()).unwrap().unwrap();
        assert_eq!(first, NOTIFY.len());
        assert_eq!(frame(&two.as_bytes()[..10]).unwrap(), None);
        assert_eq!(frame(&two.as_bytes()[..NOTIFY.len() - 1]).unwrap(), None);
        assert_eq!(frame(b"\r\n\r\n").unwrap(), Some(4));
        assert_eq!(
            frame(b"").unwrap(),
            None,
            "an empty buffer needs more bytes"
        );
        assert!(matches!(
            frame(&vec![b'a'; MAX_MESSAGE_BYTES + 1]),
            Err(ParseError::TooLarge(_))
        ));
    }

    /// A Content-Length near `usize::MAX` once wrapped the frame length around (the TCP
    /// reader then spun on frames of length 0): it is refused as too large, by frame and parse.
    #[test]
    fn a_content_length_over_the_cap_is_too_large_and_never_wraps() {
        let wraps = include_bytes!("../tests/corpus/tcp-content-length-wraps.sip");
        assert!(
            matches!(frame(wraps), Err(ParseError::TooLarge(_))),
            "{:?}",
            frame(wraps)
        );
        assert!(
            matches!(parse(wraps), Err(ParseError::TooLarge(_))),
            "{:?}",
            parse(wraps)
        );
        for declared in [
            MAX_MESSAGE_BYTES.to_string(),
            u64::MAX.to_string(),
            (u64::MAX - 20).to_string(),
        ] {
            let text = NOTIFY.replace("Content-Length: 20", &format!("Content-Length: {declared}"));
            assert!(
                matches!(frame(text.as_bytes()), Err(ParseError::TooLarge(_))),
                "{declared}: {:?}",
                frame(text.as_bytes())
            );
        }
        // One over usize::MAX is not a number at all.
        let text = NOTIFY.replace("Content-Length: 20", "Content-Length: 18446744073709551616");
        assert!(matches!(
            frame(text.as_bytes()),
            Err(ParseError::ContentLength(_))
        ));
    }

    #[test]
    fn keeps_reason_phrases_and_202() {
        let text = "SIP/2.0 202 Accepted\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\nCSeq: 2 REFER\r\nRefer-Sub: false\r\nContent-Length: 0\r\n\r\n";
        let Ok(Message::Response(response)) = parse(text.as_bytes()) else {
            panic!()
        };
        assert_eq!(
            (response.status, response.reason.as_str()),
            (202, "Accepted")
        );
        assert_eq!(response.headers.get("Refer-Sub"), Some("false"));
        let busy = text.replace("202 Accepted", "486 Busy Here");
        let Ok(Message::Response(response)) = parse(busy.as_bytes()) else {
            panic!()
        };
        assert_eq!(response.reason, "Busy Here");
        assert_eq!(
            String::from_utf8(response.to_bytes())
                .unwrap()
                .lines()
                .next(),
            Some("SIP/2.0 486 Busy Here")
        );
    }

    #[test]
    fn unknown_methods_parse_so_they_can_be_answered_501() {
        let text = NOTIFY
            .replace("NOTIFY sip", "FOO sip")
            .replace("14088 NOTIFY", "14088 FOO");
        assert_eq!(request(&text).method, Method::Other("FOO".into()));
    }

    #[test]
    fn bad_input_is_an_error_that_names_the_cause() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"\r\n\r\n"), Err(ParseError::Empty));
        assert_eq!(
            parse(b"NOTIFY sip:a@h SIP/2.0\r\nVia: x"),
            Err(ParseError::NoHeaderEnd)
        );
        assert_eq!(parse(b"\xff\xfe\r\n\r\n"), Err(ParseError::NotUtf8));
        assert!(matches!(
            parse(b"HELLO\r\n\r\n"),
            Err(ParseError::StartLine(_))
        ));
        assert!(matches!(
            parse(b"SIP/3.0 200 OK\r\n\r\n"),
            Err(ParseError::Version(_))
        ));
        assert!(matches!(
            parse(b"SIP/2.0 2000 OK\r\n\r\n"),
            Err(ParseError::StartLine(_))
        ));
        let no_call_id = NOTIFY.replace("Call-ID: c1@127.0.0.1\r\n", "");
        assert_eq!(
            parse(no_call_id.as_bytes()),
            Err(ParseError::Missing("Call-ID"))
        );
        let bad_cseq = NOTIFY.replace("14088 NOTIFY", "14088 BYE");
        assert_eq!(
            parse(bad_cseq.as_bytes()),
            Err(ParseError::CSeq("14088 BYE".into()))
        );
        let bad_length = NOTIFY.replace("Content-Length: 20", "Content-Length: -1");
        assert_eq!(
            parse(bad_length.as_bytes()),
            Err(ParseError::ContentLength("-1".into()))
        );
        let bad_header = NOTIFY.replace("Max-Forwards: 70", "no colon here");
        assert!(matches!(
            parse(bad_header.as_bytes()),
            Err(ParseError::HeaderLine(_))
        ));
        assert!(matches!(
            parse(&vec![b'x'; MAX_MESSAGE_BYTES + 1]),
            Err(ParseError::TooLarge(_))
        ));
    }

    #[test]
    fn answerable_bad_requests_get_400_naming_the_cause() {
        let cut = &NOTIFY.as_bytes()[..NOTIFY.len() - 5];
        let err = parse(cut).unwrap_err();
        let response = error_response(cut, &err).expect("answerable");
        assert_eq!(response.status, 400);
        assert_eq!(
            response.reason,
            "Bad Request (Content-Length 20 but only 15 body bytes)"
        );
        assert_eq!(response.headers.get("CSeq"), Some("14088 NOTIFY"));
        let version = NOTIFY.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        let err = parse(version.as_bytes()).unwrap_err();
        assert_eq!(
            error_response(version.as_bytes(), &err).map(|r| r.status),
            Some(505)
        );
        assert!(error_response(b"garbage\r\n\r\n", &ParseError::Empty).is_none());
    }
}
