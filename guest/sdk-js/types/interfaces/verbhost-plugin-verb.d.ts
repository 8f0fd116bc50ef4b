// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
/// <reference path="./verbhost-plugin-types.d.ts" />
declare module 'verbhost:plugin/verb@0.1.1' {
  /**
   * Describes the plugin. Called once when the host loads it.
   */
  export function describe(): PluginInfo;
  /**
   * Runs one verb (its JSON, in either jambonz form) on a call, to completion.
   */
  export function run(verb: string, call: CallInfo): Completion;
  export type CallInfo = import('verbhost:plugin/types@0.1.1').CallInfo;
  export type Webhook = import('verbhost:plugin/types@0.1.1').Webhook;
  /**
   * Who the plugin is.
   */
  export interface PluginInfo {
    /**
     * The plugin's name, e.g. `sip-refer`.
     */
    name: string,
    /**
     * The plugin's own version (semver).
     */
    version: string,
    /**
     * The verb names it implements, e.g. `sip:refer`.
     */
    verbs: Array<string>,
  }
  /**
   * How a verb finished.
   */
  export interface Completion {
    /**
     * The outcome's event name, e.g. `TRANSFER_REFER_SUCCESS`.
     */
    event: string,
    /**
     * The actionHook payload: a JSON object. The host adds the call identifiers.
     */
    payload: string,
    /**
     * Where the payload goes; none when the verb has no actionHook.
     */
    actionHook?: Webhook,
    /**
     * True when this call leg has left the platform (transferred, or hung up), so the
     * host ends the leg and runs no further verbs.
     */
    callLeft: boolean,
  }
  /**
   * Why a verb could not run.
   */
  export type VerbError = VerbErrorInvalidVerb | VerbErrorFailed;
  /**
   * The verb's JSON is invalid; the text names the property and the cause.
   */
  export interface VerbErrorInvalidVerb {
    tag: 'invalid-verb',
    val: string,
  }
  /**
   * The verb failed for another reason the text gives.
   */
  export interface VerbErrorFailed {
    tag: 'failed',
    val: string,
  }
}
