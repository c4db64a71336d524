"""The measurements of the overhead bench: the sanity check, then the three phases (bridge CPU per
request, added latency at concurrency 1, throughput with the bridge on one core).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import subprocess
from typing import Any

from common import KINDS, TOKENS, BenchError, compact, log, median, pct
from stack import ChildResult, Sampler, Stack, loadgen, run_child

TARGET_MS = {"nonstream": 0.4, "stream": 1.5}
#: Figures quoted in the issue for LiteLLM 1.106 on this kind of machine; NOT measured here.
LITELLM_REF_MS = {"nonstream": 23.0, "stream": 80.0}


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


#: the wrk binary found by choose_loadgen() (None: not installed)
WRK: dict[str, Any] = {"path": None}


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
    WRK["path"] = wrk


def run_wrk(
    stack: Stack, t: dict[str, Any], conc: int, seconds: float, timeout: float
) -> tuple[dict[str, Any], ChildResult]:
    script = stack.logdir / f"wrk-{t['name']}-{t['port']}-{'s' if t['body'].get('stream') else 'n'}.lua"
    script.write_text(WRK_LUA % compact(t["body"]))
    secs = max(1, round(seconds))
    argv = [
        WRK["path"], "-t1", f"-c{conc}", f"-d{secs}s", "--timeout", "10s", "-s", str(script),
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
