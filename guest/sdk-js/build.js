#!/usr/bin/env node
// Builds verbhost plugins written in JavaScript, from source, with the pinned tools that
// `npm ci` installed in this directory (no download at build time).
//
//   node guest/sdk-js/build.js                      every plugin: guest/*-js/ -> target/js-plugins/NAME.wasm
//   node guest/sdk-js/build.js DIR [-o OUT.wasm]    one plugin directory (its package.json "main",
//                                                   else plugin.js), default OUT: target/js-plugins/NAME.wasm
//   node guest/sdk-js/build.js types [--check]      (re)generate types/ from wit/plugin.wit, or check it is current
//
// A build has two steps:
// 1. rolldown bundles the plugin and the SDK (`import ... from '@verbhost/sdk'`) into one ES
//    module; the contract's interfaces (`verbhost:plugin/...`) stay imports.
// 2. componentize-js (StarlingMonkey) makes the component for the `checked-verb-plugin` world
//    (the `verb` export plus `verb-check`, so the host can check verbs before any call), with
//    every WASI feature disabled (`-d stdio random clocks http fetch-event`): the component
//    then imports nothing but the contract, which the host's import allowlist requires. `--aot`
//    is never used: it downloads a tool (weval) at build time.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(SDK, '..', '..');
const WIT = join(REPO, 'wit', 'plugin.wit');
const WORLD = 'checked-verb-plugin';
const DISABLED = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];
const OUT_DIR = join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'js-plugins');

function fail(message) {
  console.error(`build.js: ${message}`);
  process.exit(1);
}

function tool(pkg) {
  const path = join(SDK, 'node_modules', pkg);
  if (!existsSync(path)) {
    fail(`${pkg} is not installed: run \`npm ci\` in ${SDK}`);
  }
  return path;
}

/** The plugin's entry file and name: its package.json "main" and "name", else plugin.js and the directory name. */
function entryOf(dir) {
  const manifest = join(dir, 'package.json');
  if (existsSync(manifest)) {
    const pkg = JSON.parse(readFileSync(manifest, 'utf8'));
    return { entry: join(dir, pkg.main ?? 'plugin.js'), name: (pkg.name ?? basename(dir)).replace(/^@.*\//, '') };
  }
  return { entry: join(dir, 'plugin.js'), name: basename(resolve(dir)) };
}

async function bundle(entry, out) {
  const { rolldown } = await import(join(tool('rolldown'), 'dist', 'index.mjs'));
  const build = await rolldown({
    input: entry,
    external: [/^verbhost:plugin\//],
    resolve: { alias: { '@verbhost/sdk': join(SDK, 'index.js') } },
    logLevel: 'warn',
  });
  await build.write({ file: out, format: 'esm' });
  await build.close();
}

function componentize(source, out) {
  const cli = join(tool('@bytecodealliance/componentize-js'), 'src', 'cli.js');
  const args = [cli, source, '--wit', WIT, '--world-name', WORLD, '-o', out];
  for (const feature of DISABLED) {
    args.push('-d', feature);
  }
  const run = spawnSync(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0) {
    throw new Error(`componentize-js failed (${run.error?.message ?? `exit ${run.status}`}) for ${source}`);
  }
}

async function buildPlugin(dir, out) {
  const { entry, name } = entryOf(dir);
  if (!existsSync(entry)) {
    fail(`${entry}: no such file (a plugin directory has plugin.js, or a package.json "main")`);
  }
  const wasm = out ?? join(OUT_DIR, `${name}.wasm`);
  mkdirSync(dirname(resolve(wasm)), { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), 'verbhost-js-'));
  const bundled = join(scratch, `${name}.js`);
  const started = Date.now();
  try {
    await bundle(entry, bundled);
    componentize(bundled, wasm);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const size = readFileSync(wasm).length;
  console.log(`built ${wasm} (${(size / 1e6).toFixed(1)} MB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

async function types(check) {
  const { generateTypes, $init } = await import(
    join(tool('@bytecodealliance/jco-transpile'), 'vendor', 'js-component-bindgen-component.js')
  );
  await $init;
  // The WIT goes in as text: jco's own path reading fails here (`os error 44`).
  const files = generateTypes(WORLD, {
    wit: { tag: 'source', val: readFileSync(WIT, 'utf8') },
    world: WORLD,
    guest: true,
    tlaCompat: false,
  });
  const dir = join(SDK, 'types');
  const stale = [];
  for (const [name, bytes] of files) {
    const path = join(dir, name);
    const text = `// Generated from wit/plugin.wit by \`node guest/sdk-js/build.js types\`; do not edit.\n${new TextDecoder().decode(bytes)}`;
    if (check) {
      if (!existsSync(path) || readFileSync(path, 'utf8') !== text) {
        stale.push(path);
      }
    } else {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
    }
  }
  if (stale.length > 0) {
    fail(`out of date with wit/plugin.wit: ${stale.join(', ')}; run \`node guest/sdk-js/build.js types\``);
  }
  console.log(check ? `${dir} is up to date` : `wrote ${files.length} files to ${dir}`);
}

async function main(args) {
  if (args[0] === 'types') {
    await types(args.includes('--check'));
  } else if (args.length === 0) {
    const guests = join(REPO, 'guest');
    const dirs = readdirSync(guests).filter((d) => d.endsWith('-js') && existsSync(join(guests, d, 'plugin.js')));
    for (const dir of dirs) {
      await buildPlugin(join(guests, dir));
    }
  } else {
    const o = args.indexOf('-o');
    const out = o >= 0 ? args[o + 1] : undefined;
    if (o >= 0 && out === undefined) {
      fail('-o needs a file name');
    }
    const dir = args.find((a, i) => a !== '-o' && (o < 0 || i !== o + 1));
    if (dir === undefined) {
      fail('usage: build.js [DIR [-o OUT.wasm] | types [--check]]');
    }
    await buildPlugin(dir, out && resolve(out));
  }
}

try {
  await main(process.argv.slice(2));
} catch (err) {
  fail(err.message);
}
