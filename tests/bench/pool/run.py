#!/usr/bin/env python3
"""Transfers per second through Kamailio, with 1 and with 2 verbhost nodes behind it.

    tests/bench/pool/run.py [--nodes 1,2] [--rate 20] [--duration 10] [--bin PATH] [--base-port 28700]

For each node count, starts the shipped deployment (host/deploy/kamailio/run.sh: Kamailio on
127.0.0.1 plus N `verbhost serve` nodes, each running one `sip:refer` with an actionHook to a
local receiver), then sipp callers (tests/sipp/uac-transferee-accept.xml, with a response-time
measurement from the INVITE sent to the node's BYE received) at `--rate` calls/s for
`--duration` s, all through the proxy. It reports, per node count: transfers that succeeded
and failed, the achieved rate, p50/p99 of the whole transfer, and the CPU seconds Kamailio
(all its processes) and the nodes spent per call. The CPU per call is the figure that carries
over to a bigger or an idle machine: capacity is about (cores x 1000 / ms per call).

Bounded: at most 200 calls/s and 60 s per run, and a hard timeout. Reuses
tests/bench/hardening/harness.py (processes, ports, the webhook receiver, sipp) and the timed
scenario of tests/bench/hostile/run.py. Prints a table and a last line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hardening"))

import harness as h  # noqa: E402


def _hostile_module():
    """tests/bench/hostile/run.py, for its timed scenario, rtt reader and percentile."""
    spec = importlib.util.spec_from_file_location("hostile_run", HERE.parent / "hostile" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hostile = _hostile_module()
RUN_SH = h.ROOT / "host" / "deploy" / "kamailio" / "run.sh"


def kamailio_cpu_seconds(main_pid: int) -> float:
    """CPU of Kamailio's main process and every child it forked (its workers, timers)."""
    total = h.proc_cpu_seconds(main_pid) or 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == main_pid:  # field 4, the parent pid
            total += h.proc_cpu_seconds(int(stat.parent.name)) or 0.0
    return total


def run_pool(args, nodes: int) -> dict:
    receiver = h.HookReceiver(default=h.Reply.normal())
    run_dir = h.temp_dir(f"pool-{nodes}")
    app = run_dir / "app.json"
    app.write_text(json.dumps([{"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1",
                                "actionHook": receiver.url("/action")}]))
    # Fixed ports (run.sh takes a proxy port and a node base); sipp's come from the harness.
    proxy = args.base_port
    node_base = args.base_port + 2
    log = open(run_dir / "run.log", "wb")
    pool = h.spawn([str(RUN_SH), "--nodes", str(nodes), "--proxy-port", str(proxy),
                    "--node-port", str(node_base), "--run-dir", str(run_dir),
                    "--verbhost", args.bin, "--", "--app", str(app)],
                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    ready = h.wait_until(lambda: "run.sh: ready" in (run_dir / "run.log").read_text(errors="replace"), 60)
    if ready is None:
        raise SystemExit(f"the pool did not come up:\n{(run_dir / 'run.log').read_text(errors='replace')[-3000:]}")
    kamailio = int((run_dir / "kamailio.pid").read_text())
    node_pids = [int((run_dir / f"node-{i}.pid").read_text()) for i in range(1, nodes + 1)]
    kam_before = kamailio_cpu_seconds(kamailio)
    nodes_before = sum(h.proc_cpu_seconds(p) or 0.0 for p in node_pids)
    scenario = hostile.timed_transfer_scenario(h.temp_dir(f"pool-{nodes}-xml"))
    calls = int(args.rate * args.duration)
    sipp = h.Sipp(str(scenario), (h.LOOPBACK, proxy), calls=calls, rate=args.rate,
                  timeout_s=args.duration + 30, extra=["-trace_rtt", "-rtt_freq", "1"], name=f"pool-{nodes}-sipp")
    result = sipp.wait()
    # The last BYEs and actionHooks.
    h.wait_until(lambda: receiver.count("/action") >= result.successful, 15)
    kam_cpu = kamailio_cpu_seconds(kamailio) - kam_before
    nodes_cpu = sum(h.proc_cpu_seconds(p) or 0.0 for p in node_pids) - nodes_before
    rtts = hostile.read_rtts(result.dir)
    per_node = []
    for i in range(nodes):
        page = h.Metrics(h.http_get((h.LOOPBACK, node_base + 10 * i + 1), "/metrics")[1].decode())
        per_node.append(int(page.total("verbhost_calls", direction="inbound")))
    pool.terminate()
    try:
        pool.wait(timeout=40)
    except subprocess.TimeoutExpired:
        h.kill(pool)
    receiver.close()
    done = max(result.successful, 1)
    # sipp's elapsed time includes its 1 s <timewait> after the last call.
    window = max(result.elapsed - 1.0, 0.001)
    return {
        "nodes": nodes,
        "offered_rate": args.rate,
        "calls": calls,
        "successful": result.successful,
        "failed": result.failed,
        "unfinished": result.unfinished,
        "error_reasons": result.error_reasons,
        "achieved_rate": round(result.successful / window, 1),
        "calls_per_node": per_node,
        "p50_ms": hostile.percentile(rtts, 50),
        "p99_ms": hostile.percentile(rtts, 99),
        "kamailio_cpu_ms_per_call": round(1000 * kam_cpu / done, 3),
        "nodes_cpu_ms_per_call": round(1000 * nodes_cpu / done, 3),
        "action_posts": receiver.count("/action"),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,2", help="node counts to run, in turn (default %(default)s)")
    parser.add_argument("--rate", type=float, default=20, help="calls per second (default %(default)s, at most 200)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per run (default %(default)s, at most 60)")
    parser.add_argument("--bin", default=str(h.DEFAULT_BIN), help="the verbhost binary (default: %(default)s)")
    parser.add_argument("--base-port", type=int, default=28700,
                        help="Kamailio's port; node i gets base + 2 + 10 (i - 1) and the port after it (default %(default)s)")
    args = parser.parse_args(argv)
    if not 0 < args.rate <= 200 or not 0 < args.duration <= 60:
        parser.error("--rate must be in (0, 200] and --duration in (0, 60]")
    counts = [int(n) for n in args.nodes.split(",")]
    if any(not 1 <= n <= 8 for n in counts):
        parser.error("node counts must be 1 to 8")
    for tool in ("kamailio", "sipp"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(":")):
            raise SystemExit(f"{tool} is not installed (apt-get install kamailio sip-tester)")
    if not Path(args.bin).exists():
        raise SystemExit(f"no verbhost binary at {args.bin}: cargo build --release -p verbhost")
    h.install_hard_timeout(len(counts) * (args.duration + 120))
    runs = []
    try:
        for n in counts:
            h.note(f"{n} node(s): {args.rate:g} transfers/s for {args.duration:g} s through Kamailio")
            runs.append(run_pool(args, n))
    finally:
        h.cleanup()
    print(f"{'nodes':>5} {'ok':>6} {'failed':>6} {'rate/s':>7} {'per node':>12} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'kam ms/call':>11} {'nodes ms/call':>13}")
    for r in runs:
        print(f"{r['nodes']:>5} {r['successful']:>6} {r['failed'] + r['unfinished']:>6} {r['achieved_rate']:>7} "
              f"{str(r['calls_per_node']):>12} {r['p50_ms']!s:>7} {r['p99_ms']!s:>7} "
              f"{r['kamailio_cpu_ms_per_call']:>11} {r['nodes_cpu_ms_per_call']:>13}")
    print("RESULT " + json.dumps({"runs": runs}, sort_keys=True))
    return 0 if all(r["failed"] + r["unfinished"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
