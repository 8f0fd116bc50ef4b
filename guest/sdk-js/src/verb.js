// Reading a verb's JSON: both jambonz forms, typed properties, and errors that name the
// property at fault. The same rules and the same messages as the Rust SDK's `verb` module.
//
//   const verb = Verb.parse('{"sip:refer": {"referTo": +4930123, "colour": "red"}}');
//   const p = verb.props();
//   p.phoneOrString('referTo');   // '+4930123'
//   p.finish();                   // throws VerbError 'sip:refer: unknown property colour'

import { JsonNumber, kind, parse, stringify } from './json.js';
import { checkCustom, sameName } from './headers.js';

/**
 * Why a verb could not run: `tag` is `invalid-verb` (the verb's JSON is wrong; the message
 * names the property) or `failed` (anything else). Throw it from `run` and the host gets the
 * contract's `verb-error`.
 */
export class VerbError extends Error {
  constructor(tag, message) {
    super(message);
    this.name = 'VerbError';
    this.tag = tag;
  }

  /** The contract's `verb-error` value. */
  toWit() {
    return { tag: this.tag, val: this.message };
  }
}

/** A VerbError for a verb whose JSON is wrong. */
export const invalidVerb = (message) => new VerbError('invalid-verb', message);
/** A VerbError for a verb that failed for another reason. */
export const failed = (message) => new VerbError('failed', message);

/**
 * Splits a parsed verb in either jambonz form, `{"verb": "sip:refer", ...}` or
 * `{"sip:refer": {...}}`, into `[name, props]` (props a Map). Throws an invalid-verb error.
 */
export function split(value) {
  if (!(value instanceof Map)) {
    throw invalidVerb(`a verb is a JSON object, got ${kind(value)}`);
  }
  if (value.has('verb')) {
    const name = value.get('verb');
    if (typeof name !== 'string') {
      throw invalidVerb(`verb: expected the verb name as a string, got ${kind(name)}`);
    }
    if (name === '') {
      throw invalidVerb('verb: the verb name is empty');
    }
    const props = new Map(value);
    props.delete('verb');
    return [name, props];
  }
  if (value.size === 1) {
    const [[name, props]] = value;
    if (!(props instanceof Map)) {
      throw invalidVerb(`${name}: expected the verb's properties as an object, got ${kind(props)}`);
    }
    return [name, props];
  }
  throw invalidVerb(
    'a verb needs a "verb" property naming it, or must be an object with one property named after the verb',
  );
}

/** A verb: its name and its properties. */
export class Verb {
  constructor(name, props) {
    /** The verb's name, e.g. `sip:refer`. */
    this.name = name;
    /** The properties, a Map in sorted key order. */
    this.properties = props;
  }

  /**
   * Parses a verb in either jambonz form. Phone numbers written without quotes are accepted.
   * Throws an invalid-verb VerbError.
   */
  static parse(text) {
    let value;
    try {
      value = parse(text);
    } catch (err) {
      if (err && err.name === 'JsonError') {
        throw invalidVerb(`verb is not valid JSON: ${err.message}`);
      }
      throw err;
    }
    const [name, props] = split(value);
    return new Verb(name, props);
  }

  /** Throws unless the verb is called `name`. */
  expectName(name) {
    if (this.name !== name) {
      throw invalidVerb(`this plugin implements ${name}, not ${this.name}`);
    }
  }

  /** A reader over the properties that remembers which ones were read (see Props.finish). */
  props() {
    return new Props(this.name, this.properties);
  }
}

const HOOK_PROPERTIES = ['url', 'method', 'username', 'password'];
// Keys that Cognigy's documentation places inside the actionHook object by mistake.
const DOCUMENTED_PAYLOAD_KEYS = ['referStatus', 'final_referred_call_status', 'eventHook'];

function checkUrl(url, prefix) {
  if (url.trim() === '') {
    throw new Error(`${prefix}the URL is empty`);
  }
  // White space (Unicode's, as Rust's char::is_whitespace) or control characters.
  if (/[\s\u0000-\u001f\u007f-\u009f]/.test(url)) {
    throw new Error(`${prefix}the URL ${JSON.stringify(url)} contains white space or control characters`);
  }
  return url;
}

/**
 * Parses a webhook: a URL string, or `{url, method, username, password}`. Returns
 * `{hook, ignored}` (`ignored`: the Cognigy-documented payload keys found in it). Throws an
 * Error whose message names the hook property at fault (`url: missing`).
 */
export function parseHook(value) {
  if (typeof value === 'string') {
    return { hook: { url: checkUrl(value, ''), method: 'POST' }, ignored: [] };
  }
  if (!(value instanceof Map)) {
    throw new Error(`expected a URL or an object with url, method, username, password; got ${kind(value)}`);
  }
  const text = (property) => {
    const v = value.get(property);
    if (v === undefined || v === null) {
      return undefined;
    }
    if (typeof v !== 'string') {
      throw new Error(`${property}: expected a string, got ${kind(v)}`);
    }
    return v;
  };
  for (const key of value.keys()) {
    if (!HOOK_PROPERTIES.includes(key) && !DOCUMENTED_PAYLOAD_KEYS.includes(key)) {
      throw new Error(`unknown property ${key}`);
    }
  }
  const ignored = DOCUMENTED_PAYLOAD_KEYS.filter((k) => value.has(k));
  const url = text('url');
  if (url === undefined) {
    throw new Error('url: missing');
  }
  let method = text('method');
  if (method === undefined) {
    method = 'POST';
  } else if (['POST', 'GET'].includes(method.toUpperCase()) && /^[a-z]+$/i.test(method)) {
    method = method.toUpperCase();
  } else {
    throw new Error(`method: expected GET or POST, got ${JSON.stringify(method)}`);
  }
  const hook = { url: checkUrl(url, 'url: '), method };
  const username = text('username');
  const password = text('password');
  if (username !== undefined) {
    hook.username = username;
  }
  if (password !== undefined) {
    hook.password = password;
  }
  return { hook, ignored };
}

/**
 * Reads a verb's properties one by one. Every reader returns `undefined` when the property is
 * absent (or null) and throws an invalid-verb error naming the verb and the property when it has
 * the wrong type. A reader given `{required: 'why'}` records a missing property instead, and
 * `finish()` reports it after any unknown property: a typo (`referto`) is named as the unknown
 * property it is, not as the missing one it was meant to be.
 */
export class Props {
  constructor(verb, map) {
    this.verb = verb;
    this.map = map;
    this.read = new Set();
    this.missing = [];
    /** Things accepted but worth a log line; `finish()` returns them. */
    this.warnings = [];
  }

  /** An invalid-verb error about property `key`. */
  error(key, message) {
    return invalidVerb(`${this.verb}: ${key}: ${message}`);
  }

  /** The raw parsed value of `key` (Map, array, JsonNumber, string, boolean), marking it read. */
  value(key, options = {}) {
    this.read.add(key);
    const v = this.map.get(key);
    if (v === undefined || v === null) {
      if (options.required !== undefined) {
        this.missing.push(this.error(key, `missing (${options.required})`));
      }
      return undefined;
    }
    return v;
  }

  /** An optional string. */
  string(key, options) {
    const v = this.value(key, options);
    if (v === undefined || typeof v === 'string') {
      return v;
    }
    throw this.error(key, `expected a string, got ${kind(v)}`);
  }

  /**
   * An optional string that may also be written as a number, the way phone numbers are
   * (`"referTo": +4930123` or `"referTo": 4930123`).
   */
  phoneOrString(key, options) {
    const v = this.value(key, options);
    if (v === undefined || typeof v === 'string') {
      return v;
    }
    if (v instanceof JsonNumber) {
      const whole = v.asU64();
      if (whole === null) {
        throw this.error(key, `the number ${v} is not a phone number; write the target as a string`);
      }
      return whole.toString();
    }
    throw this.error(key, `expected a string or a phone number, got ${kind(v)}`);
  }

  /** An optional boolean. */
  boolean(key, options) {
    const v = this.value(key, options);
    if (v === undefined || typeof v === 'boolean') {
      return v;
    }
    throw this.error(key, `expected true or false, got ${kind(v)}`);
  }

  /** An optional whole number from `min` to `max` (as a JS number). */
  integer(key, min, max, options) {
    return this.whole(key, min, max, 'a whole number', options);
  }

  /** An optional whole number of seconds from `min` to `max`, returned in milliseconds. */
  seconds(key, min, max, options) {
    const secs = this.whole(key, min, max, 'a whole number of seconds', options);
    return secs === undefined ? undefined : secs * 1000;
  }

  whole(key, min, max, what, options) {
    const v = this.value(key, options);
    if (v === undefined) {
      return undefined;
    }
    const n = v instanceof JsonNumber ? v.asU64() : null;
    if (n === null || n < BigInt(min) || n > BigInt(max)) {
      throw this.error(key, `expected ${what} from ${min} to ${max}, got ${stringify(v)}`);
    }
    return Number(n);
  }

  /**
   * An optional webhook: a URL string, or `{url, method, username, password}` (the contract's
   * `webhook`). Cognigy's documented payload keys inside it are ignored with a warning.
   */
  hook(key, options) {
    const v = this.value(key, options);
    if (v === undefined) {
      return undefined;
    }
    let parsed;
    try {
      parsed = parseHook(v);
    } catch (err) {
      throw this.error(key, err.message);
    }
    for (const name of parsed.ignored) {
      this.warnings.push(`${this.verb}: ${key}.${name} describes the hook's payload, not the hook; ignored`);
    }
    return parsed.hook;
  }

  /**
   * Optional extra SIP headers: an object of header names to strings, numbers or booleans
   * (`"Refer-Sub": false`), returned as `[{name, value}]` in sorted name order. Each one passes
   * the header rules (`checkCustom`: no stack-owned header, no line break), and no name may be
   * given twice in any letter case.
   */
  headers(key, options) {
    const v = this.value(key, options);
    if (v === undefined) {
      return [];
    }
    if (!(v instanceof Map)) {
      throw this.error(key, `expected an object of header names to values, got ${kind(v)}`);
    }
    const headers = [];
    for (const [name, raw] of v) {
      let value;
      if (typeof raw === 'string') {
        value = raw;
      } else if (raw instanceof JsonNumber || typeof raw === 'boolean') {
        value = String(raw);
      } else {
        throw this.error(key, `${name}: expected a string, number or boolean, got ${kind(raw)}`);
      }
      try {
        checkCustom(name, value);
      } catch (err) {
        throw this.error(key, err.message);
      }
      if (headers.some((h) => sameName(h.name, name))) {
        throw this.error(key, `header ${name} is given twice`);
      }
      headers.push({ name, value });
    }
    return headers;
  }

  /**
   * Throws on the first property that was not read (`_`, jambonz's comment key, excepted), then
   * on the first required one that was missing; otherwise returns the warnings collected while
   * reading, for the plugin to log.
   */
  finish() {
    for (const key of this.map.keys()) {
      if (key !== '_' && !this.read.has(key)) {
        throw invalidVerb(`${this.verb}: unknown property ${key}`);
      }
    }
    if (this.missing.length > 0) {
      throw this.missing[0];
    }
    return this.warnings;
  }
}
