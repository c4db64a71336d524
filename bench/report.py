"""The text report of the overhead bench, from the result dict that --json also writes."""

from __future__ import annotations

from typing import Any

from common import GROUPS, KINDS, LABEL, TOKENS, median
from phases import FOREIGN_LIMIT


def fmt_ms(v: float | None) -> str:
    if v is None or v != v:  # nan
        return "n/a"
    return f"{v:.3f} ms" if abs(v) < 10 else f"{v:.1f} ms"


def fmt_x(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.2f}×" if v < 10 else f"{v:.0f}×"


def foreign_line(samples: list[Any]) -> str:
    pairs = [p for p in samples if p and p[0] is not None]
    if not pairs:
        return "(processes unpinned: CPU use by other work on the machine not measured)"
    fb, fo = max(p[0] for p in pairs), max(p[1] for p in pairs)
    flag = "  <- DISTURBED, compare with care" if max(fb, fo) >= FOREIGN_LIMIT else ""
    return f"other work on the machine: at most {fb:.0f}% of the proxies' core, {fo:.0f}% of the other core{flag}"


def report(res: dict[str, Any]) -> str:
    lines = _header(res) + [""]
    if "summary" in res:
        lines += _summary(res) + [""]
    sections = (("cpu", _cpu_section), ("latency", _latency_section), ("throughput", _throughput_section),
                ("slow", _slow_section))  # fmt: skip
    for phase, section in sections:
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
            f"CPU speed of the proxies' core (a Python loop, {len(samples)} × 0.2 s before, between and after the "
            f"phases): median {median(samples):.1f} M loops/s, range {min(samples):.1f}–{max(samples):.1f}"
            + ("  <- UNSTEADY: the virtual CPU's speed varied a lot" if max(samples) > 1.25 * min(samples) else "")
        )
    lines.append(
        f"software: Python {v.get('python')}, oai-bridge {v.get('oai-bridge')}, uvicorn {v.get('uvicorn')}, "
        f"starlette {v.get('starlette')}, aiohttp {v.get('aiohttp')}, uvloop {v.get('uvloop')}, "
        f"httptools {v.get('httptools')}, orjson {v.get('orjson')}, pydantic {v.get('pydantic')}; "
        f"source {m.get('git', 'unknown')}"
    )
    ll = cfg.get("litellm")
    lines.append(
        "LiteLLM: "
        + (f"proxy {ll} ({cfg.get('litellm_exe')}), 1 uvicorn worker, pinned like the bridge" if ll else
           "not run (make bench-litellm installs it into .venv-bench; --litellm PATH names another)")
    )  # fmt: skip
    lines.append(
        f"setup: {TOKENS}-token replies; bridge = oai-bridge serve, {cfg['workers']} worker(s), and LiteLLM each "
        f"pinned to CPU {cfg['bridge_cpus']} (never loaded at the same time); upstreams + load generator pinned "
        f"to CPU {cfg['other_cpus']}; load generators: {cfg['loadgen_desc']}"
    )
    return lines


def _roles(group_entry: dict[str, Any]) -> list[str]:
    return [r for r in ("direct", "bridge", "litellm") if r in group_entry]


def _summary(res: dict[str, Any]) -> list[str]:
    s = res["summary"]
    lines = ["SUMMARY (OpenAI path: one fast OpenAI-compatible upstream for direct, bridge and LiteLLM)"]
    for text in s["lines"]:
        lines.append("  " + text)
    return lines


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and the issue's goals, from the phases that ran."""
    out: dict[str, Any] = {"lines": [], "goals": {}}
    L = out["lines"]
    for group in GROUPS:
        tag = "OpenAI" if group == "openai" else "Livepeer"
        if "cpu" in res and group in res["cpu"]:
            for kind in KINDS:
                e = res["cpu"][group][kind]
                b = e.get("bridge", {}).get("proxy_cpu_ms")
                txt = f"{tag} {LABEL[kind]}: bridge CPU {fmt_ms(b)}"
                if "litellm" in e:
                    txt += f", LiteLLM {fmt_ms(e['litellm']['proxy_cpu_ms'])} ({fmt_x(e.get('litellm_over_bridge'))})"
                L.append(txt)
        if "latency" in res and group in res["latency"]:
            for kind in KINDS:
                e = res["latency"][group][kind]
                txt = (f"{tag} {LABEL[kind]}, concurrency 1: bridge adds {fmt_ms(e['bridge']['added_p50_ms'])} p50, "
                       f"{fmt_ms(e['bridge']['added_p99_ms'])} p99")  # fmt: skip
                if "litellm" in e:
                    txt += (f"; LiteLLM adds {fmt_ms(e['litellm']['added_p50_ms'])} p50, "
                            f"{fmt_ms(e['litellm']['added_p99_ms'])} p99")  # fmt: skip
                L.append(txt)
                if group == "openai" and kind == "nonstream":
                    out["goals"]["added_p50_ms"] = e["bridge"]["added_p50_ms"]
        if "throughput" in res and group in res["throughput"]["nonstream"]:
            for kind in KINDS:
                g = res["throughput"][kind][group]
                txt = (f"{tag} {LABEL[kind]}, concurrency {res['throughput']['concurrency']}, one core: bridge "
                       f"{g['bridge']['rps']:.0f}/s ({fmt_x(g.get('bridge_over_direct'))} direct's "
                       f"{g['direct']['rps']:.0f}/s)")  # fmt: skip
                if "litellm" in g:
                    txt += (f", LiteLLM {g['litellm']['rps']:.1f}/s; bridge/LiteLLM "
                            f"{fmt_x(g.get('bridge_over_litellm'))} "
                            f"({fmt_x(g.get('bridge_over_litellm_per_core'))} per core-second)")  # fmt: skip
                    if group == "openai":
                        out["goals"][f"throughput_x_litellm_{kind}"] = g.get("bridge_over_litellm_per_core")
                L.append(txt)
        if "slow" in res and group in res["slow"]:
            sl = res["slow"]
            g = sl[group]
            parts = [f"{role} {g[role]['e2e_s']:.2f} s ({g[role]['over_ideal_pct']:+.1f}%)" for role in _roles(g)]
            L.append(
                f"{tag}: {sl['streams']} concurrent {sl['ideal_s']:g}-second streams end-to-end: " + ", ".join(parts)
            )
            if group == "openai":
                out["goals"]["slow_bridge_over_ideal_pct"] = g["bridge"]["over_ideal_pct"]
    goals = out["goals"]
    checks = []
    for kind in KINDS:
        x = goals.get(f"throughput_x_litellm_{kind}")
        if x is not None:
            checks.append(
                f"{LABEL[kind]} throughput per core ≥ 50× LiteLLM: {fmt_x(x)} {'MET' if x >= 50 else 'NOT MET'}"
            )
    if "added_p50_ms" in goals:
        v = goals["added_p50_ms"]
        checks.append(f"added p50 ≤ 0.5 ms: {fmt_ms(v)} {'MET' if v <= 0.5 else 'NOT MET'}")
    if "slow_bridge_over_ideal_pct" in goals:
        v = goals["slow_bridge_over_ideal_pct"]
        checks.append(f"slow streams within 5% of ideal: {v:+.1f}% {'MET' if v <= 5 else 'NOT MET'}")
    if checks:
        L.append("goals (issue 5): " + "; ".join(checks))
    return out


def _cpu_section(res: dict[str, Any]) -> list[str]:
    c, workers = res["cpu"], res["config"]["workers"]
    lines = []
    lines.append(
        f"1. Proxy CPU time (user+sys of the proxy process{' + workers' if workers > 1 else ''}) at concurrency "
        f"{c['concurrency']}: {c['counts']['nonstream']} requests / {c['counts']['stream']} streams per round "
        f"(LiteLLM: ×{c['litellm_scale']:g}), median of {len(c['rounds'])} round(s)"
    )
    lines.append(f"   {'':<32}{'bridge CPU':>12}{'target':>10}{'':>6}{'LiteLLM CPU':>13}{'LiteLLM/bridge':>16}"
                 f"{'upstream CPU':>14}")  # fmt: skip
    for group in GROUPS:
        if group not in c:
            continue
        for kind in KINDS:
            e = c[group][kind]
            ok = "ok" if e["meets_target"] else "OVER"
            ll = e.get("litellm", {}).get("proxy_cpu_ms")
            lines.append(
                f"   {group + ' ' + LABEL[kind]:<32}{fmt_ms(e['bridge']['proxy_cpu_ms']):>12}"
                f"{'≤ ' + str(e['target_ms']) + ' ms':>10}{ok:>6}{fmt_ms(ll):>13}"
                f"{fmt_x(e.get('litellm_over_bridge')):>16}"
                f"{fmt_ms(e['direct']['upstream_cpu_ms']):>14}"
            )
    spread = []
    for key in sorted(c["rounds"][0]):
        vals = [r[key]["proxy_cpu_ms"] for r in c["rounds"] if r[key]["proxy_cpu_ms"] is not None]
        if vals:
            spread.append(f"{key} {min(vals):.3f}–{max(vals):.3f}")
    lines.append("   over the rounds (ms): " + ", ".join(spread))
    lines.append("   upstream CPU = the upstream's own CPU per request sent to it directly (for scale).")
    lines.append("   " + foreign_line([r[k]["foreign_pct"] for r in c["rounds"] for k in r]))
    return lines


def _latency_section(res: dict[str, Any]) -> list[str]:
    lat = res["latency"]
    lines = []
    lines.append(
        f"2. Latency at concurrency 1, the ways alternating request by request ({lat['counts']['nonstream']} "
        f"non-stream + {lat['counts']['stream']} stream rounds; LiteLLM apart, alternating with direct, "
        f"{lat['litellm_counts']['nonstream']} + {lat['litellm_counts']['stream']}); streams: time to last byte"
    )
    lines.append(f"   {'':<32}{'p50':>11}{'p99':>11}{'added p50':>12}{'added p99':>12}{'×direct p50':>13}"
                 f"{'CPU at c1':>12}")  # fmt: skip
    for group in GROUPS:
        if group not in lat:
            continue
        for kind in KINDS:
            r = lat[group][kind]
            for role in _roles(r):
                x = r[role]
                added = role != "direct"
                lines.append(
                    f"   {group + ' ' + LABEL[kind] + ' ' + role:<32}{fmt_ms(x['p50_ms']):>11}{fmt_ms(x['p99_ms']):>11}"
                    f"{('+' + fmt_ms(x['added_p50_ms'])) if added else '':>12}"
                    f"{('+' + fmt_ms(x['added_p99_ms'])) if added else '':>12}"
                    f"{(fmt_x(x['ratio_p50'])) if added else '':>13}"
                    f"{fmt_ms(x.get('cpu_ms_at_c1')) if added else '':>12}"
                )
    lines.append("   " + foreign_line([lat[g][k]["foreign_pct"] for g in GROUPS if g in lat for k in KINDS]))
    return lines


def _throughput_section(res: dict[str, Any]) -> list[str]:
    tp = res["throughput"]
    lines = []
    nrounds = len(tp[KINDS[0]]["rounds"])
    lines.append(
        f"3. Throughput at concurrency {tp['concurrency']}, each proxy pinned to one core, {nrounds} round(s) × "
        f"{tp['seconds']:g} s each way ({tp['loadgen']}; LiteLLM: bench/loadgen.py, "
        f"{tp['litellm_counts']['nonstream']} requests / {tp['litellm_counts']['stream']} streams after "
        f"{tp['concurrency']} warm-up ones), median"
    )
    lines.append(
        f"   {'':<32}{'req/s':>9}{'×direct':>9}{'per core-s*':>12}{'proxy CPU':>10}{'upstream':>9}{'loadgen':>8}"
        f"{'foreign b/o**':>14}"
    )
    for kind in KINDS:
        for group in GROUPS:
            if group not in tp[kind]:
                continue
            g = tp[kind][group]
            for role in _roles(g):
                b = g[role]
                fb, fo = b["foreign_bridge_core_pct"], b["foreign_other_core_pct"]
                foreign = f"{fb:.0f}%/{fo:.0f}%" if fb is not None and fo is not None and fb == fb else "n/a"
                cap = b["rps_per_proxy_core"]
                ratio = g.get(f"{role}_over_direct") if role != "direct" else None
                lines.append(
                    f"   {group + ' ' + LABEL[kind] + ' ' + role:<32}{b['rps']:>9.1f}{fmt_x(ratio) if ratio else '':>9}"
                    f"{(f'{cap:.0f}' if cap and cap == cap else ''):>12}"
                    f"{(format(b['proxy_cpu_pct'], '.0f') + '%' if role != 'direct' else ''):>10}"
                    f"{b['upstream_cpu_pct']:>8.0f}%{b['loadgen_cpu_pct']:>7.0f}%{foreign:>14}"
                )
            if "bridge_over_litellm" in g:
                lines.append(f"   {'':<32}bridge/LiteLLM: {fmt_x(g['bridge_over_litellm'])} req/s, "
                             f"{fmt_x(g.get('bridge_over_litellm_per_core'))} per core-second")  # fmt: skip
    lines.append(
        "   CPU columns: % of one core.  * req/s per second of proxy CPU (what one fully used core would serve)."
    )
    lines.append("   ** CPU used by processes not started by this bench, on the proxies' core / on the other core.")
    for kind in KINDS:
        for group in GROUPS:
            for note in tp[kind].get(group, {}).get("notes", []):
                lines.append(f"   {group} {LABEL[kind]}: {note}")
    return lines


def _slow_section(res: dict[str, Any]) -> list[str]:
    sl = res["slow"]
    lines = []
    lines.append(
        f"4. {sl['streams']} concurrent streams of {TOKENS} events over {sl['ideal_s']:g} s (the upstream's pace), one "
        f"connection each, all started at once: time until the last one ended vs the ideal {sl['ideal_s']:g} s "
        f"(median of {len(sl['rounds'])} round(s))"
    )
    lines.append(f"   {'':<24}{'done':>6}{'end-to-end':>12}{'vs ideal':>10}{'stream p50':>12}{'p99':>9}{'max':>9}"
                 f"{'proxy CPU/stream':>18}{'proxy CPU':>11}")  # fmt: skip
    for group in GROUPS:
        if group not in sl:
            continue
        g = sl[group]
        for role in _roles(g):
            x = g[role]
            cpu = fmt_ms(x["proxy_cpu_ms_per_stream"]) if role != "direct" else ""
            lines.append(
                f"   {group + ' ' + role:<24}{x['completed']:>6.0f}{x['e2e_s']:>11.2f}s{x['over_ideal_pct']:>+9.1f}%"
                f"{x['stream_p50_s']:>11.2f}s{x['stream_p99_s']:>8.2f}s{x['stream_max_s']:>8.2f}s{cpu:>18}"
                f"{(format(x['proxy_cpu_pct'], '.0f') + '%' if role != 'direct' else ''):>11}"
            )
    lines.append("   " + foreign_line([r[w]["foreign_pct"] for r in sl["rounds"] for w in r]))
    return lines
