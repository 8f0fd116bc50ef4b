"""``py:refer-computed``: a call transfer whose REFER headers are computed from the verb and the
call, written in Python (componentize-py) on verbhost's Python SDK.

The verb::

    {"verb": "py:refer-computed", "referTo": "+4930555", "tag": "sales",
     "headers": {"X-Queue": 7}, "eventHook": "/progress", "actionHook": "/done"}

It sends a REFER to ``referTo`` (formatted like sip:refer's), Referred-By the party being
transferred, and these headers besides the verb's own ``headers``:

- ``X-Transferred-Call``: the call's ``call_sid``;
- ``X-Original-Caller``: the URI of the party being transferred;
- ``X-Call-Direction``: ``inbound`` or ``outbound``;
- ``X-Transfer-Tag``: the verb's ``tag``, when given.

It follows the NOTIFYs like sip:refer (``notifyTimeout`` per wait, ``transferTimeout`` in all),
posts ``{"event": "py-refer-progress", "status": 180, "reason": "Ringing"}`` to the eventHook for
each NOTIFY with a status, and completes ``PY_REFER_TRANSFERRED`` (a 2xx to the REFER and a
final 2xx NOTIFY, or ``Refer-Sub: false``) or ``PY_REFER_FAILED``, with ``outcome`` saying why.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import verb as wverb
from wit_world.imports import host, sip, types

import verbhost_sdk as sdk
from verbhost_sdk import VerbError, plugin
from verbhost_sdk.headers import check_value, same_name
from verbhost_sdk.refer import TargetError, format_target, referred_by

NAME = "py:refer-computed"
COMPUTED = ("X-Transferred-Call", "X-Original-Caller", "X-Call-Direction", "X-Transfer-Tag")


def parse(text):
    verb = sdk.Verb.parse(text)
    verb.expect_name(NAME)
    p = verb.props()
    v = {
        "id": p.string("id"),
        "refer_to": p.phone_or_string("referTo", required="the transfer target"),
        "tag": p.string("tag"),
        "headers": p.headers("headers"),
        "action_hook": p.hook("actionHook"),
        "event_hook": p.hook("eventHook"),
        "notify_ms": p.seconds("notifyTimeout", 1, 3600) or 40_000,
        "transfer_ms": p.seconds("transferTimeout", 1, 3600) or 180_000,
    }
    warnings = p.finish()
    for name, _ in v["headers"]:
        if any(same_name(name, computed) for computed in COMPUTED):
            raise p.error("headers", "header %s is computed by %s and cannot be given" % (name, NAME))
    if v["tag"] is not None:
        why = check_value("X-Transfer-Tag", v["tag"])
        if why is not None or not v["tag"].strip():
            raise p.error("tag", why or "is empty")
    try:
        format_target(v["refer_to"], "example.invalid")
    except TargetError as err:
        raise p.error("referTo", err) from None
    return v, warnings


def computed_headers(v, call):
    headers = [
        ("X-Transferred-Call", call.call_sid),
        ("X-Original-Caller", call.remote_party.uri),
        ("X-Call-Direction", "inbound" if call.direction == types.Direction.INBOUND else "outbound"),
    ]
    if v["tag"] is not None:
        headers.append(("X-Transfer-Tag", v["tag"].strip()))
    return headers


def transfer(text, call):
    v, warnings = parse(text)
    for warning in warnings:
        plugin.warn(warning)
    try:
        refer_to = format_target(v["refer_to"], call.default_domain)
    except TargetError as err:
        raise VerbError("%s: referTo: %s" % (NAME, err)) from None
    computed = computed_headers(v, call)
    request = sip.ReferRequest(
        refer_to=refer_to,
        referred_by=referred_by(None, None, call.remote_party, call.default_domain),
        headers=plugin.header_list(computed + v["headers"]),
    )
    result = {"event": "PY_REFER_FAILED", "refer_to": refer_to, "headers_sent": dict(computed)}
    if v["id"] is not None:
        result["verb_id"] = v["id"]

    def done(outcome, call_left=False, success=False):
        result["outcome"] = outcome
        if success:
            result["event"] = "PY_REFER_TRANSFERRED"
        return plugin.completion(result["event"], result, v["action_hook"], call_left or success)

    try:
        response = sip.send_refer(request)
    except Err as err:
        e = err.value
        if isinstance(e, sip.ReferError_Timeout):
            return done("refer-timeout", call_left=True)
        if isinstance(e, sip.ReferError_DialogGone):
            return done("dialog-gone", call_left=True)
        if isinstance(e, sip.ReferError_Transport):
            result["detail"] = e.value
            return done("transport-error")
        raise VerbError("%s: the host refused the REFER: %s" % (NAME, e.value), "failed") from None

    result["refer_status"] = response.status
    result["refer_reason"] = response.reason
    if response.status in (408, 481):
        return done("dialog-gone", call_left=True)
    if not 200 <= response.status < 300:
        return done("refer-rejected")
    refer_sub = plugin.header(response.headers, "Refer-Sub")
    if refer_sub is not None and refer_sub.strip().lower() == "false":
        return done("refer-sub-false", success=True)

    accepted = host.clock_ms()
    hard = accepted + v["transfer_ms"]
    deadline = min(accepted + v["notify_ms"], hard)
    while True:
        now = host.clock_ms()
        if now >= deadline:
            return done("notify-timeout")
        try:
            event = sip.on_notify(response.refer_id, deadline - now)
        except Err:
            return done("subscription-lost")
        if isinstance(event, sip.ReferEvent_TimedOut):
            continue
        if isinstance(event, sip.ReferEvent_DialogEnded):
            return done("bye-before-final-notify", call_left=True)
        notify = event.value
        status = notify.sipfrag
        if status is not None:
            if v["event_hook"] is not None:
                progress = {"event": "py-refer-progress", "status": status.code, "reason": status.reason}
                if v["id"] is not None:
                    progress["verb_id"] = v["id"]
                plugin.emit_event(v["event_hook"], progress)
            if status.code >= 200:
                result["final_status"] = status.code
                result["final_reason"] = status.reason
                return done("final-notify", success=200 <= status.code < 300)
            deadline = min(host.clock_ms() + v["notify_ms"], hard)
        else:
            plugin.warn("NOTIFY without a sipfrag status line; ignored")
        state = notify.state
        if state is not None and state.status == sip.SubscriptionStatus.TERMINATED:
            return done("subscription-terminated")


# The contract's export: componentize-py looks for a class named after the interface.
class Verb(exports.Verb):
    def describe(self):
        return wverb.PluginInfo(name="refer-computed-py", version="0.1.0", verbs=[NAME])

    def run(self, verb, call):
        return plugin.run_verb(transfer, verb, call)


# The contract's optional check (0.1.1): the host reads every verb of an application with it
# before any call, so a bad py:refer-computed is refused when the server starts.
class VerbCheck(exports.VerbCheck):
    def check(self, verb):
        plugin.check_verb(parse, verb)
