// The status line of a message/sipfrag body (RFC 3420), read leniently, as the host reads it.
// The host already gives a plugin the parsed line as `notify.sipfrag`; this is for plugins that
// look at the body themselves and for tests.

const decoder = new TextDecoder();

/**
 * Parses the status line at the start of a sipfrag body (a Uint8Array or a string):
 * `{code, reason}`, or null when the first non-blank line is not a SIP status line with a code
 * in 100..=699. Accepts `SIP/2.0` in any case, CRLF, LF or no line end, and an empty reason.
 */
export function parseStatusLine(body) {
  const text = typeof body === 'string' ? body : decoder.decode(body);
  const line = text.replace(/^[\r\n]+/, '').split(/[\r\n]/)[0];
  const match = /^SIP\/2\.0( +)(\d{3})(?:[ \t](.*))?$/is.exec(line);
  if (match === null) {
    return null;
  }
  const code = Number(match[2]);
  if (code < 100 || code > 699) {
    return null;
  }
  return { code, reason: (match[3] ?? '').trim() };
}

/** True when a Content-Type names message/sipfrag, in any case, with any parameters. */
export function isSipfragContentType(contentType) {
  return contentType.split(';')[0].trim().toLowerCase() === 'message/sipfrag';
}
