// Generated from wit/plugin.wit by `node guest/sdk-js/build.js types`; do not edit.
declare module 'verbhost:plugin/types@0.1.1' {
  /**
   * One SIP header, as it appears on the wire (`name: value`).
   */
  export interface Header {
    /**
     * Header name; matched case-insensitively by the host.
     */
    name: string,
    /**
     * Header value, without the trailing CRLF.
     */
    value: string,
  }
  /**
   * Which side started the call, seen from the platform.
   * # Variants
   * 
   * ## `"inbound"`
   * 
   * The far end called the platform.
   * ## `"outbound"`
   * 
   * The platform placed the call.
   */
  export type Direction = 'inbound' | 'outbound';
  /**
   * A SIP identity: an optional display name and a URI.
   */
  export interface Identity {
    /**
     * Display name, unquoted and unescaped (the plugin escapes it when it formats a header).
     */
    displayName?: string,
    /**
     * The identity's URI, e.g. `sip:+4930123@carrier.example` or `tel:+4930123`.
     */
    uri: string,
  }
  /**
   * What the host tells a verb about the call it runs on.
   */
  export interface CallInfo {
    /**
     * The platform's id for this call (jambonz `call_sid`).
     */
    callSid: string,
    /**
     * SIP Call-ID of the dialog the verb acts in.
     */
    sipCallId: string,
    /**
     * Who started the call.
     */
    direction: Direction,
    /**
     * The From header of the call's initial INVITE.
     */
    from: string,
    /**
     * The To header of the call's initial INVITE.
     */
    to: string,
    /**
     * The party at the other end of this call leg: the one a transfer moves away. A
     * plugin uses it as the default Referred-By.
     */
    remoteParty: Identity,
    /**
     * The domain that targets given as bare numbers or user names are placed in
     * (`+4930123` becomes `sip:+4930123@<default-domain>;user=phone`). Configured by the
     * platform; never an internal address unless the platform chose one.
     */
    defaultDomain: string,
  }
  /**
   * Where a webhook is delivered: the jambonz hook, a URL or `{url, method, username, password}`.
   */
  export interface Webhook {
    /**
     * Absolute URL, or a URL relative to the application's base URL.
     */
    url: string,
    /**
     * HTTP method, upper case (`POST` unless the verb said otherwise).
     */
    method: string,
    /**
     * Basic-auth user name, when the hook has one.
     */
    username?: string,
    /**
     * Basic-auth password, when the hook has one.
     */
    password?: string,
  }
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * Very detailed tracing.
   * ## `"debug"`
   * 
   * Diagnostics for plugin authors.
   * ## `"info"`
   * 
   * Normal progress.
   * ## `"warn"`
   * 
   * Something unexpected that the plugin handled.
   * ## `"error"`
   * 
   * Something failed.
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
