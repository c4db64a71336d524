"""Overhead benchmark of oai-bridge against the Livepeer gateway simulator.

    python bench/overhead.py [--quick] [--workers N] [--json OUT] [...]   (see --help)

Starts ``oai-bridge simulate`` (the upstream) and ``oai-bridge serve --gateway <simulator>`` on free
loopback ports, the bridge pinned to one CPU and the simulator plus the load generator pinned to
another, then measures, sending the same logical request straight to the simulator's ``/llm``
("direct") and through the bridge's ``/v1/chat/completions`` ("bridge"), alternating the two:

1. bridge CPU time (user+sys of the bridge process and its children) per non-stream request and per
   50-chunk stream, over a fixed number of requests at moderate concurrency;
2. added latency at concurrency 1 (p50/p99, total time for non-stream, time to last byte for
   streams), requests alternating direct/bridge one by one;
3. throughput at concurrency 64 with the bridge on one core: requests/s direct vs via the bridge,
   with the CPU use of every party so a saturated load generator or upstream shows.

Every loop is bounded in count and time; the servers are stopped on exit, Ctrl-C included.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover
    sys.exit("bench/overhead.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOADGEN = HERE / "loadgen.py"

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a short poem about bridges. [[sim tokens=50]]"},
]
TOKENS = 50

TARGET_MS = {"nonstream": 0.4, "stream": 1.5}
#: Figures quoted in the issue for LiteLLM 1.106 on this kind of machine; NOT measured here.
LITELLM_REF_MS = {"nonstream": 23.0, "stream": 80.0}
KINDS = ("nonstream", "stream")
LABEL = {"nonstream": "non-stream request", "stream": f"{TOKENS}-chunk stream"}


class BenchError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], p: float) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def body_for(kind: str, target: str) -> dict[str, Any]:
    stream = kind == "stream"
    if target == "direct":  # the Livepeer /llm JSON request (gateway >= v0.8.3)
        return {"model": MODEL, "messages": MESSAGES, "max_tokens": TOKENS, "stream": stream}
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": TOKENS}
    if stream:
        body["stream"] = True
    return body


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def raw_request(port: int, path: str, body: dict[str, Any]) -> str:
    data = compact(body)
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data.encode())}\r\n\r\n{data}"
    )


def cpu_busy(before: Any, after: Any) -> float:
    """Busy fraction of one CPU between two psutil.cpu_times(percpu=True) entries."""

    def tot(t: Any) -> float:  # guest time is already counted in user/nice on Linux
        return float(sum(t)) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    total = tot(after) - tot(before)
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0))
    return max(0.0, (total - idle) / total) if total > 0 else 0.0


# ----------------------------------------------------------------------------- processes


@dataclass
class Server:
    name: str
    argv: list[str]
    health_path: str
    cpus: list[int] | None
    logdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.logdir / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> None:
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            argv = [a.replace("{port}", str(self.port)) for a in self.argv]
            argv = pin_prefix(self.cpus) + argv
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            self.ps = psutil.Process(self.proc.pid)
            if self._wait_ready(timeout):
                return
            self.stop()
        raise BenchError(f"{self.name} did not become ready; log:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", self.health_path)
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            time.sleep(0.1)
        return False

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def processes(self) -> list[psutil.Process]:
        assert self.ps is not None
        procs = [self.ps]
        with contextlib.suppress(psutil.Error):
            procs += self.ps.children(recursive=True)
        return procs

    def cpu(self, procs: list[psutil.Process] | None = None) -> float:
        """user+sys seconds of the server process and its children (uvicorn workers)."""
        total = 0.0
        for p in procs if procs is not None else self.processes():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: server + its workers
            try:
                self.proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        else:  # the leader is gone; make sure no worker of its session outlived it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


_PIN: dict[str, Any] = {"enabled": True, "taskset": shutil.which("taskset")}


def pin_prefix(cpus: list[int] | None) -> list[str]:
    if not cpus or not _PIN["enabled"]:
        return []
    if _PIN["taskset"]:
        return [_PIN["taskset"], "-c", ",".join(map(str, cpus))]
    return []  # handled by preexec in run_child; servers then run unpinned (reported)


@dataclass
class ChildResult:
    returncode: int
    cpu_s: float
    wall_s: float
    stdout: str


def run_child(argv: list[str], cpus: list[int] | None, timeout: float, logdir: Path) -> ChildResult:
    """Run a load generator, bounded by ``timeout``; its exact CPU time comes from wait4()."""
    out_path = Path(tempfile.mkstemp(prefix="child-", suffix=".out", dir=logdir)[1])
    with open(out_path, "wb") as outf:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            pin_prefix(cpus) + argv,
            stdout=outf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{argv[0]} ran past its {timeout:.0f} s bound")
            time.sleep(0.02)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                proc.wait(timeout=5)
    wall = time.monotonic() - t0
    text = out_path.read_text(errors="replace")
    out_path.unlink()
    return ChildResult(proc.returncode, ru.ru_utime + ru.ru_stime, wall, text)


# ----------------------------------------------------------------------------- the bench


@dataclass
class Stack:
    sim: Server
    bridge: Server
    python: str
    bridge_cpus: list[int] | None
    other_cpus: list[int] | None
    logdir: Path

    def target(self, kind: str, which: str) -> dict[str, Any]:
        if which == "direct":
            port, path = self.sim.port, "/llm"
            expect = f'"completion_tokens":{TOKENS}'
        else:
            port, path = self.bridge.port, "/v1/chat/completions"
            expect = "data: [DONE]" if kind == "stream" else f'"completion_tokens":{TOKENS}'
        return {
            "name": which,
            "host": "127.0.0.1",
            "port": port,
            "path": path,
            "body": body_for(kind, which),
            "request": raw_request(port, path, body_for(kind, which)),
            "expect": expect,
        }


class Sampler:
    """CPU of the bridge, the simulator and each CPU core between start() and stop()."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def __enter__(self) -> Sampler:
        self.bprocs = self.stack.bridge.processes()
        self.sprocs = self.stack.sim.processes()
        self.b0 = self.stack.bridge.cpu(self.bprocs)
        self.s0 = self.stack.sim.cpu(self.sprocs)
        self.me0 = time.process_time()
        self.c0 = psutil.cpu_times(percpu=True)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.t0
        self.bridge_cpu = self.stack.bridge.cpu(self.bprocs) - self.b0
        self.sim_cpu = self.stack.sim.cpu(self.sprocs) - self.s0
        c1 = psutil.cpu_times(percpu=True)
        self.self_cpu = time.process_time() - self.me0
        self.core_busy = {i: cpu_busy(a, b) for i, (a, b) in enumerate(zip(self.c0, c1, strict=True))}

    def foreign_pct(self, loadgen_cpu_s: float) -> tuple[float | None, float | None]:
        """% of the bridge's core and of the other core used by processes that are not ours."""
        bc, oc = self.stack.bridge_cpus, self.stack.other_cpus
        if not bc or not oc:
            return None, None
        wall = max(self.wall, 1e-9)
        ours_other = self.sim_cpu + loadgen_cpu_s + self.self_cpu
        return (
            max(0.0, self.core_busy[bc[0]] * 100 - self.bridge_cpu / wall * 100),
            max(0.0, self.core_busy[oc[0]] * 100 - ours_other / wall * 100),
        )


def loadgen(stack: Stack, spec: dict[str, Any], timeout: float) -> tuple[dict[str, Any], ChildResult]:
    spec_path = Path(tempfile.mkstemp(prefix="spec-", suffix=".json", dir=stack.logdir)[1])
    out_path = spec_path.with_suffix(".result.json")
    keys = ("name", "host", "port", "request", "expect")
    spec = {**spec, "targets": [{k: t[k] for k in keys} for t in spec["targets"]]}
    spec.setdefault("max_time", timeout)
    spec_path.write_text(json.dumps(spec))
    argv = [stack.python, str(LOADGEN), str(spec_path), str(out_path)]
    child = run_child(argv, stack.other_cpus, timeout + 30, stack.logdir)
    if child.returncode != 0 or not out_path.exists():
        raise BenchError(f"load generator failed ({child.returncode}):\n{child.stdout[-3000:]}")
    result = json.loads(out_path.read_text())
    spec_path.unlink()
    out_path.unlink()
    return result, child


def check_errors(result: dict[str, Any], what: str, warnings: list[str]) -> None:
    for name, row in result["targets"].items():
        if row["errors"]:
            msg = f"FAILED {what}: {row['errors']} failed {name} requests, e.g. {row['error_samples'][:2]}"
            warnings.append(msg)
            log("WARNING " + msg)


# ---- sanity


def http_post(port: int, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=compact(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sanity(stack: Stack) -> dict[str, Any]:
    """One request of each kind both ways: the replies must be the same 50 tokens."""
    out: dict[str, Any] = {}
    texts = {}
    for kind in KINDS:
        for which in ("direct", "bridge"):
            t = stack.target(kind, which)
            status, raw = http_post(t["port"], t["path"], t["body"])
            if status != 200:
                raise BenchError(f"sanity: {which} {kind} answered HTTP {status}: {raw[:300]!r}")
            if kind == "nonstream":
                obj = json.loads(raw)
                text = obj["choices"][0]["message"]["content"]
                usage = obj.get("usage") or {}
                out[f"{which}_{kind}"] = {"completion_tokens": usage.get("completion_tokens"), "bytes": len(raw)}
            else:
                events = [ln[6:] for ln in raw.decode().split("\n") if ln.startswith("data: ")]
                pieces = []
                for e in events:
                    if e == "[DONE]":
                        continue
                    for ch in json.loads(e).get("choices") or []:
                        pieces.append(((ch.get("delta") or {}).get("content")) or "")
                text = "".join(pieces)
                content_events = sum(1 for p in pieces if p)
                out[f"{which}_{kind}"] = {"events": len(events), "content_events": content_events, "bytes": len(raw)}
                if content_events != TOKENS:
                    raise BenchError(f"sanity: {which} stream has {content_events} content events, not {TOKENS}")
            texts[(kind, which)] = text
    for kind in KINDS:
        if texts[(kind, "direct")] != texts[(kind, "bridge")]:
            raise BenchError(f"sanity: the {kind} reply differs direct vs bridge")
        if len(texts[(kind, "direct")].split()) != TOKENS:
            raise BenchError(f"sanity: the {kind} reply is not {TOKENS} words")
    return out


# ---- 1. CPU per request


def phase_cpu(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    counts = {"nonstream": a.cpu_requests, "stream": a.cpu_streams}
    for kind in KINDS:  # warm the connection pools outside the measured windows
        for which in ("direct", "bridge"):
            spec = {"targets": [stack.target(kind, which)], "concurrency": a.cpu_concurrency,
                    "count": a.cpu_concurrency * 4}  # fmt: skip
            loadgen(stack, spec, timeout=a.phase_timeout)
    rounds: list[dict[str, Any]] = []
    for r in range(a.rounds):
        row: dict[str, Any] = {}
        for kind in KINDS:
            for which in ("direct", "bridge") if r % 2 == 0 else ("bridge", "direct"):
                spec = {"targets": [stack.target(kind, which)], "concurrency": a.cpu_concurrency, "count": counts[kind]}
                with Sampler(stack) as s:
                    result, child = loadgen(stack, spec, timeout=a.phase_timeout)
                check_errors(result, f"cpu {kind} {which}", warnings)
                res = result["targets"][which]
                n = res["completed"] + res["errors"]
                row[f"{kind}_{which}"] = {
                    "requests": n,
                    "errors": res["errors"],
                    "bridge_cpu_ms": s.bridge_cpu / n * 1e3,
                    "upstream_cpu_ms": s.sim_cpu / n * 1e3,
                    "loadgen_cpu_ms": child.cpu_s / n * 1e3,
                    "rps": res["rps"],
                    "wall_s": s.wall,
                    "bridge_cpu_pct": s.bridge_cpu / s.wall * 100,
                    "core_busy_pct": {str(k): v * 100 for k, v in s.core_busy.items()},
                    "foreign_pct": s.foreign_pct(child.cpu_s),
                }
        rounds.append(row)
        log(
            f"cpu round {r + 1}/{a.rounds}: bridge {row['nonstream_bridge']['bridge_cpu_ms']:.3f} ms/request, "
            f"{row['stream_bridge']['bridge_cpu_ms']:.3f} ms/stream"
        )
    out: dict[str, Any] = {"concurrency": a.cpu_concurrency, "counts": counts, "rounds": rounds}
    for kind in KINDS:
        out[kind] = {
            "bridge_cpu_ms": median([r[f"{kind}_bridge"]["bridge_cpu_ms"] for r in rounds]),
            "upstream_cpu_ms_direct": median([r[f"{kind}_direct"]["upstream_cpu_ms"] for r in rounds]),
            "upstream_cpu_ms_via_bridge": median([r[f"{kind}_bridge"]["upstream_cpu_ms"] for r in rounds]),
            "loadgen_cpu_ms_direct": median([r[f"{kind}_direct"]["loadgen_cpu_ms"] for r in rounds]),
            "target_ms": TARGET_MS[kind],
            "litellm_reference_ms": LITELLM_REF_MS[kind],
        }
        out[kind]["meets_target"] = out[kind]["bridge_cpu_ms"] <= TARGET_MS[kind]
    return out


# ---- 2. latency at concurrency 1


def phase_latency(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    counts = {"nonstream": a.latency_requests, "stream": a.latency_streams}
    out: dict[str, Any] = {}
    for kind in KINDS:
        spec = {
            "targets": [stack.target(kind, "direct"), stack.target(kind, "bridge")],
            "concurrency": 1,
            "count": counts[kind],
            "warmup_count": 20,
            "interleave": True,
            "latencies": True,
        }
        with Sampler(stack) as smp:
            result, child = loadgen(stack, spec, timeout=a.phase_timeout)
        check_errors(result, f"latency {kind}", warnings)
        d = [v / 1e3 for v in result["targets"]["direct"]["lat_us"]]
        b = [v / 1e3 for v in result["targets"]["bridge"]["lat_us"]]
        pairs = [y - x for x, y in zip(d, b, strict=False)]
        row = {
            "pairs": min(len(d), len(b)),
            "direct_p50_ms": pct(d, 50),
            "direct_p99_ms": pct(d, 99),
            "bridge_p50_ms": pct(b, 50),
            "bridge_p99_ms": pct(b, 99),
            "paired_diff_p50_ms": pct(pairs, 50),
            "foreign_pct": smp.foreign_pct(child.cpu_s),
            # every bridge request of the window, the 20 warm-up ones included
            "bridge_cpu_ms_at_c1": smp.bridge_cpu / (len(b) + result["targets"]["bridge"]["errors"] + 20) * 1e3,
        }
        row["added_p50_ms"] = row["bridge_p50_ms"] - row["direct_p50_ms"]
        row["added_p99_ms"] = row["bridge_p99_ms"] - row["direct_p99_ms"]
        row["ratio_p50"] = row["bridge_p50_ms"] / row["direct_p50_ms"]
        out[kind] = row
        log(f"latency {kind}: added p50 {row['added_p50_ms']:+.3f} ms, p99 {row['added_p99_ms']:+.3f} ms")
    out["counts"] = counts
    return out


# ---- 3. throughput at concurrency 64


WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    stack: Stack, t: dict[str, Any], conc: int, seconds: float, timeout: float
) -> tuple[dict[str, Any], ChildResult]:
    script = stack.logdir / f"wrk-{t['name']}-{t['port']}-{'s' if t['body'].get('stream') else 'n'}.lua"
    script.write_text(WRK_LUA % compact(t["body"]))
    secs = max(1, round(seconds))
    argv = [
        _WRK["path"], "-t1", f"-c{conc}", f"-d{secs}s", "--timeout", "10s", "-s", str(script),
        f"http://127.0.0.1:{t['port']}{t['path']}",
    ]  # fmt: skip
    child = run_child(argv, stack.other_cpus, secs + timeout, stack.logdir)
    line = next((ln for ln in child.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if child.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({child.returncode}):\n{child.stdout[-2000:]}")
    r = json.loads(line[8:])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    good = r["requests"] - r["status"]
    res = {
        "completed": good,
        "errors": errors,
        "error_samples": [{k: r[k] for k in ("connect", "read", "write", "status", "timeout")}] if errors else [],
        "rps": good / (r["duration_us"] / 1e6),
        "p50_us": r["p50_us"],
        "p99_us": r["p99_us"],
        "elapsed": r["duration_us"] / 1e6,
    }
    return res, child


def throughput_once(
    stack: Stack, a: argparse.Namespace, kind: str, which: str, seconds: float, warmup: float
) -> dict[str, Any]:
    t = stack.target(kind, which)
    if a.loadgen_used == "wrk":
        with Sampler(stack) as s:
            res, child = run_wrk(stack, t, a.concurrency, seconds, a.phase_timeout)
    else:
        spec = {"targets": [t], "concurrency": a.concurrency, "duration": seconds, "warmup": warmup}
        with Sampler(stack) as s:
            result, child = loadgen(stack, spec, timeout=seconds + warmup + a.phase_timeout)
        res = result["targets"][which]
    bc = stack.bridge_cpus[0] if stack.bridge_cpus else None
    oc = stack.other_cpus[0] if stack.other_cpus else None
    wall = max(s.wall, 1e-9)
    fb, fo = s.foreign_pct(child.cpu_s)
    return {
        "rps": res["rps"],
        "completed": res["completed"],
        "errors": res["errors"],
        "error_samples": res.get("error_samples", []),
        "p50_ms": res.get("p50_us", float("nan")) / 1e3,
        "p99_ms": res.get("p99_us", float("nan")) / 1e3,
        "bridge_cpu_pct": s.bridge_cpu / wall * 100,
        "upstream_cpu_pct": s.sim_cpu / wall * 100,
        "loadgen_cpu_pct": child.cpu_s / wall * 100,
        "bridge_core_busy_pct": s.core_busy[bc] * 100 if bc is not None else None,
        "other_core_busy_pct": s.core_busy[oc] * 100 if oc is not None else None,
        "foreign_bridge_core_pct": fb,
        "foreign_other_core_pct": fo,
        # requests per second of bridge CPU: what one full core would serve at this efficiency
        "rps_per_bridge_core": res["rps"] / (s.bridge_cpu / wall) if s.bridge_cpu > 0 else None,
    }


def phase_throughput(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": a.concurrency, "seconds": a.duration, "loadgen": a.loadgen_used}
    for kind in KINDS:
        for which in ("direct", "bridge"):  # warm the pools (bridge → upstream connections)
            if a.warmup > 0:
                throughput_once(stack, a, kind, which, a.warmup, 0.0)
        rounds = []
        for r in range(a.rounds):
            row = {}
            for which in ("direct", "bridge") if r % 2 == 0 else ("bridge", "direct"):
                row[which] = throughput_once(stack, a, kind, which, a.duration, a.warmup)
                if row[which]["errors"]:
                    msg = (
                        f"FAILED throughput {kind} {which}: {row[which]['errors']} errors {row[which]['error_samples']}"
                    )
                    warnings.append(msg)
                    log("WARNING " + msg)
            rounds.append(row)
            log(
                f"throughput {kind} round {r + 1}/{a.rounds}: direct {row['direct']['rps']:.0f} req/s, "
                f"bridge {row['bridge']['rps']:.0f} req/s (bridge CPU {row['bridge']['bridge_cpu_pct']:.0f}%, "
                f"other core {row['bridge']['other_core_busy_pct'] or 0:.0f}% busy)"
            )
        summary: dict[str, Any] = {"rounds": rounds}
        for which in ("direct", "bridge"):
            summary[which] = {
                key: median([rr[which][key] for rr in rounds if rr[which][key] is not None] or [float("nan")])
                for key in rounds[0][which]
                if key not in ("error_samples",)
            }
        summary["ratio"] = summary["bridge"]["rps"] / summary["direct"]["rps"] if summary["direct"]["rps"] else 0.0
        summary["notes"] = throughput_notes(kind, summary, a)
        for note in summary["notes"]:
            if note.startswith("WARNING"):
                warnings.append(f"throughput {kind}: {note}")
        out[kind] = summary
    return out


FOREIGN_LIMIT = 15.0  # % of a core used by processes that are not ours before figures are called disturbed


def throughput_notes(kind: str, s: dict[str, Any], a: argparse.Namespace) -> list[str]:
    notes = []
    b, d = s["bridge"], s["direct"]
    other_b = b["other_core_busy_pct"]
    fb, fo = b["foreign_bridge_core_pct"], b["foreign_other_core_pct"]
    ours = f"upstream {b['upstream_cpu_pct']:.0f}%, load generator {b['loadgen_cpu_pct']:.0f}%"
    if b["loadgen_cpu_pct"] >= 90:
        notes.append(f"WARNING the load generator saturated its core ({b['loadgen_cpu_pct']:.0f}%) in the bridge runs")
    for name, f in (("bridge's", fb), ("upstream+load-generator", fo)):
        if f is not None and f >= FOREIGN_LIMIT:
            notes.append(
                f"WARNING other processes on this machine used {f:.0f}% of the {name} core during the bridge runs: "
                "req/s figures are disturbed (CPU-time figures much less so)"
            )
    if other_b is not None and other_b >= 90 and (fo is None or fo < FOREIGN_LIMIT):
        notes.append(
            f"WARNING the upstream+load-generator core was {other_b:.0f}% busy in the bridge runs ({ours}): "
            "the bridge figure is a lower bound"
        )
    elif b["bridge_cpu_pct"] >= 85:
        notes.append(
            f"bridge-bound: the bridge used {b['bridge_cpu_pct']:.0f}% of its core; the other core was "
            f"{other_b if other_b is not None else float('nan'):.0f}% busy ({ours})"
        )
    elif fb is not None and fo is not None and max(fb, fo) < FOREIGN_LIMIT:
        notes.append(f"the bridge used only {b['bridge_cpu_pct']:.0f}% of its core ({ours}): not CPU-bound")
    if d["other_core_busy_pct"] is not None:
        notes.append(
            f"direct runs: upstream {d['upstream_cpu_pct']:.0f}% + load generator {d['loadgen_cpu_pct']:.0f}% "
            f"share one core ({d['other_core_busy_pct']:.0f}% busy): direct is what that core can serve"
        )
    return notes


# ----------------------------------------------------------------------------- machine info


VERSIONS_SNIPPET = """
import json, platform, sys
from importlib import metadata
out = {"python": platform.python_version(), "implementation": platform.python_implementation()}
for name in ("oai-bridge", "uvicorn", "starlette", "aiohttp", "uvloop", "httptools", "orjson", "pydantic"):
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


SPEED_PROBE = """
import json, time
out = []
for _ in range(%d):
    t = time.process_time(); n = 0
    while time.process_time() - t < 0.2:
        for _ in range(10000):
            n += 1
    out.append(n / (time.process_time() - t) / 1e6)
    time.sleep(0.05)
print(json.dumps(out))
"""


def speed_probe(python: str, cpus: list[int] | None, samples: int) -> dict[str, Any]:
    """Pure-Python loop speed on the bridge's core: shows how steady the (virtual) CPU is."""
    res = subprocess.run(pin_prefix(cpus) + [python, "-c", SPEED_PROBE % samples], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    vals = json.loads(res.stdout) if res.returncode == 0 else []
    if not vals:
        return {}
    return {"mloops_per_s": [round(v, 2) for v in vals], "median": median(vals), "min": min(vals), "max": max(vals)}


def machine_info(python: str, wrk: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": None,
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    res = subprocess.run([python, "-c", VERSIONS_SNIPPET], capture_output=True, text=True, timeout=60)
    info["versions"] = json.loads(res.stdout) if res.returncode == 0 else {"error": res.stderr[-500:]}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True, text=True
        )
        if head.returncode == 0:
            info["git"] = head.stdout.strip() + ("+uncommitted src changes" if dirty.stdout.strip() else "")
    if wrk:
        res = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
        first = (res.stdout or res.stderr or "wrk").splitlines()[0].split()
        info["wrk"] = " ".join(first[:2])
    return info


# ----------------------------------------------------------------------------- report


def fmt_ms(v: float) -> str:
    if v != v:  # nan
        return "n/a"
    return f"{v:.3f} ms" if abs(v) < 10 else f"{v:.1f} ms"


def foreign_line(samples: list[Any]) -> str:
    pairs = [p for p in samples if p and p[0] is not None]
    if not pairs:
        return "(processes unpinned: CPU use by other work on the machine not measured)"
    fb, fo = max(p[0] for p in pairs), max(p[1] for p in pairs)
    flag = "  <- DISTURBED, compare with care" if max(fb, fo) >= FOREIGN_LIMIT else ""
    return f"other work on the machine: at most {fb:.0f}% of the bridge's core, {fo:.0f}% of the other core{flag}"


def report(res: dict[str, Any]) -> str:
    m, cfg = res["machine"], res["config"]
    v = m["versions"]
    lines = []
    lines.append(f"oai-bridge overhead benchmark — {res['date']}")
    lines.append(
        f"machine: {m['nproc']} CPUs ({m['cpu_model'] or 'unknown CPU'}), Linux {m['kernel']}, "
        f"{m['memory_gib']} GiB, load average at start {m['loadavg_at_start'][0]}"
    )
    samples = [v for p in (res.get("speed_probes") or {}).values() if p for v in p["mloops_per_s"]]
    if samples:
        lines.append(
            f"CPU speed of the bridge's core (a Python loop, {len(samples)} × 0.2 s before, between and after the "
            f"phases): median {median(samples):.1f} M loops/s, range {min(samples):.1f}–{max(samples):.1f}"
            + ("  <- UNSTEADY: the virtual CPU's speed varied a lot" if max(samples) > 1.25 * min(samples) else "")
        )
    lines.append(
        f"software: Python {v.get('python')}, oai-bridge {v.get('oai-bridge')}, uvicorn {v.get('uvicorn')}, "
        f"starlette {v.get('starlette')}, aiohttp {v.get('aiohttp')}, uvloop {v.get('uvloop')}, "
        f"httptools {v.get('httptools')}, orjson {v.get('orjson')}, pydantic {v.get('pydantic')}; "
        f"source {m.get('git', 'unknown')}"
    )
    lines.append(
        f"setup: upstream = oai-bridge simulate (Livepeer /llm, {TOKENS}-token replies); bridge = oai-bridge serve, "
        f"{cfg['workers']} worker(s), pinned to CPU {cfg['bridge_cpus']}; upstream + load generator pinned to CPU "
        f"{cfg['other_cpus']}; load generators: {cfg['loadgen_desc']}"
    )
    lines.append("")
    if "cpu" in res:
        c = res["cpu"]
        lines.append(
            f"1. Bridge CPU time (user+sys, bridge process{' + workers' if cfg['workers'] > 1 else ''}) "
            f"at concurrency {c['concurrency']}: {c['counts']['nonstream']} requests / {c['counts']['stream']} streams "
            f"per round, median of {len(c['rounds'])} round(s)"
        )
        hdr = f"   {'':<22}{'bridge CPU':>12}{'target':>12}{'':>6}{'LiteLLM ref*':>14}{'vs ref':>10}"
        hdr += f"{'upstream CPU':>15}"
        lines.append(hdr)
        for kind in KINDS:
            k = c[kind]
            ok = "ok" if k["meets_target"] else "OVER"
            ratio = k["litellm_reference_ms"] / k["bridge_cpu_ms"] if k["bridge_cpu_ms"] > 0 else float("inf")
            lines.append(
                f"   {LABEL[kind]:<22}{fmt_ms(k['bridge_cpu_ms']):>12}{'≤ ' + str(k['target_ms']) + ' ms':>12}{ok:>6}"
                f"{'~' + str(int(k['litellm_reference_ms'])) + ' ms':>14}{f'{ratio:.0f}× less':>10}"
                f"{fmt_ms(k['upstream_cpu_ms_direct']):>15}"
            )
        spread = []
        for kind in KINDS:
            vals = [r[f"{kind}_bridge"]["bridge_cpu_ms"] for r in c["rounds"]]
            spread.append(f"{LABEL[kind]} {min(vals):.3f}–{max(vals):.3f} ms")
        lines.append("   bridge CPU over the rounds: " + ", ".join(spread))
        lines.append(
            "   * LiteLLM 1.106 figures are reference figures quoted in the issue (same kind of machine), "
            "NOT measured by this run."
        )
        lines.append(
            "   upstream CPU = the simulator's own CPU per request sent to it directly (for scale); "
            f"bridge idle CPU {res['idle_bridge_cpu_pct']:.1f}% of a core (not subtracted)."
        )
        lines.append("   " + foreign_line([r[f"{k}_bridge"]["foreign_pct"] for r in c["rounds"] for k in KINDS]))
        lines.append("")
    if "latency" in res:
        lat = res["latency"]
        lines.append(
            f"2. Latency at concurrency 1, direct and bridge requests alternating "
            f"({lat['counts']['nonstream']} + {lat['counts']['stream']} pairs); streams: time to last byte"
        )
        lines.append(
            f"   {'':<22}{'direct p50':>12}{'p99':>11}{'bridge p50':>12}{'p99':>11}{'added p50':>12}{'p99':>11}"
            f"{'bridge/direct p50':>19}"
        )
        for kind in KINDS:
            r = lat[kind]
            lines.append(
                f"   {LABEL[kind]:<22}{fmt_ms(r['direct_p50_ms']):>12}{fmt_ms(r['direct_p99_ms']):>11}"
                f"{fmt_ms(r['bridge_p50_ms']):>12}{fmt_ms(r['bridge_p99_ms']):>11}"
                f"{'+' + fmt_ms(r['added_p50_ms']):>12}{'+' + fmt_ms(r['added_p99_ms']):>11}{r['ratio_p50']:>18.2f}×"
            )
        lines.append(
            f"   bridge CPU at concurrency 1: {fmt_ms(lat['nonstream']['bridge_cpu_ms_at_c1'])} per request, "
            f"{fmt_ms(lat['stream']['bridge_cpu_ms_at_c1'])} per stream (less batching than at concurrency 8)"
        )
        lines.append("   " + foreign_line([lat[k]["foreign_pct"] for k in KINDS]))
        lines.append("")
    if "throughput" in res:
        tp = res["throughput"]
        nrounds = len(tp[KINDS[0]]["rounds"])
        lines.append(
            f"3. Throughput at concurrency {tp['concurrency']}, bridge pinned to one core, {tp['loadgen']} load "
            f"generator, {nrounds} round(s) × {tp['seconds']:g} s each way, median"
        )
        lines.append(
            f"   {'':<22}{'direct req/s':>13}{'bridge req/s':>13}{'bridge/direct':>14}{'per core-s*':>12}"
            f"{'bridge CPU':>11}{'upstream':>10}{'loadgen':>9}{'foreign b/o**':>15}"
        )
        for kind in KINDS:
            s = tp[kind]
            b = s["bridge"]
            fb, fo = b["foreign_bridge_core_pct"], b["foreign_other_core_pct"]
            foreign = f"{fb:.0f}%/{fo:.0f}%" if fb is not None and fo is not None else "n/a"
            cap = b["rps_per_bridge_core"]
            lines.append(
                f"   {LABEL[kind]:<22}{s['direct']['rps']:>13.0f}{b['rps']:>13.0f}{s['ratio']:>14.2f}"
                f"{(f'{cap:.0f}' if cap else 'n/a'):>12}"
                f"{b['bridge_cpu_pct']:>10.0f}%{b['upstream_cpu_pct']:>9.0f}%{b['loadgen_cpu_pct']:>8.0f}%{foreign:>15}"
            )
        lines.append(
            "   CPU columns: % of one core during the bridge runs.  * bridge req/s per second of bridge CPU (what one"
        )
        lines.append(
            "   fully used core would serve).  ** CPU used by processes not started by this bench, on the bridge's"
        )
        lines.append("   core / on the upstream+load-generator core (other work on the machine disturbs req/s).")
        for kind in KINDS:
            rr = tp[kind]["rounds"]
            d_vals = [r["direct"]["rps"] for r in rr]
            b_vals = [r["bridge"]["rps"] for r in rr]
            lines.append(
                f"   {LABEL[kind]}: rounds ranged direct {min(d_vals):.0f}–{max(d_vals):.0f}, "
                f"bridge {min(b_vals):.0f}–{max(b_vals):.0f} req/s"
            )
        for kind in KINDS:
            for note in tp[kind]["notes"]:
                lines.append(f"   {LABEL[kind]}: {note}")
        lines.append("")
    if res["warnings"]:
        lines.append("WARNINGS:")
        lines += [f"  - {w}" for w in res["warnings"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


_WRK: dict[str, Any] = {"path": None}


def choose_loadgen(a: argparse.Namespace) -> None:
    wrk = shutil.which("wrk")
    if wrk is None and a.install_wrk and a.loadgen in ("auto", "wrk"):
        log("wrk not found: apt-get install -y wrk ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, timeout=300, capture_output=True)
            if shutil.which("wrk") is None:
                subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=300, capture_output=True)
                subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, timeout=300, capture_output=True)
        wrk = shutil.which("wrk")
    if a.loadgen == "wrk" and wrk is None:
        raise BenchError("--loadgen wrk: wrk is not installed (apt-get install -y wrk, or --install-wrk)")
    if a.loadgen == "python" or wrk is None:
        if a.loadgen == "auto":
            log("wrk not found: throughput uses the Python load generator (apt-get install -y wrk for a leaner one)")
        a.loadgen_used = "python"
    else:
        a.loadgen_used = "wrk"
    _WRK["path"] = wrk


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure oai-bridge's overhead against direct access to the Livepeer gateway simulator.",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds in all (smoke test): small counts, 1 round")
    p.add_argument("--workers", type=int, default=1, help="bridge worker processes (uvicorn --workers; default 1)")
    p.add_argument("--rounds", type=int, default=None, help="direct/bridge alternations per phase (default 5; quick 1)")
    p.add_argument("--cpu-requests", type=int, default=None, help="non-stream requests per CPU round (default 2000)")
    p.add_argument("--cpu-streams", type=int, default=None, help="streams per CPU round (default 500)")
    p.add_argument("--cpu-concurrency", type=int, default=8, help="concurrency of the CPU phase (default 8)")
    p.add_argument("--latency-requests", type=int, default=None, help="non-stream pairs, concurrency 1 (default 1500)")
    p.add_argument("--latency-streams", type=int, default=None, help="stream pairs at concurrency 1 (default 500)")
    p.add_argument("--duration", type=float, default=None, help="seconds per throughput run (default 5; quick 1)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds of warm-up load before throughput runs (default 1; quick 0)"
    )
    p.add_argument("--concurrency", type=int, default=64, help="connections in the throughput phase (default 64)")
    p.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto",
        help="throughput load generator: wrk when installed (auto), else the Python one (bench/loadgen.py)",
    )  # fmt: skip
    p.add_argument("--install-wrk", action="store_true", help="apt-get install wrk when it is missing")
    p.add_argument("--phases", default="cpu,latency,throughput", help="subset of cpu,latency,throughput")
    p.add_argument("--bridge-cpu", type=int, default=None, help="CPU for the bridge (default: the first allowed)")
    p.add_argument("--other-cpu", type=int, default=None, help="CPU for upstream + loadgen (default: the second)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--python", default=None, help="interpreter for the servers and the Python load generator")
    p.add_argument("--phase-timeout", type=float, default=120.0, help="bound on any single load run (default 120 s)")
    p.add_argument(
        "--wait-quiet", type=float, default=0.0, metavar="SECONDS",
        help="first wait up to SECONDS for the machine to be quiet (< 10%% CPU busy), so that other work does "
        "not disturb the figures",
    )  # fmt: skip
    p.add_argument("--json", metavar="OUT", help="also write every figure as JSON to OUT")
    p.add_argument("--keep-logs", metavar="DIR", help="keep the server logs in DIR")
    a = p.parse_args(argv)
    q = a.quick
    defaults = {
        "rounds": 1 if q else 5,
        "cpu_requests": 200 if q else 2000,
        "cpu_streams": 50 if q else 500,
        "latency_requests": 100 if q else 1500,
        "latency_streams": 30 if q else 500,
        "duration": 1.0 if q else 5.0,
        "warmup": 0.0 if q else 1.0,
    }
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.phase_list = [x.strip() for x in a.phases.split(",") if x.strip()]
    bad = set(a.phase_list) - {"cpu", "latency", "throughput"}
    if bad:
        p.error(f"unknown phase(s): {', '.join(sorted(bad))}")
    if a.workers < 1 or a.rounds < 1 or a.concurrency < 1 or a.cpu_concurrency < 1:
        p.error("--workers, --rounds and the concurrencies must be >= 1")
    if a.duration > 60 or a.rounds > 20:
        p.error("--duration is capped at 60 s and --rounds at 20 (bounded runs)")
    return a


def wait_quiet(limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < 10.0:
            log(f"machine quiet ({busy:.0f}% busy): starting")
            return
        if time.monotonic() > deadline:
            log(f"machine still {busy:.0f}% busy after {limit:.0f} s: starting anyway")
            return
        log(f"machine {busy:.0f}% busy: waiting")
        time.sleep(2.0)


def find_python(given: str | None) -> str:
    candidates = [given] if given else [sys.executable, str(REPO / ".venv" / "bin" / "python")]
    for py in candidates:
        if py and subprocess.run([py, "-c", "import oai_bridge"], capture_output=True, timeout=60).returncode == 0:
            return py
    raise BenchError(f"no interpreter with oai_bridge importable among {candidates} (pip install -e .)")


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    started = time.monotonic()
    python = find_python(a.python)
    choose_loadgen(a)
    allowed = sorted(os.sched_getaffinity(0))
    if a.no_pin or len(allowed) < 2:
        if not a.no_pin:
            log(f"only {len(allowed)} CPU allowed: running unpinned")
        _PIN["enabled"] = False
        bridge_cpus = other_cpus = None
    else:
        if not _PIN["taskset"]:
            raise BenchError("taskset (util-linux) is needed to pin processes; or use --no-pin")
        bridge_cpus = [a.bridge_cpu if a.bridge_cpu is not None else allowed[0]]
        other_cpus = [a.other_cpu if a.other_cpu is not None else next(c for c in allowed if c != bridge_cpus[0])]
        # the orchestrator mostly sleeps; keep it off the bridge's core anyway
        os.sched_setaffinity(0, set(other_cpus))
    if a.wait_quiet > 0:
        wait_quiet(min(a.wait_quiet, 3600.0))
        started = time.monotonic()
    machine = machine_info(python, _WRK["path"])
    machine["speed_probe"] = speed_probe(python, bridge_cpus, 3 if a.quick else 8)
    tmp = tempfile.TemporaryDirectory(prefix="oai-bridge-bench-")
    logdir = Path(a.keep_logs) if a.keep_logs else Path(tmp.name)
    logdir.mkdir(parents=True, exist_ok=True)
    sim = Server("simulator", [python, "-m", "oai_bridge", "simulate", "--host", "127.0.0.1", "--port", "{port}"],
                 "/healthz", other_cpus, logdir)  # fmt: skip
    bridge: Server | None = None
    warnings: list[str] = []
    result: dict[str, Any] = {}
    try:
        with terminate_on_signals():
            sim.start()
            bridge = Server(
                "bridge",
                [python, "-m", "oai_bridge", "serve", "--gateway", f"http://127.0.0.1:{sim.port}",
                 "--gateway-api", "json", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(a.workers),
                 "--log-level", "warning"],
                "/health", bridge_cpus, logdir,
            )  # fmt: skip
            bridge.start()
            stack = Stack(sim, bridge, python, bridge_cpus, other_cpus, logdir)
            log(f"simulator on :{sim.port} (CPU {other_cpus}), bridge on :{bridge.port} (CPU {bridge_cpus}, "
                f"{a.workers} worker(s)); throughput load generator: {a.loadgen_used}")  # fmt: skip
            if a.workers > 1:
                time.sleep(1.0)  # let every worker come up
            check = sanity(stack)
            with Sampler(stack) as idle:
                time.sleep(0.5)
            lg_desc = "bench/loadgen.py (asyncio+uvloop, keep-alive) for CPU and latency; throughput: " + (
                machine.get("wrk", "wrk") + " -t1" if a.loadgen_used == "wrk" else "bench/loadgen.py"
            )
            result = {
                "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "machine": machine,
                "config": {
                    "quick": a.quick,
                    "workers": a.workers,
                    "rounds": a.rounds,
                    "tokens": TOKENS,
                    "model": MODEL,
                    "bridge_cpus": bridge_cpus,
                    "other_cpus": other_cpus,
                    "loadgen": a.loadgen_used,
                    "loadgen_desc": lg_desc,
                    "python": python,
                },
                "sanity": check,
                "idle_bridge_cpu_pct": idle.bridge_cpu / idle.wall * 100,
                "warnings": warnings,
            }
            probes = result["speed_probes"] = {"start": machine["speed_probe"]}
            if "cpu" in a.phase_list:
                log("phase 1: bridge CPU per request")
                result["cpu"] = phase_cpu(stack, a, warnings)
                probes["after_cpu"] = speed_probe(python, bridge_cpus, 2)
            if "latency" in a.phase_list:
                log("phase 2: latency at concurrency 1")
                result["latency"] = phase_latency(stack, a, warnings)
                probes["after_latency"] = speed_probe(python, bridge_cpus, 2)
            if "throughput" in a.phase_list:
                log(f"phase 3: throughput at concurrency {a.concurrency}")
                result["throughput"] = phase_throughput(stack, a, warnings)
                probes["end"] = speed_probe(python, bridge_cpus, 2)
            for s in (sim, bridge):
                if s.proc is None or s.proc.poll() is not None:
                    warnings.append(f"FAILED the {s.name} exited during the run; log tail:\n{s.log_tail()}")
            result["runtime_s"] = round(time.monotonic() - started, 1)
    except KeyboardInterrupt:
        log("interrupted: stopping the servers")
        return 130
    except BenchError as exc:
        log(f"ERROR: {exc}")
        return 1
    finally:
        if bridge is not None:
            bridge.stop()
        sim.stop()
        tmp.cleanup()
    print(report(result))
    print(f"\n(total runtime {result['runtime_s']:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
        log(f"figures written to {a.json}")
    if any(w.startswith("FAILED") for w in warnings):
        log("some requests failed: see WARNINGS (exit status 3)")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
