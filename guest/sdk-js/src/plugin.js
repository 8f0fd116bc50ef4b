// Turning a verb implementation into the component's exports: `verb` and `verbCheck`.

import { VerbError, failed } from './verb.js';

/**
 * The contract's exports for a plugin (`verb`, and since contract 0.1.1 `verbCheck`), from:
 * - `info`: `{name, version, verbs}`, what `describe` returns;
 * - `parse(json)`: reads and checks the verb's JSON, returns what `run` needs, and throws a
 *   VerbError (invalid-verb, naming the property) when the verb is wrong; it does nothing else,
 *   so a verb can be checked without running it;
 * - `run(parsed, call)`: runs the parsed verb on the call and returns the completion
 *   `{event, payload, actionHook, callLeft}` (`payload` an object; it is serialised here).
 *
 *   export const { verb, verbCheck } = definePlugin({ info, parse, run });
 *
 * `verbCheck.check` is `parse` alone: the host calls it for every verb of an application before
 * any call, so a typo is refused when the server starts, not on the first caller. It runs with
 * no call, so `parse` must not call the host.
 *
 * A VerbError thrown by either is the verb's error; any other exception is reported as
 * `failed` with its message, so a bug in a plugin fails its verb with the cause.
 */
export function definePlugin({ info, parse, run }) {
  const guard = (f) => {
    try {
      return f();
    } catch (err) {
      if (err instanceof VerbError) {
        throw err.toWit();
      }
      const why = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw failed(`${info.name}: ${why}`).toWit();
    }
  };
  const verb = {
    describe() {
      return { name: info.name, version: info.version, verbs: [...info.verbs] };
    },
    run(text, call) {
      return guard(() => {
        const completion = run(parse(text), call);
        const payload =
          typeof completion.payload === 'string' ? completion.payload : JSON.stringify(completion.payload ?? {});
        return {
          event: completion.event,
          payload,
          actionHook: completion.actionHook,
          callLeft: Boolean(completion.callLeft),
        };
      });
    },
  };
  const verbCheck = {
    check(text) {
      guard(() => {
        parse(text);
      });
    },
  };
  return { verb, verbCheck };
}
