#!/usr/bin/env python3
"""The load harness (issue 13): how many transfers per second one `verbhost serve` sustains,
what a parked transfer costs, and how long the server takes to answer its first call.

    tests/bench/load/run.py step       [--start 50] [--step 50] [--max 400] [--hold 30] [--quick]
    tests/bench/load/run.py parked     [--calls 400] [--park 10] [--rate 200] [--notify-timeout S]
    tests/bench/load/run.py cold-start [--repeat 5]
    tests/bench/load/run.py compare    [--start 600] [--step 100] [--max 1000] [--hold 30] [--repeat 1]
    tests/bench/load/run.py smoke      (a few seconds: CI)
    common: [--bin PATH] [--plugin wasm|native] [--config-extra TOML] [--max-seconds N]

`--plugin` runs the harness's own server, target/release/examples/load-server (`cargo build
--release -p verbhost-tests --example load-server`), which serves sip:refer with its wasm build
or with the same source compiled natively; `compare` runs both, alternating at every rate,
and reports the ratio of their highest sustained rates and of their CPU per transfer: what the
sandbox costs end to end.

Every mode starts its own `verbhost serve` (an application file with one `sip:refer` whose
eventHook and actionHook go to a receiver in this script), drives sipp callers
(tests/bench/load/sipp/uac-transferee-load.xml: tests/sipp/uac-transferee-accept.xml that
also logs when each REFER arrived and can wait before its final NOTIFY), prints a short table
and ends with one line `RESULT {json}`. Loopback only, every run bounded in calls and time,
every process killed at the end (also on Ctrl-C and at the hard timeout).

Reuses tests/bench/hardening/harness.py (server, ports, temp dirs, receiver, sipp, /proc,
cleanup) and tests/bench/hostile/run.py (percentile, and TCP_NODELAY on the receiver).
See README.md here for what each figure means.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import socket
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hardening"))

import harness as h  # noqa: E402


def _hostile_module():
    """tests/bench/hostile/run.py, for its percentile (importing it also turns Nagle off on the
    receiver's sockets, which otherwise puts a 40 ms floor under every hook)."""
    spec = importlib.util.spec_from_file_location("hostile_run", HERE.parent / "hostile" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hostile = _hostile_module()
percentile = hostile.percentile
XML = HERE / "sipp" / "uac-transferee-load.xml"
LOAD_SERVER = h.ROOT / "target" / "release" / "examples" / "load-server"
REFER_TO = "sip:carol@127.0.0.1:5999"  # never called: the sipp transferee answers the REFER itself
WALL_OFFSET = time.time() - time.monotonic()  # receiver hits are monotonic; sipp logs wall clock


# ---------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------


def start_server(args, name: str, receiver: h.HookReceiver) -> h.Server:
    work = h.temp_dir(f"{name}-app")
    app = work / "app.json"
    verb = {"verb": "sip:refer", "referTo": REFER_TO, "actionHook": receiver.url("/action")}
    if not getattr(args, "no_event_hook", False):
        verb["eventHook"] = receiver.url("/event")
    if getattr(args, "notify_timeout", None):
        verb["notifyTimeout"] = args.notify_timeout
    app.write_text(json.dumps([verb]))
    plugin = getattr(args, "plugin", None)
    return h.Server(Path(args.bin), {"app": {"file": str(app)}}, h.parse_extra(args.config_extra), name=name,
                    args=["--plugin", plugin] if plugin else None)


def thread_cpu(pid: int) -> dict[tuple[str, str], float]:
    """CPU seconds by (thread name, tid), from /proc/PID/task/*/stat."""
    out: dict[tuple[str, str], float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1:text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[(comm, stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def busiest_thread(pid: int, before: dict, seconds: float) -> dict:
    """The CPU each thread name of the server used over the run, and the busiest single
    thread's share of one core (the hint whether one thread, one core, is the limit)."""
    after = thread_cpu(pid)
    delta = {key: v - before.get(key, 0.0) for key, v in after.items()}
    by_name: dict[str, float] = {}
    for (name, _tid), v in delta.items():
        by_name[name] = by_name.get(name, 0.0) + v
    top = max(delta.items(), key=lambda kv: kv[1], default=(("-", "-"), 0.0))
    return {"by_name_s": {k: round(v, 2) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:6] if v > 0.005},
            "busiest": f"{top[0][0]}/{top[0][1]}", "busiest_percent": round(100 * top[1] / seconds, 1) if seconds else None,
            "per_thread_percent": sorted((round(100 * v / seconds, 1) for v in delta.values() if v > 0.005), reverse=True)[:6]}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def refer_times(directory: Path) -> dict[str, float]:
    """Call-ID -> wall-clock time the sipp transferee received its (first) REFER."""
    out: dict[str, float] = {}
    for path in directory.glob("*_logs.log"):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[-4] == "REFER":
                try:
                    at = float(parts[-2]) + float(parts[-1]) / 1e6
                except ValueError:
                    continue
                out.setdefault(parts[-3], at)
    return out


class Load:
    """One sipp run of `calls` transfers at `rate`/s against a running server, measured."""

    def __init__(self, server: h.Server, receiver: h.HookReceiver, calls: int, rate: float,
                 pause_ms: int, limit: int, timeout_s: float, name: str, rss_interval: float = 0.2):
        self.server, self.receiver = server, receiver
        self.calls, self.rate, self.pause_ms = calls, rate, pause_ms
        with receiver.lock:
            self.first_hit = len(receiver.hits)
        self.rss_before = server.rss_mib()
        self.peak_rss = self.rss_before or 0.0
        self.cpu0 = h.proc_cpu_seconds(server.pid)
        self.threads0 = thread_cpu(server.pid)
        self.children0, self.self0 = children_cpu(), self_cpu()
        self.t0 = time.monotonic()
        self.sipp = h.Sipp(str(XML), server.sip, calls=calls, rate=rate, limit=limit, timeout_s=timeout_s,
                           extra=["-d", str(pause_ms), "-trace_logs"], name=name)
        self.rss_interval = rss_interval
        # parked: one smaps snapshot when every transfer should be parked (see run_parked).
        self.snapshot_at: float | None = None
        self.smaps_parked: dict = {}

    def _actions_count(self) -> int:
        with self.receiver.lock:
            return sum(1 for x in self.receiver.hits[self.first_hit:] if x.path.startswith("/action"))

    def wait(self) -> dict:
        # Sample RSS while sipp runs (the Sampler's /metrics scrape is skipped: it costs CPU).
        while self.sipp.proc.poll() is None and time.monotonic() - self.t0 < self.sipp.timeout_s + 15:
            rss = self.server.rss_mib()
            if rss:
                self.peak_rss = max(self.peak_rss, rss)
            if self.snapshot_at is not None and not self.smaps_parked and time.monotonic() >= self.snapshot_at:
                self.smaps_parked = smaps(self.server.pid)
            h.sleep(self.rss_interval)
        result = self.sipp.wait()
        sipp_cpu = children_cpu() - self.children0
        # The last actionHooks (posted after the final NOTIFY; sipp's 1 s timewait covers most).
        h.wait_until(lambda: self._actions_count() >= self.calls, 10, step=0.1)
        elapsed = time.monotonic() - self.t0
        cpu1 = h.proc_cpu_seconds(self.server.pid)
        threads = busiest_thread(self.server.pid, self.threads0, elapsed)
        with self.receiver.lock:
            hits = self.receiver.hits[self.first_hit:]
        actions = [x for x in hits if x.path.startswith("/action")]
        events = sum(1 for x in hits if x.path.startswith("/event"))
        ok_actions = {}
        other_events: dict[str, int] = {}
        for hit in actions:
            body = hit.json if isinstance(hit.json, dict) else {}
            if body.get("event") == "TRANSFER_REFER_SUCCESS":
                ok_actions.setdefault(body.get("call_id"), hit.at + WALL_OFFSET)
            else:
                key = f"{body.get('event')} ({body.get('completion_reason')})"
                other_events[key] = other_events.get(key, 0) + 1
        refers = refer_times(result.dir)
        latencies = [(at - refers[cid]) * 1000 for cid, at in ok_actions.items() if cid in refers]
        refer_list = sorted(refers.values())
        action_list = sorted(ok_actions.values())
        span = (action_list[-1] - refer_list[0]) if action_list and refer_list else None
        missing = max(0, self.calls - len(ok_actions))
        status = self.server.status()
        page = self.server.metrics()
        ok = len(ok_actions)
        cpu = round(cpu1 - self.cpu0, 2) if cpu1 is not None and self.cpu0 is not None else None
        out = {
            "calls": self.calls,
            "rate_offered": self.rate,
            "pause_ms": self.pause_ms,
            "sipp": {"successful": result.successful, "failed": result.failed, "unfinished": result.unfinished,
                     "created": result.created, "elapsed_s": result.elapsed, "exit": result.exit_code,
                     "killed": result.killed, "error_reasons": result.error_reasons},
            "refers_seen": len(refers),
            "actions_ok": ok,
            "actions_other": other_events,
            "event_posts": events,
            "failed": max(result.failed + result.unfinished, missing),
            "rate_achieved": round(ok / span, 1) if span and span > 0 else None,
            "span_s": round(span, 2) if span else None,
            "latency_ms": {"n": len(latencies), "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                           "max": round(max(latencies), 2) if latencies else None},
            "server_cpu_s": cpu,
            "server_cpu_ms_per_transfer": round(1000 * cpu / ok, 3) if cpu is not None and ok else None,
            "server_cpu_percent": round(100 * cpu / elapsed, 1) if cpu is not None else None,
            "server_threads_cpu_s": threads["by_name_s"],
            "server_threads_percent": threads["per_thread_percent"],
            "sipp_cpu_s": round(sipp_cpu, 2),
            "harness_cpu_s": round(self_cpu() - self.self0, 2),
            "rss_before_mib": self.rss_before,
            "rss_peak_mib": round(self.peak_rss, 1),
            "vmhwm_mib": h.mib(status.get("VmHWM")),
            "threads": status.get("Threads"),
            "sip_refused": page.by_label("verbhost_sip_calls_refused", "cause") if page else None,
            "retransmissions": page.total("verbhost_sip_retransmissions") if page else None,
            "traps": page.by_label("verbhost_plugin_traps", "kind") if page else None,
            "_refers": refer_list,
            "_actions": action_list,
        }
        return out


def smaps(pid: int) -> dict[str, dict]:
    """The process's mappings from /proc/PID/smaps, by start address: what they are (path, or
    `anon` and their size) and their Rss, Pss and Anonymous in KiB. A file page mapped N times
    counts N times in Rss and once in all the mappings' Pss together; Anonymous is memory of
    the process's own (a file page it wrote to, copied on write, included)."""
    maps: dict[str, dict] = {}
    current = None
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return maps
    for line in lines:
        head = line.split(None, 5)
        if head and "-" in head[0] and not head[0].endswith(":"):
            start, end = (int(x, 16) for x in head[0].split("-"))
            path = head[5] if len(head) > 5 else ""
            current = {"path": path, "size_kib": (end - start) // 1024, "perms": head[1],
                       "rss_kib": 0, "pss_kib": 0, "anon_kib": 0}
            maps[head[0].split("-")[0]] = current
        elif current is not None:
            for field, key in (("Rss:", "rss_kib"), ("Pss:", "pss_kib"), ("Anonymous:", "anon_kib")):
                if line.startswith(field):
                    current[key] = int(line.split()[1])
    return maps


def smaps_growth(before: dict[str, dict], after: dict[str, dict], per: int, top: int = 10) -> list[dict]:
    """Where RSS grew between two smaps snapshots, by kind of mapping (its path, or for an
    anonymous one its size and permissions), with the growth per parked transfer (`per`). The
    wasm instance pool reserves single large regions (linear memories, tables, fiber stacks);
    an instantiated linear memory splits its slot into mappings of its own, so those show as
    many mappings of one size. malloc arenas are `[heap]` and anonymous mappings up to 64 MiB."""
    groups: dict[tuple[str, str], dict] = {}
    for start, m in after.items():
        old = before.get(start, {})
        grown = m["rss_kib"] - old.get("rss_kib", 0)
        if grown <= 0:
            continue
        size = m["size_kib"]
        label = m["path"] or ("anon " + (f"{size / 1024 / 1024:.2f} GiB" if size >= 1 << 20 else
                                         f"{size / 1024:.1f} MiB" if size >= 1024 else f"{size} KiB"))
        g = groups.setdefault((label, m["perms"]), {"mapping": label, "perms": m["perms"], "count": 0,
                                                     "grown_kib": 0, "pss_kib": 0, "anon_kib": 0})
        g["count"] += 1
        g["grown_kib"] += grown
        g["pss_kib"] += m["pss_kib"] - old.get("pss_kib", 0)
        g["anon_kib"] += m["anon_kib"] - old.get("anon_kib", 0)
    rows = sorted(groups.values(), key=lambda r: -r["grown_kib"])
    rest, rows = rows[top:], rows[:top]
    if rest:
        rows.append({"mapping": "the rest", "perms": "", "count": sum(r["count"] for r in rest),
                     **{k: sum(r[k] for r in rest) for k in ("grown_kib", "pss_kib", "anon_kib")}})
    for r in rows:
        for key, out in (("grown_kib", "kib_per_parked"), ("pss_kib", "pss_per_parked"), ("anon_kib", "anon_per_parked")):
            r[out] = round(r[key] / per, 2) if per else None
    return rows


def settle(server: h.Server, limit: float = 30) -> float | None:
    return h.wait_until(lambda: (p := server.metrics()) is not None and p.total("verbhost_calls_active") == 0,
                        limit, step=0.2)


def public(run: dict) -> dict:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------------------


def print_steps(steps: list[dict], hold: float) -> None:
    print(f"\n== step: {hold:g} s per step; latency = sipp's REFER receipt -> the receiver's actionHook arrival ==")
    print_table(
        ["offered/s", "achieved/s", "calls", "ok", "failed", "p50 ms", "p99 ms", "max ms", "cpu ms/xfer",
         "cpu %", "sipp cpu s", "harness cpu s", "VmHWM MiB"],
        [[r["rate_offered"], r["rate_achieved"], r["calls"], r["actions_ok"], r["failed"], r["latency_ms"]["p50"],
          r["latency_ms"]["p99"], r["latency_ms"]["max"], r["server_cpu_ms_per_transfer"], r["server_cpu_percent"],
          r["sipp_cpu_s"], r["harness_cpu_s"], r["vmhwm_mib"]] for r in steps],
    )
    for r in steps:
        print(f"  {r['rate_offered']:g}/s: server threads CPU s {r['server_threads_cpu_s']}, "
              f"% of a core per thread {r['server_threads_percent']}")
        if r["failed"] or r["actions_other"] or r["sipp"]["error_reasons"]:
            print(f"  {r['rate_offered']:g}/s: sipp {r['sipp']['successful']} ok {r['sipp']['failed']} failed "
                  f"{r['sipp']['unfinished']} unfinished; other actionHooks {r['actions_other']}; "
                  f"refused {r['sip_refused']}; traps {r['traps']}; sipp errors {r['sipp']['error_reasons']}")


def ladder(args) -> list[float]:
    rates = []
    rate = args.start
    while rate <= args.max + 1e-9:
        rates.append(rate)
        rate += args.step
    return rates


def sustained_run(run: dict, rate: float) -> bool:
    """Every call completed, and the server kept up: the achieved rate is at least 97% of the
    offered one (not finishing late)."""
    return run["failed"] == 0 and run["rate_achieved"] is not None and run["rate_achieved"] >= 0.97 * rate


def mode_step(args) -> dict:
    rates = ladder(args)
    receiver = h.HookReceiver(default=h.Reply.normal())
    server = start_server(args, "load-step", receiver)
    steps = []
    sustained = None
    first_unsustained = None
    try:
        for rate in rates:
            calls = max(1, int(round(rate * args.hold)))
            h.note(f"step: {calls} transfers at {rate:g}/s ({args.hold:g} s)")
            load = Load(server, receiver, calls, rate, 0, limit=max(200, int(rate * 10)),
                        timeout_s=args.hold + 60, name=f"load-step-{rate:g}")
            run = load.wait()
            run["settle_s"] = settle(server)
            steps.append(run)
            if sustained_run(run, rate) and server.proc.poll() is None:
                sustained = rate
            elif first_unsustained is None:
                first_unsustained = rate
                if not args.keep_going:
                    break
    finally:
        alive = server.proc.poll() is None
        options_after = h.probe_options(server.sip, "udp") if alive else None
        server.stop()
        receiver.close()
    print_steps(steps, args.hold)
    data = {
        "mode": "step", "hold_s": args.hold, "rates": rates,
        "sustained_rate": sustained, "first_unsustained_rate": first_unsustained,
        "options_after": options_after,
        "latency_source": "sipp's REFER receipt (gettimeofday in the scenario) to the receiver's actionHook arrival",
        "steps": [public(r) for r in steps],
    }
    rows = [("highest rate sustained, zero failures", f"{sustained} /s for {args.hold:g} s"),
            ("first rate not sustained", first_unsustained), ("OPTIONS after", options_after)]
    return h.report("load-step", rows, data)


def mode_compare(args) -> dict:
    """The same step ladder against the wasm and the native build of sip:refer, each rate run
    `--repeat` times per build on a fresh server, the two builds alternated (and which goes
    first swapped every run) so both meet the same machine."""
    rates = ladder(args)
    builds = ("wasm", "native")
    runs: dict[str, list[dict]] = {b: [] for b in builds}
    for i, rate in enumerate(rates):
        for rep in range(args.repeat):
            order = builds if (i + rep) % 2 == 0 else builds[::-1]
            for build in order:
                args.plugin = build
                receiver = h.HookReceiver(default=h.Reply.normal())
                server = start_server(args, f"load-compare-{build}", receiver)
                try:
                    calls = max(1, int(round(rate * args.hold)))
                    h.note(f"compare: {build}, {calls} transfers at {rate:g}/s ({args.hold:g} s), run {rep + 1}")
                    run = Load(server, receiver, calls, rate, 0, limit=max(200, int(rate * 10)),
                               timeout_s=args.hold + 60, name=f"load-compare-{build}-{rate:g}").wait()
                    run["settle_s"] = settle(server)
                    run["sustained"] = sustained_run(run, rate) and server.proc.poll() is None
                    run["build"], run["repeat"] = build, rep
                finally:
                    server.stop()
                    receiver.close()
                runs[build].append(run)
    args.plugin = None
    summary = {}
    for build in builds:
        by_rate = {}
        for rate in rates:
            mine = [r for r in runs[build] if r["rate_offered"] == rate]
            cpu = [r["server_cpu_ms_per_transfer"] for r in mine if r["server_cpu_ms_per_transfer"] is not None]
            p50 = [r["latency_ms"]["p50"] for r in mine if r["latency_ms"]["p50"] is not None]
            by_rate[rate] = {
                "sustained_every_run": all(r["sustained"] for r in mine),
                "failed": [r["failed"] for r in mine],
                "cpu_ms_per_transfer": cpu,
                "cpu_ms_per_transfer_median": statistics.median(cpu) if cpu else None,
                "latency_p50_ms_median": statistics.median(p50) if p50 else None,
            }
        # The highest rate at which every run sustained (and every lower rate did too).
        highest = None
        for rate in rates:
            if not by_rate[rate]["sustained_every_run"]:
                break
            highest = rate
        summary[build] = {"highest_sustained": highest, "by_rate": by_rate}
    wasm, native = summary["wasm"], summary["native"]
    capacity = (wasm["highest_sustained"] / native["highest_sustained"]
                if wasm["highest_sustained"] and native["highest_sustained"] else None)
    cpu_ratio = {}
    for rate in rates:
        a = wasm["by_rate"][rate]["cpu_ms_per_transfer_median"]
        b = native["by_rate"][rate]["cpu_ms_per_transfer_median"]
        cpu_ratio[rate] = round(a / b, 3) if a and b else None
    print(f"\n== compare: {args.hold:g} s per rate, {args.repeat} run(s) per build and rate ==")
    print_table(
        ["offered/s", "wasm ok", "native ok", "wasm failed", "native failed", "wasm cpu ms/xfer",
         "native cpu ms/xfer", "cpu wasm/native", "wasm p50 ms", "native p50 ms"],
        [[rate, wasm["by_rate"][rate]["sustained_every_run"], native["by_rate"][rate]["sustained_every_run"],
          wasm["by_rate"][rate]["failed"], native["by_rate"][rate]["failed"],
          wasm["by_rate"][rate]["cpu_ms_per_transfer_median"], native["by_rate"][rate]["cpu_ms_per_transfer_median"],
          cpu_ratio[rate], wasm["by_rate"][rate]["latency_p50_ms_median"],
          native["by_rate"][rate]["latency_p50_ms_median"]] for rate in rates],
    )
    data = {
        "mode": "compare", "hold_s": args.hold, "repeat": args.repeat, "rates": rates,
        "wasm": wasm, "native": native,
        "capacity_wasm_over_native": round(capacity, 3) if capacity else None,
        "cpu_wasm_over_native_by_rate": cpu_ratio,
        "runs": [public(r) for b in builds for r in runs[b]],
    }
    rows = [("wasm: highest rate sustained in every run", wasm["highest_sustained"]),
            ("native: highest rate sustained in every run", native["highest_sustained"]),
            ("capacity wasm / native", data["capacity_wasm_over_native"]),
            ("CPU per transfer wasm / native, by rate", cpu_ratio)]
    return h.report("load-compare", rows, data)


def parked_stats(run: dict, park_s: float) -> dict:
    refers, actions = run["_refers"], run["_actions"]
    events = sorted([(t, 1) for t in refers] + [(t, -1) for t in actions], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    first = refers[0] if refers else None
    within = sum(1 for t in refers if first is not None and t < first + park_s) if refers else 0
    return {
        "peak_parked": peak,
        "refers_within_first_park": within,
        "all_refers_out_s": round(refers[-1] - refers[0], 2) if refers else None,
        "all_done_s": round(actions[-1] - refers[0], 2) if refers and actions else None,
    }


def run_parked(args, calls: int, park_s: float, rate: float, name: str) -> dict:
    receiver = h.HookReceiver(default=h.Reply.normal())
    server = start_server(args, name, receiver)
    try:
        h.sleep(0.5)
        rounds = calls / 100 + 2  # generous: the cap of 128 makes ceil(calls/128) rounds of park_s
        timeout = min(args.max_seconds, calls / rate + park_s * rounds + 60)
        h.note(f"parked: {calls} transfers at {rate:g}/s, final NOTIFY held {park_s:g} s (sipp timeout {timeout:.0f} s)")
        smaps_idle = smaps(server.pid)
        load = Load(server, receiver, calls, rate, int(park_s * 1000), limit=calls, timeout_s=timeout, name=name)
        # Every transfer is parked from the last call's REFER until the first final NOTIFY
        # (when park_s is longer than calls / rate): take the smaps snapshot in that window.
        if park_s > calls / rate + 1:
            load.snapshot_at = load.t0 + calls / rate + min(2.0, (park_s - calls / rate) / 2)
        run = load.wait()
        run["settle_s"] = settle(server)
        run.update(parked_stats(run, park_s))
        before = run["rss_before_mib"] or 0.0
        grown = max(run["rss_peak_mib"], run["vmhwm_mib"] or 0.0) - before
        run["rss_per_parked_kib"] = round(grown * 1024 / run["peak_parked"], 1) if run["peak_parked"] else None
        run["ideal_s"] = round(calls / rate + park_s, 1)
        if load.smaps_parked:
            run["rss_growth_by_mapping"] = smaps_growth(smaps_idle, load.smaps_parked, run["peak_parked"])
    finally:
        server.stop()
        receiver.close()
    return run


def print_parked(runs: list[dict]) -> None:
    print("\n== parked: each transfer's final NOTIFY held back ==")
    print_table(
        ["calls", "park s", "ok", "failed", "peak parked", "REFERs in 1st park", "all REFERs out s", "all done s",
         "ideal s", "RSS before", "RSS peak", "VmHWM", "KiB/parked", "cpu ms/xfer"],
        [[r["calls"], r["pause_ms"] / 1000, r["actions_ok"], r["failed"], r["peak_parked"],
          r["refers_within_first_park"], r["all_refers_out_s"], r["all_done_s"], r["ideal_s"], r["rss_before_mib"],
          r["rss_peak_mib"], r["vmhwm_mib"], r["rss_per_parked_kib"], r["server_cpu_ms_per_transfer"]] for r in runs],
    )
    for r in runs:
        if r.get("rss_growth_by_mapping"):
            print(f"\n  {r['calls']} parked: where RSS grew (smaps, when all were parked)")
            print_table(["mapping", "perms", "mappings", "RSS KiB", "RSS/parked", "PSS/parked", "anon/parked"],
                        [[g["mapping"][-40:], g["perms"], g["count"], g["grown_kib"], g["kib_per_parked"],
                          g["pss_per_parked"], g["anon_per_parked"]] for g in r["rss_growth_by_mapping"]])
            total = {k: sum(g[k] for g in r["rss_growth_by_mapping"]) for k in ("grown_kib", "pss_kib", "anon_kib")}
            print(f"  all mappings: RSS {total['grown_kib'] / r['peak_parked']:.1f}, PSS {total['pss_kib'] / r['peak_parked']:.1f},"
                  f" anonymous {total['anon_kib'] / r['peak_parked']:.1f} KiB per parked transfer")
    for r in runs:
        if r["failed"] or r["actions_other"]:
            print(f"  {r['calls']}: other actionHooks {r['actions_other']}; sipp errors {r['sipp']['error_reasons']}")


def mode_parked(args) -> dict:
    run = run_parked(args, args.calls, args.park, args.rate, "load-parked")
    print_parked([run])
    data = {"mode": "parked", **public(run)}
    rows = [("transfers completed", f"{run['actions_ok']} of {run['calls']}"),
            ("most parked at once", run["peak_parked"]),
            ("RSS per parked transfer", f"{run['rss_per_parked_kib']} KiB"),
            ("all REFERs out after", f"{run['all_refers_out_s']} s (ideal {run['calls'] / args.rate:.1f} s)")]
    return h.report("load-parked", rows, data)


def first_options_200(target: tuple[str, int], t0: float, limit: float) -> float | None:
    """Seconds from t0 until an OPTIONS got 200, sending one every millisecond on one socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((h.LOOPBACK, 0))
        sock.settimeout(0.001)
        while time.monotonic() - t0 < limit and not h._STOP.is_set():
            try:
                sock.sendto(h.options_request("udp", sock.getsockname(), target), target)
            except OSError:
                pass
            end = time.monotonic() + 0.001
            while time.monotonic() < end:
                try:
                    data, _ = sock.recvfrom(65535)
                except OSError:
                    break
                msg = h.parse_sip(data)
                if msg and msg.is_response and msg.method == "OPTIONS" and msg.status == 200:
                    return time.monotonic() - t0
    return None


def cold_start_once(args, cache: Path, name: str) -> dict:
    work = h.temp_dir(name)
    app = work / "app.json"
    app.write_text(json.dumps([{"verb": "sip:refer", "referTo": REFER_TO}]))
    port = h.free_ports(1)
    config = h.merge({"sip": {"listen": f"{h.LOOPBACK}:{port}", "transport": "udp"},
                      "app": {"file": str(app)}, "plugins": {"cache_dir": str(cache)}},
                     h.parse_extra(args.config_extra))
    (work / "verbhost.toml").write_text(h.to_toml(config))
    log = open(work / "serve.log", "wb")
    wall0 = time.time()
    t0 = time.monotonic()
    proc = h.spawn([args.bin, "serve", "--config", str(work / "verbhost.toml"), "--log-format", "json"],
                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=work)
    options = first_options_200((h.LOOPBACK, port), t0, 30)
    invite = None
    if options is not None:
        uac = h.UdpUac((h.LOOPBACK, port))
        try:
            t1 = time.monotonic()
            if uac.connect(timeout=10):
                invite = time.monotonic() - t1
        finally:
            uac.close()
    h.kill(proc, grace=1.0)
    log.close()
    load_ms = from_cache = first_log = serving_log = None
    for line in (work / "serve.log").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if first_log is None:
            first_log = round((at - wall0) * 1000, 1)
        fields = entry.get("fields", {})
        if fields.get("message") == "plugin version in service":
            try:
                load_ms, from_cache = float(fields.get("load_ms")), fields.get("from_cache")
            except (TypeError, ValueError):
                pass
        if fields.get("message") == "verbhost is serving" and serving_log is None:
            serving_log = round((at - wall0) * 1000, 1)
    return {"options_200_ms": round(options * 1000, 1) if options is not None else None,
            "then_invite_200_ms": round(invite * 1000, 2) if invite is not None else None,
            "exec_to_invite_200_ms": round((options + invite) * 1000, 1) if options is not None and invite is not None else None,
            "plugin_load_ms": load_ms, "from_cache": from_cache,
            "exec_to_first_log_ms": first_log, "exec_to_serving_log_ms": serving_log}


def spread(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "median": round(statistics.median(values), 2), "max": max(values)}


def cold_start_runs(args, repeat: int) -> dict:
    warm_cache = h.temp_dir("load-cache-warm")
    first = cold_start_once(args, warm_cache, "load-cold-prime")  # fills the warm cache
    cold, warm = [], []
    for i in range(repeat):
        cold.append(cold_start_once(args, h.temp_dir(f"load-cache-cold{i}"), f"load-cold{i}"))
        warm.append(cold_start_once(args, warm_cache, f"load-warm{i}"))
    out = {"prime": first}
    for label, runs in (("cold", cold), ("warm", warm)):
        out[label] = {
            "runs": runs,
            "exec_to_options_200_ms": spread([r["options_200_ms"] for r in runs]),
            "exec_to_invite_200_ms": spread([r["exec_to_invite_200_ms"] for r in runs]),
            "plugin_load_ms": spread([r["plugin_load_ms"] for r in runs]),
            "exec_to_first_log_ms": spread([r["exec_to_first_log_ms"] for r in runs]),
            "exec_to_serving_log_ms": spread([r["exec_to_serving_log_ms"] for r in runs]),
            "from_cache": sorted({str(r["from_cache"]) for r in runs}),
        }
    return out


def print_cold(result: dict) -> None:
    print("\n== cold start: exec of verbhost serve -> first OPTIONS 200 (then an INVITE's 200) ==")
    rows = []
    for label in ("cold", "warm"):
        r = result[label]
        for key in ("exec_to_first_log_ms", "plugin_load_ms", "exec_to_serving_log_ms", "exec_to_options_200_ms",
                    "exec_to_invite_200_ms"):
            s = r[key]
            rows.append([label, key, s.get("n"), s.get("min"), s.get("median"), s.get("max")])
    print_table(["cache", "what", "n", "min", "median", "max"], rows)


def mode_cold_start(args) -> dict:
    result = cold_start_runs(args, args.repeat)
    print_cold(result)
    data = {"mode": "cold-start", **result}
    rows = [(f"{label}: exec -> OPTIONS 200 median", f"{result[label]['exec_to_options_200_ms'].get('median')} ms")
            for label in ("cold", "warm")]
    return h.report("load-cold-start", rows, data)


def mode_smoke(args) -> dict:
    """A few seconds: 50 transfers at 20/s, 20 parked for 2 s, one cold and one warm start."""
    receiver = h.HookReceiver(default=h.Reply.normal())
    server = start_server(args, "load-smoke", receiver)
    try:
        step = Load(server, receiver, 50, 20, 0, limit=200, timeout_s=40, name="load-smoke-step").wait()
    finally:
        server.stop()
        receiver.close()
    parked = run_parked(args, 20, 2, 20, "load-smoke-parked")
    cold = cold_start_runs(args, 1)
    print("\n== smoke ==")
    print_steps([step], 2.5)
    print_parked([parked])
    print_cold(cold)
    failed = []
    if step["failed"] or step["actions_ok"] != 50:
        failed.append(f"step: {step['failed']} failed, {step['actions_ok']} of 50 completed")
    if parked["failed"] or parked["actions_ok"] != 20:
        failed.append(f"parked: {parked['failed']} failed, {parked['actions_ok']} of 20 completed")
    if step["latency_ms"]["p50"] is None or step["server_cpu_s"] is None or step["vmhwm_mib"] is None:
        failed.append("step figures missing")
    if parked["rss_per_parked_kib"] is None or parked["peak_parked"] < 1:
        failed.append("parked figures missing")
    if cold["cold"]["exec_to_options_200_ms"].get("n") != 1 or cold["warm"]["exec_to_options_200_ms"].get("n") != 1:
        failed.append("cold-start figures missing")
    data = {"mode": "smoke", "step": public(step), "parked": public(parked), "cold_start": cold,
            "check": {"pass": not failed, "failed": failed}}
    rows = [("step 50 at 20/s: ok / failed", f"{step['actions_ok']} / {step['failed']}"),
            ("step latency p50 / p99 ms", f"{step['latency_ms']['p50']} / {step['latency_ms']['p99']}"),
            ("step cpu ms per transfer", step["server_cpu_ms_per_transfer"]),
            ("parked 20 for 2 s: ok / failed", f"{parked['actions_ok']} / {parked['failed']}"),
            ("RSS per parked transfer KiB", parked["rss_per_parked_kib"]),
            ("cold / warm exec -> OPTIONS 200 ms",
             f"{cold['cold']['exec_to_options_200_ms'].get('median')} / {cold['warm']['exec_to_options_200_ms'].get('median')}")]
    return h.report("load-smoke", rows, data)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["step", "parked", "cold-start", "compare", "smoke"])
    parser.add_argument("--bin", default=None,
                        help=f"the server binary (default {h.DEFAULT_BIN}, or {LOAD_SERVER} with --plugin and compare)")
    parser.add_argument("--plugin", choices=["wasm", "native"], default=None,
                        help="serve sip:refer by its wasm build or natively, through the load-server binary")
    parser.add_argument("--config-extra", default="", help="TOML merged over the server's config")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="hard time limit of the whole run (default: per mode, from its sizes)")
    parser.add_argument("--no-event-hook", action="store_true",
                        help="leave the eventHook out (3 fewer POSTs per transfer for the receiver)")
    parser.add_argument("--start", type=float, default=50, help="step: first rate, transfers/s (default %(default)s)")
    parser.add_argument("--step", type=float, default=50, help="step: rate increment (default %(default)s)")
    parser.add_argument("--max", type=float, default=400, help="step: last rate (default %(default)s)")
    parser.add_argument("--hold", type=float, default=30, help="step: seconds per rate (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="step: hold 5 s per rate")
    parser.add_argument("--keep-going", action="store_true", help="step: run the higher rates after a failure")
    parser.add_argument("--calls", type=int, default=400, help="parked: transfers (default %(default)s)")
    parser.add_argument("--park", type=float, default=10, help="parked: seconds the final NOTIFY is held back")
    parser.add_argument("--rate", type=float, default=200, help="parked: calls/s offered (default %(default)s)")
    parser.add_argument("--notify-timeout", type=int, default=None,
                        help="the verb's notifyTimeout in seconds (the plugin's default, 40 s, ends a longer park)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="cold-start: runs of each kind (default 5); compare: runs per build and rate (default 1)")
    args = parser.parse_args(argv)
    if args.quick:
        args.hold = 5
    if args.repeat is None:
        args.repeat = 1 if args.mode == "compare" else 5
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.bin is None:
        args.bin = str(LOAD_SERVER if args.plugin or args.mode == "compare" else h.DEFAULT_BIN)
    if args.mode == "cold-start" and args.plugin:
        parser.error("cold-start measures verbhost serve itself; it takes no --plugin")
    if args.max_seconds is None:
        if args.mode in ("step", "compare"):
            steps = int((args.max - args.start) / args.step) + 1 if args.step > 0 else 1
            runs = steps * (2 * args.repeat if args.mode == "compare" else 1)
            args.max_seconds = runs * (args.hold + 45) + 60
        elif args.mode == "parked":
            args.max_seconds = args.calls / args.rate + args.park * (args.calls / 100 + 2) + 120
        elif args.mode == "cold-start":
            args.max_seconds = 60 + 20 * args.repeat
        else:
            args.max_seconds = 120
    if args.mode in ("step", "compare") and (args.step <= 0 or args.start <= 0):
        parser.error("--start and --step must be positive")
    if not Path(args.bin).exists():
        hint = " (cargo build --release -p verbhost-tests --example load-server)" if args.bin == str(LOAD_SERVER) else ""
        parser.error(f"no binary at {args.bin}{hint}")
    h.install_hard_timeout(args.max_seconds)
    try:
        result = {"step": mode_step, "parked": mode_parked, "cold-start": mode_cold_start,
                  "compare": mode_compare, "smoke": mode_smoke}[args.mode](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except h.HardTimeout as err:
        print(f"load harness: {err}", file=sys.stderr)
        return 3
    finally:
        signal_off()
        h.cleanup()
    check = result.get("check")
    return 1 if check is not None and not check["pass"] else 0


def signal_off():
    signal.setitimer(signal.ITIMER_REAL, 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
