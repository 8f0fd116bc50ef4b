// SIP header names and values: compact forms, the headers the SIP stack owns, and the checks a
// header supplied by a verb must pass before it goes on the wire. The same rules as
// verbhost-common's `headers` module; the host checks them again, because a plugin is not
// trusted to have used the SDK.

/** Longest header value accepted from a verb, in bytes. */
export const MAX_VALUE_LEN = 4096;
/** Longest header name accepted from a verb, in bytes. */
export const MAX_NAME_LEN = 64;

/**
 * Headers that the SIP stack builds itself. A verb may not set them: a second Via or CSeq
 * breaks the transaction, and Refer-To/Referred-By come from the verb's own properties.
 */
export const STACK_OWNED = Object.freeze([
  'Via',
  'From',
  'To',
  'Call-ID',
  'CSeq',
  'Contact',
  'Max-Forwards',
  'Content-Length',
  'Refer-To',
  'Referred-By',
]);

const COMPACT = {
  a: 'Accept-Contact',
  b: 'Referred-By',
  c: 'Content-Type',
  d: 'Request-Disposition',
  e: 'Content-Encoding',
  f: 'From',
  i: 'Call-ID',
  j: 'Reject-Contact',
  k: 'Supported',
  l: 'Content-Length',
  m: 'Contact',
  o: 'Event',
  r: 'Refer-To',
  s: 'Subject',
  t: 'To',
  u: 'Allow-Events',
  v: 'Via',
  x: 'Session-Expires',
  y: 'Identity',
};

const encoder = new TextEncoder();

/** The byte length of `s` in UTF-8 (limits are in bytes, as on the wire). */
export function byteLength(s) {
  return encoder.encode(s).length;
}

/** The long form of a compact header name (`r` is `Refer-To`), or null. */
export function expandCompact(name) {
  if (name.length !== 1) {
    return null;
  }
  return Object.hasOwn(COMPACT, name.toLowerCase()) ? COMPACT[name.toLowerCase()] : null;
}

const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

/** True when `a` and `b` name the same header: letter case ignored, compact forms expanded. */
export function sameName(a, b) {
  return asciiLower(expandCompact(a) ?? a) === asciiLower(expandCompact(b) ?? b);
}

/** The stack-owned header that `name` denotes, in its canonical spelling, or null. */
export function stackOwned(name) {
  return STACK_OWNED.find((owned) => sameName(owned, name)) ?? null;
}

/** Why a header may not be sent; `message` is the reason in words. */
export class HeaderError extends Error {
  constructor(message) {
    super(message);
    this.name = 'HeaderError';
  }
}

const TOKEN = /^[A-Za-z0-9\-.!%*_+`'~]+$/;

/**
 * Checks a header a verb wants to add to a request: a valid name that the stack does not own,
 * and a single-line value of sane length. Throws a HeaderError naming the cause.
 */
export function checkCustom(name, value) {
  if (!(TOKEN.test(name) && name.length <= MAX_NAME_LEN)) {
    throw new HeaderError(
      `header name ${JSON.stringify(name)} is not a SIP token (letters, digits and -.!%*_+\`'~, at most ${MAX_NAME_LEN} bytes)`,
    );
  }
  const owned = stackOwned(name);
  if (owned !== null) {
    throw new HeaderError(`header ${owned} is set by the SIP stack and cannot be given in \`headers\``);
  }
  checkValue(name, value);
}

/**
 * Checks that a header value is one line (no CR, LF or NUL: header injection) and at most
 * MAX_VALUE_LEN bytes. Throws a HeaderError naming the header.
 */
export function checkValue(name, value) {
  let cause = null;
  if (byteLength(value) > MAX_VALUE_LEN) {
    cause = `is longer than ${MAX_VALUE_LEN} bytes`;
  } else if (/[\r\n]/.test(value)) {
    cause = 'contains a line break';
  } else if (value.includes('\0')) {
    cause = 'contains a NUL byte';
  }
  if (cause !== null) {
    throw new HeaderError(`header ${name}: value ${cause}`);
  }
}

/** The value of the first header in `headers` (`[{name, value}]`) called `name`, or null. */
export function header(headers, name) {
  const found = headers.find((h) => sameName(h.name, name));
  return found === undefined ? null : found.value;
}
