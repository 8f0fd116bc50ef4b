// The Subscription-State header (RFC 6665) and Refer-Sub (RFC 4488), read as the host reads them.

/**
 * Whether a Refer-Sub header value says "no subscription": `false`, in any letter case, with
 * any parameters (`false;x=1`).
 */
export function referSubIsFalse(value) {
  return value.split(';')[0].trim().toLowerCase() === 'false';
}

/**
 * Parses a Subscription-State value: `{status, expires, reason}` (`reason` lower-cased), or
 * null for a substate other than active, pending or terminated. The host already gives a
 * plugin this parsed, as `notify.state`.
 */
export function parseSubscriptionState(value) {
  const [first, ...params] = value.split(';');
  const status = first.trim().toLowerCase();
  if (!['active', 'pending', 'terminated'].includes(status)) {
    return null;
  }
  const state = { status, expires: undefined, reason: undefined };
  for (const param of params) {
    const eq = param.indexOf('=');
    const name = (eq < 0 ? param : param.slice(0, eq)).trim().toLowerCase();
    const val = eq < 0 ? '' : param.slice(eq + 1).trim();
    if (name === 'expires') {
      state.expires = /^\d+$/.test(val) && Number(val) <= 0xffffffff ? Number(val) : undefined;
    } else if (name === 'reason' && val !== '') {
      state.reason = val.toLowerCase();
    }
  }
  return state;
}
