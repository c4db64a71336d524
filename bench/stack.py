"""The processes of the overhead bench: the two servers, CPU pinning, bounded child processes (load
generators, probes), CPU sampling, and a description of the machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import TOKENS, BenchError, body_for, log, median, raw_request

try:
    import psutil
except ImportError:  # pragma: no cover
    sys.exit("bench/overhead.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOADGEN = HERE / "loadgen.py"

# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


PIN: dict[str, Any] = {"enabled": True, "taskset": shutil.which("taskset")}


def pin_prefix(cpus: list[int] | None) -> list[str]:
    if not cpus or not PIN["enabled"]:
        return []
    if PIN["taskset"]:
        return [PIN["taskset"], "-c", ",".join(map(str, cpus))]
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


# ----------------------------------------------------------------------------- the stack


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


# ----------------------------------------------------------------------------- the servers and the machine


def simulator(python: str, cpus: list[int] | None, logdir: Path) -> Server:
    """The upstream: ``oai-bridge simulate`` (a Livepeer gateway simulator); start() it."""
    return Server("simulator", [python, "-m", "oai_bridge", "simulate", "--host", "127.0.0.1", "--port", "{port}"],
                  "/healthz", cpus, logdir)  # fmt: skip


def bridge_server(python: str, sim_port: int, cpus: list[int] | None, logdir: Path, workers: int = 1) -> Server:
    """``oai-bridge serve`` in front of the simulator listening on ``sim_port``; start() it."""
    return Server(
        "bridge",
        [python, "-m", "oai_bridge", "serve", "--gateway", f"http://127.0.0.1:{sim_port}",
         "--gateway-api", "json", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers),
         "--log-level", "warning"],
        "/health", cpus, logdir,
    )  # fmt: skip


def stop_servers(*servers: Server | None) -> None:
    for s in servers:
        if s is not None:
            s.stop()


def find_python(given: str | None) -> str:
    candidates = [given] if given else [sys.executable, str(REPO / ".venv" / "bin" / "python")]
    for py in candidates:
        if py and subprocess.run([py, "-c", "import oai_bridge"], capture_output=True, timeout=60).returncode == 0:
            return py
    raise BenchError(f"no interpreter with oai_bridge importable among {candidates} (pip install -e .)")


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
