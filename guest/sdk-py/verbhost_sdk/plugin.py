"""The bridge between the SDK and the contract's generated bindings (``wit_world``, which
componentize-py generates from ``wit/`` when it builds the plugin).

A plugin's ``run`` and ``check`` exports are one line each::

    class Verb(exports.Verb):
        def run(self, verb, call):
            return plugin.run_verb(my_verb, verb, call)

    class VerbCheck(exports.VerbCheck):
        def check(self, verb):
            plugin.check_verb(parse, verb)

``check`` (contract 0.1.1, the ``checked-verb-plugin`` world the build script targets) is what
the host calls for every verb of an application before any call: ``parse`` alone, which must
read every property and must not call the host (a check has no call, and traps if it does).
"""

from componentize_py_types import Err
from wit_world.exports import verb as _verb
from wit_world.imports import host, types

from . import json as vjson
from .errors import VerbError
from .headers import same_name

MAX_DETAIL = 512
"""Most characters of an unexpected exception's text put in its ``failed`` error."""


def webhook(hook):
    """An SDK :class:`verbhost_sdk.verb.Hook` as the contract's ``webhook`` (None stays None)."""
    if hook is None:
        return None
    return types.Webhook(
        url=hook.url, method=hook.method, username=hook.username, password=hook.password
    )


def header_list(pairs):
    """``(name, value)`` pairs as the contract's ``list<header>``."""
    return [types.Header(name=name, value=value) for name, value in pairs]


def header(headers, name):
    """The first value of header ``name`` (case and compact forms ignored) in a contract
    ``list<header>``, or None."""
    for h in headers:
        if same_name(h.name, name):
            return h.value
    return None


def info(message):
    """Logs at info level."""
    host.log(types.Level.INFO, message)


def warn(message):
    """Logs at warn level."""
    host.log(types.Level.WARN, message)


def emit_event(hook, payload):
    """Posts ``payload`` (a dict) to ``hook`` (an SDK Hook) in the background. Returns None, or
    the host's reason for refusing it in words (logged at warn too)."""
    try:
        host.emit_event(webhook(hook), vjson.dumps(payload))
        return None
    except Err as err:
        value = err.value
        if isinstance(value, host.EventError_TooLarge):
            why = "the payload is larger than the host's %d bytes" % value.value
        elif isinstance(value, host.EventError_TooMany):
            why = "the verb already emitted the host's %d events" % value.value
        else:
            why = "invalid payload: %s" % value.value
        warn("event not posted: " + why)
        return why


def completion(event, payload, action_hook=None, call_left=False):
    """The contract's ``completion``: ``payload`` is a dict, ``action_hook`` an SDK Hook."""
    return _verb.Completion(
        event=event,
        payload=vjson.dumps(payload),
        action_hook=webhook(action_hook),
        call_left=call_left,
    )


def check_verb(parse, verb_text):
    """Calls ``parse(verb_text)`` for the contract's ``check`` and discards what it read; its
    errors are reported as :func:`run_verb` reports them."""
    run_verb(lambda text, _call: parse(text), verb_text, None)


def run_verb(fn, verb_text, call):
    """Calls ``fn(verb_text, call)`` and returns its completion. A :class:`VerbError` becomes
    the contract's ``verb-error`` (``invalid-verb`` or ``failed``); any other exception becomes
    ``failed`` naming its type and text (a bug in the plugin is reported, not a trap)."""
    try:
        return fn(verb_text, call)
    except VerbError as err:
        if err.kind == "failed":
            raise Err(_verb.VerbError_Failed(err.message)) from None
        raise Err(_verb.VerbError_InvalidVerb(err.message)) from None
    except Err:
        raise
    except Exception as err:  # noqa: BLE001 - reported to the host as the verb's failure
        detail = ("%s: %s" % (type(err).__name__, err))[:MAX_DETAIL]
        raise Err(_verb.VerbError_Failed("the plugin raised " + detail)) from None
