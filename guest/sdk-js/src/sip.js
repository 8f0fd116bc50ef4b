// SIP actions in the call's dialog: REFER and its subscription (the contract's `sip` interface).
// Only a component built by build.js can import this module: the imports are the host's.

import * as wit from 'verbhost:plugin/sip@0.1.1';

/** A refer-error in words. */
export function referErrorMessage(err) {
  switch (err.tag) {
    case 'timeout':
      return 'no final response to the REFER (transaction timeout)';
    case 'dialog-gone':
      return "the call's dialog no longer exists";
    case 'rejected':
      return `the host refused the REFER: ${err.val}`;
    case 'transport':
      return `transport failure: ${err.val}`;
    default:
      return `the REFER failed: ${JSON.stringify(err)}`;
  }
}

/**
 * Sends a REFER (`{referTo, referredBy, headers}`) in the call's dialog and waits for its
 * final response. Returns `{response}` (`{referId, status, reason, headers}`) or `{error}` (the
 * contract's refer-error: `{tag: 'timeout' | 'dialog-gone'}` or `{tag: 'rejected' |
 * 'transport', val: text}`), so every outcome is handled where the call is made.
 */
export function sendRefer(request) {
  try {
    return { response: wit.sendRefer(request) };
  } catch (err) {
    if (err && err.payload) {
      return { error: err.payload };
    }
    throw err;
  }
}

/**
 * Waits up to `timeoutMs` for the next event of REFER `referId`. Returns the contract's
 * refer-event (`{tag: 'notify', val: notify}`, `{tag: 'dialog-ended'}`, `{tag: 'timed-out'}`),
 * or `{tag: 'unknown-refer', val: id}` when the host has no such subscription.
 */
export function onNotify(referId, timeoutMs) {
  try {
    return wit.onNotify(referId, Math.max(0, Math.min(timeoutMs, 0xffffffff)));
  } catch (err) {
    if (err && err.payload) {
      return err.payload;
    }
    throw err;
  }
}
