#!/usr/bin/env python3
"""Hostile plugins under load: how much the misbehave plugin's hostile modes slow the good
calls that run beside them.

    tests/bench/hostile/run.py [--rate 50] [--duration 30] [--hostile-rate 3]
                               [--modes loop,oom,...] [--bin PATH] [--config-extra TOML]
                               [--check]

Starts `verbhost serve --plugins DIR` (DIR holds the misbehave plugin) with a call hook that
hands each call an application by its Request-URI user: `app` gets a `sip:refer` (the good
calls, sipp's tests/sipp/uac-transferee-accept.xml at `--rate` calls/s for `--duration` s),
any other user the misbehave verb of that mode (a second sipp, tests/bench/hostile/sipp/
uac-hostile.xml, at `--hostile-rate` calls/s, the modes in turn). It runs twice on fresh
servers: once with the good calls only (the baseline), once with the hostile calls mixed in.

The latency of a good call is sipp's response-time measurement from the INVITE sent to the
host's BYE received: the whole transfer (call hook, 200, REFER, 202, three NOTIFYs and their
200s, the plugin's completion, the BYE). Prints p50/p99 of both runs and their ratio, the
hostile calls' outcomes and the traps by kind, and a last line `RESULT {json}`. With
`--check`, exits 1 when the loaded p99 is more than 2x the baseline's, a good call failed, or
a hostile verb did not end in an error outcome.

Reuses tests/bench/hardening/harness.py (processes, ports, config, the webhook receiver,
/metrics, sipp) by import.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hardening"))

import harness as h  # noqa: E402
import http.server  # noqa: E402

# The receiver writes a response's headers and body in two sends; with Nagle on, the body
# waits for the client's delayed ACK (40 ms on Linux) on a kept-alive connection, which put a
# 40 ms floor under every good call at 50 calls/s. TCP_NODELAY on the receiver's sockets.
http.server.BaseHTTPRequestHandler.disable_nagle_algorithm = True

# The hostile modes of guest/misbehave that end in an error outcome, and that outcome's
# completion_reason.
MODES = {
    "loop": "plugin-trap",
    "oom": "plugin-trap",
    "stack": "plugin-trap",
    "panic": "plugin-trap",
    "trap-mid-transfer": "plugin-trap",
    "print-then-panic": "plugin-trap",
    "refer-flood": "plugin-trap",
    "host-call-flood": "plugin-trap",
    "huge-log": "plugin-trap",
    "bad-payload": "plugin-failed",
}
HOSTILE_XML = HERE / "sipp" / "uac-hostile.xml"
MISBEHAVE_GLOB = "target/release/build/verbhost-guests-*/out/guests-target/wasm32-wasip2/release/verbhost_guest_misbehave.wasm"


def misbehave_wasm() -> Path:
    """The newest misbehave plugin the workspace built (`cargo build --release -p verbhost`)."""
    found = sorted(h.ROOT.glob(MISBEHAVE_GLOB), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no misbehave plugin under {h.ROOT}: run cargo build --release -p verbhost first")
    return found[-1]


def timed_transfer_scenario(directory: Path) -> Path:
    """tests/sipp/uac-transferee-accept.xml with a sipp response-time measurement from the
    INVITE sent to the BYE received (written into `directory`; the project's file is used
    as is otherwise)."""
    text = (h.SIPP_DIR / "uac-transferee-accept.xml").read_text()
    invite = '<send retrans="500">'
    bye = '<recv request="BYE" timeout="10000">'
    assert text.count(bye) == 1 and text.find(invite) < text.find("INVITE sip:"), "the scenario changed"
    text = text.replace(invite, '<send retrans="500" start_rtd="transfer">', 1)
    text = text.replace(bye, '<recv request="BYE" timeout="10000" rtd="transfer">', 1)
    path = directory / "uac-transferee-accept-timed.xml"
    path.write_text(text)
    return path


def app_for(hit: h.Hit, receiver: h.HookReceiver) -> list:
    """The call hook: the Request-URI user picks the application."""
    sip = hit.json.get("sip", {}) if isinstance(hit.json, dict) else {}
    user = sip.get("request_uri_user") or ""
    hook = receiver.url(f"/action/{user}")
    if user == "app":
        return [{"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1:5999", "actionHook": hook}]
    return [{"verb": "misbehave", "mode": user, "actionHook": hook}]


def read_rtts(directory: Path) -> list[float]:
    """Every response time (ms) sipp wrote with -trace_rtt -rtt_freq 1."""
    values: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
        if not rows:
            continue
        header = [c.strip() for c in rows[0]]
        try:
            column = header.index("response_time_ms")
        except ValueError:
            column = 1
        for row in rows[1:]:
            try:
                values.append(float(row[column]))
            except (IndexError, ValueError):
                pass
    return values


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return round(ordered[int(rank) - 1], 2)


def run_load(args, hostile: bool, name: str) -> dict:
    receiver = h.HookReceiver(default=h.Reply.normal())
    receiver.routes["/call"] = h.Reply.verbs(lambda hit: app_for(hit, receiver))
    plugins = h.temp_dir(f"{name}-plugins")
    (plugins / "misbehave.wasm").write_bytes(misbehave_wasm().read_bytes())
    config = {"app": {"call_hook": receiver.url("/call")}, "plugins": {"dir": str(plugins)}}
    server = h.Server(Path(args.bin), config, h.parse_extra(args.config_extra), name=name)
    cpu_before = h.proc_cpu_seconds(server.pid)
    scenario = timed_transfer_scenario(h.temp_dir(f"{name}-xml"))
    calls = int(args.rate * args.duration)
    good = h.Sipp(str(scenario), server.sip, calls=calls, rate=args.rate, timeout_s=args.duration + 60,
                  extra=["-trace_rtt", "-rtt_freq", "1"], name=f"{name}-good")
    bad = None
    modes = args.modes.split(",")
    if hostile:
        csv_path = h.temp_dir(f"{name}-modes") / "modes.csv"
        csv_path.write_text("SEQUENTIAL\n" + "".join(f"{mode};\n" for mode in modes))
        bad_calls = max(1, int(args.hostile_rate * args.duration))
        bad = h.Sipp(str(HOSTILE_XML), server.sip, calls=bad_calls, rate=args.hostile_rate,
                     timeout_s=args.duration + 60, extra=["-inf", str(csv_path)], name=f"{name}-hostile")
    good_result = good.wait()
    bad_result = bad.wait() if bad else None
    # The last actionHooks and BYEs.
    h.wait_until(lambda: (page := server.metrics()) is not None and page.total("verbhost_calls_active") == 0, 30)
    cpu_after = h.proc_cpu_seconds(server.pid)
    page = server.metrics()
    rtts = read_rtts(good_result.dir)
    posts = {}
    with receiver.lock:
        hits = list(receiver.hits)
    for hit in hits:
        path = hit.path.split("?", 1)[0]
        if path.startswith("/action/"):
            posts.setdefault(path[len("/action/"):], []).append(hit.json if isinstance(hit.json, dict) else {})
    good_posts = posts.pop("app", [])
    good_ok = sum(1 for p in good_posts if p.get("event") == "TRANSFER_REFER_SUCCESS")
    outcomes = {}
    wrong = []
    for mode, mode_posts in sorted(posts.items()):
        reasons: dict[str, int] = {}
        for post in mode_posts:
            key = f"{post.get('event')} ({post.get('completion_reason')})"
            reasons[key] = reasons.get(key, 0) + 1
            if post.get("event") != "VERB_ERROR" or post.get("completion_reason") != MODES.get(mode):
                wrong.append(f"{mode}: {key}")
        outcomes[mode] = reasons
    result = {
        "calls": calls,
        "rate": args.rate,
        "sipp": {"successful": good_result.successful, "failed": good_result.failed,
                 "unfinished": good_result.unfinished, "error_reasons": good_result.error_reasons},
        "good_failed": good_result.failed + good_result.unfinished + (calls - good_ok if good_ok < calls else 0),
        "good_action_posts": len(good_posts),
        "good_success_posts": good_ok,
        "latencies": len(rtts),
        "p50_ms": percentile(rtts, 50),
        "p99_ms": percentile(rtts, 99),
        "max_ms": round(max(rtts), 2) if rtts else None,
        "server_cpu_s": round(cpu_after - cpu_before, 2) if cpu_before is not None and cpu_after is not None else None,
        "traps_by_kind": page.by_label("verbhost_plugin_traps", "kind") if page else None,
        "verbs_by_outcome": page.by_label("verbhost_verbs", "outcome") if page else None,
    }
    if bad_result is not None:
        posted = sum(sum(v.values()) for v in outcomes.values())
        result["hostile"] = {
            "calls": bad_result.created, "successful": bad_result.successful, "failed": bad_result.failed,
            "unfinished": bad_result.unfinished, "error_reasons": bad_result.error_reasons,
            "action_posts": posted, "outcomes": outcomes, "wrong_outcomes": wrong[:20],
        }
    server_alive = server.proc.poll() is None
    result["options_after"] = h.probe_options(server.sip, "udp") if server_alive else None
    server.stop()
    receiver.close()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50, help="good calls per second (default %(default)s)")
    parser.add_argument("--duration", type=float, default=30, help="seconds of load per run (default %(default)s)")
    parser.add_argument("--hostile-rate", type=float, default=3,
                        help="hostile calls per second in the second run (default %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="the hostile modes, used in turn (default: all)")
    parser.add_argument("--bin", default=str(h.DEFAULT_BIN), help="the verbhost binary (default: %(default)s)")
    parser.add_argument("--config-extra", default="", help="TOML merged over the server's config")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if p99 > 2x the baseline's, a good call failed, or a hostile verb did not fail")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes.split(",") if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    h.install_hard_timeout(2 * args.duration + 240)
    try:
        h.note(f"baseline: {args.rate:g} good calls/s for {args.duration:g} s")
        base = run_load(args, hostile=False, name="hostile-base")
        h.note(f"loaded: the same, plus {args.hostile_rate:g} hostile calls/s")
        loaded = run_load(args, hostile=True, name="hostile-mixed")
    finally:
        h.cleanup()
    ratio = None
    if base["p99_ms"] and loaded["p99_ms"] is not None:
        ratio = round(loaded["p99_ms"] / base["p99_ms"], 2)
    hostile = loaded.get("hostile", {})
    rows = []
    for label, run in (("baseline", base), ("with hostile calls", loaded)):
        rows.append((f"{label}: good calls ok / failed", f"{run['good_success_posts']} / {run['good_failed']} of {run['calls']}"))
        rows.append((f"{label}: p50 / p99 / max ms", f"{run['p50_ms']} / {run['p99_ms']} / {run['max_ms']} ({run['latencies']} calls)"))
        rows.append((f"{label}: server CPU", f"{run['server_cpu_s']} s"))
    rows.append(("p99 ratio (loaded / baseline)", ratio))
    rows.append(("hostile calls ok / failed / unfinished",
                 f"{hostile.get('successful')} / {hostile.get('failed')} / {hostile.get('unfinished')}"))
    rows.append(("hostile outcomes", hostile.get("outcomes")))
    rows.append(("traps by kind", loaded["traps_by_kind"]))
    rows.append(("OPTIONS after (baseline / loaded)", f"{base['options_after']} / {loaded['options_after']}"))
    failed = []
    if ratio is None or ratio > 2:
        failed.append(f"good calls' p99 within 2x of the baseline (ratio {ratio})")
    for label, run in (("baseline", base), ("loaded", loaded)):
        if run["good_failed"]:
            failed.append(f"no good call fails ({label}: {run['good_failed']})")
        if run["options_after"] != 200:
            failed.append(f"the server answers OPTIONS afterwards ({label}: {run['options_after']})")
    if hostile.get("wrong_outcomes") or not hostile.get("action_posts"):
        failed.append(f"every hostile verb ends in its error outcome ({hostile.get('wrong_outcomes')})")
    data = {"baseline": base, "loaded": loaded, "p99_ratio": ratio, "check": {"pass": not failed, "failed": failed}}
    h.report("hostile", rows, data)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
