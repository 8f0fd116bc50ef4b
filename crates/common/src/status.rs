//! Reason phrases of SIP status codes (RFC 3261 §21 and the extensions in use), for responses
//! we send and for scripted ones that give only a code.

/// The standard reason phrase for `code`, or a generic one for its class.
///
/// ```
/// assert_eq!(verbhost_common::status::reason_phrase(202), "Accepted");
/// assert_eq!(verbhost_common::status::reason_phrase(499), "Client Error");
/// ```
pub fn reason_phrase(code: u16) -> &'static str {
    standard_phrase(code).unwrap_or(match code {
        100..=199 => "Provisional",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        500..=599 => "Server Error",
        _ => "Global Failure",
    })
}

/// The phrase RFC 3261 or the extension defining `code` gives it, if any.
fn standard_phrase(code: u16) -> Option<&'static str> {
    match code {
        100 => Some("Trying"),
        180 => Some("Ringing"),
        181 => Some("Call Is Being Forwarded"),
        182 => Some("Queued"),
        183 => Some("Session Progress"),
        200 => Some("OK"),
        202 => Some("Accepted"),
        204 => Some("No Notification"),
        300 => Some("Multiple Choices"),
        301 => Some("Moved Permanently"),
        302 => Some("Moved Temporarily"),
        305 => Some("Use Proxy"),
        380 => Some("Alternative Service"),
        400 => Some("Bad Request"),
        401 => Some("Unauthorized"),
        402 => Some("Payment Required"),
        403 => Some("Forbidden"),
        404 => Some("Not Found"),
        405 => Some("Method Not Allowed"),
        406 => Some("Not Acceptable"),
        407 => Some("Proxy Authentication Required"),
        408 => Some("Request Timeout"),
        410 => Some("Gone"),
        413 => Some("Request Entity Too Large"),
        414 => Some("Request-URI Too Long"),
        415 => Some("Unsupported Media Type"),
        416 => Some("Unsupported URI Scheme"),
        420 => Some("Bad Extension"),
        421 => Some("Extension Required"),
        423 => Some("Interval Too Brief"),
        429 => Some("Provide Referrer Identity"),
        480 => Some("Temporarily Unavailable"),
        481 => Some("Call/Transaction Does Not Exist"),
        482 => Some("Loop Detected"),
        483 => Some("Too Many Hops"),
        484 => Some("Address Incomplete"),
        485 => Some("Ambiguous"),
        486 => Some("Busy Here"),
        487 => Some("Request Terminated"),
        488 => Some("Not Acceptable Here"),
        489 => Some("Bad Event"),
        491 => Some("Request Pending"),
        493 => Some("Undecipherable"),
        500 => Some("Server Internal Error"),
        501 => Some("Not Implemented"),
        502 => Some("Bad Gateway"),
        503 => Some("Service Unavailable"),
        504 => Some("Server Time-out"),
        505 => Some("Version Not Supported"),
        513 => Some("Message Too Large"),
        600 => Some("Busy Everywhere"),
        603 => Some("Decline"),
        604 => Some("Does Not Exist Anywhere"),
        606 => Some("Not Acceptable"),
        _ => None,
    }
}
