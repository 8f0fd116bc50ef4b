//! verbhost's own SIP message types. rsip parses (see [`crate::wire`]); these types are what
//! the rest of the stack sees, so rsip can be replaced without touching it.

use std::fmt;

use verbhost_common::headers::same_name;

/// A request method. Methods rsip does not know are kept, so they can be answered 501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// INFO
    Info,
    /// INVITE
    Invite,
    /// MESSAGE
    Message,
    /// NOTIFY
    Notify,
    /// OPTIONS
    Options,
    /// PRACK
    Prack,
    /// PUBLISH
    Publish,
    /// REFER
    Refer,
    /// REGISTER
    Register,
    /// SUBSCRIBE
    Subscribe,
    /// UPDATE
    Update,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token (case-sensitive per RFC 3261, but upper-cased here because peers
    /// in the field send lower case too).
    pub fn parse(token: &str) -> Method {
        match token.to_ascii_uppercase().as_str() {
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "INFO" => Method::Info,
            "INVITE" => Method::Invite,
            "MESSAGE" => Method::Message,
            "NOTIFY" => Method::Notify,
            "OPTIONS" => Method::Options,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "UPDATE" => Method::Update,
            _ => Method::Other(token.to_owned()),
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Info => "INFO",
            Method::Invite => "INVITE",
            Method::Message => "MESSAGE",
            Method::Notify => "NOTIFY",
            Method::Options => "OPTIONS",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Update => "UPDATE",
            Method::Other(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header as on the wire, with compact names already expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
}

/// Headers in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// The first value of `name` (case-insensitive, compact forms understood).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| same_name(&h.name, name))
            .map(|h| h.value.as_str())
    }

    /// Every value of `name`, in order; comma-separated values of one header are split (for
    /// headers whose grammar allows it: Via, Route, Record-Route).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| same_name(&h.name, name))
            .flat_map(|h| split_list(&h.value))
    }

    /// Whether a header called `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !same_name(&h.name, name));
    }

    /// Iterates in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Copies every header called `name` from `other`, in order, values untouched.
    pub fn copy_from(&mut self, other: &Headers, name: &str) {
        for header in other.0.iter().filter(|h| same_name(&h.name, name)) {
            self.0.push(header.clone());
        }
    }
}

/// Splits a header value at top-level commas (not inside `<...>` or quotes).
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0u32, false, 0);
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'<' if !quoted => depth += 1,
            b'>' if !quoted => depth = depth.saturating_sub(1),
            b',' if !quoted && depth == 0 => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(value[start.min(value.len())..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: String,
    /// The headers.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase, exactly as received (or as we send it).
    pub reason: String,
    /// The headers.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

/// The parts of a CSeq header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

/// Accessors shared by requests and responses.
pub trait SipHeaders {
    /// The headers.
    fn hdrs(&self) -> &Headers;

    /// Call-ID.
    fn call_id(&self) -> Option<&str> {
        self.hdrs().get("Call-ID")
    }

    /// CSeq, parsed.
    fn cseq(&self) -> Option<CSeq> {
        let value = self.hdrs().get("CSeq")?;
        let mut parts = value.split_whitespace();
        let seq = parts.next()?.parse().ok()?;
        let method = Method::parse(parts.next()?);
        parts.next().is_none().then_some(CSeq { seq, method })
    }

    /// The `tag` parameter of From.
    // Named after the From header; not a `from_*` constructor.
    #[allow(clippy::wrong_self_convention)]
    fn from_tag(&self) -> Option<&str> {
        tag(self.hdrs().get("From")?)
    }

    /// The `tag` parameter of To.
    fn to_tag(&self) -> Option<&str> {
        tag(self.hdrs().get("To")?)
    }

    /// The branch of the topmost Via.
    fn via_branch(&self) -> Option<&str> {
        let top = self.hdrs().all("Via").next()?;
        param(top.split_once(';').map(|(_, p)| p).unwrap_or(""), "branch")
    }

    /// The URI of the first Contact.
    fn contact_uri(&self) -> Option<&str> {
        self.hdrs().all("Contact").next().map(addr_uri)
    }
}

impl SipHeaders for Request {
    fn hdrs(&self) -> &Headers {
        &self.headers
    }
}

impl SipHeaders for Response {
    fn hdrs(&self) -> &Headers {
        &self.headers
    }
}

/// The URI of a name-addr or addr-spec (`"N" <sip:a@b>;p` or `sip:a@b;p`).
pub fn addr_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].trim(),
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// The header parameters of a name-addr (after the `>`, or after the URI of an addr-spec).
fn header_params(value: &str) -> &str {
    let rest = match value.rfind('>') {
        Some(close) => &value[close + 1..],
        None => value,
    };
    rest.split_once(';').map(|(_, p)| p).unwrap_or("")
}

/// The `tag` parameter of a From or To value.
pub fn tag(value: &str) -> Option<&str> {
    param(header_params(value), "tag")
}

/// The value of parameter `name` in `a=1;b;c=3` (case-insensitive name).
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

impl Request {
    /// Serialises for the wire, with Content-Length set from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        serialize(start, &self.headers, &self.body)
    }
}

impl Response {
    /// Serialises for the wire, with Content-Length set from the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        serialize(start, &self.headers, &self.body)
    }

    /// A response to `request` (RFC 3261 §8.2.6): all Via headers copied verbatim, From,
    /// Call-ID, CSeq, and To (with `to_tag` added unless it already has one).
    pub fn to(request: &Request, status: u16, to_tag: Option<&str>) -> Response {
        let mut headers = Headers::new();
        headers.copy_from(&request.headers, "Via");
        headers.copy_from(&request.headers, "From");
        if let Some(to) = request.headers.get("To") {
            match to_tag {
                Some(new) if tag(to).is_none() => headers.push("To", format!("{to};tag={new}")),
                _ => headers.push("To", to),
            }
        }
        headers.copy_from(&request.headers, "Call-ID");
        headers.copy_from(&request.headers, "CSeq");
        Response {
            status,
            reason: verbhost_common::status::reason_phrase(status).to_owned(),
            headers,
            body: Vec::new(),
        }
    }
}

fn serialize(start: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = start.into_bytes();
    for header in headers
        .iter()
        .filter(|h| !same_name(&h.name, "Content-Length"))
    {
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_read_the_usual_header_shapes() {
        let mut headers = Headers::new();
        headers.push(
            "Via",
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2",
        );
        headers.push("From", "\"A;b\" <sip:a@x;transport=udp>;tag=abc");
        headers.push("To", "sip:b@y");
        headers.push("CSeq", "  7   REFER ");
        headers.push("Contact", "<sip:b@10.0.0.2:5070;ob>;expires=60, <sip:c@z>");
        let request = Request {
            method: Method::Refer,
            uri: "sip:b@y".into(),
            headers,
            body: Vec::new(),
        };
        assert_eq!(request.via_branch(), Some("z9hG4bK1"));
        assert_eq!(request.headers.all("Via").count(), 2);
        assert_eq!(request.from_tag(), Some("abc"));
        assert_eq!(request.to_tag(), None);
        assert_eq!(
            request.cseq(),
            Some(CSeq {
                seq: 7,
                method: Method::Refer
            })
        );
        assert_eq!(request.contact_uri(), Some("sip:b@10.0.0.2:5070;ob"));
    }

    #[test]
    fn responses_copy_the_request_and_keep_their_reason() {
        let mut headers = Headers::new();
        headers.push("Via", "SIP/2.0/UDP a;branch=z9hG4bK1");
        headers.push("v", "SIP/2.0/UDP b;branch=z9hG4bK2");
        headers.push("From", "<sip:a@x>;tag=1");
        headers.push("To", "<sip:b@y>");
        headers.push("Call-ID", "c1");
        headers.push("CSeq", "1 NOTIFY");
        let request = Request {
            method: Method::Notify,
            uri: "sip:b@y".into(),
            headers,
            body: Vec::new(),
        };
        let response = Response::to(&request, 202, Some("t9"));
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 202 Accepted\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b;branch=z9hG4bK2\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=t9\r\nCall-ID: c1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
