// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
/// <reference path="./interfaces/verbhost-plugin-host.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-sip.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-types.d.ts" />
/// <reference path="./interfaces/verbhost-plugin-verb.d.ts" />
declare module 'verbhost:plugin/verb-plugin@0.1.0' {
  export type * as VerbhostPluginHost010 from 'verbhost:plugin/host@0.1.0'; // import verbhost:plugin/host@0.1.0
  export type * as VerbhostPluginSip010 from 'verbhost:plugin/sip@0.1.0'; // import verbhost:plugin/sip@0.1.0
  export type * as VerbhostPluginTypes010 from 'verbhost:plugin/types@0.1.0'; // import verbhost:plugin/types@0.1.0
  export * as verb from 'verbhost:plugin/verb@0.1.0'; // export verbhost:plugin/verb@0.1.0
}
