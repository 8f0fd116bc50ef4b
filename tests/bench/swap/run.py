#!/usr/bin/env python3
"""Swap latency: how long from a new plugin file renamed into a watched plugin directory to the
new version serving new calls.

    tests/bench/swap/run.py [--swaps 12] [--bin target/release/verbhost]

Starts `verbhost serve --plugins DIR --log-format json`, then renames two tagged builds of the
sip:refer plugin (VERBHOST_SIP_REFER_BUILD=a and =b, built into target/sip-refer-variants/ if
missing) into DIR/sip-refer.wasm in turn. Each swap is timed from just before the rename to the
timestamp of the server's "plugin version in service" log line; the line's own load_ms is the
pipeline's part (checks, cache or compile, describe, install). The first swap of each build
compiles (uncached); later ones come from the compiled cache. Loopback only, bounded waits.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def build(tag):
    target = os.path.join(ROOT, "target", "sip-refer-variants", tag)
    wasm = os.path.join(target, "wasm32-wasip2", "release", "verbhost_guest_sip_refer.wasm")
    if not os.path.exists(wasm):
        env = dict(os.environ, VERBHOST_SIP_REFER_BUILD=tag)
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "--target", "wasm32-wasip2",
             "-p", "verbhost-guest-sip-refer", "--target-dir", target],
            cwd=ROOT, env=env, check=True, timeout=900)
    with open(wasm, "rb") as f:
        return f.read()


def in_service(log):
    out = []
    with open(log) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("fields", {}).get("message") == "plugin version in service":
                out.append(entry)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=12)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "verbhost"))
    args = parser.parse_args()
    builds = {"a": build("a"), "b": build("b")}
    work = tempfile.mkdtemp(prefix="verbhost-swap-")
    plugins = os.path.join(work, "plugins")
    os.makedirs(plugins)
    app = os.path.join(work, "app.json")
    with open(app, "w") as f:
        f.write('[{"verb": "sip:refer", "referTo": "+4930999"}]')
    log = os.path.join(work, "serve.log")
    server = subprocess.Popen(
        [args.bin, "serve", "--sip", "127.0.0.1:0", "--app", app, "--plugins", plugins,
         "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        deadline = time.time() + 30
        while not in_service(log):
            if time.time() > deadline or server.poll() is not None:
                sys.exit("verbhost serve did not start; see " + log)
            time.sleep(0.05)
        rows = []
        for n in range(args.swaps):
            tag = "ab"[n % 2]
            before = len(in_service(log))
            temp = os.path.join(plugins, ".sip-refer.wasm.new")
            with open(temp, "wb") as f:
                f.write(builds[tag])
            started = time.time()
            os.rename(temp, os.path.join(plugins, "sip-refer.wasm"))
            deadline = started + 30
            while len(in_service(log)) <= before:
                if time.time() > deadline:
                    sys.exit(f"swap {n} did not complete in 30 s; see {log}")
                time.sleep(0.001)
            entry = in_service(log)[-1]
            at = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            fields = entry["fields"]
            rows.append((tag, fields.get("from_cache"), (at - started) * 1000, float(fields.get("load_ms", "nan"))))
            time.sleep(0.3)
        for tag, cached, total, pipeline in rows:
            print(f"build {tag}  {'cached  ' if cached else 'compiled'}  rename -> serving {total:7.1f} ms  (pipeline {pipeline:.1f} ms)")
        cached = sorted(r[2] for r in rows if r[1])
        compiled = sorted(r[2] for r in rows if not r[1])
        result = {
            "cached_ms": [round(x, 2) for x in cached],
            "uncached_ms": [round(x, 2) for x in compiled],
        }
        print("RESULT " + json.dumps(result))
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        if not os.environ.get("VERBHOST_KEEP_HARNESS_DIRS"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
