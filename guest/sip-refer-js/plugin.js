// The sip:refer verb in JavaScript: the same verb as guest/sip-refer (Rust), held to the same
// scenarios (tests/scenarios/sip-refer/). Transfer the call by a REFER in its dialog, follow the
// NOTIFYs, post the eventHook for each status, and complete once with TRANSFER_REFER_SUCCESS or
// TRANSFER_REFER_ERROR (the payload fields are in the README's "Payloads").

import { definePlugin, failed, host, refer, sip, subscription, headers } from '@verbhost/sdk';

const info = { name: 'sip-refer-js', version: '0.1.0', verbs: [refer.VERB] };

function parse(text) {
  return refer.parseSipRefer(text);
}

function run(verb, call) {
  verb.warnings.forEach(host.warn);
  const outcome = transfer(verb, refer.referRequest(verb, call));
  const accepted = outcome.refer !== undefined && outcome.refer[0] >= 200 && outcome.refer[0] < 300;
  const succeeded =
    accepted &&
    (outcome.ending === 'refer-sub-false' ||
      (outcome.ending === 'final-notify' && outcome.final[0] >= 200 && outcome.final[0] < 300));
  const event = succeeded ? 'TRANSFER_REFER_SUCCESS' : 'TRANSFER_REFER_ERROR';
  const payload = { event };
  if (outcome.refer) {
    [payload.refer_status, payload.refer_reason] = outcome.refer;
    payload.referStatus = outcome.refer[0];
  }
  if (outcome.final) {
    [payload.final_referred_call_status, payload.final_referred_call_reason] = outcome.final;
  }
  payload.completion_reason = outcome.ending;
  if (outcome.detail) payload.completion_detail = outcome.detail;
  if (verb.id !== undefined) payload.verb_id = verb.id;
  // After a success the transferee has moved on; after a BYE or a vanished dialog no leg is left.
  return { event, payload, actionHook: verb.actionHook, callLeft: succeeded || Boolean(outcome.left) };
}

function transfer(verb, request) {
  const { response, error } = sip.sendRefer(request);
  if (error) {
    switch (error.tag) {
      case 'timeout':
        return { ending: 'refer-timeout', refer: [408, 'Request Timeout'], detail: sip.referErrorMessage(error), left: true };
      case 'dialog-gone':
        return { ending: 'dialog-gone', detail: sip.referErrorMessage(error), left: true };
      case 'transport':
        return { ending: 'transport-error', detail: sip.referErrorMessage(error) };
      default: // the host refused what the verb asked for: the verb's error, not an outcome
        throw failed(`${refer.VERB}: ${sip.referErrorMessage(error)}`);
    }
  }
  const outcome = { ending: 'refer-rejected', refer: [response.status, response.reason] };
  if (response.status === 408 || response.status === 481) {
    // Ends the dialog (RFC 3261 §12.2.1.2): the far end has no call with us any more.
    const detail = `the REFER got ${response.status} ${response.reason}: the call's dialog no longer exists`;
    return { ...outcome, ending: 'dialog-gone', detail, left: true };
  }
  if (response.status >= 300) return outcome;
  const referSub = headers.header(response.headers, 'Refer-Sub');
  if (referSub !== null && subscription.referSubIsFalse(referSub)) {
    return { ...outcome, ending: 'refer-sub-false' };
  }
  if (refer.asksNoSubscription(verb)) {
    host.info('Refer-Sub: false was not echoed in the 2xx; waiting for NOTIFYs');
  }

  const hardDeadline = host.clockMs() + verb.transferTimeoutMs;
  // The next deadline, and whether transferTimeout cut it short of notifyTimeout.
  const nextDeadline = (from) => {
    const wanted = from + verb.notifyTimeoutMs;
    return [Math.min(wanted, hardDeadline), hardDeadline < wanted];
  };
  let [deadline, capped] = nextDeadline(host.clockMs());
  for (;;) {
    const now = host.clockMs();
    if (now >= deadline) {
      const detail = capped
        ? `no final NOTIFY within transferTimeout (${verb.transferTimeoutMs} ms)`
        : `no NOTIFY within notifyTimeout (${verb.notifyTimeoutMs} ms)`;
      return { ...outcome, ending: 'notify-timeout', detail };
    }
    const event = sip.onNotify(response.referId, deadline - now);
    if (event.tag === 'timed-out') continue;
    if (event.tag === 'dialog-ended') return { ...outcome, ending: 'bye-before-final-notify', left: true };
    if (event.tag === 'unknown-refer') {
      return { ...outcome, ending: 'subscription-lost', detail: `the host has no subscription for REFER ${event.val}` };
    }
    const notify = event.val;
    if (notify.sipfrag) {
      const { code, reason } = notify.sipfrag;
      if (verb.eventHook) {
        const progress = { event: 'transfer-status', call_status: String(code) };
        if (verb.id !== undefined) progress.verb_id = verb.id;
        const refused = host.emitEvent(verb.eventHook, progress);
        if (refused) host.warn(`eventHook not posted: ${refused}`);
      }
      if (code >= 200) return { ...outcome, ending: 'final-notify', final: [code, reason] };
      [deadline, capped] = nextDeadline(host.clockMs());
    } else {
      host.warn(
        `NOTIFY without a sipfrag status line (Content-Type ${JSON.stringify(notify.contentType ?? 'none')}, ` +
          `${notify.body.length} body bytes); ignored`,
      );
    }
    if (notify.state?.status === 'terminated') {
      const detail = `subscription terminated (reason ${notify.state.reason ?? 'none'}) without a final status`;
      return { ...outcome, ending: 'subscription-terminated', detail };
    }
  }
}

export const { verb, verbCheck } = definePlugin({ info, parse, run });
