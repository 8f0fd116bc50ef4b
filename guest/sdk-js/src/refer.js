// The sip:refer verb: its properties, and how its targets become Refer-To and Referred-By. The
// same rules as the Rust SDK's `refer` module:
// - `<...>` and name-addr forms (`"Carol" <sip:carol@x>`) are sent as given;
// - `sip:`, `sips:` and `tel:` URIs (any letter case) are sent bracketed, so URI parameters and
//   `?Replaces=` stay part of the URI;
// - `user@host` becomes `<sip:user@host>`;
// - a phone number becomes `<sip:+4930123@DOMAIN;user=phone>` (global numbers) or
//   `<sip:030123@DOMAIN>`, and a user name `<sip:carol@DOMAIN>`, where DOMAIN is the
//   platform's configured `call.defaultDomain`.

import { checkValue, header } from './headers.js';
import { referSubIsFalse } from './subscription.js';
import { Verb, invalidVerb } from './verb.js';

/** The verb's name. */
export const VERB = 'sip:refer';
/** Default notifyTimeout: Timer B (32 s) plus margin, so a transferee's INVITE timeout is heard. */
export const DEFAULT_NOTIFY_TIMEOUT_MS = 40_000;
/** Default transferTimeout, the hard cap on waiting for the outcome. */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 180_000;

/** Why a target cannot be formatted; `message` says it ("is empty", ...). */
export class TargetError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TargetError';
  }
}

const isControl = (c) => /[\u0000-\u001f\u007f-\u009f]/.test(c); // Unicode's Cc, as Rust's char::is_control
const isWhitespace = (c) => /\s/.test(c);
// Rust's `{c:?}` of a char: 'x', with the escapes Rust uses for the ones that need them.
function debugChar(c) {
  const escapes = { '\t': '\\t', '\r': '\\r', '\n': '\\n', "'": "\\'", '\\': '\\\\', '\0': '\\0' };
  if (Object.hasOwn(escapes, c)) {
    return `'${escapes[c]}'`;
  }
  if (isControl(c)) {
    return `'\\u{${c.codePointAt(0).toString(16)}}'`;
  }
  return `'${c}'`;
}
const characterError = (c) => new TargetError(`contains ${debugChar(c)}, which is not allowed here`);
const unbalanced = () => new TargetError("has a '<' without a matching '>' (or an empty <>)");
const schemeError = (s) =>
  new TargetError(`unsupported URI scheme ${JSON.stringify(s)} (use sip:, sips: or tel:)`);

/** Formats a transfer target as a header value (the rules are above). Throws a TargetError. */
export function formatTarget(target, defaultDomain) {
  const t = target.trim();
  if (t === '') {
    throw new TargetError('is empty');
  }
  const control = [...t].find(isControl);
  if (control !== undefined) {
    throw characterError(control);
  }
  if (/[<>]/.test(t) || t.startsWith('"')) {
    checkNameAddr(t);
    return t;
  }
  return `<${targetUri(t, defaultDomain)}>`;
}

function targetUri(target, defaultDomain) {
  const colon = target.indexOf(':');
  if (colon >= 0) {
    const scheme = target.slice(0, colon);
    if (/^[A-Za-z][A-Za-z0-9+\-.]*$/.test(scheme)) {
      const lower = scheme.toLowerCase();
      if (!['sip', 'sips', 'tel'].includes(lower)) {
        throw schemeError(scheme);
      }
      const rest = target.slice(colon + 1);
      if (rest === '') {
        throw new TargetError('is empty');
      }
      const bad = [...rest].find((c) => isWhitespace(c) || c === '"');
      if (bad !== undefined) {
        throw characterError(bad);
      }
      return `${lower}:${rest}`;
    }
  }
  const bad = [...target].find((c) => isWhitespace(c) || c === '"');
  // Spaces are fine inside a phone number (handled below), nowhere else.
  if (bad !== undefined && phoneNumber(target) === null) {
    throw characterError(bad);
  }
  if (target.includes('@')) {
    return `sip:${target}`;
  }
  const domain = defaultDomain.trim();
  if (domain === '') {
    throw new TargetError(
      'is a bare number or user name, but the platform configured no domain for those',
    );
  }
  const number = phoneNumber(target);
  if (number !== null) {
    return `sip:${number}@${domain}${number.startsWith('+') ? ';user=phone' : ''}`;
  }
  const notUser = [...target].find((c) => !/^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]$/.test(c));
  if (notUser !== undefined) {
    throw characterError(notUser);
  }
  return `sip:${target}@${domain}`;
}

/**
 * The digits (with a leading `+` if given) of a phone number written with optional visual
 * separators (space, `-`, `.`, `(`, `)`), or null if `s` is not one.
 */
export function phoneNumber(s) {
  const plus = s.startsWith('+') ? '+' : '';
  const rest = s.slice(plus.length);
  if (!/^[0-9 \-.()]*$/.test(rest)) {
    return null;
  }
  const digits = rest.replace(/[^0-9]/g, '');
  return digits === '' ? null : plus + digits;
}

// A name-addr (`"Name" <uri>;params` or `<uri>`): one `<`, a `>` after it, a non-empty URI
// with a supported scheme, and a display name that is a quoted string or tokens.
function checkNameAddr(value) {
  const open = value.indexOf('<');
  if (open < 0) {
    throw unbalanced();
  }
  const close = value.indexOf('>', open);
  if (close < 0) {
    throw unbalanced();
  }
  const uri = value.slice(open + 1, close).trim();
  if (uri === '' || /[<>]/.test(value.slice(close + 1)) || value.slice(0, open).includes('>')) {
    throw unbalanced();
  }
  const scheme = uri.split(':')[0];
  if (!['sip', 'sips', 'tel'].includes(scheme.toLowerCase()) || !uri.includes(':')) {
    throw schemeError(scheme);
  }
  const display = value.slice(0, open).trim();
  if (display.startsWith('"') && !(display.length >= 2 && display.endsWith('"'))) {
    throw characterError('"');
  }
}

/** A name-addr `"display" <uri>`, the display name quoted and escaped (RFC 3261 §25.1). */
export function nameAddr(displayName, uri) {
  const name = displayName === undefined || displayName === null ? '' : displayName.trim();
  if (name === '') {
    return `<${uri}>`;
  }
  return `"${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}" <${uri}>`;
}

/**
 * The Referred-By value: `given` (the verb's referredBy, formatted like a target) or, when
 * absent, the identity of the party being transferred (`call.remoteParty`). `displayName` (the
 * verb's referredByDisplayName) applies whenever the value carries no display name of its
 * own. Undefined when there is nothing to send. Throws a TargetError.
 */
export function referredBy(given, displayName, remoteParty, defaultDomain) {
  if (given === undefined) {
    const uri = remoteParty.uri.trim();
    if (uri === '') {
      return undefined;
    }
    return nameAddr(displayName ?? remoteParty.displayName, uri);
  }
  const formatted = formatTarget(given, defaultDomain);
  if (formatted.startsWith('<') && displayName !== undefined) {
    const close = formatted.indexOf('>');
    return `${nameAddr(displayName, formatted.slice(1, close))}${formatted.slice(close + 1)}`;
  }
  return formatted;
}

/**
 * The hard cap on the wait, in ms: transferTimeout when given (even below notifyTimeout);
 * otherwise the default, or notifyTimeout when that is longer.
 */
function transferTimeout(notifyTimeoutMs, givenMs) {
  return givenMs ?? Math.max(DEFAULT_TRANSFER_TIMEOUT_MS, notifyTimeoutMs);
}

/**
 * Parses and checks a sip:refer verb. Every error is an invalid-verb VerbError naming the
 * property at fault. Returns `{id, referTo, referredBy, referredByDisplayName, headers,
 * actionHook, eventHook, notifyTimeoutMs, transferTimeoutMs, warnings}`.
 */
export function parseSipRefer(text) {
  const verb = Verb.parse(text);
  verb.expectName(VERB);
  const p = verb.props();
  const id = p.string('id');
  const referTo = p.phoneOrString('referTo', { required: 'the transfer target is required' })?.trim();
  const by = p.phoneOrString('referredBy')?.trim();
  const referredByDisplayName = p.string('referredByDisplayName');
  const headers = p.headers('headers');
  const actionHook = p.hook('actionHook');
  const eventHook = p.hook('eventHook');
  const notifyTimeoutMs = p.seconds('notifyTimeout', 1, 3600) ?? DEFAULT_NOTIFY_TIMEOUT_MS;
  const transferTimeoutMs = transferTimeout(notifyTimeoutMs, p.seconds('transferTimeout', 1, 3600));
  const warnings = p.finish();
  // Check the targets' forms now, so a bad one is a verb error before anything is sent. The
  // domain only matters for bare targets.
  const check = (key, f) => {
    try {
      f();
    } catch (err) {
      throw p.error(key, err.message);
    }
  };
  check('referTo', () => formatTarget(referTo, 'example.invalid'));
  if (by !== undefined) {
    check('referredBy', () => formatTarget(by, 'example.invalid'));
  }
  if (referredByDisplayName !== undefined) {
    check('referredByDisplayName', () => checkValue('Referred-By', referredByDisplayName));
  }
  if (transferTimeoutMs < notifyTimeoutMs) {
    warnings.push(
      `${VERB}: notifyTimeout (${notifyTimeoutMs / 1000} s) is longer than transferTimeout ` +
        `(${transferTimeoutMs / 1000} s); transferTimeout caps the wait`,
    );
  }
  return {
    id,
    referTo,
    referredBy: by,
    referredByDisplayName,
    headers,
    actionHook,
    eventHook,
    notifyTimeoutMs,
    transferTimeoutMs,
    warnings,
  };
}

/** True when the verb's headers ask for no subscription (`Refer-Sub: false`, RFC 4488). */
export function asksNoSubscription(verb) {
  const value = header(verb.headers, 'Refer-Sub');
  return value !== null && referSubIsFalse(value);
}

/** The REFER to send for a parsed sip:refer verb on `call`: the contract's refer-request. */
export function referRequest(verb, call) {
  const domain = call.defaultDomain;
  let referTo;
  let by;
  try {
    referTo = formatTarget(verb.referTo, domain);
  } catch (err) {
    throw invalidVerb(`${VERB}: referTo: ${err.message}`);
  }
  try {
    by = referredBy(verb.referredBy, verb.referredByDisplayName, call.remoteParty, domain);
  } catch (err) {
    throw invalidVerb(`${VERB}: referredBy: ${err.message}`);
  }
  return { referTo, referredBy: by, headers: verb.headers };
}
