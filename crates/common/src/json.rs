//! Reading verb JSON the way people write it.
//!
//! jambonz's own documentation shows `"referTo": +4915112345678`, a phone number without
//! quotes. That is not JSON (a number cannot start with `+`, nor with `0` followed by digits),
//! and a strict parser rejects the whole application. [`parse`] accepts it: when strict parsing
//! fails, every unquoted value that looks like a phone number (`+` or `0` followed by digits)
//! is read as the string of exactly those characters, and the document is parsed again. Any
//! other syntax error is reported with its line and column in the text as written.

use std::fmt;

use serde_json::Value;

/// A syntax error, positioned in the text the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What is wrong, as serde_json words it.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in bytes).
    pub column: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for JsonError {}

/// Parses `text` as JSON, accepting unquoted phone numbers as strings.
///
/// ```
/// use verbhost_common::json::parse;
/// let v = parse(r#"{"referTo": +4915112345678}"#).unwrap();
/// assert_eq!(v["referTo"], "+4915112345678");
/// assert!(parse(r#"{"referTo": }"#).is_err());
/// ```
pub fn parse(text: &str) -> Result<Value, JsonError> {
    let strict = match serde_json::from_str(text) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    let Some((repaired, quoted_at)) = quote_phone_numbers(text) else {
        return Err(positioned(&strict, text, text, &[]));
    };
    serde_json::from_str(&repaired).map_err(|err| positioned(&err, &repaired, text, &quoted_at))
}

/// Converts a serde_json error in `parsed` (which is `original` with quotes added at the
/// byte offsets `quoted_at`) into one positioned in `original`.
fn positioned(
    err: &serde_json::Error,
    parsed: &str,
    original: &str,
    quoted_at: &[usize],
) -> JsonError {
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_owned(),
        None => full,
    };
    // serde_json counts columns in bytes from 1 (0: before the first byte of the line).
    let line_start: usize = parsed
        .split_inclusive('\n')
        .take(err.line().saturating_sub(1))
        .map(str::len)
        .sum();
    let offset = (line_start + err.column().saturating_sub(1)).min(parsed.len());
    let offset = offset - quoted_at.iter().filter(|at| **at < offset).count();
    let before = &original.as_bytes()[..offset.min(original.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|b| **b != b'\n').count();
    JsonError {
        message,
        line,
        column,
    }
}

/// Returns `text` with unquoted phone-number values put in quotes, and the offsets (in the
/// returned text) of the quotes added; `None` when there were none. Strings are skipped with
/// their escapes, so text inside them is never touched.
fn quote_phone_numbers(text: &str) -> Option<(String, Vec<usize>)> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut quoted_at = Vec::new();
    let mut copied = 0;
    let mut in_string = false;
    let mut escaped = false;
    // The last byte outside strings and whitespace: a value starts after `:`, `[` or `,`.
    let mut previous = b'\0';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            previous = b;
            i += 1;
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let value_position = matches!(previous, b':' | b'[' | b',');
        let next_is_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if value_position && (b == b'+' || b == b'0') && next_is_digit {
            let end = bytes[i + 1..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .map_or(bytes.len(), |n| i + 1 + n);
            out.push_str(&text[copied..i]);
            quoted_at.push(out.len());
            out.push('"');
            out.push_str(&text[i..end]);
            quoted_at.push(out.len());
            out.push('"');
            copied = end;
            previous = b'"';
            i = end;
            continue;
        }
        previous = b;
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some((out, quoted_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_json_is_read_as_is() {
        assert_eq!(
            parse(r#"{"referTo": "+49", "n": 12, "f": -0.5}"#).unwrap(),
            json!({"referTo": "+49", "n": 12, "f": -0.5})
        );
    }

    #[test]
    fn unquoted_phone_numbers_become_strings_with_their_exact_digits() {
        assert_eq!(
            parse(r#"{"verb":"sip:refer","referTo": +4915112345678}"#).unwrap(),
            json!({"verb": "sip:refer", "referTo": "+4915112345678"})
        );
        assert_eq!(
            parse("[{\"referTo\":\n\t004930123 , \"x\": [+1, 0]}]").unwrap(),
            json!([{"referTo": "004930123", "x": ["+1", 0]}])
        );
    }

    #[test]
    fn text_inside_strings_is_never_rewritten() {
        assert_eq!(
            parse(r#"{"a": "x\": +49", "b": +49}"#).unwrap(),
            json!({"a": "x\": +49", "b": "+49"})
        );
    }

    #[test]
    fn other_errors_keep_serde_json_position() {
        let err = parse("{\"referTo\": +49,\n  \"id\": }").unwrap_err();
        assert_eq!((err.line, err.column), (2, 9), "{err}");
        let err = parse("{\"a\": +49, \"b\": +49, \"c\": }").unwrap_err();
        assert_eq!((err.line, err.column), (1, 27), "{err}");
        assert_eq!(err.message, "expected value");
        assert!(
            parse("+49").is_err(),
            "a bare top-level number is not a verb"
        );
        assert!(parse("").is_err());
        assert!(parse("{\"a\": +}").is_err());
        assert!(parse("{\"a\": 1").is_err());
    }
}
