// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
/// <reference path="./verbhost-plugin-types.d.ts" />
declare module 'verbhost:plugin/sip@0.1.1' {
  /**
   * Sends a REFER in the call's dialog and waits for its final response.
   * 
   * The subscription exists from the moment the REFER is sent: a NOTIFY that arrives
   * before the response is kept and returned by the first `on-notify`.
   */
  export function sendRefer(request: ReferRequest): ReferResponse;
  /**
   * Waits up to `timeout-ms` for the next event of the REFER `refer-id`.
   */
  export function onNotify(referId: number, timeoutMs: number): ReferEvent;
  export type Header = import('verbhost:plugin/types@0.1.1').Header;
  /**
   * A REFER for the host to send in the call's dialog.
   */
  export interface ReferRequest {
    /**
     * The Refer-To header value, sent as given. Exactly one Refer-To is sent.
     */
    referTo: string,
    /**
     * The Referred-By header value (RFC 3892), sent as given when present.
     */
    referredBy?: string,
    /**
     * Extra headers for the REFER. Headers the SIP stack owns (Via, From, To, Call-ID,
     * CSeq, Contact, Max-Forwards, Content-Length, Refer-To, Referred-By) are refused.
     */
    headers: Array<Header>,
  }
  /**
   * The final response to a REFER.
   */
  export interface ReferResponse {
    /**
     * The id of this REFER's subscription: the REFER's CSeq number, which the NOTIFYs
     * carry as `Event: refer;id=<n>`. Pass it to `on-notify`.
     */
    referId: number,
    /**
     * Status code, 200..=699.
     */
    status: number,
    /**
     * Reason phrase exactly as received.
     */
    reason: string,
    /**
     * All headers of the response (e.g. `Refer-Sub: false`, RFC 4488).
     */
    headers: Array<Header>,
  }
  /**
   * Why a REFER got no response from the far end.
   */
  export type ReferError = ReferErrorTimeout | ReferErrorDialogGone | ReferErrorRejected | ReferErrorTransport;
  /**
   * No final response before the transaction timed out (Timer F): a local 408.
   */
  export interface ReferErrorTimeout {
    tag: 'timeout',
  }
  /**
   * The call's dialog does not exist any more (ended, or never established).
   */
  export interface ReferErrorDialogGone {
    tag: 'dialog-gone',
  }
  /**
   * The host would not send this REFER; the text names the cause (a header the stack
   * owns, a malformed value, a size limit).
   */
  export interface ReferErrorRejected {
    tag: 'rejected',
    val: string,
  }
  /**
   * The transport failed; the text names the cause.
   */
  export interface ReferErrorTransport {
    tag: 'transport',
    val: string,
  }
  /**
   * The state of a subscription as a NOTIFY reports it (RFC 6665 Subscription-State).
   * # Variants
   * 
   * ## `"active"`
   * 
   * The subscription is active.
   * ## `"pending"`
   * 
   * The notifier has not yet authorised the subscription.
   * ## `"terminated"`
   * 
   * The subscription has ended; no further NOTIFY follows.
   */
  export type SubscriptionStatus = 'active' | 'pending' | 'terminated';
  /**
   * A parsed Subscription-State header.
   */
  export interface SubscriptionState {
    /**
     * active, pending or terminated.
     */
    status: SubscriptionStatus,
    /**
     * The `expires` parameter, in seconds, when present.
     */
    expires?: number,
    /**
     * The `reason` parameter (e.g. `noresource`), when present.
     */
    reason?: string,
  }
  /**
   * The status line of a `message/sipfrag` body (RFC 3420).
   */
  export interface SipfragStatus {
    /**
     * Status code, 100..=699.
     */
    code: number,
    /**
     * Reason phrase; may be empty.
     */
    reason: string,
  }
  /**
   * A NOTIFY of the REFER's subscription. The host has already answered it on the wire.
   */
  export interface Notify {
    /**
     * The Subscription-State header; none when it is missing or unreadable.
     */
    state?: SubscriptionState,
    /**
     * The Content-Type header, when present.
     */
    contentType?: string,
    /**
     * The body as received.
     */
    body: Uint8Array,
    /**
     * The sipfrag status line, parsed by the host. None when the body is not
     * `message/sipfrag` or its first line is not a SIP status line.
     */
    sipfrag?: SipfragStatus,
  }
  /**
   * The next thing that happened to a REFER's subscription.
   */
  export type ReferEvent = ReferEventNotify | ReferEventDialogEnded | ReferEventTimedOut;
  /**
   * A NOTIFY arrived.
   */
  export interface ReferEventNotify {
    tag: 'notify',
    val: Notify,
  }
  /**
   * The dialog ended (a BYE in either direction) before the subscription did.
   */
  export interface ReferEventDialogEnded {
    tag: 'dialog-ended',
  }
  /**
   * Nothing arrived within the timeout.
   */
  export interface ReferEventTimedOut {
    tag: 'timed-out',
  }
  /**
   * Why `on-notify` could not wait.
   */
  export type NotifyError = NotifyErrorUnknownRefer;
  /**
   * No subscription with this id exists in the call's dialog, or it has already ended.
   */
  export interface NotifyErrorUnknownRefer {
    tag: 'unknown-refer',
    val: number,
  }
}
