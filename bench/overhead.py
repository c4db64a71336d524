"""Overhead benchmark of oai-bridge, side by side with direct access and LiteLLM's proxy.

    python bench/overhead.py [--quick] [--workers N] [--json OUT] [...]   (see --help)

Starts on free loopback ports the Livepeer gateway simulator (``oai-bridge simulate``), a fast
OpenAI-compatible upstream (``bench/upstream.py``), the bridge (``oai-bridge serve --config``, a
Livepeer backend and an ``openai_compat`` backend) and, when installed, LiteLLM's proxy
(``litellm --config``, routed to the same fast upstream). The bridge and LiteLLM are pinned to one
CPU (never loaded at the same time), the upstreams and the load generator to another. The same
logical request goes every way, the ways alternating within each phase:

* Livepeer path: straight to the simulator's ``/llm`` ("direct") vs through the bridge;
* OpenAI path: straight to the fast upstream ("direct") vs through the bridge vs through LiteLLM.

1. proxy CPU time (user+sys) per non-stream request and per 50-chunk stream at concurrency 8;
2. added latency at concurrency 1 (p50/p99), requests alternating way by way;
3. throughput at concurrency 64 with the proxy on one core, with the CPU use of every party;
4. 500 concurrent 5-second streams: the time until the last one ends vs the ideal 5 s.

Every loop is bounded in count and time; the servers are stopped on exit, Ctrl-C included.
See bench/README.md.

This file is the command line; the rest sits beside it: ``common.py`` (the requests, the ways),
``stack.py`` (servers, pinning, child processes, CPU sampling, machine info), ``phases.py`` (the
sanity check and the phases), ``report.py`` (the text report), ``loadgen.py`` (the Python load
generator), ``upstream.py`` (the fast OpenAI-compatible upstream).
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

from common import GROUPS, MODEL, OA_MODEL, TOKENS, BenchError, log
from phases import WRK, choose_loadgen, phase_cpu, phase_latency, phase_slow, phase_throughput, sanity
from report import report, summarize
from stack import (
    PIN,
    Sampler,
    Server,
    Stack,
    bridge_server,
    find_litellm,
    find_python,
    litellm_server,
    litellm_version,
    machine_info,
    simulator,
    speed_probe,
    stop_servers,
    upstream,
    wait_quiet,
)

PHASES = ("cpu", "latency", "throughput", "slow")


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
        description="Measure oai-bridge's overhead side by side with direct access and LiteLLM's proxy.",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds in all (smoke test): small counts, 1 round")
    p.add_argument("--workers", type=int, default=1, help="bridge worker processes (uvicorn --workers; default 1)")
    p.add_argument(
        "--rounds", type=int, default=None, help="rounds of the CPU and throughput phases (default 3; quick 1)"
    )
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
    p.add_argument("--phases", default=",".join(PHASES), help="subset of " + ",".join(PHASES))
    p.add_argument(
        "--litellm", default=None, metavar="auto|off|PATH",
        help="LiteLLM's proxy: auto (.venv-bench/bin/litellm, else litellm on PATH; the default), off (the default "
        "with --quick), or the path of a litellm executable",
    )  # fmt: skip
    p.add_argument("--litellm-scale", type=float, default=0.1, help="LiteLLM's share of the CPU-phase counts (0.1)")
    p.add_argument("--latency-litellm-requests", type=int, default=None, help="LiteLLM non-stream requests at c1 (300)")
    p.add_argument("--latency-litellm-streams", type=int, default=None, help="LiteLLM streams at concurrency 1 (100)")
    p.add_argument("--litellm-tp-requests", type=int, default=None, help="LiteLLM throughput: requests (384; quick 64)")
    p.add_argument("--litellm-tp-streams", type=int, default=None, help="LiteLLM throughput: streams (192; quick 64)")
    p.add_argument("--slow-streams", type=int, default=None, help="concurrent slow streams (default 500; quick 100)")
    p.add_argument("--slow-seconds", type=float, default=None, help="length of a slow stream (default 5; quick 1)")
    p.add_argument("--slow-rounds", type=int, default=1, help="rounds of the slow-stream phase (default 1)")
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
        "rounds": 1 if q else 3,
        "cpu_requests": 200 if q else 2000,
        "cpu_streams": 50 if q else 500,
        "latency_requests": 100 if q else 1500,
        "latency_streams": 30 if q else 500,
        "duration": 1.0 if q else 5.0,
        "warmup": 0.0 if q else 1.0,
        "litellm": "off" if q else "auto",
        "latency_litellm_requests": 30 if q else 300,
        "latency_litellm_streams": 10 if q else 100,
        "slow_streams": 100 if q else 500,
        "litellm_tp_requests": 64 if q else 384,
        "litellm_tp_streams": 64 if q else 192,
        "slow_seconds": 0.5 if q else 5.0,
    }
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.phase_list = [x.strip() for x in a.phases.split(",") if x.strip()]
    # --quick: the throughput and slow-stream phases run the OpenAI path only (seconds per way)
    a.heavy_groups = ("openai",) if q else GROUPS
    bad = set(a.phase_list) - set(PHASES)
    if bad:
        p.error(f"unknown phase(s): {', '.join(sorted(bad))}")
    if a.workers < 1 or a.rounds < 1 or a.concurrency < 1 or a.cpu_concurrency < 1:
        p.error("--workers, --rounds and the concurrencies must be >= 1")
    if (
        a.duration > 60
        or a.rounds > 20
        or a.slow_rounds > 10
        or max(a.litellm_tp_requests, a.litellm_tp_streams) > 5000
    ):
        p.error("durations are capped at 60 s, --rounds at 20 and --slow-rounds at 10 (bounded runs)")
    if not 1 <= a.slow_streams <= 5000 or not 0.1 <= a.slow_seconds <= 60:
        p.error("--slow-streams must be in 1..5000 and --slow-seconds in 0.1..60")
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
    litellm_exe = find_litellm(a.litellm)
    ll_version = litellm_version(litellm_exe) if litellm_exe else None
    if a.litellm != "off" and litellm_exe is None:
        log("LiteLLM not found (make bench-litellm installs it into .venv-bench): the bench runs without it")
    tmp = tempfile.TemporaryDirectory(prefix="oai-bridge-bench-")
    logdir = Path(a.keep_logs) if a.keep_logs else Path(tmp.name)
    logdir.mkdir(parents=True, exist_ok=True)
    sim = simulator(python, other_cpus, logdir)
    up = upstream(python, other_cpus, logdir)
    bridge: Server | None = None
    ll: Server | None = None
    warnings: list[str] = []
    result: dict[str, Any] = {}
    try:
        with terminate_on_signals():
            sim.start()
            up.start()
            bridge = bridge_server(python, sim.port, up.port, bridge_cpus, logdir, a.workers)
            bridge.start()
            servers = {"sim": sim, "upstream": up, "bridge": bridge}
            if litellm_exe:
                ll = litellm_server(litellm_exe, up.port, bridge_cpus, logdir)
                log(f"starting LiteLLM {ll_version or ''} ({litellm_exe}): it takes a while")
                try:
                    ll.start(timeout=180.0)
                    servers["litellm"] = ll
                except BenchError as exc:  # the rest of the bench is still worth running
                    warnings.append(f"LiteLLM did not start, the bench ran without it: {exc}")
                    log(f"WARNING {warnings[-1]}")
                    ll = None
            stack = Stack(servers, python, bridge_cpus, other_cpus, logdir)
            log(f"simulator on :{sim.port}, upstream on :{up.port} (CPU {other_cpus}); bridge on :{bridge.port}"
                + (f", LiteLLM on :{ll.port}" if ll else "")
                + f" (CPU {bridge_cpus}, {a.workers} worker(s)); throughput load generator: "
                + a.loadgen_used)  # fmt: skip
            if a.workers > 1:
                time.sleep(1.0)  # let every worker come up
            check = sanity(stack)
            with Sampler(stack) as idle:
                time.sleep(1.0)
            lg_desc = (
                "bench/loadgen.py (asyncio+uvloop, keep-alive) for CPU, latency and slow streams; throughput: "
                + (machine.get("wrk", "wrk") + " -t1" if a.loadgen_used == "wrk" else "bench/loadgen.py")
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
                    "openai_model": OA_MODEL,
                    "litellm": ll_version if ll else None,
                    "litellm_exe": litellm_exe if ll else None,
                    "bridge_cpus": bridge_cpus,
                    "other_cpus": other_cpus,
                    "loadgen": a.loadgen_used,
                    "loadgen_desc": lg_desc,
                    "python": python,
                },
                "sanity": check,
                "idle_cpu_pct": {n: v / idle.wall * 100 for n, v in idle.cpu.items()},
                "warnings": warnings,
            }
            probes = result["speed_probes"] = {"start": machine["speed_probe"]}
            if "cpu" in a.phase_list:
                log("phase 1: proxy CPU per request")
                result["cpu"] = phase_cpu(stack, a, warnings)
                if not a.quick:
                    probes["after_cpu"] = speed_probe(python, bridge_cpus, 2)
            if "latency" in a.phase_list:
                log("phase 2: latency at concurrency 1")
                result["latency"] = phase_latency(stack, a, warnings)
                if not a.quick:
                    probes["after_latency"] = speed_probe(python, bridge_cpus, 2)
            if "throughput" in a.phase_list:
                log(f"phase 3: throughput at concurrency {a.concurrency}")
                result["throughput"] = phase_throughput(stack, a, warnings)
                if not a.quick:
                    probes["after_throughput"] = speed_probe(python, bridge_cpus, 2)
            if "slow" in a.phase_list:
                log(f"phase 4: {a.slow_streams} concurrent {a.slow_seconds:g}-second streams")
                result["slow"] = phase_slow(stack, a, warnings)
            probes["end"] = speed_probe(python, bridge_cpus, 2)
            result["summary"] = summarize(result)
            for s in servers.values():
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
        stop_servers(ll, bridge, up, sim)
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
