//! `--sip-trace`: the SIP stack's wire events (target [`verbhost_sip::trace::TARGET`]) printed
//! on stderr the way sngrep and `sip-trace` users read them. Each message is a header line
//!
//! ```text
//! 2026-12-01 21:26:02.123456 UDP 127.0.0.1:5070 -> 127.0.0.1:5060 (612 bytes)
//! ```
//!
//! (UTC) followed by the message text and a blank line. Drops and error answers are one line
//! each, `... DROPPED (cause): detail` or `... ANSWERED 400: cause`. The text is the stack's
//! bounded, escaped prefix with its escaped line ends turned back into line ends: any other
//! control byte stays escaped.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;
use verbhost_sip::trace::TARGET;

/// The layer that prints the SIP trace, filtered to the wire target at every level.
pub(crate) fn layer<S>() -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    SipTrace.with_filter(Targets::new().with_target(TARGET, Level::TRACE))
}

struct SipTrace;

/// The fields of one wire event.
#[derive(Default)]
struct Fields {
    kind: String,
    transport: String,
    src: String,
    dst: String,
    len: u64,
    text: String,
    cause: String,
    detail: String,
    status: u64,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "len" => self.len = value,
            "status" => self.status = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "kind" => &mut self.kind,
            "transport" => &mut self.transport,
            "src" => &mut self.src,
            "dst" => &mut self.dst,
            "text" => &mut self.text,
            "cause" => &mut self.cause,
            "detail" => &mut self.detail,
            _ => return,
        };
        let _ = write!(slot, "{value:?}");
    }
}

impl<S: Subscriber> Layer<S> for SipTrace {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Fields {
            kind,
            transport,
            src,
            dst,
            len,
            text,
            cause,
            detail,
            status,
        } = fields;
        let mut out = format!(
            "{} {transport} {src} -> {dst}",
            timestamp(SystemTime::now())
        );
        let _ = match kind.as_str() {
            "recv" | "sent" => {
                let text = line_ends(&text);
                write!(out, " ({len} bytes)\n{}\n\n", text.trim_end_matches('\n'))
            }
            "dropped" => writeln!(out, " DROPPED ({cause}): {detail}\n"),
            "answered" => writeln!(out, " ANSWERED {status}: {cause}\n"),
            _ => return,
        };
        // One write per message, so messages from several tasks never interleave.
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// The escaped text with `\r\n` (and a lone `\n`) back as line ends and `\\` back as `\`;
/// every other escape (`\t`, `\xHH`, a lone `\r`) stays as it is, so no control byte is
/// printed.
fn line_ends(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (taken, put) = if rest.starts_with("\\r\\n") {
            (4, "\n")
        } else if rest.starts_with("\\n") {
            (2, "\n")
        } else if rest.starts_with("\\\\") {
            (2, "\\")
        } else {
            // Keep any other escape whole.
            let end = rest[1..].chars().next().map_or(1, |c| 1 + c.len_utf8());
            (end, &rest[..end])
        };
        out.push_str(put);
        rest = &rest[taken..];
    }
    out.push_str(rest);
    out
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC.
fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_160_362_123_456);
        assert_eq!(timestamp(at), "2026-12-01 21:26:02.123456");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00.000000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn only_escaped_line_ends_become_line_ends() {
        assert_eq!(line_ends("A\\r\\nB\\r\\n\\r\\n"), "A\nB\n\n");
        // A backslash followed by `r`, then a real LF: not a CRLF.
        assert_eq!(line_ends("x\\\\r\\n"), "x\\r\n");
        assert_eq!(line_ends("\\x1b[31m\\t\\r"), "\\x1b[31m\\t\\r");
    }
}
