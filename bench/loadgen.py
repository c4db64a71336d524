"""A lean HTTP/1.1 load generator for bench/overhead.py (asyncio Protocol, uvloop when present).

Every connection is keep-alive and carries one request at a time (no pipelining). The request is
pre-built bytes; the response is parsed only as far as needed to find its end (Content-Length or
chunked framing), then checked: status 200 and an ``expect`` marker near the end of the body.

    python bench/loadgen.py SPEC.json OUT.json

SPEC (JSON)::

    {"targets": [{"name": "direct", "host": "127.0.0.1", "port": 8935,
                  "request": "<raw HTTP request, latin-1>", "expect": "finish_reason",
                  "count": 300}],   # optional, interleave mode: this target stops after 300

     "concurrency": 8,             # connections per target
     "count": 1000,                # requests per target (count mode) ...
     "duration": 5.0,              # ... or seconds of load (duration mode, after "warmup" seconds)
     "warmup": 0.5,                # duration mode: seconds of load not counted
     "warmup_count": 20,           # count mode: requests per target sent first and not counted
     "interleave": true,           # count mode, concurrency 1: alternate the targets request by request
     "latencies": true,            # return every latency (microseconds)
     "timeout": 30.0,              # per request
     "max_time": 120.0}            # whole run (hard cap)

OUT (JSON): per target ``completed``, ``errors`` (first few messages in ``error_samples``),
``elapsed`` (seconds of counted load), ``rps``, latency percentiles in microseconds (and the raw
list when asked), plus ``cpu_s`` (this process's user+sys CPU over the counted load), ``wall_s``.
Bounded: the run stops at ``max_time`` whatever the mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

try:  # a faster event loop makes a leaner generator
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None  # type: ignore[assignment]

HEAD_END = b"\r\n\r\n"
TAIL = 1500  # bytes of the end of a body kept for the end-marker check


class _Response(Exception):
    pass


class Conn(asyncio.Protocol):
    """One keep-alive connection; ``await conn.request(raw)`` returns (status, tail of the body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False
        self._reset()

    def _reset(self) -> None:
        self.state = 0  # 0 head, 1 content-length body, 2 chunked body
        self.pos = 0
        self.need = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.fut is not None and not self.fut.done():
            try:
                self._parse()
            except Exception as exc:  # malformed response
                self.fut.set_exception(exc)

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.buf.clear()
        self._reset()
        self.fut = asyncio.get_running_loop().create_future()
        if self.lost:
            self.fut.set_exception(ConnectionError("connection closed"))
        else:
            self.transport.write(raw)
        return self.fut

    def _done(self, end: int) -> None:
        assert self.fut is not None
        self.fut.set_result((self.status, bytes(self.buf[max(0, end - TAIL) : end])))

    def _parse(self) -> None:
        buf = self.buf
        if self.state == 0:
            i = buf.find(HEAD_END)
            if i < 0:
                return
            head = bytes(buf[:i]).lower()
            self.status = int(head[9:12])
            self.pos = i + 4
            if b"\r\ntransfer-encoding: chunked" in head:
                self.state = 2
            else:
                j = head.find(b"\r\ncontent-length:")
                if j < 0:
                    raise ValueError("response without Content-Length or chunked framing")
                k = head.find(b"\r\n", j + 2)
                self.need = self.pos + int(head[j + 17 : k if k > 0 else len(head)])
                self.state = 1
        if self.state == 1:
            if len(buf) >= self.need:
                self._done(self.need)
            return
        pos = self.pos
        while True:
            j = buf.find(b"\r\n", pos)
            if j < 0:
                break
            size = int(bytes(buf[pos:j]).split(b";", 1)[0], 16)
            if size == 0:
                if len(buf) >= j + 4:  # "0\r\n\r\n": no trailers expected
                    self._done(j)
                break
            if len(buf) < j + 4 + size:
                break
            pos = j + 4 + size
        self.pos = pos


class Target:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.host: str = spec["host"]
        self.port: int = int(spec["port"])
        self.raw: bytes = spec["request"].encode("latin-1")
        self.expect: bytes = spec.get("expect", "").encode()
        self.count: int | None = spec.get("count")  # interleave mode: fewer requests for this target
        self.completed = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.lat_us: list[int] = []
        self.started = 0

    def error(self, msg: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(msg)


async def _connect(t: Target) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(Conn, t.host, t.port)
    return conn


async def _one(t: Target, conn: Conn | None, timeout: float) -> tuple[Conn | None, int | None]:
    """Send one request; returns (connection to reuse or None, latency in ns or None on error)."""
    try:
        if conn is None or conn.lost:
            conn = await asyncio.wait_for(_connect(t), timeout)
        t0 = time.perf_counter_ns()
        status, tail = await asyncio.wait_for(conn.request(t.raw), timeout)
        dt = time.perf_counter_ns() - t0
    except Exception as exc:  # every failure is counted
        t.error(f"{type(exc).__name__}: {exc}")
        if conn is not None and conn.transport is not None:
            conn.transport.close()
        return None, None
    if status != 200:
        t.error(f"HTTP {status}: {tail[-200:]!r}")
        return conn, None
    if t.expect and t.expect not in tail:
        t.error(f"marker {t.expect!r} missing at the end of the body: {tail[-200:]!r}")
        return conn, None
    return conn, dt


def percentile(sorted_vals: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of already sorted values, interpolated; NaN when there are none."""
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    targets = [Target(s) for s in spec["targets"]]
    conc = int(spec.get("concurrency", 1))
    timeout = float(spec.get("timeout", 30.0))
    max_time = float(spec.get("max_time", 120.0))
    keep_lat = bool(spec.get("latencies", False))
    count = spec.get("count")
    start_wall = time.monotonic()
    hard_deadline = start_wall + max_time
    cpu0 = time.process_time()
    counted_t0 = counted_t1 = 0.0

    if count is not None:
        count = int(count)
        warm = int(spec.get("warmup_count", 0))
        if spec.get("interleave") and conc == 1:
            conns: list[Conn | None] = [None] * len(targets)
            for _ in range(warm):  # warm-up, alternating too
                for k, t in enumerate(targets):
                    conns[k], _lat = await _one(t, conns[k], timeout)
            cpu0 = time.process_time()
            counted_t0 = time.monotonic()
            for _ in range(count):
                if time.monotonic() > hard_deadline:
                    break
                for k, t in enumerate(targets):
                    if t.count is not None and t.completed + t.errors >= t.count:
                        continue
                    conns[k], lat = await _one(t, conns[k], timeout)
                    if lat is not None:
                        t.completed += 1
                        t.lat_us.append(lat // 1000)
            counted_t1 = time.monotonic()
        else:
            for t in targets:  # one target after the other, `conc` connections each
                if warm:
                    per = max(1, warm // conc)
                    await asyncio.gather(*(_warm(t, per, timeout) for _ in range(conc)))
                    t.errors, t.error_samples = 0, []
                if t is targets[0]:
                    cpu0 = time.process_time()
                    counted_t0 = time.monotonic()
                await asyncio.gather(*(_count_worker(t, count, timeout, hard_deadline, keep_lat) for _ in range(conc)))
            counted_t1 = time.monotonic()
    else:
        duration = float(spec["duration"])
        warmup = float(spec.get("warmup", 0.0))
        phase = {"counting": False, "stop": False}

        async def dworker(t: Target) -> None:
            conn: Conn | None = None
            while not phase["stop"] and time.monotonic() < hard_deadline:
                conn, lat = await _one(t, conn, timeout)
                if lat is not None and phase["counting"] and not phase["stop"]:
                    t.completed += 1
                    t.lat_us.append(lat // 1000)
            if conn is not None and conn.transport is not None:
                conn.transport.close()

        tasks = [asyncio.ensure_future(dworker(t)) for t in targets for _ in range(conc)]
        await asyncio.sleep(warmup)
        for t in targets:
            t.errors, t.error_samples = 0, []
        phase["counting"] = True
        cpu0 = time.process_time()
        counted_t0 = time.monotonic()
        await asyncio.sleep(min(duration, max(0.0, hard_deadline - time.monotonic())))
        phase["stop"] = True
        counted_t1 = time.monotonic()
        cpu1 = time.process_time()
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for p in pending:
            p.cancel()
        return _report(targets, counted_t1 - counted_t0, cpu1 - cpu0, time.monotonic() - start_wall, keep_lat)

    cpu = time.process_time() - cpu0
    return _report(targets, counted_t1 - counted_t0, cpu, time.monotonic() - start_wall, keep_lat)


async def _count_worker(t: Target, count: int, timeout: float, deadline: float, keep_lat: bool) -> None:
    conn: Conn | None = None
    while t.started < count and time.monotonic() < deadline:
        t.started += 1
        conn, lat = await _one(t, conn, timeout)
        if lat is not None:
            t.completed += 1
            t.lat_us.append(lat // 1000)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def _warm(t: Target, n: int, timeout: float) -> None:
    conn: Conn | None = None
    for _ in range(n):
        conn, _lat = await _one(t, conn, timeout)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


def _report(targets: list[Target], elapsed: float, cpu: float, wall: float, keep_lat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"elapsed": elapsed, "cpu_s": cpu, "wall_s": wall, "targets": {}}
    for t in targets:
        lat = sorted(t.lat_us)
        row: dict[str, Any] = {
            "completed": t.completed,
            "errors": t.errors,
            "error_samples": t.error_samples,
            "rps": t.completed / elapsed if elapsed > 0 else 0.0,
        }
        if lat:
            row |= {f"p{p}_us": percentile(lat, p) for p in (50, 90, 99)}
            row["mean_us"] = sum(lat) / len(lat)
        if keep_lat:
            row["lat_us"] = t.lat_us
        out["targets"][t.name] = row
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    if uvloop is not None and not os.environ.get("BENCH_NO_UVLOOP"):
        result = uvloop.run(run(spec))
    else:
        result = asyncio.run(run(spec))
    result["loop"] = "uvloop" if uvloop is not None and not os.environ.get("BENCH_NO_UVLOOP") else "asyncio"
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
