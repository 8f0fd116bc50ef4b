// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
/// <reference path="./verbhost-plugin-verb.d.ts" />
declare module 'verbhost:plugin/verb-check@0.1.1' {
  /**
   * Reads and checks one verb (its JSON, in either jambonz form) the way `run` would, and
   * returns what `run` would refuse it with, without acting on any call. The host calls it
   * for every verb of an application before the application's first verb runs, under the
   * same bounds as a run; it may not call the host.
   */
  export function check(verb: string): void;
  export type VerbError = import('verbhost:plugin/verb@0.1.1').VerbError;
}
