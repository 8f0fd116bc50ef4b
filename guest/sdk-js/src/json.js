// Reading verb JSON the way people write it, with the same results and the same error messages
// as the Rust SDK (which uses serde_json through verbhost-common's `json::parse`).
//
// - jambonz's documentation writes phone numbers without quotes (`"referTo": +4915112345678`).
//   When strict parsing fails, every unquoted value that looks like a phone number (`+` or `0`
//   followed by digits) is read as the string of exactly those characters, and the text is
//   parsed again. Other syntax errors are reported with their line and column (in bytes) in
//   the text as written: `key must be a string at line 2 column 23`.
// - Objects are `Map`s with their keys in sorted (UTF-8 byte) order, as serde_json's default
//   map keeps them, so "the first unknown property" and the order of headers are the same in
//   both SDKs. A key given twice keeps its last value.
// - Numbers are `JsonNumber`s that keep what the text said: a whole number is exact however
//   long it is (a JS number is not past 2^53), and `String(n)` prints it as serde_json does.

const MESSAGES = {
  eofList: 'EOF while parsing a list',
  eofObject: 'EOF while parsing an object',
  eofString: 'EOF while parsing a string',
  eofValue: 'EOF while parsing a value',
  colon: 'expected `:`',
  listCommaOrEnd: 'expected `,` or `]`',
  objectCommaOrEnd: 'expected `,` or `}`',
  ident: 'expected ident',
  value: 'expected value',
  escape: 'invalid escape',
  number: 'invalid number',
  range: 'number out of range',
  control: 'control character (\\u0000-\\u001F) found while parsing a string',
  key: 'key must be a string',
  loneSurrogate: 'lone leading surrogate in hex escape',
  trailingComma: 'trailing comma',
  trailingCharacters: 'trailing characters',
  hexEnd: 'unexpected end of hex escape',
  recursion: 'recursion limit exceeded',
};

/** Nesting deeper than this is refused (serde_json's limit). */
export const MAX_DEPTH = 128;

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);

/**
 * A JSON number as the text wrote it. `kind` is `u64` (a whole number >= 0 that fits 64 bits),
 * `i64` (a negative whole number that fits) or `f64` (anything else); `value` is a BigInt for
 * the first two and a Number for `f64`.
 */
export class JsonNumber {
  constructor(kind, value) {
    this.kind = kind;
    this.value = value;
  }

  /** The number as a BigInt when it is a whole number >= 0 of at most 64 bits, else null. */
  asU64() {
    return this.kind === 'u64' ? this.value : null;
  }

  /** The number as a JS number (rounded when it is a whole number past 2^53). */
  toNumber() {
    return Number(this.value);
  }

  /** The number as serde_json prints it: `42`, `-3`, `1.5`, `5.0`, `1e+20`. */
  toString() {
    return this.kind === 'f64' ? formatFloat(this.value) : this.value.toString();
  }
}

/** Formats a finite float the way serde_json does (shortest round-trip digits). */
function formatFloat(x) {
  if (x === 0) {
    return Object.is(x, -0) ? '-0.0' : '0.0';
  }
  const sign = x < 0 ? '-' : '';
  const [mantissa, exp] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const point = Number(exp) + 1; // the decimal point sits after this many digits
  const length = digits.length;
  let text;
  if (point >= length && point <= 16) {
    text = `${digits}${'0'.repeat(point - length)}.0`;
  } else if (point > 0 && point <= 16) {
    text = `${digits.slice(0, point)}.${digits.slice(point)}`;
  } else if (point > -5 && point <= 0) {
    text = `0.${'0'.repeat(-point)}${digits}`;
  } else {
    const rest = length > 1 ? `.${digits.slice(1)}` : '';
    const exponent = point - 1;
    text = `${digits[0]}${rest}e${exponent < 0 ? '-' : '+'}${Math.abs(exponent)}`;
  }
  return sign + text;
}

/** A syntax error, positioned (1-based line and byte column) in the text as written. */
export class JsonError extends Error {
  constructor(message, line, column) {
    super(`${message} at line ${line} column ${column}`);
    this.name = 'JsonError';
    this.reason = message;
    this.line = line;
    this.column = column;
  }
}

/**
 * Where the strict parser failed: the reason, and where serde_json would report it (a UTF-16
 * index into the text; `peek` when serde_json reports the byte after it, its `peek_error`).
 */
class Failure {
  constructor(code, at, peek) {
    this.code = code;
    this.at = at;
    this.peek = peek;
  }
}

const encoder = new TextEncoder();

const isDigit = (c) => c >= 0x30 && c <= 0x39;

// Native scans for the long runs (padding, string bodies): the interpreter's per-character loop
// is what a 1 MiB verb would otherwise cost.
const SPACES = /[ \t\n\r]*/y;
const STRING_BODY = /[^"\\\u0000-\u001f]*/y;

/** A strict JSON parser that fails where and how serde_json does. */
class Parser {
  constructor(text) {
    this.s = text;
    this.i = 0;
  }

  // serde_json's `error`: the position after what was consumed.
  error(code) {
    return new Failure(code, this.i, false);
  }

  // serde_json's `peek_error`: the position of the character looked at.
  peekError(code) {
    return new Failure(code, this.i, true);
  }

  peek() {
    return this.i < this.s.length ? this.s.charCodeAt(this.i) : undefined;
  }

  skipSpace() {
    SPACES.lastIndex = this.i;
    SPACES.test(this.s);
    this.i = SPACES.lastIndex;
    return this.peek();
  }

  document() {
    const value = this.value(MAX_DEPTH);
    if (this.skipSpace() !== undefined) {
      throw this.peekError('trailingCharacters');
    }
    return value;
  }

  value(depth) {
    const c = this.skipSpace();
    switch (c) {
      case undefined:
        throw this.peekError('eofValue');
      case 0x6e: // n
        this.i += 1;
        this.ident('ull');
        return null;
      case 0x74: // t
        this.i += 1;
        this.ident('rue');
        return true;
      case 0x66: // f
        this.i += 1;
        this.ident('alse');
        return false;
      case 0x22: // "
        this.i += 1;
        return this.string();
      case 0x5b: // [
        if (depth <= 1) {
          throw this.peekError('recursion');
        }
        this.i += 1;
        return this.list(depth - 1);
      case 0x7b: // {
        if (depth <= 1) {
          throw this.peekError('recursion');
        }
        this.i += 1;
        return this.object(depth - 1);
      default:
        if (c === 0x2d || isDigit(c)) {
          return this.number();
        }
        throw this.peekError('value');
    }
  }

  ident(rest) {
    for (let k = 0; k < rest.length; k += 1) {
      const c = this.peek();
      if (c === undefined) {
        throw this.error('eofValue');
      }
      this.i += 1;
      if (c !== rest.charCodeAt(k)) {
        throw this.error('ident');
      }
    }
  }

  list(depth) {
    const items = [];
    let first = true;
    for (;;) {
      let c = this.skipSpace();
      if (c === 0x5d) {
        this.i += 1;
        return items;
      }
      if (c === 0x2c && !first) {
        this.i += 1;
        c = this.skipSpace();
      } else if (c === undefined) {
        throw this.peekError('eofList');
      } else if (!first) {
        throw this.peekError('listCommaOrEnd');
      }
      first = false;
      if (c === 0x5d) {
        throw this.peekError('trailingComma');
      }
      if (c === undefined) {
        throw this.peekError('eofValue');
      }
      items.push(this.value(depth));
    }
  }

  object(depth) {
    const entries = new Map();
    let first = true;
    for (;;) {
      let c = this.skipSpace();
      if (c === 0x7d) {
        this.i += 1;
        return sortedMap(entries);
      }
      if (c === 0x2c && !first) {
        this.i += 1;
        c = this.skipSpace();
      } else if (c === undefined) {
        throw this.peekError('eofObject');
      } else if (!first) {
        throw this.peekError('objectCommaOrEnd');
      }
      first = false;
      if (c === 0x7d) {
        throw this.peekError('trailingComma');
      }
      if (c === undefined) {
        throw this.peekError('eofValue');
      }
      if (c !== 0x22) {
        throw this.peekError('key');
      }
      this.i += 1;
      const key = this.string();
      const colon = this.skipSpace();
      if (colon === undefined) {
        throw this.peekError('eofObject');
      }
      if (colon !== 0x3a) {
        throw this.peekError('colon');
      }
      this.i += 1;
      entries.delete(key); // a repeated key keeps its last value
      entries.set(key, this.value(depth));
    }
  }

  string() {
    const parts = [];
    for (;;) {
      STRING_BODY.lastIndex = this.i;
      STRING_BODY.test(this.s);
      parts.push(this.s.slice(this.i, STRING_BODY.lastIndex));
      this.i = STRING_BODY.lastIndex;
      const c = this.peek();
      if (c === undefined) {
        throw this.error('eofString');
      }
      this.i += 1;
      if (c === 0x22) {
        return parts.join('');
      }
      if (c !== 0x5c) {
        throw this.error('control');
      }
      parts.push(this.escape());
    }
  }

  escape() {
    const c = this.peek();
    if (c === undefined) {
      throw this.error('eofString');
    }
    this.i += 1;
    switch (c) {
      case 0x22:
        return '"';
      case 0x5c:
        return '\\';
      case 0x2f:
        return '/';
      case 0x62:
        return '\b';
      case 0x66:
        return '\f';
      case 0x6e:
        return '\n';
      case 0x72:
        return '\r';
      case 0x74:
        return '\t';
      case 0x75:
        return this.unicodeEscape();
      default:
        throw this.error('escape');
    }
  }

  hex4() {
    if (this.i + 4 > this.s.length) {
      this.i = this.s.length;
      throw this.error('eofString');
    }
    const hex = this.s.slice(this.i, this.i + 4);
    // serde_json reads all four before it looks at them.
    this.i += 4;
    if (!/^[0-9A-Fa-f]{4}$/.test(hex)) {
      throw this.error('escape');
    }
    return parseInt(hex, 16);
  }

  unicodeEscape() {
    const n = this.hex4();
    if (n >= 0xdc00 && n <= 0xdfff) {
      throw this.error('loneSurrogate');
    }
    if (n < 0xd800 || n > 0xdbff) {
      return String.fromCharCode(n);
    }
    if (this.s.charCodeAt(this.i) !== 0x5c || this.s.charCodeAt(this.i + 1) !== 0x75) {
      this.i = Math.min(this.i + 1, this.s.length);
      throw this.error('hexEnd');
    }
    this.i += 2;
    const low = this.hex4();
    if (low < 0xdc00 || low > 0xdfff) {
      throw this.error('loneSurrogate');
    }
    return String.fromCharCode(n, low);
  }

  number() {
    const start = this.i;
    const negative = this.peek() === 0x2d;
    if (negative) {
      this.i += 1;
    }
    const first = this.peek();
    if (first === undefined) {
      throw this.error('eofValue');
    }
    this.i += 1;
    if (first === 0x30) {
      if (isDigit(this.peek())) {
        throw this.peekError('number');
      }
    } else if (!isDigit(first)) {
      throw this.error('number');
    }
    while (isDigit(this.peek())) {
      this.i += 1;
    }
    let float = false;
    if (this.peek() === 0x2e) {
      float = true;
      this.i += 1;
      if (!isDigit(this.peek())) {
        throw this.peekError(this.peek() === undefined ? 'eofValue' : 'number');
      }
      while (isDigit(this.peek())) {
        this.i += 1;
      }
    }
    if (this.peek() === 0x65 || this.peek() === 0x45) {
      float = true;
      this.i += 1;
      if (this.peek() === 0x2b || this.peek() === 0x2d) {
        this.i += 1;
      }
      const digit = this.peek();
      if (digit === undefined) {
        throw this.error('eofValue');
      }
      this.i += 1;
      if (!isDigit(digit)) {
        throw this.error('number');
      }
      while (isDigit(this.peek())) {
        this.i += 1;
      }
    }
    const text = this.s.slice(start, this.i);
    if (!float) {
      const whole = BigInt(text);
      if (whole >= 0n && whole <= U64_MAX && !(negative && whole === 0n)) {
        return new JsonNumber('u64', whole);
      }
      if (whole < 0n && whole >= I64_MIN) {
        return new JsonNumber('i64', whole);
      }
    }
    const value = Number(text);
    if (!Number.isFinite(value)) {
      throw this.error('range');
    }
    return new JsonNumber('f64', value);
  }
}

/** Compares two strings in UTF-8 byte order (code point order), as Rust's `str` ordering. */
export function compareKeys(a, b) {
  const x = [...a];
  const y = [...b];
  const n = Math.min(x.length, y.length);
  for (let k = 0; k < n; k += 1) {
    const d = x[k].codePointAt(0) - y[k].codePointAt(0);
    if (d !== 0) {
      return d;
    }
  }
  return x.length - y.length;
}

function sortedMap(entries) {
  const keys = [...entries.keys()];
  let sorted = true;
  for (let k = 1; k < keys.length; k += 1) {
    if (compareKeys(keys[k - 1], keys[k]) > 0) {
      sorted = false;
      break;
    }
  }
  if (sorted) {
    return entries;
  }
  keys.sort(compareKeys);
  return new Map(keys.map((key) => [key, entries.get(key)]));
}

function strict(text) {
  return new Parser(text).document();
}

// One token of the repair scan: a string (to its closing quote or the end), a run of white
// space, a phone number, or any other single character.
const REPAIR_TOKEN = /"(?:[^"\\]|\\[^])*"?|[ \t\n\r\f]+|[+0][0-9]+|[^]/y;

/**
 * Returns `text` with unquoted phone-number values (after `:`, `[` or `,`) put in quotes, and
 * the UTF-16 offsets (in the result) of the quotes added; null when there were none. Strings
 * are skipped with their escapes, so text inside them is never touched.
 */
function quotePhoneNumbers(text) {
  const out = [];
  const quotedAt = [];
  let length = 0;
  let previous = '';
  REPAIR_TOKEN.lastIndex = 0;
  while (REPAIR_TOKEN.lastIndex < text.length) {
    const token = REPAIR_TOKEN.exec(text)[0];
    const first = token[0];
    if ((first === '+' || first === '0') && token.length > 1 && /^[:[,]$/.test(previous)) {
      quotedAt.push(length, length + token.length + 1);
      out.push(`"${token}"`);
      length += token.length + 2;
      previous = '"';
      continue;
    }
    if (first === '+' || first === '0') {
      // Not a value position: only the first character is a token of its own.
      REPAIR_TOKEN.lastIndex -= token.length - 1;
      out.push(first);
      length += 1;
      previous = first;
      continue;
    }
    out.push(token);
    length += token.length;
    if (!/^[ \t\n\r\f]/.test(first)) {
      previous = first;
    }
  }
  return quotedAt.length > 0 ? { repaired: out.join(''), quotedAt } : null;
}

const utf8Length = (s) => encoder.encode(s).length;

/** Turns a failure in `parsed` (`original` with quotes added at `quotedAt`) into a JsonError. */
function positioned(failure, parsed, original, quotedAt) {
  // serde_json's index (in bytes), line and column, then back to a byte offset in the text as
  // written, as the Rust SDK does, so both report the same place.
  const bytes = encoder.encode(parsed);
  const atByte = utf8Length(parsed.slice(0, failure.at));
  const index = failure.peek ? Math.min(bytes.length, atByte + 1) : atByte;
  let lineStart = index;
  while (lineStart > 0 && bytes[lineStart - 1] !== 0x0a) {
    lineStart -= 1;
  }
  let offset = Math.min(lineStart + Math.max(index - lineStart - 1, 0), bytes.length);
  // The quotes added are ASCII, one byte each; find their byte offsets.
  const quoteBytes = quotedAt.map((at) => utf8Length(parsed.slice(0, at)));
  offset -= quoteBytes.filter((at) => at < offset).length;
  const before = encoder.encode(original).subarray(0, offset);
  let line = 1;
  let lastNewline = -1;
  for (let k = 0; k < before.length; k += 1) {
    if (before[k] === 0x0a) {
      line += 1;
      lastNewline = k;
    }
  }
  return new JsonError(MESSAGES[failure.code], line, before.length - lastNewline);
}

/**
 * Parses `text` as JSON, accepting unquoted phone numbers as strings. Objects come back as
 * sorted `Map`s and numbers as `JsonNumber`s (see `toPlain` for ordinary JS values). Throws a
 * `JsonError` naming the cause and its line and column.
 */
export function parse(text) {
  let failure;
  try {
    return strict(text);
  } catch (err) {
    if (!(err instanceof Failure)) {
      throw err;
    }
    failure = err;
  }
  const quoted = quotePhoneNumbers(text);
  if (quoted === null) {
    throw positioned(failure, text, text, []);
  }
  try {
    return strict(quoted.repaired);
  } catch (err) {
    if (!(err instanceof Failure)) {
      throw err;
    }
    throw positioned(err, quoted.repaired, text, quoted.quotedAt);
  }
}

/** The JSON text of a parsed value, compact and with sorted keys, as serde_json prints it. */
export function stringify(value) {
  if (value instanceof Map) {
    const keys = [...value.keys()].sort(compareKeys);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stringify(value.get(k))}`).join(',')}}`;
  }
  if (Array.isArray(value)) {
    return `[${value.map(stringify).join(',')}]`;
  }
  if (value instanceof JsonNumber) {
    return value.toString();
  }
  return JSON.stringify(value);
}

/** A parsed value as ordinary JS values: objects for Maps, numbers for JsonNumbers. */
export function toPlain(value) {
  if (value instanceof Map) {
    const object = {};
    for (const [k, v] of value) {
      Object.defineProperty(object, k, {
        value: toPlain(v),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return object;
  }
  if (Array.isArray(value)) {
    return value.map(toPlain);
  }
  if (value instanceof JsonNumber) {
    return value.toNumber();
  }
  return value;
}

/** The JSON type of a parsed value, for error messages: `a string`, `an array`, ... */
export function kind(value) {
  if (value === null || value === undefined) {
    return 'null';
  }
  if (typeof value === 'boolean') {
    return 'a boolean';
  }
  if (value instanceof JsonNumber) {
    return 'a number';
  }
  if (typeof value === 'string') {
    return 'a string';
  }
  if (Array.isArray(value)) {
    return 'an array';
  }
  return 'an object';
}
