"""Refer-To and Referred-By formatting and the sipfrag status line: the Python side of
``verbhost_sdk::refer`` (Rust), with the same rules and messages.

- ``format_target("sip:carol@x;transport=tcp", d)`` -> ``<sip:carol@x;transport=tcp>``
- ``format_target("+49 (30) 555-0123", "carrier.example")`` ->
  ``<sip:+49305550123@carrier.example;user=phone>``
- ``format_target("carol@pbx", d)`` -> ``<sip:carol@pbx>``; name-addr forms stay as given.
"""


class TargetError(ValueError):
    """Why a target cannot be formatted; ``str()`` says it in words."""


_USER_CHARS = set("-_.!~*'()&=+$,;?/%")


def _is_user_char(c):
    return (c.isascii() and c.isalnum()) or c in _USER_CHARS


def phone_number(s):
    """The digits (with a leading ``+`` if given) of a phone number written with optional
    separators (space ``-`` ``.`` ``(`` ``)``), or None when ``s`` is not one."""
    plus = "+" if s.startswith("+") else ""
    digits = plus
    for c in s[len(plus):]:
        if "0" <= c <= "9":
            digits += c
        elif c in " -.()":
            continue
        else:
            return None
    return digits if len(digits) > len(plus) else None


def _character(c):
    return TargetError("contains %r, which is not allowed here" % c)


def _check_name_addr(value):
    open_ = value.find("<")
    close = value.find(">", open_) if open_ >= 0 else -1
    if open_ < 0 or close < 0:
        raise TargetError("has a '<' without a matching '>' (or an empty <>)")
    uri = value[open_ + 1 : close].strip()
    if not uri or "<" in value[close + 1 :] or ">" in value[close + 1 :] or ">" in value[:open_]:
        raise TargetError("has a '<' without a matching '>' (or an empty <>)")
    scheme = uri.split(":", 1)[0]
    if scheme.lower() not in ("sip", "sips", "tel") or ":" not in uri:
        raise TargetError("unsupported URI scheme %s (use sip:, sips: or tel:)" % _q(scheme))
    display = value[:open_].strip()
    if display.startswith('"') and not (len(display) >= 2 and display.endswith('"')):
        raise _character('"')


def _q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _target_uri(target, domain):
    colon = target.find(":")
    if colon > 0:
        scheme = target[:colon]
        if scheme[0].isascii() and scheme[0].isalpha() and all(
            (c.isascii() and c.isalnum()) or c in "+-." for c in scheme
        ):
            lower = scheme.lower()
            if lower not in ("sip", "sips", "tel"):
                raise TargetError("unsupported URI scheme %s (use sip:, sips: or tel:)" % _q(scheme))
            rest = target[colon + 1 :]
            if not rest:
                raise TargetError("is empty")
            for c in rest:
                if c.isspace() or c == '"':
                    raise _character(c)
            return "%s:%s" % (lower, rest)
    bad = next((c for c in target if c.isspace() or c == '"'), None)
    if bad is not None and phone_number(target) is None:
        raise _character(bad)
    if "@" in target:
        return "sip:" + target
    domain = domain.strip()
    if not domain:
        raise TargetError(
            "is a bare number or user name, but the platform configured no domain for those"
        )
    number = phone_number(target)
    if number is not None:
        return "sip:%s@%s%s" % (number, domain, ";user=phone" if number.startswith("+") else "")
    bad = next((c for c in target if not _is_user_char(c)), None)
    if bad is not None:
        raise _character(bad)
    return "sip:%s@%s" % (target, domain)


def format_target(target, default_domain):
    """A transfer target as a header value (always bracketed); raises :class:`TargetError`."""
    target = target.strip()
    if not target:
        raise TargetError("is empty")
    for c in target:
        if ord(c) < 32 or ord(c) == 127:
            raise _character(c)
    if "<" in target or ">" in target or target.startswith('"'):
        _check_name_addr(target)
        return target
    return "<%s>" % _target_uri(target, default_domain)


def name_addr(display_name, uri):
    """``"display" <uri>``, the display name quoted and escaped (RFC 3261 §25.1), or
    ``<uri>`` without one."""
    name = (display_name or "").strip()
    if not name:
        return "<%s>" % uri
    return '%s <%s>' % (_q(name), uri)


def referred_by(given, display_name, remote_party, default_domain):
    """The Referred-By value: ``given`` formatted like a target, or when None the party being
    transferred (``remote_party``, the contract's identity). ``display_name`` applies when the
    value has no display name of its own. None when there is nothing to send."""
    if given is None:
        uri = remote_party.uri.strip()
        if not uri:
            return None
        return name_addr(display_name or remote_party.display_name, uri)
    formatted = format_target(given, default_domain)
    if formatted.startswith("<") and display_name:
        close = formatted.index(">")
        return name_addr(display_name, formatted[1:close]) + formatted[close + 1 :]
    return formatted


def status_line(code, reason):
    """A sipfrag body's status line (RFC 3420): ``SIP/2.0 180 Ringing``."""
    return ("SIP/2.0 %d %s" % (code, reason)).rstrip()
