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

from common import GROUPS, KINDS, TOKENS, WAYS, BenchError, compact, log, median, pct
from stack import ChildResult, Sampler, Stack, loadgen, run_child

TARGET_MS = {"nonstream": 0.4, "stream": 1.5}


def check_errors(result: dict[str, Any], what: str, warnings: list[str]) -> None:
    for name, row in result["targets"].items():
        if row["errors"]:
            msg = f"FAILED {what}: {row['errors']} failed {name} requests, e.g. {row['error_samples'][:2]}"
            warnings.append(msg)
            log("WARNING " + msg)


# ---- which ways run


def ways_of(stack: Stack, group: str) -> list[str]:
    """The ways of ``group`` this stack can run (LiteLLM only when it was started)."""
    return [k for k, w in WAYS.items() if w.group == group and stack.has(k)]


def all_ways(stack: Stack, groups: tuple[str, ...] = GROUPS) -> list[str]:
    return [k for g in groups for k in ways_of(stack, g)]


def rotated(ways: list[str], r: int) -> list[str]:
    """Round r's order: forward on even rounds, backward on odd ones (ABBA over the rounds)."""
    return list(ways) if r % 2 == 0 else list(reversed(ways))


def scaled(n: int, way: str, a: argparse.Namespace) -> int:
    """LiteLLM costs ~50x more per request: its counts are scaled down (--litellm-scale)."""
    return max(10, round(n * a.litellm_scale)) if WAYS[way].role == "litellm" else n


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
    """One request of each kind every way: all replies must be the same 50 words, and every stream
    must carry 50 content events."""
    out: dict[str, Any] = {}
    texts = {}
    for way in all_ways(stack):
        for kind in KINDS:
            t = stack.target(kind, way)
            status, raw = http_post(t["port"], t["path"], t["body"])
            if status != 200:
                raise BenchError(f"sanity: {way} {kind} answered HTTP {status}: {raw[:300]!r}")
            if kind == "nonstream":
                obj = json.loads(raw)
                text = obj["choices"][0]["message"]["content"]
                usage = obj.get("usage") or {}
                out[f"{way}:{kind}"] = {"completion_tokens": usage.get("completion_tokens"), "bytes": len(raw)}
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
                out[f"{way}:{kind}"] = {"events": len(events), "content_events": content_events, "bytes": len(raw)}
                if content_events != TOKENS:
                    raise BenchError(f"sanity: {way} stream has {content_events} content events, not {TOKENS}")
            if t["expect"] not in raw[-1500:].decode(errors="replace"):
                raise BenchError(f"sanity: {way} {kind}: end marker {t['expect']!r} not in the last bytes")
            texts[(way, kind)] = text
    first = next(iter(texts.values()))
    for (way, kind), text in texts.items():
        if text != first:
            raise BenchError(f"sanity: the {kind} reply of {way} differs: {text[:80]!r} vs {first[:80]!r}")
    if len(first.split()) != TOKENS:
        raise BenchError(f"sanity: the reply is not {TOKENS} words")
    return out


# ---- 1. CPU per request


def phase_cpu(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    counts = {"nonstream": a.cpu_requests, "stream": a.cpu_streams}
    ways = all_ways(stack)
    for kind in KINDS if not a.quick else ():  # warm the pools outside the measured windows (sanity did, in quick)
        for way in ways:
            spec = {"targets": [stack.target(kind, way)], "concurrency": a.cpu_concurrency,
                    "count": a.cpu_concurrency * 4}  # fmt: skip
            loadgen(stack, spec, timeout=a.phase_timeout)
    rounds: list[dict[str, Any]] = []
    for r in range(a.rounds):
        row: dict[str, Any] = {}
        for kind in KINDS:
            for way in rotated(ways, r):
                t = stack.target(kind, way)
                spec = {"targets": [t], "concurrency": a.cpu_concurrency, "count": scaled(counts[kind], way, a)}
                with Sampler(stack) as s:
                    result, child = loadgen(stack, spec, timeout=a.phase_timeout)
                check_errors(result, f"cpu {kind} {way}", warnings)
                res = result["targets"][way]
                n = res["completed"] + res["errors"]
                row[f"{kind}:{way}"] = {
                    "requests": n,
                    "errors": res["errors"],
                    "proxy_cpu_ms": s.proxy_cpu(t["proxy"]) / n * 1e3 if t["proxy"] else None,
                    "upstream_cpu_ms": s.upstream_cpu() / n * 1e3,
                    "loadgen_cpu_ms": child.cpu_s / n * 1e3,
                    "rps": res["rps"],
                    "wall_s": s.wall,
                    "proxy_cpu_pct": s.proxy_cpu(t["proxy"]) / s.wall * 100,
                    "core_busy_pct": {str(k): v * 100 for k, v in s.core_busy.items()},
                    "foreign_pct": s.foreign_pct(child.cpu_s),
                }
        rounds.append(row)
        log(f"cpu round {r + 1}/{a.rounds}: " + ", ".join(
            f"{way} {row[f'{kind}:{way}']['proxy_cpu_ms']:.3f} ms/{'req' if kind == 'nonstream' else 'stream'}"
            for kind in KINDS for way in ways if WAYS[way].role != "direct"
        ))  # fmt: skip
    out: dict[str, Any] = {"concurrency": a.cpu_concurrency, "counts": counts, "rounds": rounds,
                           "litellm_scale": a.litellm_scale}  # fmt: skip
    for group in GROUPS:
        gw = ways_of(stack, group)
        out[group] = {}
        for kind in KINDS:
            entry: dict[str, Any] = {}
            for way in gw:
                role = WAYS[way].role
                entry[role] = {
                    key: median([rr[f"{kind}:{way}"][key] for rr in rounds if rr[f"{kind}:{way}"][key] is not None])
                    for key in ("proxy_cpu_ms", "upstream_cpu_ms", "loadgen_cpu_ms")
                    if role != "direct" or key != "proxy_cpu_ms"
                }
                entry[role]["requests_per_round"] = rounds[0][f"{kind}:{way}"]["requests"]
            entry["target_ms"] = TARGET_MS[kind]
            b = entry.get("bridge", {}).get("proxy_cpu_ms")
            entry["meets_target"] = b is not None and b <= TARGET_MS[kind]
            if "litellm" in entry and b:
                entry["litellm_over_bridge"] = entry["litellm"]["proxy_cpu_ms"] / b
            out[group][kind] = entry
    return out


# ---- 2. latency at concurrency 1


def phase_latency(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    """Concurrency 1, the ways alternating request by request. LiteLLM runs apart, alternating with
    direct only: its work after each answer (logging, cost tracking) goes on while the next request
    of another way runs on the same core, which inflated the bridge's p99 ~6× when they alternated."""
    counts = {"nonstream": a.latency_requests, "stream": a.latency_streams}
    ll_counts = {"nonstream": a.latency_litellm_requests, "stream": a.latency_litellm_streams}
    out: dict[str, Any] = {"counts": counts, "litellm_counts": ll_counts}
    for group in GROUPS:
        gw = ways_of(stack, group)
        out[group] = {}
        for kind in KINDS:
            direct = next(w for w in gw if WAYS[w].role == "direct")
            runs = [([w for w in gw if WAYS[w].role != "litellm"], counts[kind])]
            runs += [([direct, w], min(ll_counts[kind], counts[kind])) for w in gw if WAYS[w].role == "litellm"]
            row: dict[str, Any] = {"foreign_pct": None}
            for ways, count in runs:
                spec = {"targets": [stack.target(kind, w) for w in ways], "concurrency": 1, "count": count,
                        "warmup_count": 20, "interleave": True, "latencies": True}  # fmt: skip
                with Sampler(stack) as smp:
                    result, child = loadgen(stack, spec, timeout=a.phase_timeout)
                check_errors(result, f"latency {group} {kind}", warnings)
                lat = {WAYS[w].role: [v / 1e3 for v in result["targets"][w]["lat_us"]] for w in ways}
                d = lat["direct"]
                if row["foreign_pct"] is None:  # the first run: direct and the bridge
                    row["foreign_pct"] = smp.foreign_pct(child.cpu_s)
                for role, vals in lat.items():
                    if role == "direct" and role in row:
                        continue  # direct's own figures: those of the first run
                    row[role] = {"n": len(vals), "p50_ms": pct(vals, 50), "p99_ms": pct(vals, 99)}
                    if role != "direct":
                        row[role]["added_p50_ms"] = row[role]["p50_ms"] - pct(d, 50)
                        row[role]["added_p99_ms"] = row[role]["p99_ms"] - pct(d, 99)
                        row[role]["ratio_p50"] = row[role]["p50_ms"] / pct(d, 50)
                        way = f"{group}.{role}"
                        n = len(vals) + result["targets"][way]["errors"] + 20  # the warm-up ones included
                        row[role]["cpu_ms_at_c1"] = smp.proxy_cpu(WAYS[way].server) / n * 1e3
            out[group][kind] = row
            log(f"latency {group} {kind}: " + ", ".join(
                f"{role} added p50 {row[role]['added_p50_ms']:+.3f} ms p99 {row[role]['added_p99_ms']:+.3f} ms"
                for role in row if role not in ("direct", "foreign_pct")
            ))  # fmt: skip
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
    stack: Stack, a: argparse.Namespace, kind: str, way: str, seconds: float, warmup: float
) -> dict[str, Any]:
    """One run at concurrency a.concurrency: wrk (when chosen) for ``seconds``, for every way but
    LiteLLM. LiteLLM answers at concurrency 64 in seconds, all connections at nearly the same pace, so
    a short window would count a burst or none: it gets a fixed number of requests instead (after
    ``concurrency`` warm-up ones), req/s = that number / the time they took (the Python generator)."""
    t = stack.target(kind, way)
    proxy = t["proxy"]
    gen = "python" if WAYS[way].role == "litellm" or a.loadgen_used != "wrk" else "wrk"
    if gen == "wrk":
        with Sampler(stack) as s:
            res, child = run_wrk(stack, t, a.concurrency, seconds, a.phase_timeout)
    else:
        if WAYS[way].role == "litellm":
            count = a.litellm_tp_requests if kind == "nonstream" else a.litellm_tp_streams
            spec = {"targets": [t], "concurrency": a.concurrency, "count": count, "warmup_count": a.concurrency,
                    "timeout": 120.0, "max_time": 600.0}  # fmt: skip
            bound = 630.0
        else:
            spec = {"targets": [t], "concurrency": a.concurrency, "duration": seconds, "warmup": warmup}
            bound = seconds + warmup + a.phase_timeout
        with Sampler(stack) as s:
            result, child = loadgen(stack, spec, timeout=bound)
        res = result["targets"][way]
    bc = stack.bridge_cpus[0] if stack.bridge_cpus else None
    oc = stack.other_cpus[0] if stack.other_cpus else None
    wall = max(s.wall, 1e-9)
    fb, fo = s.foreign_pct(child.cpu_s)
    pcpu = s.proxy_cpu(proxy) / wall
    return {
        "loadgen": gen,
        "rps": res["rps"],
        "completed": res["completed"],
        "errors": res["errors"],
        "error_samples": res.get("error_samples", []),
        "p50_ms": res.get("p50_us", float("nan")) / 1e3,
        "p99_ms": res.get("p99_us", float("nan")) / 1e3,
        "proxy_cpu_pct": pcpu * 100,
        "upstream_cpu_pct": s.upstream_cpu() / wall * 100,
        "loadgen_cpu_pct": child.cpu_s / wall * 100,
        "bridge_core_busy_pct": s.core_busy[bc] * 100 if bc is not None else None,
        "other_core_busy_pct": s.core_busy[oc] * 100 if oc is not None else None,
        "foreign_bridge_core_pct": fb,
        "foreign_other_core_pct": fo,
        # requests per second of proxy CPU: what one fully used core would serve at this efficiency
        "rps_per_proxy_core": res["rps"] / pcpu if proxy and pcpu > 0 else None,
    }


def phase_throughput(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": a.concurrency, "seconds": a.duration, "loadgen": a.loadgen_used}
    out["litellm_counts"] = {"nonstream": a.litellm_tp_requests, "stream": a.litellm_tp_streams}
    ways = all_ways(stack, a.heavy_groups)
    for kind in KINDS:
        for way in ways:  # warm the pools (proxy → upstream connections)
            if a.warmup > 0 and WAYS[way].role != "litellm":
                throughput_once(stack, a, kind, way, a.warmup, 0.0)
        rounds = []
        for r in range(a.rounds):
            row = {}
            for way in rotated(ways, r):
                row[way] = throughput_once(stack, a, kind, way, a.duration, a.warmup)
                if row[way]["errors"]:
                    msg = f"FAILED throughput {kind} {way}: {row[way]['errors']} errors {row[way]['error_samples']}"
                    warnings.append(msg)
                    log("WARNING " + msg)
            rounds.append(row)
            log(f"throughput {kind} round {r + 1}/{a.rounds}: " + ", ".join(
                f"{w} {row[w]['rps']:.0f} req/s" + (f" ({row[w]['proxy_cpu_pct']:.0f}% CPU)"
                                                    if WAYS[w].role != "direct" else "")
                for w in ways
            ))  # fmt: skip
        kout: dict[str, Any] = {"rounds": rounds}
        for group in a.heavy_groups:
            g: dict[str, Any] = {}
            for way in ways_of(stack, group):
                g[WAYS[way].role] = {
                    key: median([rr[way][key] for rr in rounds if rr[way][key] is not None] or [float("nan")])
                    for key in rounds[0][way]
                    if key not in ("error_samples", "loadgen")
                }
                g[WAYS[way].role]["loadgen"] = rounds[0][way]["loadgen"]
            d = g["direct"]["rps"]
            for role in ("bridge", "litellm"):
                if role in g:
                    g[f"{role}_over_direct"] = g[role]["rps"] / d if d else float("nan")
            if "bridge" in g and "litellm" in g:
                bl, ll = g["bridge"], g["litellm"]
                g["bridge_over_litellm"] = bl["rps"] / ll["rps"] if ll["rps"] else float("inf")
                if bl["rps_per_proxy_core"] and ll["rps_per_proxy_core"]:
                    g["bridge_over_litellm_per_core"] = bl["rps_per_proxy_core"] / ll["rps_per_proxy_core"]
            g["notes"] = throughput_notes(g, a)
            for note in g["notes"]:
                if note.startswith("WARNING"):
                    warnings.append(f"throughput {group} {kind}: {note}")
            kout[group] = g
        out[kind] = kout
    return out


FOREIGN_LIMIT = 15.0  # % of a core used by processes that are not ours before figures are called disturbed


def throughput_notes(g: dict[str, Any], a: argparse.Namespace) -> list[str]:
    notes = []
    for role in ("bridge", "litellm"):
        if role not in g:
            continue
        b = g[role]
        other_b = b["other_core_busy_pct"]
        fb, fo = b["foreign_bridge_core_pct"], b["foreign_other_core_pct"]
        ours = f"upstream {b['upstream_cpu_pct']:.0f}%, load generator {b['loadgen_cpu_pct']:.0f}%"
        if b["loadgen_cpu_pct"] >= 90:
            notes.append(
                f"WARNING the load generator saturated its core ({b['loadgen_cpu_pct']:.0f}%) in the {role} runs"
            )
        for name, f in (("proxy's", fb), ("upstream+load-generator", fo)):
            if f is not None and f >= FOREIGN_LIMIT:
                notes.append(
                    f"WARNING other processes on this machine used {f:.0f}% of the {name} core during the {role} "
                    "runs: req/s figures are disturbed (CPU-time figures much less so)"
                )
        if other_b is not None and other_b >= 90 and (fo is None or fo < FOREIGN_LIMIT):
            notes.append(
                f"WARNING the upstream+load-generator core was {other_b:.0f}% busy in the {role} runs ({ours}): "
                f"the {role} figure is a lower bound"
            )
        elif b["proxy_cpu_pct"] >= 85:
            notes.append(
                f"{role}-bound: {role} used {b['proxy_cpu_pct']:.0f}% of its core; the other core was "
                f"{other_b if other_b is not None else float('nan'):.0f}% busy ({ours})"
            )
        elif fb is not None and fo is not None and max(fb, fo) < FOREIGN_LIMIT:
            notes.append(f"{role} used only {b['proxy_cpu_pct']:.0f}% of its core ({ours}): not CPU-bound")
    d = g["direct"]
    if d["other_core_busy_pct"] is not None:
        notes.append(
            f"direct runs: upstream {d['upstream_cpu_pct']:.0f}% + load generator {d['loadgen_cpu_pct']:.0f}% "
            f"share one core ({d['other_core_busy_pct']:.0f}% busy): direct is what that core can serve"
        )
    return notes


# ---- 4. many concurrent slow streams


def phase_slow(stack: Stack, a: argparse.Namespace, warnings: list[str]) -> dict[str, Any]:
    """``a.slow_streams`` streams at once (one connection each), each {TOKENS} events spread over
    ``a.slow_seconds`` by the upstream: the time until the last one ends vs the ideal."""
    ideal = a.slow_seconds
    out: dict[str, Any] = {"streams": a.slow_streams, "ideal_s": ideal, "rounds": []}
    for r in range(a.slow_rounds):
        row: dict[str, Any] = {}
        for group in a.heavy_groups:
            for way in rotated(ways_of(stack, group), r):
                t = stack.target("stream", way, slow_seconds=ideal)
                bound = max(120.0, ideal * 4) if WAYS[way].role != "litellm" else max(600.0, ideal * 20)
                spec = {"targets": [t], "concurrency": a.slow_streams, "count": a.slow_streams, "latencies": True,
                        "timeout": bound, "max_time": bound + 30}  # fmt: skip
                with Sampler(stack) as s:
                    result, child = loadgen(stack, spec, timeout=bound + 30)
                check_errors(result, f"slow streams {way}", warnings)
                res = result["targets"][way]
                lat = sorted(v / 1e6 for v in res.get("lat_us", []))
                e2e = result["elapsed"]
                row[way] = {
                    "completed": res["completed"],
                    "errors": res["errors"],
                    "e2e_s": e2e,
                    "over_ideal_pct": (e2e / ideal - 1) * 100,
                    "stream_p50_s": pct(lat, 50),
                    "stream_p99_s": pct(lat, 99),
                    "stream_max_s": lat[-1] if lat else float("nan"),
                    "proxy_cpu_ms_per_stream": s.proxy_cpu(t["proxy"]) / a.slow_streams * 1e3 if t["proxy"] else None,
                    "proxy_cpu_pct": s.proxy_cpu(t["proxy"]) / max(s.wall, 1e-9) * 100,
                    "upstream_cpu_pct": s.upstream_cpu() / max(s.wall, 1e-9) * 100,
                    "loadgen_cpu_pct": child.cpu_s / max(s.wall, 1e-9) * 100,
                    "foreign_pct": s.foreign_pct(child.cpu_s),
                }
                log(f"slow streams round {r + 1}/{a.slow_rounds} {way}: {res['completed']}/{a.slow_streams} in "
                    f"{e2e:.2f} s ({row[way]['over_ideal_pct']:+.1f}% vs {ideal:g} s)")  # fmt: skip
        out["rounds"].append(row)
    for group in a.heavy_groups:
        g: dict[str, Any] = {}
        for way in ways_of(stack, group):
            g[WAYS[way].role] = {
                key: median([rr[way][key] for rr in out["rounds"] if rr[way][key] is not None] or [float("nan")])
                for key in out["rounds"][0][way]
                if key != "foreign_pct"
            }
        out[group] = g
    return out
