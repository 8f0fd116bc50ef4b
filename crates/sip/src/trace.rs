//! What the SIP stack shows of its traffic. Every message received or sent, every message
//! dropped and every request answered with an error is one `tracing` event on the target
//! [`TARGET`]: messages at TRACE, drops and error answers at DEBUG, so nothing is logged
//! unless that target is enabled (`--log-level verbhost_sip::wire=trace`).
//!
//! Every event has the fields `kind` (`recv`, `sent`, `dropped`, `answered`), `transport`
//! (`UDP`, `TCP`), `src` and `dst` (addresses). Messages add `len` (bytes in all) and `text`
//! (at most [`PREFIX_BYTES`] of them, escaped by [`Printable`]); drops add `cause` (a
//! [`DropCause`] label) and `detail`; error answers add `status` and `cause`.

use std::fmt;
use std::net::SocketAddr;

use crate::transport::Transport;

/// The `tracing` target of the SIP wire events.
pub const TARGET: &str = "verbhost_sip::wire";

/// Most bytes of one message an event shows; the rest is only counted (`len`).
pub const PREFIX_BYTES: usize = 2048;

/// Bytes as text safe to log: at most [`PREFIX_BYTES`] of them, printable ASCII as is, `\\`
/// doubled, CR, LF and tab as `\r`, `\n`, `\t`, every other byte as `\xHH`; a longer input
/// ends with `[+N bytes]`. A hostile message cannot forge log lines or send terminal escapes.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(PREFIX_BYTES)];
        for &byte in shown {
            match byte {
                b'\\' => f.write_str("\\\\")?,
                b'\r' => f.write_str("\\r")?,
                b'\n' => f.write_str("\\n")?,
                b'\t' => f.write_str("\\t")?,
                0x20..=0x7e => fmt::Write::write_char(f, char::from(byte))?,
                _ => write!(f, "\\x{byte:02x}")?,
            }
        }
        if self.0.len() > shown.len() {
            write!(f, "[+{} bytes]", self.0.len() - shown.len())?;
        }
        Ok(())
    }
}

/// A cause or detail (which may quote the message) made safe to log the way [`Printable`]
/// makes a message safe: escaped and bounded.
struct Escaped<'a>(&'a dyn fmt::Display);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Printable(self.0.to_string().as_bytes()).fmt(f)
    }
}

/// Why a received message was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// Only CR/LF: a keep-alive (RFC 5626), nothing to answer.
    KeepAlive,
    /// It did not parse, and it is not a request we could answer 400 (a response, or no
    /// Via/From/To/Call-ID/CSeq to answer with).
    Unparseable,
    /// A request whose top Via has no branch: no transaction can be kept for it.
    NoBranch,
    /// A response that matches none of our transactions (late, or never ours).
    StrayResponse,
    /// A TCP stream that cannot be framed (bad Content-Length, head too large): the
    /// connection is closed.
    Unframeable,
}

impl DropCause {
    /// The label in events and metrics: `keepalive`, `unparseable`, `no_branch`,
    /// `stray_response`, `unframeable`.
    pub fn label(self) -> &'static str {
        match self {
            DropCause::KeepAlive => "keepalive",
            DropCause::Unparseable => "unparseable",
            DropCause::NoBranch => "no_branch",
            DropCause::StrayResponse => "stray_response",
            DropCause::Unframeable => "unframeable",
        }
    }
}

/// A message `local` received from `from`.
pub(crate) fn received(transport: Transport, from: SocketAddr, local: SocketAddr, bytes: &[u8]) {
    tracing::trace!(
        target: TARGET,
        kind = "recv",
        transport = transport.via_token(),
        src = %from,
        dst = %local,
        len = bytes.len(),
        text = %Printable(bytes),
        "SIP message received"
    );
}

/// A message `local` sent (or tried to send) to `to`.
pub(crate) fn sent(transport: Transport, local: SocketAddr, to: SocketAddr, bytes: &[u8]) {
    tracing::trace!(
        target: TARGET,
        kind = "sent",
        transport = transport.via_token(),
        src = %local,
        dst = %to,
        len = bytes.len(),
        text = %Printable(bytes),
        "SIP message sent"
    );
}

/// A message from `from` dropped without an answer, with what went wrong.
pub(crate) fn dropped(
    transport: Transport,
    from: SocketAddr,
    local: SocketAddr,
    cause: DropCause,
    detail: &dyn fmt::Display,
) {
    tracing::debug!(
        target: TARGET,
        kind = "dropped",
        transport = transport.via_token(),
        src = %from,
        dst = %local,
        cause = cause.label(),
        detail = %Escaped(detail),
        "SIP message dropped"
    );
}

/// A request from `to` answered with error `status`, for `cause`.
pub(crate) fn answered(
    transport: Transport,
    local: SocketAddr,
    to: SocketAddr,
    status: u16,
    cause: &dyn fmt::Display,
) {
    tracing::debug!(
        target: TARGET,
        kind = "answered",
        transport = transport.via_token(),
        src = %local,
        dst = %to,
        status,
        cause = %Escaped(cause),
        "SIP request answered with an error"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls_and_bounds_the_prefix() {
        let shown = Printable(b"OPTIONS sip:a \\ SIP/2.0\r\n\x1b[31m\t\xff").to_string();
        assert_eq!(shown, "OPTIONS sip:a \\\\ SIP/2.0\\r\\n\\x1b[31m\\t\\xff");
        let long = vec![b'a'; PREFIX_BYTES + 10];
        let shown = Printable(&long).to_string();
        assert_eq!(shown.len(), PREFIX_BYTES + "[+10 bytes]".len());
        assert!(shown.ends_with("a[+10 bytes]"));
    }
}
