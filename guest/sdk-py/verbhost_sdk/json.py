"""Reading verb JSON the way people write it.

jambonz's documentation writes phone numbers without quotes (``"referTo": +4915112345678``),
which is not JSON. :func:`loads` parses strictly first; when that fails, every unquoted value
that looks like a phone number (``+`` or ``0`` followed by digits) is quoted as the string of
exactly those characters and the text is parsed again. This mirrors
``verbhost_common::json::parse`` in the Rust SDK.
"""

import json as _json


class JsonError(ValueError):
    """The text is not JSON, even with its phone numbers quoted. ``str()`` says where."""


def _quote_phone_numbers(text):
    """The text with unquoted phone-number values quoted, or None when there are none."""
    out = []
    i = 0
    n = len(text)
    changed = False
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
            continue
        if c == '"':
            in_string = True
            out.append(c)
            i += 1
            continue
        starts_number = (c == "+" and i + 1 < n and text[i + 1].isdigit()) or (
            c == "0" and i + 1 < n and text[i + 1].isdigit()
        )
        # Only in value position: after ':', '[' or ',' (skipping whitespace).
        j = len(out) - 1
        while j >= 0 and out[j] in " \t\r\n":
            j -= 1
        if starts_number and j >= 0 and out[j] in ":[,":
            k = i + 1
            while k < n and text[k].isdigit():
                k += 1
            out.append('"' + text[i:k] + '"')
            changed = True
            i = k
            continue
        out.append(c)
        i += 1
    return "".join(out) if changed else None


def loads(text):
    """Parses ``text`` as JSON, accepting unquoted phone numbers as strings."""
    try:
        return _json.loads(text)
    except ValueError as strict:
        repaired = _quote_phone_numbers(text)
        if repaired is None:
            raise JsonError(_describe(strict)) from None
        try:
            return _json.loads(repaired)
        except ValueError as again:
            raise JsonError(_describe(again)) from None


def _describe(err):
    if isinstance(err, _json.JSONDecodeError):
        return "%s at line %d column %d" % (err.msg, err.lineno, err.colno)
    return str(err)


def dumps(value):
    """Compact JSON, the way payloads are sent to the host."""
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
