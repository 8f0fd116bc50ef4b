"""Shared pieces of the hardening harness: processes, ports, config, the webhook receiver,
/metrics and /proc readers, sipp runs, and raw UDP/TCP SIP peers.

Python 3.11 standard library only. Everything binds and talks to 127.0.0.1. Every process
this module starts is registered and killed by `cleanup()` (run at exit, on SIGINT/SIGTERM
and when a figure's hard timeout fires), so a run never leaves one behind.
"""

from __future__ import annotations

import atexit
import csv
import http.client
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LOOPBACK = "127.0.0.1"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SIPP_DIR = ROOT / "tests" / "sipp"
OWN_SIPP_DIR = HERE / "sipp"
DEFAULT_BIN = ROOT / "target" / "release" / "verbhost"


# ---------------------------------------------------------------------------------------
# Processes, temp dirs and the hard timeout
# ---------------------------------------------------------------------------------------

_PROCS: list[subprocess.Popen] = []
_DIRS: list[Path] = []
_STOP = threading.Event()  # set at cleanup: parked receiver threads and loops give up
KEEP_DIRS = bool(os.environ.get("VERBHOST_KEEP_HARNESS_DIRS"))


class HardTimeout(Exception):
    """A figure ran past its hard time limit."""


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Starts a process in its own process group and registers it for cleanup."""
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    _PROCS.append(proc)
    return proc


def kill(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; also kills the process group.
    SIGCONT first, in case the figure left it stopped."""
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(timeout=5)


def cleanup() -> None:
    """Kills every registered process and removes the temp dirs (unless kept)."""
    _STOP.set()
    while _PROCS:
        proc = _PROCS.pop()
        try:
            kill(proc, grace=1.0)
        except Exception as err:  # keep going: the other processes must die too
            print(f"cleanup: {err}", file=sys.stderr)
    while _DIRS:
        path = _DIRS.pop()
        if KEEP_DIRS:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


atexit.register(cleanup)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_hard_timeout(seconds: float) -> None:
    """Raises HardTimeout in the main thread after `seconds`, and turns SIGTERM into a clean
    exit (cleanup runs)."""

    def fire(_signum, _frame):
        raise HardTimeout(f"hard timeout of {seconds:.0f} s reached")

    signal.signal(signal.SIGALRM, fire)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def temp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"verbhost-hardening-{prefix}-"))
    _DIRS.append(path)
    return path


def sleep(seconds: float) -> None:
    """time.sleep that ends early at cleanup."""
    _STOP.wait(seconds)


# ---------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


_USED: set[int] = set()


def free_ports(count: int = 1) -> int:
    """A base port such that base .. base+count-1 are free on UDP and TCP (sipp needs 5:
    SIP, control, two RTP). Never hands the same port out twice in one run."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 60000 - count)
        ports = range(base, base + count)
        if any(p in _USED for p in ports):
            continue
        if all(_bindable(p) for p in ports):
            _USED.update(ports)
            return base
    raise RuntimeError(f"no {count} consecutive free ports found on {LOOPBACK}")


# ---------------------------------------------------------------------------------------
# Config: a dict merged with the lead's --config-extra TOML, written back as TOML
# ---------------------------------------------------------------------------------------


def merge(base: dict, extra: dict) -> dict:
    """Deep-merges `extra` into a copy of `base` (extra wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: dict) -> str:
    """Writes a two-level dict ({section: {key: value}}, subtables nested) as TOML."""
    lines: list[str] = []

    def table(name: str, body: dict) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for key, value in config.items():
        if not isinstance(value, dict):
            raise TypeError(f"top-level key {key} must be a table")
        table(key, value)
    return "\n".join(lines)


def parse_extra(text: str | None) -> dict:
    """The lead's `--config-extra 'toml lines'` (e.g. `[server]\\nmax_calls = 100`; a literal
    `\\n` is accepted for a newline so it fits on one shell line)."""
    if not text:
        return {}
    return tomllib.loads(text.replace("\\n", "\n"))


# ---------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, Threads, ... from /proc/PID/status (sizes in KiB); {} if gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0])
    return out


def proc_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all threads), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_percent(pid: int, seconds: float) -> float | None:
    """The process's CPU use over `seconds` of wall time, in percent of one core."""
    start = proc_cpu_seconds(pid)
    t0 = time.monotonic()
    sleep(seconds)
    end = proc_cpu_seconds(pid)
    if start is None or end is None:
        return None
    return round(100.0 * (end - start) / (time.monotonic() - t0), 1)


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


# ---------------------------------------------------------------------------------------
# /metrics
# ---------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    """One /metrics page."""

    text: str

    @property
    def bytes(self) -> int:
        return len(self.text.encode())

    @property
    def lines(self) -> int:
        return len(self.text.splitlines())

    def samples(self):
        """(name, {label: value}, value) for every sample line."""
        for line in self.text.splitlines():
            if line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if not match:
                continue
            labels = dict(_LABEL.findall(match.group(2) or ""))
            try:
                value = float(match.group(3))
            except ValueError:
                continue
            yield match.group(1), labels, value

    def total(self, name: str, **labels: str) -> float:
        """The sum of `name` (or `name_total`) over the samples whose labels match."""
        total = 0.0
        for sample, have, value in self.samples():
            if sample not in (name, f"{name}_total"):
                continue
            if all(have.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for sample, have, value in self.samples():
            if sample in (name, f"{name}_total"):
                key = have.get(label, "")
                out[key] = out.get(key, 0.0) + value
        return out


def http_get(addr: tuple[str, int], path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------
# verbhost serve
# ---------------------------------------------------------------------------------------


class Server:
    """`verbhost serve --config FILE [ARGS]`, with its log in the temp dir and an admin port.

    `config` is merged from the figure's own settings, then the lead's `extra` on top.
    """

    def __init__(
        self,
        binary: Path,
        config: dict,
        extra: dict | None = None,
        name: str = "serve",
        start_timeout: float = 20.0,
        args: list[str] | None = None,
    ):
        self.dir = temp_dir(name)
        self.sip_port = free_ports(1)
        self.admin_port = free_ports(1)
        base = {
            "sip": {"listen": f"{LOOPBACK}:{self.sip_port}", "transport": "udp"},
            "admin": {"listen": f"{LOOPBACK}:{self.admin_port}"},
        }
        self.config = merge(merge(base, config), extra or {})
        # Keep what the figure decided about the listener, but the ports are ours.
        listen = self.config["sip"]["listen"]
        self.sip_port = int(str(listen).rsplit(":", 1)[1])
        self.transport = self.config["sip"].get("transport", "udp")
        self.config_path = self.dir / "verbhost.toml"
        self.config_path.write_text(to_toml(self.config))
        self.log_path = self.dir / "serve.log"
        self._log = open(self.log_path, "wb")
        self.proc = spawn(
            [str(binary), "serve", "--config", str(self.config_path), *(args or [])],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"verbhost serve exited with {self.proc.returncode} at start:\n{self.log()}"
                )
            try:
                status, _ = http_get(self.admin, "/health", timeout=1.0)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"verbhost serve did not come up in {start_timeout} s:\n{self.log()}")
            time.sleep(0.05)

    @property
    def admin(self) -> tuple[str, int]:
        return (LOOPBACK, self.admin_port)

    @property
    def sip(self) -> tuple[str, int]:
        return (LOOPBACK, self.sip_port)

    def metrics(self, timeout: float = 5.0) -> Metrics | None:
        """The /metrics page, or None if the admin server does not answer in time."""
        try:
            status, body = http_get(self.admin, "/metrics", timeout=timeout)
        except OSError:
            return None
        return Metrics(body.decode(errors="replace")) if status == 200 else None

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def rss_mib(self) -> float | None:
        return mib(self.status().get("VmRSS"))

    def hwm_mib(self) -> float | None:
        return mib(self.status().get("VmHWM"))

    def fds(self) -> int | None:
        return proc_fds(self.pid)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_count(self, needle: str) -> int:
        return self.log().count(needle)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def sigterm_and_wait(self, limit: float) -> float | None:
        """SIGTERM, then the seconds until the process exited, or None if it did not within
        `limit` (then it is killed)."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=limit)
            return round(time.monotonic() - t0, 2)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def stop(self) -> None:
        kill(self.proc, grace=2.0)
        self._log.flush()


class Sampler:
    """Polls a server in the background: peak calls_active, peak RSS, the last page."""

    def __init__(self, server: Server, interval: float = 0.5):
        self.server = server
        self.interval = interval
        self.peak_active = 0.0
        self.peak_rss_mib = 0.0
        self.metrics_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set() and not _STOP.is_set():
            rss = self.server.rss_mib()
            if rss:
                self.peak_rss_mib = max(self.peak_rss_mib, rss)
            page = self.server.metrics(timeout=2.0)
            if page is None:
                self.metrics_failures += 1
            else:
                self.peak_active = max(self.peak_active, page.total("verbhost_calls_active"))
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


def wait_until(predicate: Callable[[], bool], limit: float, step: float = 0.2) -> float | None:
    """Seconds until `predicate()` held, or None if it did not within `limit`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit and not _STOP.is_set():
        if predicate():
            return round(time.monotonic() - t0, 2)
        time.sleep(step)
    return None


# ---------------------------------------------------------------------------------------
# The webhook receiver
# ---------------------------------------------------------------------------------------


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body_len: int
    json: object
    at: float


class Reply:
    """How the receiver answers one path. Build with the class methods."""

    def __init__(self, kind: str, status: int = 200, body: bytes | Callable[[Hit], bytes] = b""):
        self.kind = kind
        self.status = status
        self.body = body

    @classmethod
    def normal(cls) -> "Reply":
        """200 with an empty body."""
        return cls("normal")

    @classmethod
    def status_only(cls, status: int) -> "Reply":
        return cls("status", status)

    @classmethod
    def verbs(cls, verbs) -> "Reply":
        """200 with a verb array: a list, or a callable(hit) -> list for a fresh answer each
        time."""
        if callable(verbs):
            return cls("verbs", body=lambda hit: json.dumps(verbs(hit)).encode())
        return cls("verbs", body=json.dumps(verbs).encode())

    @classmethod
    def huge(cls, size: int, verbs=()) -> "Reply":
        """200 with `size` bytes: a valid verb array (default `[]`) padded with spaces, so a
        host that reads it all also parses it."""
        head = json.dumps(list(verbs)).encode()
        return cls("huge", body=head + b" " * max(0, size - len(head)))

    @classmethod
    def never(cls) -> "Reply":
        """Reads the request, then never answers (holds the connection until cleanup)."""
        return cls("never")


class HookReceiver:
    """A real HTTP server in a thread on 127.0.0.1:<free port>. Records every request (after
    its body was read) and answers by path; unscripted paths get `default`."""

    def __init__(self, routes: dict[str, Reply] | None = None, default: Reply | None = None):
        self.routes = dict(routes or {})
        self.default = default or Reply.normal()
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # frees `never` handlers
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(raw) if raw and length < 1_000_000 else None
                except ValueError:
                    parsed = None
                path = self.path.split("?", 1)[0]
                hit = Hit(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    len(raw),
                    parsed,
                    time.monotonic(),
                )
                with receiver.lock:
                    receiver.hits.append(hit)
                reply = receiver.routes.get(path, receiver.default)
                if reply.kind == "never":
                    while not receiver.release.wait(0.5) and not _STOP.is_set():
                        pass
                    self.close_connection = True
                    return
                body = reply.body(hit) if callable(reply.body) else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True

            do_POST = _handle
            do_GET = _handle
            do_PUT = _handle

        class Srv(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.server = Srv((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def hits_for(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path.split("?", 1)[0] == path]

    def count(self, path: str | None = None) -> int:
        with self.lock:
            if path is None:
                return len(self.hits)
            return sum(1 for h in self.hits if h.path.split("?", 1)[0] == path)

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://{LOOPBACK}:{free_ports(1)}/dead"


# ---------------------------------------------------------------------------------------
# sipp
# ---------------------------------------------------------------------------------------


def scenario(name: str) -> Path:
    """A scenario from this folder's sipp/ or else the project's tests/sipp/."""
    own = OWN_SIPP_DIR / name
    return own if own.exists() else SIPP_DIR / name


@dataclass
class SippResult:
    exit_code: int | None
    elapsed: float
    killed: bool
    successful: int = 0
    failed: int = 0
    created: int = 0
    current: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    dir: Path | None = None
    errors_tail: str = ""
    error_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def unfinished(self) -> int:
        return max(0, self.created - self.successful - self.failed)

    def count(self, column_prefix: str) -> int:
        """Sum of the -trace_counts columns whose name starts with `column_prefix`, e.g.
        '_503_Recv' matches every recv of a 503 (the column names start with the index)."""
        return sum(v for k, v in self.counts.items() if k.endswith(column_prefix))


class Sipp:
    """One sipp process: a UAC calling the server (`target`), with -trace_stat and
    -trace_counts, bounded by -timeout and by our own kill."""

    def __init__(
        self,
        xml: str,
        target: tuple[str, int] | None,
        calls: int = 1,
        rate: float | None = None,
        limit: int | None = None,
        transport: str = "udp",
        timeout_s: float = 60,
        extra: list[str] | None = None,
        name: str = "sipp",
    ):
        self.dir = temp_dir(name)
        self.port = free_ports(5)
        self.timeout_s = timeout_s
        self.xml = scenario(xml)
        args = ["sipp"]
        if target:
            args.append(f"{target[0]}:{target[1]}")
        args += ["-sf", str(self.xml), "-t", "t1" if transport == "tcp" else "u1"]
        args += ["-i", LOOPBACK, "-bind_local", "-p", str(self.port)]
        args += ["-mi", LOOPBACK, "-mp", str(self.port + 2), "-ci", LOOPBACK, "-cp", str(self.port + 1)]
        args += ["-m", str(calls), "-nostdin", "-trace_err", "-trace_stat", "-trace_counts"]
        args += ["-stf", str(self.dir / "stat.csv"), "-fd", "1"]
        args += ["-timeout", f"{int(timeout_s)}s", "-timeout_error"]
        args += ["-max_recv_loops", "10000"]
        if rate:
            args += ["-r", str(rate)]
            if rate > 1000 or rate != int(rate):
                args += ["-rp", "1000"]
        if limit:
            args += ["-l", str(limit)]
        if transport == "tcp":
            args += ["-reconnect_close", "false", "-max_socket", "1024"]
        args += extra or []
        self.args = args
        self.t0 = time.monotonic()
        self.proc = spawn(
            args,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=open(self.dir / "sipp.stdout", "wb"),
            stderr=open(self.dir / "sipp.stderr", "wb"),
        )

    def wait(self) -> SippResult:
        killed = False
        try:
            self.proc.wait(timeout=self.timeout_s + 15)
        except subprocess.TimeoutExpired:
            killed = True
            kill(self.proc)
        elapsed = round(time.monotonic() - self.t0, 3)
        result = SippResult(self.proc.returncode if not killed else None, elapsed, killed, dir=self.dir)
        stats = self._last_row(self.dir / "stat.csv")
        if stats:
            result.successful = _int(stats.get("SuccessfulCall(C)"))
            result.failed = _int(stats.get("FailedCall(C)"))
            result.created = _int(stats.get("TotalCallCreated"))
            result.current = _int(stats.get("CurrentCall"))
        for path in self.dir.glob("*_counts.csv"):
            row = self._last_row(path)
            result.counts = {k: _int(v) for k, v in row.items() if k}
        errors = "".join(p.read_text(errors="replace") for p in self.dir.glob("*_errors.log"))
        result.errors_tail = errors[-2000:]
        result.error_reasons = error_reasons(errors)
        return result

    @staticmethod
    def _last_row(path: Path) -> dict[str, str]:
        try:
            with open(path, newline="") as handle:
                rows = list(csv.reader(handle, delimiter=";"))
        except OSError:
            return {}
        if len(rows) < 2:
            return {}
        header = [h.strip() for h in rows[0]]
        return {h: v.strip() for h, v in zip(header, rows[-1])}


_ERROR = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ([^\r\n]*?)(?:, received '([^\r\n]*))?[\r\n]")


def error_reasons(text: str, top: int = 5) -> dict[str, int]:
    """sipp's errors log boiled down: each reason without its Call-ID, with what it received
    (a request's method or a response's status), counted; the `top` most frequent."""
    counts: dict[str, int] = {}
    for match in _ERROR.finditer(text):
        reason = re.sub(r"'[^']*@[^']*'", "<call>", match.group(1))
        reason = re.sub(r"Dead call \S+", "Dead call <call>", reason)
        received = (match.group(2) or "").strip()
        if received.startswith("SIP/2.0 "):
            reason += f", received {received[8:40]}"
        elif received:
            reason += f", received {received.split()[0]}"
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])


def _int(text) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return 0


def sipp_call(xml: str, target: tuple[str, int], transport: str = "udp", timeout_s: float = 30) -> SippResult:
    """One call, start to exit (wall time includes sipp's 1 s <timewait>)."""
    return Sipp(xml, target, calls=1, transport=transport, timeout_s=timeout_s, name="sipp1").wait()


# ---------------------------------------------------------------------------------------
# Raw SIP
# ---------------------------------------------------------------------------------------

COMPACT = {
    "v": "via", "i": "call-id", "f": "from", "t": "to", "m": "contact", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "o": "event", "r": "refer-to",
    "b": "referred-by", "u": "allow-events", "e": "content-encoding",
}


@dataclass
class SipMessage:
    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def is_response(self) -> bool:
        return self.start.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.start.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        if self.is_response:
            return self.header("cseq").split()[-1].upper()
        return self.start.split()[0].upper()

    def header(self, name: str) -> str:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]


def parse_sip(data: bytes) -> SipMessage | None:
    """A lenient parser for what the server sends (never raises)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = head.decode(errors="replace").replace("\r\n", "\n").split("\n")
    if not lines or not lines[0]:
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        headers.append((COMPACT.get(key, key), value.strip()))
    return SipMessage(lines[0].strip(), headers, body)


def tag_of(value: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", value)
    return match.group(1) if match else ""


def uri_of(value: str) -> str:
    match = re.search(r"<([^>]+)>", value)
    return match.group(1) if match else value.split(";")[0].strip()


def branch() -> str:
    return "z9hG4bK-h" + uuid.uuid4().hex[:16]


SDP = (
    "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def build_request(method: str, uri: str, headers: list[tuple[str, str]], body: str | bytes = b"",
                  content_length: str | None = None) -> bytes:
    body_bytes = body.encode() if isinstance(body, str) else body
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {content_length if content_length is not None else len(body_bytes)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body_bytes


def build_response(request: SipMessage, status: int, reason: str, to_tag: str | None = None,
                   extra: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    for via in request.all("via"):
        lines.append(f"Via: {via}")
    lines.append(f"From: {request.header('from')}")
    to = request.header("to")
    if to_tag and "tag=" not in to:
        to = f"{to};tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.header('call-id')}")
    lines.append(f"CSeq: {request.header('cseq')}")
    for k, v in extra or []:
        lines.append(f"{k}: {v}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def options_request(transport: str, local: tuple[str, int], target: tuple[str, int]) -> bytes:
    return build_request(
        "OPTIONS",
        f"sip:{target[0]}:{target[1]}",
        [
            ("Via", f"SIP/2.0/{transport.upper()} {local[0]}:{local[1]};branch={branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:probe@{local[0]}>;tag={uuid.uuid4().hex[:8]}"),
            ("To", f"<sip:{target[0]}:{target[1]}>"),
            ("Call-ID", f"{uuid.uuid4().hex}@{LOOPBACK}"),
            ("CSeq", "1 OPTIONS"),
        ],
    )


def probe_options(target: tuple[str, int], transport: str, timeout: float = 2.0) -> int | None:
    """Sends one honest OPTIONS (a fresh socket or connection) and returns the status of the
    first response within `timeout`, or None."""
    deadline = time.monotonic() + timeout
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.sendto(options_request("udp", sock.getsockname(), target), target)
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, _ = sock.recvfrom(65535)
                except OSError:
                    return None
                msg = parse_sip(data)
                if msg and msg.is_response and msg.method == "OPTIONS":
                    return msg.status
            return None
    try:
        sock = socket.create_connection(target, timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            sock.sendall(options_request("tcp", sock.getsockname(), target))
            data = b""
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(65535)
                if not chunk:
                    return None
                data += chunk
                if b"\r\n\r\n" in data:
                    msg = parse_sip(data)
                    return msg.status if msg and msg.is_response else None
        except OSError:
            return None
    return None


class UdpUac:
    """A tiny caller over one raw UDP socket: INVITE, ACK, in-dialog requests, and answers to
    what the server sends. Not a full UA: enough to play a transferee that misbehaves."""

    def __init__(self, target: tuple[str, int], rcvbuf: int = 4 << 20):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        self.sock.bind((LOOPBACK, 0))
        self.local = self.sock.getsockname()
        self.call_id = f"{uuid.uuid4().hex}@{LOOPBACK}"
        self.local_tag = uuid.uuid4().hex[:10]
        self.from_value = f'"Alice" <sip:+4930111@{LOOPBACK}:{self.local[1]}>;tag={self.local_tag}'
        self.contact = f"<sip:alice-uac@{LOOPBACK}:{self.local[1]};transport=UDP>"
        self.remote_to = f"<sip:app@{target[0]}:{target[1]}>"
        self.remote_target = f"sip:app@{target[0]}:{target[1]}"
        self.cseq = 1
        self.invite_branch = branch()
        self.answered_tags: dict[str, str] = {}

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendto(data, self.target)

    def via(self, br: str | None = None) -> str:
        return f"SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={br or branch()};rport"

    def invite(self) -> None:
        self.send(build_request(
            "INVITE", f"sip:app@{self.target[0]}:{self.target[1]}",
            [("Via", self.via(self.invite_branch)), ("Max-Forwards", "70"), ("From", self.from_value),
             ("To", self.remote_to), ("Call-ID", self.call_id), ("CSeq", "1 INVITE"),
             ("Contact", self.contact), ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REFER"),
             ("Content-Type", "application/sdp")],
            SDP,
        ))

    def recv(self, timeout: float) -> SipMessage | None:
        self.sock.settimeout(max(0.0, timeout))
        try:
            data, _ = self.sock.recvfrom(65535)
        except (socket.timeout, BlockingIOError):
            return None
        return parse_sip(data)

    def recv_nowait(self) -> SipMessage | None:
        self.sock.setblocking(False)
        try:
            data, _ = self.sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return None
        finally:
            self.sock.setblocking(True)
        return parse_sip(data)

    def connect(self, timeout: float = 10.0) -> bool:
        """INVITE until the 200 (retransmitting like Timer A), then ACK. False on a final
        error or no answer."""
        deadline = time.monotonic() + timeout
        self.invite()
        resend = time.monotonic() + 0.5
        interval = 0.5
        while time.monotonic() < deadline:
            msg = self.recv(min(resend, deadline) - time.monotonic())
            if msg is None:
                if time.monotonic() >= resend:
                    self.invite()
                    interval = min(interval * 2, 4)
                    resend = time.monotonic() + interval
                continue
            if msg.is_response and msg.method == "INVITE":
                if msg.status < 200:
                    resend = deadline  # a provisional stops the retransmissions
                    continue
                if msg.status >= 300:
                    return False
                self.remote_to = msg.header("to")
                contact = msg.header("contact")
                if contact:
                    self.remote_target = uri_of(contact)
                self.ack()
                return True
        return False

    def ack(self):
        self.send(build_request(
            "ACK", self.remote_target,
            [("Via", self.via()), ("Max-Forwards", "70"), ("From", self.from_value), ("To", self.remote_to),
             ("Call-ID", self.call_id), ("CSeq", "1 ACK"), ("Contact", self.contact)],
        ))

    def in_dialog(self, method: str, headers: list[tuple[str, str]] = (), body: str = "") -> bytes:
        self.cseq += 1
        return build_request(
            method, self.remote_target,
            [("Via", self.via()), ("Max-Forwards", "70"), ("From", self.from_value), ("To", self.remote_to),
             ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} {method}"), ("Contact", self.contact),
             *headers],
            body,
        )

    def notify(self, refer_id: str, state: str, sipfrag: str) -> bytes:
        return self.in_dialog(
            "NOTIFY",
            [("Event", f"refer;id={refer_id}"), ("Subscription-State", state),
             ("Content-Type", "message/sipfrag;version=2.0")],
            sipfrag + "\r\n",
        )

    def answer(self, request: SipMessage, status: int, reason: str):
        self.send(build_response(request, status, reason, extra=[("Contact", self.contact)]))


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def report(figure: str, rows: list[tuple[str, object]], data: dict) -> dict:
    """Prints a short two-column table and the final machine-readable line:
    `RESULT {"figure": ..., ...}`."""
    check = data.get("check")
    if check is not None:
        rows = [*rows, ("verdict", "PASS" if check["pass"] else "FAIL, goal not met: " + "; ".join(check["failed"]))]
    width = max((len(k) for k, _ in rows), default=10)
    print(f"\n== {figure} ==")
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
    line = {"figure": figure, **data}
    print("RESULT " + json.dumps(line, sort_keys=True, default=str))
    sys.stdout.flush()
    return line


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
