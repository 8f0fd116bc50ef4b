"""Reading a verb: both jambonz forms, typed properties, and errors that name the property at
fault. The Python side of ``verbhost_sdk::verb`` (Rust), with the same messages.

One difference: an unknown property is reported before a missing required one, so a typo
(``referto`` for ``referTo``) is named as what it is, not as the property it was meant to be::

    verb = Verb.parse('{"verb": "my:verb", "referto": "sip:x@y"}')
    p = verb.props()
    target = p.phone_or_string("referTo", required="the transfer target")
    p.finish()   # VerbError: my:verb: unknown property referto
"""

from dataclasses import dataclass
from typing import Optional

from . import json as vjson
from .errors import VerbError, kind_of
from .headers import check_custom, same_name


@dataclass
class Hook:
    """A webhook as the verb wrote it: a URL (absolute or relative to the application's base
    URL), ``POST`` or ``GET``, and optional basic-auth credentials."""

    url: str
    method: str = "POST"
    username: Optional[str] = None
    password: Optional[str] = None


_HOOK_PROPERTIES = ("url", "method", "username", "password")
# Cognigy's documentation shows these payload fields inside the actionHook object.
_DOCUMENTED_PAYLOAD_KEYS = ("referStatus", "final_referred_call_status", "eventHook")


class Verb:
    """A verb: its name and its properties (a dict)."""

    def __init__(self, name, props):
        self.name = name
        self.properties = props

    @staticmethod
    def parse(text):
        """Parses a verb in either form, ``{"verb": "x:y", ...}`` or ``{"x:y": {...}}``.
        Unquoted phone numbers are accepted. Raises :class:`VerbError` naming the cause."""
        try:
            value = vjson.loads(text)
        except vjson.JsonError as err:
            raise VerbError("verb is not valid JSON: %s" % err) from None
        if not isinstance(value, dict):
            raise VerbError("a verb is a JSON object, got %s" % kind_of(value))
        if "verb" in value:
            props = dict(value)
            name = props.pop("verb")
            if not isinstance(name, str):
                raise VerbError("verb: expected the verb name as a string, got %s" % kind_of(name))
            if not name:
                raise VerbError("verb: the verb name is empty")
            return Verb(name, props)
        if len(value) == 1:
            ((name, props),) = value.items()
            if not isinstance(props, dict):
                raise VerbError(
                    "%s: expected the verb's properties as an object, got %s" % (name, kind_of(props))
                )
            return Verb(name, props)
        raise VerbError(
            'a verb needs a "verb" property naming it, or must be an object with one property '
            "named after the verb"
        )

    def expect_name(self, name):
        """Raises unless the verb is called ``name``."""
        if self.name != name:
            raise VerbError("this plugin implements %s, not %s" % (name, self.name))

    def props(self):
        """A :class:`Props` reader over the properties."""
        return Props(self.name, self.properties)


class Props:
    """Reads a verb's properties one by one. Every reader returns None when the property is
    absent (or null), and raises :class:`VerbError` naming the verb and the property when it
    has the wrong type. Pass ``required="what it is"`` to make an absent property an error,
    reported by :meth:`finish` after any unknown property."""

    def __init__(self, verb, props):
        self.verb = verb
        self._props = props
        self._read = set()
        self._missing = []
        self.warnings = []

    def error(self, key, message):
        """A :class:`VerbError` about property ``key``."""
        return VerbError("%s: %s: %s" % (self.verb, key, message))

    def _take(self, key, required):
        self._read.add(key)
        value = self._props.get(key)
        if value is None and required:
            self._missing.append((key, required))
        return value

    def string(self, key, required=None):
        """An optional string."""
        value = self._take(key, required)
        if value is None or isinstance(value, str):
            return value
        raise self.error(key, "expected a string, got %s" % kind_of(value))

    def phone_or_string(self, key, required=None):
        """A string that may also be written as a number, the way phone numbers are
        (``"referTo": +4930123`` or ``"referTo": 4930123``)."""
        value = self._take(key, required)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise self.error(
                    key, "the number %d is not a phone number; write the target as a string" % value
                )
            return str(value)
        if isinstance(value, float):
            raise self.error(
                key, "the number %r is not a phone number; write the target as a string" % value
            )
        raise self.error(key, "expected a string or a phone number, got %s" % kind_of(value))

    def boolean(self, key, required=None):
        """An optional boolean."""
        value = self._take(key, required)
        if value is None or isinstance(value, bool):
            return value
        raise self.error(key, "expected a boolean, got %s" % kind_of(value))

    def integer(self, key, lo, hi, required=None, what="a whole number"):
        """An optional whole number from ``lo`` to ``hi``."""
        value = self._take(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            shown = vjson.dumps(value)
            raise self.error(key, "expected %s from %d to %d, got %s" % (what, lo, hi, shown))
        return value

    def seconds(self, key, lo, hi, required=None):
        """An optional whole number of seconds from ``lo`` to ``hi``, returned in ms."""
        secs = self.integer(key, lo, hi, required, what="a whole number of seconds")
        return None if secs is None else secs * 1000

    def hook(self, key, required=None):
        """An optional webhook: a URL string or ``{url, method, username, password}``."""
        value = self._take(key, required)
        if value is None:
            return None
        if isinstance(value, str):
            return Hook(url=self._url(key, value, ""))
        if not isinstance(value, dict):
            raise self.error(
                key,
                "expected a URL or an object with url, method, username, password; got %s"
                % kind_of(value),
            )
        for name in value:
            if name not in _HOOK_PROPERTIES and name not in _DOCUMENTED_PAYLOAD_KEYS:
                raise self.error(key, "unknown property %s" % name)
        for name in _DOCUMENTED_PAYLOAD_KEYS:
            if name in value:
                self.warnings.append(
                    "%s: %s.%s describes the hook's payload, not the hook; ignored"
                    % (self.verb, key, name)
                )
        fields = {}
        for name in _HOOK_PROPERTIES:
            field = value.get(name)
            if field is not None and not isinstance(field, str):
                raise self.error(key, "%s: expected a string, got %s" % (name, kind_of(field)))
            fields[name] = field
        if fields["url"] is None:
            raise self.error(key, "url: missing")
        method = fields["method"] or "POST"
        if method.upper() not in ("GET", "POST"):
            raise self.error(key, "method: expected GET or POST, got %s" % vjson.dumps(method))
        return Hook(
            url=self._url(key, fields["url"], "url: "),
            method=method.upper(),
            username=fields["username"],
            password=fields["password"],
        )

    def _url(self, key, url, prefix):
        if not url.strip():
            raise self.error(key, prefix + "the URL is empty")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
            raise self.error(
                key, prefix + "the URL %s contains white space or control characters" % vjson.dumps(url)
            )
        return url

    def headers(self, key):
        """Extra SIP headers: an object of names to strings, numbers or booleans, as a list of
        ``(name, value)``. Each passes :func:`verbhost_sdk.headers.check_custom`, and no name
        may be given twice in any letter case."""
        value = self._take(key, None)
        if value is None:
            return []
        if not isinstance(value, dict):
            raise self.error(
                key, "expected an object of header names to values, got %s" % kind_of(value)
            )
        out = []
        for name, raw in value.items():
            if isinstance(raw, bool):
                text = "true" if raw else "false"
            elif isinstance(raw, (int, float)):
                text = vjson.dumps(raw)
            elif isinstance(raw, str):
                text = raw
            else:
                raise self.error(
                    key, "%s: expected a string, number or boolean, got %s" % (name, kind_of(raw))
                )
            why = check_custom(name, text)
            if why is not None:
                raise self.error(key, why)
            if any(same_name(seen, name) for seen, _ in out):
                raise self.error(key, "header %s is given twice" % name)
            out.append((name, text))
        return out

    def finish(self):
        """Raises on the first property that was not read (``_``, jambonz's comment key,
        excepted), then on the first required property that is missing. Returns the warnings
        collected while reading, for the plugin to log."""
        for name in self._props:
            if name != "_" and name not in self._read:
                raise VerbError("%s: unknown property %s" % (self.verb, name))
        if self._missing:
            key, what = self._missing[0]
            raise self.error(key, "missing (%s is required)" % what)
        return self.warnings
