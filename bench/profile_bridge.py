"""Where does the bridge spend its CPU? py-spy on the bridge under load, for each path (the Livepeer
backend, the openai_compat backend) and each kind of request (non-stream, stream).

    python bench/profile_bridge.py [--seconds 8] [--concurrency 64] [--native] [--groups livepeer,openai] [--out DIR]

Same stack as bench/overhead.py (Livepeer simulator, the fast OpenAI-compatible upstream and the bridge
on free loopback ports, pinned like there), load from wrk (or bench/loadgen.py), ``py-spy record``
on the bridge process meanwhile. Prints the top
functions by self time and by inclusive time (share of the bridge's busy samples), and keeps the
raw collapsed stacks in --out (feed them to flamegraph.pl or speedscope). Needs py-spy (``pip install py-spy``) and
ptrace rights (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import GROUPS, KINDS, LABEL
from phases import WRK, sanity, throughput_once
from stack import PIN, Stack, bridge_server, find_python, simulator, stop_servers, upstream

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_raw(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Collapsed stacks → (samples, self counts, inclusive counts) keyed by 'func (file)'."""
    total = 0
    self_c: collections.Counter[str] = collections.Counter()
    incl_c: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr.strip())
            frames.append(f"{m['func']} ({m['file']})" if m else fr.strip())
        if frames:
            self_c[frames[-1]] += n
        for fr in set(frames):
            incl_c[fr] += n
    return total, self_c, incl_c


def top(counter: collections.Counter[str], total: int, n: int) -> list[str]:
    return [f"  {c / total * 100:5.1f}%  {name}" for name, c in counter.most_common(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=8, help="seconds of profiling per kind (bounded: <= 60)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="also sample C/Cython frames (uvloop, httptools...)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=None, help="directory for the raw stacks and flamegraphs")
    p.add_argument("--groups", default=",".join(GROUPS), help="paths to profile: livepeer,openai")
    a = p.parse_args()
    groups = [g for g in GROUPS if g in a.groups.split(",")]
    a.seconds = max(1, min(a.seconds, 60))
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        sys.exit("py-spy not found: pip install py-spy")
    python = find_python(None)
    wrk = shutil.which("wrk")
    WRK["path"] = wrk
    args = argparse.Namespace(loadgen_used="wrk" if wrk else "python", concurrency=a.concurrency, phase_timeout=60.0,
                              quick=False)  # fmt: skip
    allowed = sorted(os.sched_getaffinity(0))
    bridge_cpus, other_cpus = ([allowed[0]], [allowed[1]]) if len(allowed) >= 2 and PIN["taskset"] else (None, None)
    if bridge_cpus is None:
        PIN["enabled"] = False
    tmp = tempfile.TemporaryDirectory(prefix="oai-bridge-prof-")
    out = Path(a.out) if a.out else Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    sim = simulator(python, other_cpus, out)
    up = upstream(python, other_cpus, out)
    bridge = None
    try:
        sim.start()
        up.start()
        bridge = bridge_server(python, sim.port, up.port, bridge_cpus, out)
        bridge.start()
        stack = Stack({"sim": sim, "upstream": up, "bridge": bridge}, python, bridge_cpus, other_cpus, out)
        sanity(stack)
        assert bridge.proc is not None
        for group, kind in ((g, k) for g in groups for k in KINDS):
            way = f"{group}.bridge"
            throughput_once(stack, args, kind, way, 1.0, 0.0)  # warm the pools
            raw = out / f"bridge-{group}-{kind}.txt"
            cmd = [pyspy, "record", "-p", str(bridge.proc.pid), "-d", str(a.seconds), "-r", str(a.rate),
                   "-f", "raw", "-o", str(raw)] + (["--native"] if a.native else [])  # fmt: skip
            load: dict[str, object] = {}

            def drive(kind: str = kind, way: str = way, load: dict[str, object] = load) -> None:
                load["r"] = throughput_once(stack, args, kind, way, a.seconds + 2, 0.0)

            th = threading.Thread(target=drive)
            th.start()
            time.sleep(1.0)
            subprocess.run(cmd, check=True, capture_output=True, timeout=a.seconds + 60)
            th.join(timeout=a.seconds + 90)
            total, self_c, incl_c = parse_raw(raw)
            r = load.get("r") or {}
            print(f"\n=== bridge, {group} path, {LABEL[kind]}, concurrency {a.concurrency}: {total} busy samples "
                  f"({r.get('rps', 0):.0f} req/s, bridge CPU {r.get('proxy_cpu_pct', 0):.0f}% while profiled)")  # type: ignore[union-attr]  # fmt: skip
            print(f"top {a.top} by self time:")
            print("\n".join(top(self_c, total, a.top)))
            print(f"top {a.top} by inclusive time:")
            print("\n".join(top(incl_c, total, a.top)))
            print(f"(raw stacks: {raw})" if a.out else "")
    finally:
        stop_servers(bridge, up, sim)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
