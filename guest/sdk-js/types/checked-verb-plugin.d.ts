// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
/// <reference path="./interfaces/verbhost-plugin-host.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-sip.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-types.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-verb-check.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-verb.d.ts" />
declare module 'verbhost:plugin/checked-verb-plugin@0.1.1' {
  export type * as VerbhostPluginHost011 from 'verbhost:plugin/host@0.1.1'; // import verbhost:plugin/host@0.1.1
  export type * as VerbhostPluginSip011 from 'verbhost:plugin/sip@0.1.1'; // import verbhost:plugin/sip@0.1.1
  export type * as VerbhostPluginTypes011 from 'verbhost:plugin/types@0.1.1'; // import verbhost:plugin/types@0.1.1
  export * as verb from 'verbhost:plugin/verb@0.1.1'; // export verbhost:plugin/verb@0.1.1
  export * as verbCheck from 'verbhost:plugin/verb-check@0.1.1'; // export verbhost:plugin/verb-check@0.1.1
}
