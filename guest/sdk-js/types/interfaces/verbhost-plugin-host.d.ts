// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
/// <reference path="./verbhost-plugin-types.d.ts" />
declare module 'verbhost:plugin/host@0.1.1' {
  /**
   * Writes a line to the host's log, tagged with the plugin and the call.
   */
  export function log(level: Level, message: string): void;
  /**
   * Posts `payload` (a JSON object) to `hook`, the verb's eventHook.
   * 
   * The host adds the call identifiers and delivers it in the background: this returns at
   * once, and a delivery failure never reaches or delays the verb.
   */
  export function emitEvent(hook: Webhook, payload: string): void;
  /**
   * Milliseconds since the verb started, on a monotonic clock. The mock host runs a
   * virtual clock here, so timing logic is tested without waiting.
   */
  export function clockMs(): bigint;
  export type Level = import('verbhost:plugin/types@0.1.1').Level;
  export type Webhook = import('verbhost:plugin/types@0.1.1').Webhook;
  /**
   * Why the host refused an event.
   */
  export type EventError = EventErrorInvalidPayload | EventErrorTooLarge | EventErrorTooMany;
  /**
   * The payload is not a JSON object; the text says where it fails.
   */
  export interface EventErrorInvalidPayload {
    tag: 'invalid-payload',
    val: string,
  }
  /**
   * The payload is larger than the host accepts (the limit in bytes).
   */
  export interface EventErrorTooLarge {
    tag: 'too-large',
    val: number,
  }
  /**
   * The verb has already emitted as many events as the host accepts (the limit).
   */
  export interface EventErrorTooMany {
    tag: 'too-many',
    val: number,
  }
}
