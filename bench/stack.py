"""The processes of the overhead bench: the servers (Livepeer simulator, the fast OpenAI-compatible
upstream, the bridge, LiteLLM's proxy when installed), CPU pinning, bounded child processes (load
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

from common import TOKENS, WAYS, BenchError, body_for, log, median, raw_request

try:
    import psutil
except ImportError:  # pragma: no cover
    sys.exit("bench/overhead.py needs psutil: pip install psutil  (or pip install -e '.[bench]')")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOADGEN = HERE / "loadgen.py"
UPSTREAM = HERE / "upstream.py"
#: where `make bench-litellm` installs LiteLLM's proxy (kept out of the test venv)
LITELLM_VENV = REPO / ".venv-bench"
LITELLM_VERSION = "1.106.2"
#: the servers that proxy (their CPU is what the bench measures) and the upstreams
PROXIES = ("bridge", "litellm")
UPSTREAMS = ("sim", "upstream")

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
    env: dict[str, str] | None = None
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
                    argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    env={**os.environ, **self.env} if self.env else None,
                )  # fmt: skip
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
    """The running servers by name ("sim", "upstream", "bridge", "litellm") and the CPU layout."""

    servers: dict[str, Server]
    python: str
    bridge_cpus: list[int] | None
    other_cpus: list[int] | None
    logdir: Path

    @property
    def bridge(self) -> Server:
        return self.servers["bridge"]

    def has(self, way_key: str) -> bool:
        return WAYS[way_key].server in self.servers

    def target(self, kind: str, way_key: str, slow_seconds: float = 0.0) -> dict[str, Any]:
        way = WAYS[way_key]
        port = self.servers[way.server].port
        body = body_for(kind, way, slow_seconds)
        if way.server == "sim" or kind == "nonstream":  # Livepeer streams have no [DONE]
            expect = f'"completion_tokens":{TOKENS}'
        else:
            expect = "data: [DONE]"
        return {
            "name": way_key,
            "host": "127.0.0.1",
            "port": port,
            "path": way.path,
            "body": body,
            "request": raw_request(port, way.path, body),
            "expect": expect,
            "proxy": way.server if way.server in PROXIES else None,
        }


class Sampler:
    """CPU of every server and busy time of each CPU core between start() and stop()."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def __enter__(self) -> Sampler:
        self.procs = {n: s.processes() for n, s in self.stack.servers.items()}
        self.cpu0 = {n: self.stack.servers[n].cpu(p) for n, p in self.procs.items()}
        self.me0 = time.process_time()
        self.c0 = psutil.cpu_times(percpu=True)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.t0
        self.cpu = {n: self.stack.servers[n].cpu(p) - self.cpu0[n] for n, p in self.procs.items()}
        c1 = psutil.cpu_times(percpu=True)
        self.self_cpu = time.process_time() - self.me0
        self.core_busy = {i: cpu_busy(a, b) for i, (a, b) in enumerate(zip(self.c0, c1, strict=True))}
        self.bridge_cpu = self.cpu.get("bridge", 0.0)

    def proxy_cpu(self, name: str | None) -> float:
        return self.cpu.get(name, 0.0) if name else 0.0

    def upstream_cpu(self) -> float:
        return sum(self.cpu.get(n, 0.0) for n in UPSTREAMS)

    def foreign_pct(self, loadgen_cpu_s: float) -> tuple[float | None, float | None]:
        """% of the bridge's core and of the other core used by processes that are not ours."""
        bc, oc = self.stack.bridge_cpus, self.stack.other_cpus
        if not bc or not oc:
            return None, None
        wall = max(self.wall, 1e-9)
        ours_bridge_core = sum(self.cpu.get(n, 0.0) for n in PROXIES)
        ours_other = self.upstream_cpu() + loadgen_cpu_s + self.self_cpu
        return (
            max(0.0, self.core_busy[bc[0]] * 100 - ours_bridge_core / wall * 100),
            max(0.0, self.core_busy[oc[0]] * 100 - ours_other / wall * 100),
        )


def loadgen(stack: Stack, spec: dict[str, Any], timeout: float) -> tuple[dict[str, Any], ChildResult]:
    spec_path = Path(tempfile.mkstemp(prefix="spec-", suffix=".json", dir=stack.logdir)[1])
    out_path = spec_path.with_suffix(".result.json")
    keys = ("name", "host", "port", "request", "expect", "count")
    spec = {**spec, "targets": [{k: t[k] for k in keys if k in t} for t in spec["targets"]]}
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


def upstream(python: str, cpus: list[int] | None, logdir: Path) -> Server:
    """The fast OpenAI-compatible upstream (bench/upstream.py); start() it."""
    return Server("upstream", [python, str(UPSTREAM), "--host", "127.0.0.1", "--port", "{port}"], "/health", cpus,
                  logdir)  # fmt: skip


BRIDGE_TOML = """\
# written by bench/overhead.py: the Livepeer simulator and the fast OpenAI-compatible upstream
[livepeer]
gateway_url = "http://127.0.0.1:{sim}"
gateway_api = "json"

[backends.fast]
kind = "openai_compat"
base_url = "http://127.0.0.1:{up}/v1"

[[routes]]
model = "{lp_model}"
backend = "livepeer"

[[routes]]
model = "{oa_model}"
backend = "fast"
"""


def bridge_server(
    python: str, sim_port: int, up_port: int, cpus: list[int] | None, logdir: Path, workers: int = 1
) -> Server:
    """``oai-bridge serve --config`` with the Livepeer backend (the simulator on ``sim_port``) and an
    ``openai_compat`` backend (the upstream on ``up_port``), one route each; start() it."""
    from common import MODEL, OA_MODEL

    config = logdir / "bridge.toml"
    config.write_text(BRIDGE_TOML.format(sim=sim_port, up=up_port, lp_model=MODEL, oa_model=OA_MODEL))
    return Server(
        "bridge",
        [python, "-m", "oai_bridge", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", "{port}",
         "--workers", str(workers), "--log-level", "warning"],
        "/health", cpus, logdir,
    )  # fmt: skip


LITELLM_YAML = """\
# written by bench/overhead.py: LiteLLM's proxy set up for speed (see bench/README.md)
model_list:
  - model_name: {oa_model}
    litellm_params:
      model: openai/{oa_model}
      api_base: http://127.0.0.1:{up}/v1
      api_key: sk-bench-not-a-secret
litellm_settings:
  callbacks: []
  success_callback: []
  failure_callback: []
  service_callback: []
  num_retries: 0
  request_timeout: 600
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
general_settings:
  # no master key: no auth on either proxy (the bridge runs without keys too); LiteLLM >= 1.10x
  # refuses to start keyless unless told so
  dangerously_permit_weak_or_unset_master_key: true
  disable_spend_logs: true
  disable_error_logs: true
  disable_adding_master_key_hash_to_db: true
  background_health_checks: false
"""

LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map from the network at start
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",  # no .env loading
    "NUM_WORKERS": "1",
    "DISABLE_SCHEMA_UPDATE": "true",
}


def find_litellm(choice: str) -> str | None:
    """``auto``: .venv-bench/bin/litellm, else ``litellm`` on PATH; ``off``: None; else a path."""
    if choice == "off":
        return None
    if choice != "auto":
        if not Path(choice).exists():
            raise BenchError(f"--litellm {choice}: no such file")
        return choice
    local = LITELLM_VENV / "bin" / "litellm"
    if local.exists():
        return str(local)
    return shutil.which("litellm")


def litellm_version(exe: str) -> str | None:
    py = Path(exe).parent / "python"
    if not py.exists():
        return None
    res = subprocess.run([str(py), "-c", "from importlib.metadata import version as v; print(v('litellm'))"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    return res.stdout.strip() or None


def litellm_server(exe: str, up_port: int, cpus: list[int] | None, logdir: Path) -> Server:
    """LiteLLM's proxy (one uvicorn worker) routing the OpenAI group's model to the upstream; start() it."""
    from common import OA_MODEL

    config = logdir / "litellm.yaml"
    config.write_text(LITELLM_YAML.format(up=up_port, oa_model=OA_MODEL))
    return Server(
        "litellm",
        [exe, "--config", str(config), "--host", "127.0.0.1", "--port", "{port}", "--num_workers", "1"],
        "/health/liveliness", cpus, logdir, env=LITELLM_ENV,
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
