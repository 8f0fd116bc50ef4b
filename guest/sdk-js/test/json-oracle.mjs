// Reads a JSON array of texts (from the file named, or stdin) and prints, for each, what the SDK's JSON reader makes
// of it: {"ok": compact JSON with sorted keys} or {"err": the message}. tests/languages_js.rs
// holds this against the Rust SDK's reader (verbhost-common's json::parse) on the same texts.

import { readFileSync } from 'node:fs';
import { parse, stringify } from '../src/json.js';

const texts = JSON.parse(readFileSync(process.argv[2] ?? 0, 'utf8'));
const results = texts.map((text) => {
  try {
    return { ok: stringify(parse(text)) };
  } catch (err) {
    return { err: err.message };
  }
});
process.stdout.write(JSON.stringify(results));
