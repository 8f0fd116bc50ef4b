// Services of the host: logging, the eventHook, the clock (the contract's `host` interface).
// Only a component built by build.js can import this module: the imports are the host's.

import * as wit from 'verbhost:plugin/host@0.1.1';

/** Writes a line to the host's log at `level` (`trace`, `debug`, `info`, `warn`, `error`). */
export function log(level, message) {
  wit.log(level, String(message));
}

/** Logs at debug level. */
export const debug = (message) => log('debug', message);
/** Logs at info level. */
export const info = (message) => log('info', message);
/** Logs at warn level. */
export const warn = (message) => log('warn', message);
/** Logs at error level. */
export const error = (message) => log('error', message);

/** What the host refused in an emit-event error, in words. */
export function eventErrorMessage(err) {
  switch (err.tag) {
    case 'invalid-payload':
      return `event payload is not a JSON object: ${err.val}`;
    case 'too-large':
      return `event payload is larger than ${err.val} bytes`;
    case 'too-many':
      return `more than ${err.val} events in one verb`;
    default:
      return `the host refused the event: ${JSON.stringify(err)}`;
  }
}

/**
 * Posts `payload` (an object, serialised here) to `hook`, the verb's eventHook, in the
 * background: the host adds the call identifiers, and a delivery failure never reaches the
 * plugin. Returns null, or the reason in words when the host refused the payload (too large,
 * too many events).
 */
export function emitEvent(hook, payload) {
  try {
    wit.emitEvent(hook, JSON.stringify(payload));
    return null;
  } catch (err) {
    if (err && err.payload) {
      return eventErrorMessage(err.payload);
    }
    throw err;
  }
}

/** Milliseconds since the verb started, as a number (virtual time under the mock host). */
export function clockMs() {
  return Number(wit.clockMs());
}
