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

This file is the command line; the rest sits beside it: ``common.py`` (the request, small helpers),
``stack.py`` (servers, pinning, child processes, CPU sampling, machine info), ``phases.py`` (the
sanity check and the three phases), ``report.py`` (the text report), ``loadgen.py`` (the Python
load generator).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common import MODEL, TOKENS, BenchError, log
from phases import WRK, choose_loadgen, phase_cpu, phase_latency, phase_throughput, sanity
from report import report
from stack import (
    PIN,
    Sampler,
    Server,
    Stack,
    bridge_server,
    find_python,
    machine_info,
    simulator,
    speed_probe,
    stop_servers,
    wait_quiet,
)


def finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: a figure that could not be computed is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


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
        PIN["enabled"] = False
        bridge_cpus = other_cpus = None
    else:
        if not PIN["taskset"]:
            raise BenchError("taskset (util-linux) is needed to pin processes; or use --no-pin")
        bridge_cpus = [a.bridge_cpu if a.bridge_cpu is not None else allowed[0]]
        other_cpus = [a.other_cpu if a.other_cpu is not None else next(c for c in allowed if c != bridge_cpus[0])]
        # the orchestrator mostly sleeps; keep it off the bridge's core anyway
        os.sched_setaffinity(0, set(other_cpus))
    if a.wait_quiet > 0:
        wait_quiet(min(a.wait_quiet, 3600.0))
        started = time.monotonic()
    machine = machine_info(python, WRK["path"])
    machine["speed_probe"] = speed_probe(python, bridge_cpus, 3 if a.quick else 8)
    tmp = tempfile.TemporaryDirectory(prefix="oai-bridge-bench-")
    logdir = Path(a.keep_logs) if a.keep_logs else Path(tmp.name)
    logdir.mkdir(parents=True, exist_ok=True)
    sim = simulator(python, other_cpus, logdir)
    bridge: Server | None = None
    warnings: list[str] = []
    result: dict[str, Any] = {}
    try:
        with terminate_on_signals():
            sim.start()
            bridge = bridge_server(python, sim.port, bridge_cpus, logdir, a.workers)
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
        stop_servers(bridge, sim)
        tmp.cleanup()
    print(report(result))
    print(f"\n(total runtime {result['runtime_s']:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps(finite(result), indent=2, allow_nan=False) + "\n")
        log(f"figures written to {a.json}")
    if any(w.startswith("FAILED") for w in warnings):
        log("some requests failed: see WARNINGS (exit status 3)")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
