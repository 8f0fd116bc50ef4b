#!/usr/bin/env python3
"""The hardening attack harness: what a hostile SIP peer, a hostile webhook, a loaded machine
and a misbehaving application do to `verbhost serve`.

    tests/bench/hardening/run.py FIGURE [--quick] [--bin PATH] [--config-extra TOML]
                                        [--set NAME=VALUE ...]
    tests/bench/hardening/run.py list

Each figure starts its own `verbhost serve` (a config file in a temp dir, free loopback ports),
runs one attack, prints a short table and a last line `RESULT {json}`. Everything is bounded
(counts, time, a hard timeout per figure) and every process is killed at the end. `--quick`
shrinks every figure to a few seconds (CI smoke). `--config-extra` adds or overrides config
keys (TOML; `\\n` may stand for a newline), for the limits the fixes add, e.g.
`--config-extra '[server]\\nmax_calls = 500'`. `--set NAME=VALUE` overrides one of the
figure's parameters (listed by `run.py list`).
"""

from __future__ import annotations

import argparse
import heapq
import json
import selectors
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h  # noqa: E402

TRANSFER_TO = "sip:carol@127.0.0.1:5999"


def refer_app(receiver: h.HookReceiver | None, event_hook: str | None = None, action: str = "/action") -> list:
    verb = {"verb": "sip:refer", "referTo": TRANSFER_TO}
    if receiver is not None:
        verb["actionHook"] = receiver.url(action)
    if event_hook:
        verb["eventHook"] = event_hook
    return [verb]


def write_app(server_dir: Path, verbs: list) -> str:
    path = server_dir / "app.json"
    path.write_text(json.dumps(verbs))
    return str(path)


def app_config(verbs: list, **sections) -> dict:
    """A config whose application is the file holding `verbs` (written into its own temp
    dir), plus the given sections."""
    directory = h.temp_dir("app")
    config = {"app": {"file": write_app(directory, verbs)}}
    for name, values in sections.items():
        config[name] = values
    return config


def verdict(*conditions: tuple[bool, str]) -> dict:
    """The figure's hardening goal: passes when every condition holds; `failed` names the
    ones that did not (each phrased as the goal)."""
    failed = [why for ok, why in conditions if not ok]
    return {"pass": not failed, "failed": failed}


def metric_snapshot(server: h.Server) -> dict:
    page = server.metrics()
    if page is None:
        return {"metrics": "unavailable"}
    return {
        "traps": page.total("verbhost_plugin_traps"),
        "traps_by_kind": page.by_label("verbhost_plugin_traps", "kind"),
        "verbs_by_outcome": page.by_label("verbhost_verbs", "outcome"),
        "calls_active": page.total("verbhost_calls_active"),
        "calls_total": page.total("verbhost_calls"),
        "calls_rejected": page.total("verbhost_calls_rejected"),
        "hooks_posted": page.by_label("verbhost_hooks_posted", "kind"),
        "hook_failures": page.by_label("verbhost_hook_failures", "kind"),
    }


def sipp_summary(result: h.SippResult) -> dict:
    refused = {code: result.count(f"_{code}_Recv") for code in (480, 486, 500, 503)}
    return {
        "exit": result.exit_code,
        "killed": result.killed,
        "elapsed_s": result.elapsed,
        "created": result.created,
        "successful": result.successful,
        "failed": result.failed,
        "unfinished": result.unfinished,
        "refused": {k: v for k, v in refused.items() if v},
        "error_reasons": result.error_reasons,
    }


# ---------------------------------------------------------------------------------------
# 1. TCP Content-Length overflow
# ---------------------------------------------------------------------------------------


def _overflow_head(target, local, content_length: int) -> bytes:
    """The header section of the attack OPTIONS. Its length is padded (an `X-Pad` header) to
    2^64 - Content-Length bytes when that is a plausible size (616 for the figure's value),
    so a framer that adds the two in wrapping 64-bit arithmetic gets a frame of 0 bytes."""
    headers = [("Via", f"SIP/2.0/TCP {local[0]}:{local[1]};branch={h.branch()}"), ("Max-Forwards", "70"),
               ("From", f"<sip:attacker@{local[0]}>;tag=a1"), ("To", f"<sip:{target[0]}>"),
               ("Call-ID", f"{uuid.uuid4().hex}@{h.LOOPBACK}"), ("CSeq", "1 OPTIONS")]
    uri = f"sip:{target[0]}:{target[1]}"
    plain = h.build_request("OPTIONS", uri, headers, content_length=str(content_length))
    wanted = (1 << 64) - content_length
    pad_line = len("X-Pad: \r\n")
    if 0 < wanted < 60_000 and wanted >= len(plain) + pad_line:
        headers.append(("X-Pad", "a" * (wanted - len(plain) - pad_line)))
        plain = h.build_request("OPTIONS", uri, headers, content_length=str(content_length))
    return plain


def fig_tcp_content_length(p: dict, ctx: dict) -> dict:
    """A 1,053-byte OPTIONS with `Content-Length: 18446744073709551000` on a TCP connection.
    Then: does an honest OPTIONS on a new connection get 200 within 2 s, the server's CPU over
    3 s, does a new TCP call work, and does SIGTERM exit within the drain timeout."""
    drain = p["drain_timeout_s"]
    server = h.Server(ctx["bin"], app_config(refer_app(None), sip={"transport": "tcp"},
                                             server={"drain_timeout_s": drain}),
                      ctx["extra"], name="fig1")
    before = h.probe_options(server.sip, "tcp", 2.0)
    cpu_before = h.cpu_percent(server.pid, 1.0)
    attacker = socket.create_connection(server.sip, timeout=5)
    local = attacker.getsockname()
    head = _overflow_head(server.sip, local, p["content_length"])
    attack = head + b"x" * max(0, p["message_bytes"] - len(head))
    attacker.sendall(attack)
    h.sleep(0.2)
    after = h.probe_options(server.sip, "tcp", 2.0)
    cpu_after = h.cpu_percent(server.pid, 3.0)
    call = h.sipp_call("uac-transferee-accept.xml", server.sip, transport="tcp", timeout_s=p["call_timeout_s"])
    exit_s = server.sigterm_and_wait(drain + p["exit_grace_s"])
    attacker.close()
    data = {
        "attack_bytes": len(attack),
        "attack_header_bytes": len(head),
        "options_before": before,
        "options_after_within_2s": after,
        "cpu_percent_before": cpu_before,
        "cpu_percent_3s_after": cpu_after,
        "tcp_call_after_passed": call.exit_code == 0,
        "tcp_call_after": sipp_summary(call),
        "drain_timeout_s": drain,
        "sigterm_exit_s": exit_s,
        "exited_within_drain_timeout": exit_s is not None and exit_s <= drain,
    }
    data["check"] = verdict(
        (after == 200, "an honest OPTIONS gets 200 within 2 s after the attack"),
        (cpu_after is not None and cpu_after < p["ok_cpu_percent"],
         f"the server uses under {p['ok_cpu_percent']}% of a core after the attack"),
        (call.exit_code == 0, "a new TCP call after the attack passes"),
        (data["exited_within_drain_timeout"], "SIGTERM exits within the drain timeout"),
    )
    rows = [
        ("attack message", f"{len(attack)} bytes ({len(head)} of headers), Content-Length {p['content_length']}"),
        ("OPTIONS before / after (2 s)", f"{before} / {after}"),
        ("server CPU before / 3 s after", f"{cpu_before}% / {cpu_after}%"),
        ("new TCP call after the attack", "passed" if call.exit_code == 0 else f"failed (sipp exit {call.exit_code})"),
        ("SIGTERM to exit", f"{exit_s} s (drain timeout {drain} s)" if exit_s is not None
         else f"did not exit within {drain + p['exit_grace_s']} s (killed)"),
    ]
    return h.report("tcp_content_length", rows, data)


# ---------------------------------------------------------------------------------------
# 2. SIGSTOP/SIGCONT during a transfer load
# ---------------------------------------------------------------------------------------


def _transfer_load(p: dict, ctx: dict, pauses: int, name: str) -> dict:
    receiver = h.HookReceiver()
    server = h.Server(ctx["bin"], app_config(refer_app(receiver)), ctx["extra"], name=name)
    duration = p["calls"] / p["rate"]
    sipp = h.Sipp("uac-transfer-or-refused.xml", server.sip, calls=p["calls"], rate=p["rate"],
                  timeout_s=duration + 60, name=name)
    done = threading.Event()
    paused = [0]

    def pauser():
        if pauses <= 0:
            return
        h.sleep(min(1.0, duration / 4))
        period = max(p["pause_ms"] / 1000 + 0.05, (duration * 0.9) / pauses)
        for _ in range(pauses):
            if done.is_set():
                break
            server.signal(signal.SIGSTOP)
            time.sleep(p["pause_ms"] / 1000)
            server.signal(signal.SIGCONT)
            paused[0] += 1
            h.sleep(period - p["pause_ms"] / 1000)

    thread = threading.Thread(target=pauser, daemon=True)
    thread.start()
    try:
        result = sipp.wait()
    finally:
        done.set()
        thread.join(timeout=10)
        server.signal(signal.SIGCONT)
    h.sleep(1.0)
    snap = metric_snapshot(server)
    summary = sipp_summary(result)
    out = {
        "pauses": paused[0],
        "pause_ms": p["pause_ms"] if pauses else 0,
        "sipp": summary,
        "failed_calls": result.failed + result.unfinished,
        "traps": snap.get("traps"),
        "traps_by_kind": snap.get("traps_by_kind"),
        "cpu_budget_in_log": server.log_count("cpu budget exceeded"),
        "verbs_by_outcome": snap.get("verbs_by_outcome"),
    }
    server.stop()
    receiver.close()
    return out


def fig_sigstop(p: dict, ctx: dict) -> dict:
    """`p.calls` short transfers at `p.rate`/s, once without pauses and once with the server
    SIGSTOPped for `p.pause_ms`, `p.pauses` times. Traps (metrics and log) and failed calls."""
    calm = _transfer_load(p, ctx, 0, "fig2-calm")
    paused = _transfer_load(p, ctx, p["pauses"], "fig2-paused")
    rows = []
    for label, run in (("without pauses", calm), ("with pauses", paused)):
        rows.append((f"{label}: traps (metrics / log)", f"{run['traps']} / {run['cpu_budget_in_log']} cpu budget"))
        rows.append((f"{label}: calls ok / failed / unfinished",
                     f"{run['sipp']['successful']} / {run['sipp']['failed']} / {run['sipp']['unfinished']}"))
    data = {"calls": p["calls"], "rate": p["rate"], "without_pauses": calm, "with_pauses": paused}
    data["check"] = verdict(
        (not paused["traps"] and not paused["cpu_budget_in_log"], "no trap when the server is paused"),
        (paused["failed_calls"] <= calm["failed_calls"], "no more failed calls with pauses than without"),
    )
    return h.report("sigstop", rows, data)


# ---------------------------------------------------------------------------------------
# 3. In-dialog NOTIFY flood
# ---------------------------------------------------------------------------------------


def fig_notify_flood(p: dict, ctx: dict) -> dict:
    """A transferee (raw UDP) that accepts the REFER and then sends `p.notifies` in-dialog
    NOTIFYs (right Call-ID, tags and `Event: refer;id=N`, 180 Ringing) before the final 200.
    The transfer's outcome (actionHook), traps and the server's RSS."""
    receiver = h.HookReceiver()
    server = h.Server(ctx["bin"], app_config(refer_app(receiver, event_hook=receiver.url("/event"))),
                      ctx["extra"], name="fig3")
    rss_before = server.rss_mib()
    sampler = h.Sampler(server, 0.25)
    uac = h.UdpUac(server.sip)
    statuses: dict[int, int] = {}
    state = {"bye_at": None, "refer": None, "sent": 0, "final_cseq": None, "final_status": None}

    def handle(msg: h.SipMessage | None):
        if msg is None:
            return
        if msg.is_response:
            if msg.method == "NOTIFY":
                if msg.header("cseq").split()[0] == state["final_cseq"]:
                    state["final_status"] = msg.status
                else:
                    statuses[msg.status] = statuses.get(msg.status, 0) + 1
            return
        if msg.method == "REFER":
            state["refer"] = state["refer"] or msg
            uac.answer(msg, 202, "Accepted")
        elif msg.method == "BYE":
            if state["bye_at"] is None:
                state["bye_at"] = state["sent"]
            uac.answer(msg, 200, "OK")
        else:
            uac.answer(msg, 200, "OK")

    connected = uac.connect(10)
    deadline = time.monotonic() + 10
    while connected and state["refer"] is None and time.monotonic() < deadline:
        handle(uac.recv(deadline - time.monotonic()))
    flood_s = None
    final_sent = False
    if state["refer"] is not None:
        refer_id = state["refer"].header("cseq").split()[0]
        uac.send(uac.notify(refer_id, "active;expires=60", "SIP/2.0 100 Trying"))
        t0 = time.monotonic()
        for i in range(p["notifies"]):
            uac.send(uac.notify(refer_id, "active;expires=60", "SIP/2.0 180 Ringing"))
            state["sent"] += 1
            if i % 64 == 0:
                while (msg := uac.recv_nowait()) is not None:
                    handle(msg)
            if p["notify_rate"] and i % 100 == 0:
                ahead = (i / p["notify_rate"]) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        flood_s = round(time.monotonic() - t0, 2)
        # The final NOTIFY is retransmitted like Timer E (0.5 s doubling to 4 s) until answered.
        final = uac.notify(refer_id, "terminated;reason=noresource", "SIP/2.0 200 OK")
        state["final_cseq"] = str(uac.cseq)
        uac.send(final)
        final_sent = True
        end = time.monotonic() + p["settle_s"]
        interval, resend = 0.5, time.monotonic() + 0.5
        while time.monotonic() < end:
            handle(uac.recv(0.1))
            if state["final_status"] is None and time.monotonic() >= resend:
                uac.send(final)
                interval = min(interval * 2, 4.0)
                resend = time.monotonic() + interval
            if state["final_status"] is not None and state["bye_at"] is not None:
                break
    h.wait_until(lambda: receiver.count("/action") > 0, p["settle_s"])
    sampler.stop()
    actions = receiver.hits_for("/action")
    outcome = actions[0].json if actions else None
    snap = metric_snapshot(server)
    data = {
        "notifies": p["notifies"],
        "connected": connected,
        "refer_received": state["refer"] is not None,
        "flood_seconds": flood_s,
        "final_notify_sent": final_sent,
        "final_notify_answer": state["final_status"],
        "notify_responses": statuses,
        "flood_unanswered": state["sent"] + 1 - sum(statuses.values()),
        "bye_after_n_flood_notifies": state["bye_at"],
        "action_event": (outcome or {}).get("event") if isinstance(outcome, dict) else None,
        "action_reason": (outcome or {}).get("completion_reason") if isinstance(outcome, dict) else None,
        "action_posts": len(actions),
        "event_posts": receiver.count("/event"),
        "traps": snap.get("traps"),
        "traps_by_kind": snap.get("traps_by_kind"),
        "verbs_by_outcome": snap.get("verbs_by_outcome"),
        "rss_before_mib": rss_before,
        "rss_peak_sampled_mib": sampler.peak_rss_mib,
        "vmhwm_mib": server.hwm_mib(),
    }
    data["check"] = verdict(
        (data["action_event"] == "TRANSFER_REFER_SUCCESS", "the transfer still succeeds (actionHook event)"),
        (not data["traps"], "no plugin trap"),
        (state["bye_at"] is None or state["bye_at"] >= state["sent"], "no BYE before the final NOTIFY"),
    )
    server.stop()
    uac.close()
    receiver.close()
    rows = [
        ("NOTIFYs sent (in-dialog)", f"{p['notifies']} in {flood_s} s"),
        ("responses to them (unanswered)", f"{statuses} ({data['flood_unanswered']})"),
        ("answer to the final NOTIFY", state["final_status"]),
        ("BYE from the server", "none" if state["bye_at"] is None else f"after {state['bye_at']} flood NOTIFYs"),
        ("actionHook event", f"{data['action_event']} ({data['action_reason']}), {len(actions)} POST(s)"),
        ("traps", f"{data['traps']} {data['traps_by_kind']}"),
        ("RSS before / peak / VmHWM", f"{rss_before} / {sampler.peak_rss_mib} / {data['vmhwm_mib']} MiB"),
    ]
    return h.report("notify_flood", rows, data)


# ---------------------------------------------------------------------------------------
# 4. Huge hook answers
# ---------------------------------------------------------------------------------------


def _huge(p: dict, ctx: dict, which: str) -> dict:
    size = p["answer_mib"] << 20
    small = [{"verb": "sip:refer", "referTo": TRANSFER_TO, "actionHook": "/action-small"}]
    if which == "call":
        receiver = h.HookReceiver({"/call": h.Reply.huge(size, small)})
        config = {"app": {"call_hook": receiver.url("/call")}}
    else:
        receiver = h.HookReceiver({"/action": h.Reply.huge(size)})
        config = app_config(refer_app(receiver))
    server = h.Server(ctx["bin"], config, ctx["extra"], name=f"fig4-{which}")
    rss_before = server.rss_mib()
    sampler = h.Sampler(server, 0.2)
    result = h.Sipp("uac-transferee-decline.xml", server.sip, calls=p["calls"], rate=p["calls"],
                    limit=p["calls"], timeout_s=p["sipp_timeout_s"], name=f"fig4-{which}").wait()
    h.sleep(1.0)
    sampler.stop()
    out = {
        "hook": which,
        "answer_bytes": size,
        "calls": p["calls"],
        "sipp": sipp_summary(result),
        "hook_requests": receiver.count(f"/{which}"),
        "rss_before_mib": rss_before,
        "rss_peak_sampled_mib": sampler.peak_rss_mib,
        "vmhwm_mib": server.hwm_mib(),
        "rss_after_mib": server.rss_mib(),
        "hook_failures": metric_snapshot(server).get("hook_failures"),
    }
    server.stop()
    receiver.close()
    return out


def fig_huge_hooks(p: dict, ctx: dict) -> dict:
    """`p.calls` concurrent calls whose call hook (and, in a second run, actionHook) answers
    `p.answer_mib` MiB each (a valid application padded with spaces). Peak RSS (VmHWM)."""
    runs = {which: _huge(p, ctx, which) for which in p["hooks"].split(",")}
    rows = []
    for which, run in runs.items():
        rows.append((f"{which} hook: VmHWM (RSS before)", f"{run['vmhwm_mib']} MiB ({run['rss_before_mib']} MiB)"))
        rows.append((f"{which} hook: calls ok / failed / unfinished",
                     f"{run['sipp']['successful']} / {run['sipp']['failed']} / {run['sipp']['unfinished']}"))
    growth = max(run["vmhwm_mib"] - run["rss_before_mib"] for run in runs.values())
    budget = max(p["ok_growth_mib"], 0.25 * p["calls"] * p["answer_mib"])
    check = verdict((growth <= budget, f"peak RSS grows by at most {budget:.0f} MiB (a quarter of all answers)"))
    return h.report("huge_hooks", rows, {"runs": runs, "rss_growth_mib": round(growth, 1), "check": check})


# ---------------------------------------------------------------------------------------
# 5. An actionHook that keeps answering the same failing sip:refer
# ---------------------------------------------------------------------------------------


def fig_refer_loop(p: dict, ctx: dict) -> dict:
    """The transferee declines every REFER (603); the actionHook answers each time with the
    same sip:refer. Verbs run and POSTs for the one call in `p.window_s`."""
    receiver = h.HookReceiver()
    verbs = refer_app(receiver)
    receiver.routes["/action"] = h.Reply.verbs(verbs)
    server = h.Server(ctx["bin"], app_config(verbs), ctx["extra"], name="fig5")
    uac = h.UdpUac(server.sip)
    refers: set[str] = set()
    ended_by_server = False
    connected = uac.connect(10)
    t0 = time.monotonic()
    while connected and time.monotonic() - t0 < p["window_s"]:
        msg = uac.recv(0.2)
        if msg is None or msg.is_response:
            continue
        if msg.method == "REFER":
            refers.add(msg.header("cseq"))
            uac.answer(msg, 603, "Decline")
        elif msg.method == "BYE":
            uac.answer(msg, 200, "OK")
            ended_by_server = True
            break
        else:
            uac.answer(msg, 200, "OK")
    window = round(time.monotonic() - t0, 2)
    if connected and not ended_by_server:
        uac.send(uac.in_dialog("BYE"))
        end = time.monotonic() + 3
        while time.monotonic() < end:
            msg = uac.recv(0.2)
            if msg and not msg.is_response:
                uac.answer(msg, 603 if msg.method == "REFER" else 200, "Decline" if msg.method == "REFER" else "OK")
            elif msg and msg.method == "BYE":
                break
    h.sleep(1.0)
    snap = metric_snapshot(server)
    verbs_run = sum((snap.get("verbs_by_outcome") or {}).values())
    data = {
        "window_s": window,
        "connected": connected,
        "refers_received": len(refers),
        "verbs_run_metric": verbs_run,
        "action_posts": receiver.count("/action"),
        "calls": 1,
        "ended_by_server": ended_by_server,
        "verbs_by_outcome": snap.get("verbs_by_outcome"),
    }
    data["check"] = verdict(
        (data["action_posts"] <= p["ok_verbs_per_call"], f"at most {p['ok_verbs_per_call']} actionHook POSTs per call"),
        (len(refers) <= p["ok_verbs_per_call"], f"at most {p['ok_verbs_per_call']} verbs run per call"),
    )
    server.stop()
    uac.close()
    receiver.close()
    rows = [
        ("window", f"{window} s, 1 call"),
        ("REFERs received (verbs run per /metrics)", f"{len(refers)} ({verbs_run})"),
        ("actionHook POSTs", data["action_posts"]),
        ("server ended the call itself", ended_by_server),
    ]
    return h.report("refer_loop", rows, data)


# ---------------------------------------------------------------------------------------
# 6. Metric cardinality
# ---------------------------------------------------------------------------------------


def _random_verb(_hit=None) -> dict:
    return {"verb": f"rnd-{uuid.uuid4().hex[:12]}"}


def fig_cardinality(p: dict, ctx: dict) -> dict:
    """(a) `p.calls` calls whose call hook answers one verb with a random name; (b) one call
    whose call hook answers `p.verbs` verbs with random names. /metrics bytes and lines."""
    out = {}
    receiver = h.HookReceiver({"/call": h.Reply.verbs(lambda hit: [_random_verb()])})
    server = h.Server(ctx["bin"], {"app": {"call_hook": receiver.url("/call")}}, ctx["extra"], name="fig6a")
    before = server.metrics()
    result = h.Sipp("uac-transferee-hangup.xml", server.sip, calls=p["calls"], rate=p["rate"],
                    timeout_s=p["calls"] / p["rate"] + 60, name="fig6a").wait()
    h.sleep(1.0)
    after = server.metrics()
    out["random_names"] = {
        "calls": p["calls"], "sipp": sipp_summary(result),
        "bytes_before": before.bytes if before else None, "bytes_after": after.bytes if after else None,
        "lines_before": before.lines if before else None, "lines_after": after.lines if after else None,
    }
    server.stop()
    receiver.close()

    receiver = h.HookReceiver({"/call": h.Reply.verbs(lambda hit: [_random_verb() for _ in range(p["verbs"])])})
    server = h.Server(ctx["bin"], {"app": {"call_hook": receiver.url("/call")}}, ctx["extra"], name="fig6b")
    before = server.metrics()
    result = h.Sipp("uac-transferee-hangup.xml", server.sip, calls=1, timeout_s=p["one_call_timeout_s"],
                    name="fig6b").wait()
    h.sleep(1.0)
    after = server.metrics()
    out["one_call_many_verbs"] = {
        "verbs": p["verbs"], "sipp": sipp_summary(result),
        "bytes_before": before.bytes if before else None, "bytes_after": after.bytes if after else None,
        "lines_before": before.lines if before else None, "lines_after": after.lines if after else None,
        "lines_added": (after.lines - before.lines) if before and after else None,
    }
    server.stop()
    receiver.close()
    a, b = out["random_names"], out["one_call_many_verbs"]
    rows = [
        (f"{p['calls']} calls, random verb names: /metrics bytes", f"{a['bytes_before']} -> {a['bytes_after']}"),
        ("  lines", f"{a['lines_before']} -> {a['lines_after']}"),
        (f"1 call, {p['verbs']} random verbs: /metrics lines",
         f"{b['lines_before']} -> {b['lines_after']} (+{b['lines_added']})"),
        ("  bytes", f"{b['bytes_before']} -> {b['bytes_after']}"),
    ]
    grown_a = (a["lines_after"] or 0) - (a["lines_before"] or 0)
    out["check"] = verdict(
        (grown_a <= p["ok_lines_added"], f"random verb names add at most {p['ok_lines_added']} /metrics lines"),
        ((b["lines_added"] or 0) <= p["ok_lines_added"],
         f"one call's {p['verbs']} verbs add at most {p['ok_lines_added']} lines"),
    )
    return h.report("cardinality", rows, out)


# ---------------------------------------------------------------------------------------
# 7. INVITE flood (never ACKed) and an over-offered legitimate load
# ---------------------------------------------------------------------------------------


class InviteFlood:
    """Sends `count` INVITEs at `rate`/s from one UDP socket, each a new call, retransmitted
    like Timer A (0.5 s doubling, 6 times) until any response unless `retransmit` is off;
    never ACKs and never answers anything. Records each call's first final status."""

    RETRANS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

    def __init__(self, target: tuple[str, int], count: int, rate: float, retransmit: bool = True):
        self.target, self.count, self.rate = target, count, rate
        self.retransmit = retransmit
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        self.sock.bind((h.LOOPBACK, 0))
        self.local = self.sock.getsockname()
        self.final: dict[str, int] = {}
        self.provisional: set[str] = set()
        self.sent = 0
        self.retransmissions = 0
        self.server_requests: dict[str, int] = {}
        self.lock = threading.Lock()
        self.sending_done = threading.Event()
        self.stop = threading.Event()
        self.invites: dict[str, bytes] = {}
        self.rx = threading.Thread(target=self._receive, daemon=True)
        self.tx = threading.Thread(target=self._send, daemon=True)

    def start(self):
        self.rx.start()
        self.tx.start()

    def _invite(self, n: int) -> tuple[str, bytes]:
        call_id = f"flood-{n}-{uuid.uuid4().hex[:8]}@{h.LOOPBACK}"
        data = h.build_request(
            "INVITE", f"sip:app@{self.target[0]}:{self.target[1]}",
            [("Via", f"SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={h.branch()};rport"),
             ("Max-Forwards", "70"), ("From", f"<sip:flood@{self.local[0]}>;tag={n}"),
             ("To", f"<sip:app@{self.target[0]}>"), ("Call-ID", call_id), ("CSeq", "1 INVITE"),
             ("Contact", f"<sip:flood@{self.local[0]}:{self.local[1]}>"), ("Content-Type", "application/sdp")],
            h.SDP,
        )
        return call_id, data

    def _send(self):
        t0 = time.monotonic()
        heap: list[tuple[float, int, str]] = []
        n = 0
        while not self.stop.is_set():
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, attempt, call_id = heapq.heappop(heap)
                with self.lock:
                    answered = call_id in self.final or call_id in self.provisional
                if not answered:
                    self.sock.sendto(self.invites[call_id], self.target)
                    self.retransmissions += 1
                    if attempt + 1 < len(self.RETRANS):
                        heapq.heappush(heap, (now + self.RETRANS[attempt + 1], attempt + 1, call_id))
            if n < self.count:
                due = t0 + n / self.rate
                if due <= now:
                    call_id, data = self._invite(n)
                    self.invites[call_id] = data
                    self.sock.sendto(data, self.target)
                    self.sent += 1
                    if self.retransmit:
                        heapq.heappush(heap, (now + self.RETRANS[0], 0, call_id))
                    n += 1
                    continue
                wake = due
            else:
                self.sending_done.set()
                if not heap:
                    return
                wake = heap[0][0]
            if heap:
                wake = min(wake, heap[0][0])
            time.sleep(max(0.0, min(0.01, wake - time.monotonic())))

    def _receive(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except OSError:
                continue
            msg = h.parse_sip(data)
            if msg is None:
                continue
            if not msg.is_response:
                self.server_requests[msg.method] = self.server_requests.get(msg.method, 0) + 1
                continue
            if msg.method != "INVITE":
                continue
            call_id = msg.header("call-id")
            with self.lock:
                if msg.status < 200:
                    self.provisional.add(call_id)
                elif call_id not in self.final:
                    self.final[call_id] = msg.status

    def close(self):
        self.stop.set()
        self.tx.join(timeout=5)
        self.rx.join(timeout=5)
        self.sock.close()

    def summary(self) -> dict:
        with self.lock:
            by_status: dict[str, int] = {}
            for status in self.final.values():
                by_status[str(status)] = by_status.get(str(status), 0) + 1
            provisional_only = len(self.provisional - set(self.final))
            answered = set(self.final) | self.provisional
        return {
            "sent": self.sent,
            "retransmissions": self.retransmissions,
            "final_by_status": by_status,
            "provisional_only": provisional_only,
            "no_answer_at_all": self.sent - len(answered),
            "no_final_answer": self.sent - len(self.final),
            "server_requests_ignored": self.server_requests,
        }


def fig_invite_flood(p: dict, ctx: dict) -> dict:
    """(a) `p.invites` INVITEs at `p.invite_rate`/s (retransmitted like Timer A unless
    `p.retransmit` is false), never ACKed, with one legitimate transfer halfway through; (b) `p.legit_calls` legitimate transfers offered at `p.legit_rate`/s."""
    # No hooks: the Python receiver would be the bottleneck at these rates, not the server.
    server = h.Server(ctx["bin"], app_config(refer_app(None)), ctx["extra"], name="fig7a")
    legit_before = h.sipp_call("uac-transferee-accept.xml", server.sip)
    rss_before = server.rss_mib()
    sampler = h.Sampler(server, 0.5)
    flood = InviteFlood(server.sip, p["invites"], p["invite_rate"], p["retransmit"])
    flood.start()
    h.wait_until(lambda: flood.sent >= p["invites"] // 2, p["invites"] / p["invite_rate"] + 30, 0.05)
    legit_during = h.sipp_call("uac-transferee-accept.xml", server.sip, timeout_s=p["legit_timeout_s"])
    flood.sending_done.wait(p["invites"] / p["invite_rate"] + 60)
    h.sleep(p["settle_s"])
    flood.close()
    sampler.stop()
    page = server.metrics()
    part_a = {
        "invites": p["invites"], "rate": p["invite_rate"], **flood.summary(),
        "peak_calls_active": sampler.peak_active,
        "calls_active_at_end": page.total("verbhost_calls_active") if page else None,
        "metrics_unanswered_polls": sampler.metrics_failures,
        "rss_before_mib": rss_before, "rss_peak_sampled_mib": sampler.peak_rss_mib,
        "vmhwm_mib": server.hwm_mib(), "rss_end_mib": server.rss_mib(),
        "legit_call_before_s": legit_before.elapsed, "legit_call_before_passed": legit_before.exit_code == 0,
        "legit_call_during_s": legit_during.elapsed, "legit_call_during_passed": legit_during.exit_code == 0,
    }
    server.stop()

    server = h.Server(ctx["bin"], app_config(refer_app(None)), ctx["extra"], name="fig7b")
    sampler = h.Sampler(server, 0.5)
    # -l as large as the load: sipp must not throttle its own offer.
    load = h.Sipp("uac-transfer-or-refused.xml", server.sip, calls=p["legit_calls"], rate=p["legit_rate"],
                  limit=p["legit_calls"], timeout_s=p["legit_calls"] / p["legit_rate"] + p["legit_timeout_s"],
                  name="fig7b").wait()
    sampler.stop()
    summary = sipp_summary(load)
    refused = summary["refused"]
    part_b = {
        "offered": p["legit_calls"], "rate": p["legit_rate"], "sipp": summary,
        "successful_transfers": load.successful - sum(refused.values()),
        "failed": load.failed, "refused_503": refused.get(503, 0), "refused_other": {
            k: v for k, v in refused.items() if k != 503}, "unfinished": load.unfinished,
        "peak_calls_active": sampler.peak_active, "vmhwm_mib": server.hwm_mib(),
    }
    server.stop()
    a = part_a
    rows = [
        ("(a) INVITEs sent (never ACKed)",
         f"{a['sent']} at {p['invite_rate']}/s, {a['retransmissions']} retransmitted"),
        ("    final answers by status", a["final_by_status"]),
        ("    no final answer / nothing at all", f"{a['no_final_answer']} / {a['no_answer_at_all']}"),
        ("    peak calls_active", a["peak_calls_active"]),
        ("    RSS before / peak / VmHWM",
         f"{a['rss_before_mib']} / {a['rss_peak_sampled_mib']} / {a['vmhwm_mib']} MiB"),
        ("    legit call before / during", f"{a['legit_call_before_s']} s / {a['legit_call_during_s']} s"
         f" (passed {a['legit_call_during_passed']}; includes sipp's 1 s timewait)"),
        (f"(b) {p['legit_calls']} transfers at {p['legit_rate']}/s",
         f"ok {part_b['successful_transfers']}, failed {part_b['failed']}, 503 {part_b['refused_503']},"
         f" other refusals {part_b['refused_other']}, unfinished {part_b['unfinished']}"),
    ]
    offered = p["legit_calls"]
    check = verdict(
        (a["no_final_answer"] <= 0.01 * a["sent"], "at most 1% of the never-ACKed INVITEs get no final answer"),
        (a["legit_call_during_passed"], "a legitimate transfer during the flood passes"),
        (part_b["successful_transfers"] > 0, "some of the over-offered transfers succeed"),
        (part_b["failed"] + part_b["unfinished"] <= 0.01 * offered,
         "at most 1% of the over-offered transfers fail or never finish (the rest are refused)"),
    )
    return h.report("invite_flood", rows, {"never_acked": part_a, "over_offered": part_b, "check": check})


# ---------------------------------------------------------------------------------------
# 8. Slowloris over TCP
# ---------------------------------------------------------------------------------------


def fig_slowloris(p: dict, ctx: dict) -> dict:
    """`p.connections` TCP connections, each sending the start of a request and then one byte
    every `p.trickle_s`. Server fds and RSS at each checkpoint, connections the server closed,
    and whether an honest OPTIONS still gets 200."""
    server = h.Server(ctx["bin"], app_config(refer_app(None), sip={"transport": "tcp"}), ctx["extra"], name="fig8")
    base = {"fds": server.fds(), "rss_mib": server.rss_mib(), "options": h.probe_options(server.sip, "tcp")}
    sel = selectors.DefaultSelector()
    conns: list[socket.socket] = []
    refused = 0
    for _ in range(p["connections"]):
        try:
            sock = socket.create_connection(server.sip, timeout=2)
            sock.sendall(b"OPTIONS sip:slow@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK")
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            conns.append(sock)
        except OSError:
            refused += 1
    closed: set[int] = set()
    t0 = time.monotonic()
    checkpoints = []
    next_trickle = t0 + p["trickle_s"]
    for mark in p["checkpoints_s"]:
        while (now := time.monotonic()) - t0 < mark:
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed.add(sock.fileno())
                    sel.unregister(sock)
            if now >= next_trickle:
                for sock in conns:
                    if sock.fileno() in closed or sock.fileno() < 0:
                        continue
                    try:
                        sock.send(b"a")
                    except OSError:
                        closed.add(sock.fileno())
                next_trickle = now + p["trickle_s"]
        checkpoints.append({
            "at_s": mark, "fds": server.fds(), "rss_mib": server.rss_mib(),
            "connections_closed_by_server": len(closed), "options": h.probe_options(server.sip, "tcp"),
        })
    for sock in conns:
        sock.close()
    data = {"connections": p["connections"], "connect_failed": refused, "baseline": base, "checkpoints": checkpoints}
    last = checkpoints[-1]
    data["check"] = verdict(
        (all(c["options"] == 200 for c in checkpoints), "an honest OPTIONS gets 200 at every checkpoint"),
        ((last["fds"] or 0) <= (base["fds"] or 0) + p["connections"] // 2,
         f"by {last['at_s']} s the server holds fewer than half the slow connections"),
    )
    server.stop()
    rows = [("baseline: fds / RSS / OPTIONS", f"{base['fds']} / {base['rss_mib']} MiB / {base['options']}")]
    for c in checkpoints:
        rows.append((f"after {c['at_s']} s: fds / RSS / OPTIONS / closed",
                     f"{c['fds']} / {c['rss_mib']} MiB / {c['options']} / {c['connections_closed_by_server']}"))
    return h.report("slowloris", rows, data)


# ---------------------------------------------------------------------------------------
# 9. A hook that never answers
# ---------------------------------------------------------------------------------------


def fig_hook_never_answers(p: dict, ctx: dict) -> dict:
    """The actionHook accepts the connection, reads the request and never answers. How many
    times it is POSTed, and how many distinct `Verbhost-Delivery-Id` values they carry."""
    receiver = h.HookReceiver({"/action": h.Reply.never()})
    server = h.Server(ctx["bin"], app_config(refer_app(receiver), webhooks=p["webhooks"]), ctx["extra"], name="fig9")
    webhooks = server.config.get("webhooks", {})
    attempt_s = webhooks.get("timeout_ms", 5000) / 1000
    call = h.Sipp("uac-transferee-decline.xml", server.sip, calls=1, timeout_s=p["max_wait_s"], name="fig9").wait()
    # Wait until the POSTs stop: quiet for longer than one attempt plus the largest backoff.
    quiet = attempt_s + min(10.0, webhooks.get("backoff_ms", 250) / 1000 * 8) + 2
    t0 = time.monotonic()
    last = (receiver.count("/action"), time.monotonic())
    while time.monotonic() - t0 < p["max_wait_s"]:
        n = receiver.count("/action")
        if n != last[0]:
            last = (n, time.monotonic())
        elif n and time.monotonic() - last[1] > quiet:
            break
        time.sleep(0.2)
    hits = receiver.hits_for("/action")
    ids = [hit.headers.get("verbhost-delivery-id") for hit in hits]
    distinct = sorted({i for i in ids if i})
    snap = metric_snapshot(server)
    data = {
        "requests": len(hits),
        "delivery_id_header_present": sum(1 for i in ids if i),
        "distinct_delivery_ids": len(distinct),
        "seconds_between_requests": [round(b.at - a.at, 2) for a, b in zip(hits, hits[1:])],
        "sipp": sipp_summary(call),
        "hook_failures": snap.get("hook_failures"),
        "webhooks": webhooks,
    }
    data["check"] = verdict(
        (len(hits) <= 1 or (data["delivery_id_header_present"] == len(hits) and len(distinct) == 1),
         "delivered once, or every retry carries the same Verbhost-Delivery-Id"),
    )
    server.stop()
    receiver.close()
    rows = [
        ("actionHook requests received", len(hits)),
        ("with Verbhost-Delivery-Id / distinct values", f"{data['delivery_id_header_present']} / {len(distinct)}"),
        ("seconds between them", data["seconds_between_requests"]),
    ]
    return h.report("hook_never_answers", rows, data)


# ---------------------------------------------------------------------------------------
# 10. eventHooks to a dead URL
# ---------------------------------------------------------------------------------------


def fig_dead_event_hook(p: dict, ctx: dict) -> dict:
    """`p.calls` transfers whose eventHook is dead (`p.dead`: `never` = accepts and never
    answers, `refused` = nothing listens). (a) time from the last call's end until
    calls_active is 0; (b) on a fresh server, time from SIGTERM (right after the calls) to exit."""
    out = {}
    for phase in ("settle", "sigterm"):
        receiver = h.HookReceiver({"/event": h.Reply.never()})
        event_url = receiver.url("/event") if p["dead"] == "never" else h.dead_url()
        config = app_config(refer_app(receiver, event_hook=event_url), webhooks=p["webhooks"])
        server = h.Server(ctx["bin"], config, ctx["extra"], name=f"fig10-{phase}")
        result = h.Sipp("uac-transfer-or-refused.xml", server.sip, calls=p["calls"], rate=p["rate"],
                        timeout_s=p["calls"] / p["rate"] + 30, name=f"fig10-{phase}").wait()
        page = server.metrics()
        run = {"sipp": sipp_summary(result),
               "calls_active_when_calls_ended": page.total("verbhost_calls_active") if page else None}
        if phase == "settle":
            run["seconds_until_calls_active_0"] = h.wait_until(
                lambda: (m := server.metrics()) is not None and m.total("verbhost_calls_active") == 0,
                p["max_settle_s"], 0.5)
        else:
            drain = server.config.get("server", {}).get("drain_timeout_s", 30)
            run["drain_timeout_s"] = drain
            run["sigterm_to_exit_s"] = server.sigterm_and_wait(drain + p["exit_grace_s"])
        run["event_requests"] = receiver.count("/event")
        run["action_posts"] = receiver.count("/action")
        server.stop()
        receiver.close()
        out[phase] = run
    s, t = out["settle"], out["sigterm"]
    rows = [
        (f"{p['calls']} calls done; calls_active then", s["calls_active_when_calls_ended"]),
        ("seconds until calls_active is 0",
         s["seconds_until_calls_active_0"] if s["seconds_until_calls_active_0"] is not None
         else f"not within {p['max_settle_s']} s"),
        ("SIGTERM to exit", f"{t['sigterm_to_exit_s']} s (drain timeout {t['drain_timeout_s']} s)"
         if t["sigterm_to_exit_s"] is not None else "did not exit (killed)"),
    ]
    settle_s = s["seconds_until_calls_active_0"]
    exit_s = t["sigterm_to_exit_s"]
    check = verdict(
        (settle_s is not None and settle_s <= p["ok_settle_s"],
         f"calls_active is 0 within {p['ok_settle_s']} s of the last call's end"),
        (exit_s is not None and exit_s <= p["ok_exit_s"], f"SIGTERM exits within {p['ok_exit_s']} s"),
    )
    return h.report("dead_event_hook", rows, {"calls": p["calls"], "dead": p["dead"], **out, "check": check})


# ---------------------------------------------------------------------------------------
# The figures, their parameters (full, quick) and the command line
# ---------------------------------------------------------------------------------------

FIGURES = {
    "tcp_content_length": (fig_tcp_content_length, 90,
                           dict(content_length=18446744073709551000, message_bytes=1053, drain_timeout_s=5,
                                exit_grace_s=15, call_timeout_s=15, ok_cpu_percent=50),
                           dict(exit_grace_s=5, call_timeout_s=8)),
    "sigstop": (fig_sigstop, 300, dict(calls=3000, rate=300, pauses=20, pause_ms=300),
                dict(calls=150, rate=75, pauses=3)),
    "notify_flood": (fig_notify_flood, 180, dict(notifies=50000, notify_rate=10000, settle_s=15),
                     dict(notifies=5000, settle_s=5)),
    "huge_hooks": (fig_huge_hooks, 300,
                   dict(calls=20, answer_mib=50, hooks="call,action", sipp_timeout_s=60, ok_growth_mib=64),
                   dict(calls=4, answer_mib=20, sipp_timeout_s=20, ok_growth_mib=40)),
    "refer_loop": (fig_refer_loop, 60, dict(window_s=10, ok_verbs_per_call=50), dict(window_s=3)),
    "cardinality": (fig_cardinality, 300,
                    dict(calls=2000, rate=200, verbs=10000, one_call_timeout_s=60, ok_lines_added=50),
                    dict(calls=60, rate=30, verbs=300, one_call_timeout_s=20)),
    "invite_flood": (fig_invite_flood, 600,
                     dict(invites=20000, invite_rate=1000, retransmit=True, settle_s=35, legit_calls=20000, legit_rate=2000,
                          legit_timeout_s=60),
                     dict(invites=300, invite_rate=150, settle_s=2, legit_calls=200, legit_rate=100,
                          legit_timeout_s=10)),
    "slowloris": (fig_slowloris, 150, dict(connections=500, trickle_s=5, checkpoints_s=[10, 60]),
                  dict(connections=40, trickle_s=1, checkpoints_s=[2, 4])),
    "hook_never_answers": (fig_hook_never_answers, 120, dict(webhooks={}, max_wait_s=60),
                           dict(webhooks={"timeout_ms": 1000, "backoff_ms": 100}, max_wait_s=15)),
    "dead_event_hook": (fig_dead_event_hook, 600,
                        dict(calls=10, rate=10, dead="never", webhooks={}, max_settle_s=300, exit_grace_s=20,
                             ok_settle_s=10, ok_exit_s=10),
                        dict(calls=2, rate=10, dead="never", webhooks={"timeout_ms": 1000, "backoff_ms": 100,
                                                                       "retries": 1}, max_settle_s=30,
                             exit_grace_s=15, ok_settle_s=3, ok_exit_s=3)),
}


def parse_set(items: list[str], params: dict) -> dict:
    out = dict(params)
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or name not in out:
            raise SystemExit(f"--set {item}: the figure's parameters are {', '.join(out)}")
        old = out[name]
        if isinstance(old, (dict, list)):
            out[name] = json.loads(value)
        elif isinstance(old, bool):
            out[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(old, int):
            out[name] = int(value)
        elif isinstance(old, float):
            out[name] = float(value)
        else:
            out[name] = value
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", help="a figure name, 'all', or 'list'")
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure (CI smoke)")
    parser.add_argument("--bin", default=str(h.DEFAULT_BIN), help="the verbhost binary (default: %(default)s)")
    parser.add_argument("--config-extra", default="", help="TOML merged over the figure's config")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a figure parameter")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless every figure run meets its hardening goal (its verdict)")
    args = parser.parse_args(argv)
    if args.figure == "list":
        for name, (fn, limit, full, quick) in FIGURES.items():
            print(f"{name}: {' '.join(fn.__doc__.split())}")
            print(f"    full: {full}\n    quick overrides: {quick}\n    hard timeout: {limit} s")
        return 0
    names = list(FIGURES) if args.figure == "all" else [args.figure]
    for name in names:
        if name not in FIGURES:
            raise SystemExit(f"unknown figure {name}; one of: {', '.join(FIGURES)}, all, list")
    binary = Path(args.bin)
    if not binary.is_file():
        raise SystemExit(f"no verbhost binary at {binary}: cargo build --release -p verbhost")
    ctx = {"bin": binary, "extra": h.parse_extra(args.config_extra)}
    status = 0
    for name in names:
        fn, limit, full, quick = FIGURES[name]
        params = parse_set(args.set, {**full, **(quick if args.quick else {})})
        h.note(f"{name}: {params}")
        h.install_hard_timeout(limit)
        try:
            line = fn(params, ctx)
            if args.check and not line.get("check", {}).get("pass"):
                status = 1
        except (h.HardTimeout, Exception) as err:  # report, clean up, go on to the next figure
            h.report(name, [("error", f"{type(err).__name__}: {err}")], {"error": f"{type(err).__name__}: {err}"})
            status = 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            h.cleanup()
            h._STOP.clear()
    return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        h.cleanup()
        sys.exit(130)
