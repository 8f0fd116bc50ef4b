// The {{verb}} verb. A verbhost plugin: parse() reads and checks the verb's JSON (and nothing
// else, so a verb can be checked without running it), run() does the work on the call.
//
//   {"verb": "{{verb}}", "greeting": "hello", "eventHook": "/progress", "actionHook": "/done"}

import { definePlugin, Verb, host } from '@verbhost/sdk';

const info = { name: '{{name}}', version: '0.1.0', verbs: ['{{verb}}'] };

function parse(text) {
  const verb = Verb.parse(text);
  verb.expectName('{{verb}}');
  const p = verb.props();
  const greeting = p.string('greeting') ?? 'hello';
  const eventHook = p.hook('eventHook');
  const actionHook = p.hook('actionHook');
  const warnings = p.finish(); // an unknown property is an error that names it
  return { greeting, eventHook, actionHook, warnings };
}

function run(verb, call) {
  verb.warnings.forEach(host.warn);
  host.info(`${verb.greeting}, ${call.remoteParty.uri}`);
  if (verb.eventHook) {
    const refused = host.emitEvent(verb.eventHook, { event: 'greeted', greeting: verb.greeting });
    if (refused) host.warn(`eventHook not posted: ${refused}`);
  }
  return {
    event: 'GREETED',
    payload: { greeting: verb.greeting, party: call.remoteParty.uri },
    actionHook: verb.actionHook,
    callLeft: false,
  };
}

export const { verb, verbCheck } = definePlugin({ info, parse, run });
