// The verbhost JavaScript SDK: everything a verb plugin needs, in one import.
//
//   import { definePlugin, Verb, host, sip } from '@verbhost/sdk';
//
// - `definePlugin({info, parse, run})`: the component's `verb` and `verbCheck` exports (see src/plugin.js);
// - `Verb`, `Props`, `VerbError`: reading a verb's JSON in both jambonz forms, with errors
//   that name the property (src/verb.js);
// - `host` and `sip`: the host's imports (log, emitEvent, clockMs; sendRefer, onNotify);
// - `refer`: the sip:refer verb, Refer-To and Referred-By formatting (src/refer.js);
// - `headers`, `sipfrag`, `subscription`, `json`: the rules the host applies too.
// The contract's TypeScript declarations are in types/ (generated from wit/ by `build.js types`).

export * as host from './src/host.js';
export * as sip from './src/sip.js';
export * as refer from './src/refer.js';
export * as headers from './src/headers.js';
export * as sipfrag from './src/sipfrag.js';
export * as subscription from './src/subscription.js';
export * as json from './src/json.js';
export { Verb, Props, VerbError, invalidVerb, failed, parseHook } from './src/verb.js';
export { definePlugin } from './src/plugin.js';
