"""SIP header rules for headers a verb adds to a request: the names the SIP stack owns, compact
forms, and values that cannot inject headers. The same rules as ``verbhost_common::headers``;
the host checks them again, since it does not trust a plugin to have used the SDK."""

MAX_VALUE_LEN = 4096
"""Longest header value accepted, in bytes."""
MAX_NAME_LEN = 64
"""Longest header name accepted, in bytes."""

STACK_OWNED = (
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
)
"""Headers the SIP stack builds itself; a verb may not set them."""

_COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_TOKEN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def expand_compact(name):
    """The long form of a one-letter compact header name, or ``name`` itself."""
    return _COMPACT.get(name.lower(), name) if len(name) == 1 else name


def same_name(a, b):
    """True when ``a`` and ``b`` name the same header (case ignored, compact forms expanded)."""
    return expand_compact(a).lower() == expand_compact(b).lower()


def stack_owned(name):
    """The stack-owned header ``name`` denotes, in its canonical spelling, or None."""
    for owned in STACK_OWNED:
        if same_name(owned, name):
            return owned
    return None


def check_value(name, value):
    """Why ``value`` cannot be the value of header ``name``, or None when it can."""
    if len(value.encode("utf-8")) > MAX_VALUE_LEN:
        return "header %s: value is longer than %d bytes" % (name, MAX_VALUE_LEN)
    if "\r" in value or "\n" in value:
        return "header %s: value contains a line break" % name
    if "\0" in value:
        return "header %s: value contains a NUL byte" % name
    return None


def check_custom(name, value):
    """Why a verb may not add header ``name: value``, or None when it may."""
    if not name or len(name) > MAX_NAME_LEN or any(c not in _TOKEN for c in name):
        return (
            "header name %s is not a SIP token (letters, digits and -.!%%*_+`'~, at most %d bytes)"
            % (_quote(name), MAX_NAME_LEN)
        )
    owned = stack_owned(name)
    if owned is not None:
        return "header %s is set by the SIP stack and cannot be given in `headers`" % owned
    return check_value(name, value)


def _quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
