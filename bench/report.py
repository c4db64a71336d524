"""The text report of the overhead bench, from the result dict that --json also writes."""

from __future__ import annotations

from typing import Any

from common import KINDS, LABEL, TOKENS, median
from phases import FOREIGN_LIMIT


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
    lines = _header(res) + [""]
    for phase, section in (("cpu", _cpu_section), ("latency", _latency_section), ("throughput", _throughput_section)):
        if phase in res:
            lines += section(res) + [""]
    if res["warnings"]:
        lines.append("WARNINGS:")
        lines += [f"  - {w}" for w in res["warnings"]]
    return "\n".join(lines)


def _header(res: dict[str, Any]) -> list[str]:
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
    return lines


def _cpu_section(res: dict[str, Any]) -> list[str]:
    c, workers = res["cpu"], res["config"]["workers"]
    lines = []
    lines.append(
        f"1. Bridge CPU time (user+sys, bridge process{' + workers' if workers > 1 else ''}) "
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
    return lines


def _latency_section(res: dict[str, Any]) -> list[str]:
    lat = res["latency"]
    lines = []
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
    return lines


def _throughput_section(res: dict[str, Any]) -> list[str]:
    tp = res["throughput"]
    lines = []
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
    return lines
