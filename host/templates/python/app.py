"""The {{verb}} verb, a verbhost plugin in Python.

    {"verb": "{{verb}}", "greeting": "hello", "eventHook": "/events", "actionHook": "/done"}

It logs the greeting with the caller's URI, posts it to the eventHook, and completes with
event DONE. Build it with ./build.sh, test it with
`verbhost test {{name}}.wasm scenarios/*.json`.
"""

from wit_world import exports
from wit_world.exports import verb as wverb

import verbhost_sdk as sdk
from verbhost_sdk import plugin

VERB = "{{verb}}"


def parse(text):
    """Reads and checks the verb without acting on a call. The host calls it alone (through
    VerbCheck) for every verb of an application before any call, so it must not call the host."""
    verb = sdk.Verb.parse(text)
    verb.expect_name(VERB)
    p = verb.props()
    greeting = p.string("greeting") or "hello"
    event_hook = p.hook("eventHook")
    action_hook = p.hook("actionHook")
    warnings = p.finish()  # unknown properties are errors that name them
    return greeting, event_hook, action_hook, warnings


def run(text, call):
    greeting, event_hook, action_hook, warnings = parse(text)
    for warning in warnings:
        plugin.warn(warning)
    said = "%s, %s" % (greeting, call.remote_party.uri)
    plugin.info(said)
    if event_hook is not None:
        plugin.emit_event(event_hook, {"event": "greeted", "said": said})
    return plugin.completion("DONE", {"said": said}, action_hook)


# The contract's export: componentize-py looks for a class named after the interface.
class Verb(exports.Verb):
    def describe(self):
        return wverb.PluginInfo(name="{{name}}", version="0.1.0", verbs=[VERB])

    def run(self, verb, call):
        return plugin.run_verb(run, verb, call)


class VerbCheck(exports.VerbCheck):
    def check(self, verb):
        plugin.check_verb(parse, verb)
