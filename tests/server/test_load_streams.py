"""Load and graceful shutdown against real processes: the ``oai-bridge serve`` CLI in front of an
``oai-bridge simulate`` gateway, each its own process, so the bridge's memory is its own.

- 2,000 concurrent slow streams through one worker: every stream's content exact, the whole run
  within a bound, the bridge's RSS measured before, during and after (twice, to see it settle)
  and bounded per 1,000 streams; the figures are printed.
- ``--workers 2``: two worker processes answer (which process holds each client connection is
  read from the OS with psutil, not from the bridge).
- SIGTERM (one worker and two): new connections refused at once, idle keep-alive connections
  closed, streams that end within the grace complete exactly, the others end with a
  ``server_shutting_down`` error frame (never cut), a non-stream request gets a 503, and the
  process exits 0 right after the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest

from oai_bridge.simulators.livepeer import reply_tokens

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
EXE = [sys.executable, "-m", "oai_bridge"]

STREAMS = 2000
TOKENS, DELAY = 20, 0.2  # each load stream: 20 tokens over ~4 s
LOAD_DEADLINE = 45.0  # seconds for all 2,000 (ideal: 4 s; ~7-10 s on 2 cores)
RSS_PER_1000_LIMIT = 100.0  # MB of bridge RSS growth per 1,000 concurrent streams (measured ~40)
RSS_SECOND_ROUND_LIMIT = 25.0  # MB more at the peak of a second identical round (no leak)
FD_NEED = 2 * STREAMS + 1000


def _raise_fd_limit() -> None:
    """2,000 client sockets here; the children inherit the limit (2 sockets per stream in the
    bridge, 1 in the simulator)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * FD_NEED
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FD_NEED:
        pytest.fail(f"RLIMIT_NOFILE is {soft}, the load test needs {FD_NEED}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LIVEPEER_", "OAI_BRIDGE_"))}


def _wait_ready(port: int, path: str, proc: subprocess.Popen[bytes], log: Path, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"port {port} never answered {path}: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulated Livepeer gateway in its own process."""
    _raise_fd_limit()
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*EXE, "simulate", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=_env()
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(port, "/healthz", proc, log)
        yield url
    finally:
        _stop(proc)


@dataclass
class Bridge:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    @property
    def chat_url(self) -> str:
        return self.url + "/v1/chat/completions"


@contextlib.contextmanager
def bridge(gateway: str, tmp_path: Path, *args: str) -> Iterator[Bridge]:
    port = free_port()
    log = tmp_path / f"bridge-{port}.log"
    argv = [*EXE, "serve", "--port", str(port), "--gateway", gateway, "--log-level", "warning", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env())
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(port, "/health", proc, log)
        yield Bridge(proc, url, port, log)
    finally:
        _stop(proc)


# ----------------------------------------------------------------------------- streams


def content_for(i: int, tokens: int, delay: float) -> str:
    return f"stream number {i} [[sim tokens={tokens} delay={delay}]]"


def expected(content: str) -> str:
    return "".join(reply_tokens([{"role": "user", "content": content}], 256))


@dataclass
class Outcome:
    status: int
    text: str = ""
    end: str = ""  # "done", "error" or "cut"
    error: dict[str, Any] = field(default_factory=dict)
    ended_at: float = 0.0  # monotonic


def parse_stream(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(content, how it ended, the error) of an SSE body; asserts the framing."""
    assert body.endswith(b"\n\n"), body[-200:]
    events = body[:-2].split(b"\n\n")
    text = ""
    for event in events[:-1]:
        assert event.startswith(b"data: {"), event[:200]
        chunk = orjson.loads(event[6:])
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
    last = events[-1]
    if last == b"data: [DONE]":
        return text, "done", {}
    assert last.startswith(b"data: {"), last[:200]
    final = orjson.loads(last[6:])
    if "error" in final:
        return text, "error", final["error"]
    return text, "cut", {}


async def one_stream(
    session: aiohttp.ClientSession, url: str, content: str, started: asyncio.Semaphore | None = None
) -> Outcome:
    payload = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    async with session.post(url, data=orjson.dumps(payload), headers={"content-type": "application/json"}) as resp:
        if resp.status != 200:
            return Outcome(resp.status, error=orjson.loads(await resp.read()).get("error", {}))
        first = await resp.content.readuntil(b"\n\n")
        if started is not None:
            started.release()
        body = first + await resp.read()  # a cut chunked body raises ClientPayloadError here
    text, end, error = parse_stream(body)
    return Outcome(200, text, end, error, time.monotonic())


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=110)) as session:
        yield session


# ----------------------------------------------------------------------------- load


@dataclass
class Round:
    seconds: float
    rss_before: int
    rss_peak: int
    rss_after: int
    fds_peak: int
    cpu: float


async def load_round(session: aiohttp.ClientSession, b: Bridge, ps: psutil.Process, offset: int) -> Round:
    rss_before = ps.memory_info().rss
    cpu_before = sum(ps.cpu_times()[:2])
    peaks = [rss_before, ps.num_fds()]
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            peaks[0] = max(peaks[0], ps.memory_info().rss)
            peaks[1] = max(peaks[1], ps.num_fds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.05)

    sampler = asyncio.create_task(sample())
    contents = [content_for(offset + i, TOKENS, DELAY) for i in range(STREAMS)]
    started = time.monotonic()
    try:
        async with asyncio.timeout(LOAD_DEADLINE):
            outcomes = await asyncio.gather(*(one_stream(session, b.chat_url, c) for c in contents))
    finally:
        done.set()
        await sampler
    seconds = time.monotonic() - started
    cpu = sum(ps.cpu_times()[:2]) - cpu_before
    wrong = [
        i for i, (o, c) in enumerate(zip(outcomes, contents, strict=True)) if (o.end, o.text) != ("done", expected(c))
    ]
    assert wrong == [], f"{len(wrong)} streams wrong, e.g. {outcomes[wrong[0]]}"
    await asyncio.sleep(0.5)  # let the closed connections go
    return Round(seconds, rss_before, peaks[0], ps.memory_info().rss, peaks[1], cpu)


async def test_2000_concurrent_slow_streams_through_one_worker(
    gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mb = 1 << 20
    with bridge(gateway, tmp_path) as b:
        ps = psutil.Process(b.proc.pid)
        assert ps.children() == [], "one worker: the bridge is a single process"
        fds_idle = ps.num_fds()  # no connection open yet
        async with client() as session:
            warm = await asyncio.gather(*(one_stream(session, b.chat_url, content_for(i, 3, 0)) for i in range(10)))
            assert all(o.end == "done" for o in warm)
            first = await load_round(session, b, ps, 0)
            second = await load_round(session, b, ps, STREAMS)
    # every stream was open at the same time: each holds a client socket and an upstream one
    # (idle upstream connections kept in the pool are reused, so they do not add to the peak)
    in_flight = (first.fds_peak - fds_idle) // 2
    growth = (first.rss_peak - first.rss_before) / mb * 1000 / STREAMS
    with capsys.disabled():
        print(
            f"\n[load] {STREAMS} concurrent streams ({TOKENS} tokens, {DELAY} s apart) through one worker: "
            f"{first.seconds:.1f} s then {second.seconds:.1f} s (ideal {TOKENS * DELAY:.1f} s); "
            f"peak in flight {in_flight}; bridge CPU {first.cpu / STREAMS * 1000:.2f} ms/stream; "
            f"RSS {first.rss_before / mb:.0f} MB before, {first.rss_peak / mb:.0f} MB peak, "
            f"{first.rss_after / mb:.0f} MB after; second round peak {second.rss_peak / mb:.0f} MB, "
            f"after {second.rss_after / mb:.0f} MB; growth {growth:.1f} MB per 1,000 streams"
        )
    assert in_flight >= STREAMS * 0.95, f"only {in_flight} streams were in flight at once"
    assert growth < RSS_PER_1000_LIMIT
    assert (second.rss_peak - first.rss_peak) / mb < RSS_SECOND_ROUND_LIMIT, "memory kept growing"
    assert b.proc.returncode == 0


# ----------------------------------------------------------------------------- workers


def _workers(b: Bridge) -> list[psutil.Process]:
    """The bridge's child processes listening on its port (not multiprocessing's helpers)."""
    return [
        child
        for child in psutil.Process(b.proc.pid).children()
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == b.port for c in child.net_connections(kind="tcp"))
    ]


def _owners(b: Bridge, workers: list[psutil.Process]) -> dict[int, int]:
    """Client port → pid of the worker process holding the server side of that connection."""
    owners: dict[int, int] = {}
    for child in workers:
        for conn in child.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == b.port and conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                owners[conn.raddr.port] = child.pid
    return owners


async def test_two_workers_serve_from_two_processes(gateway: str, tmp_path: Path) -> None:
    with bridge(gateway, tmp_path, "--workers", "2") as b:
        workers = _workers(b)
        assert len(workers) == 2
        seen: set[int] = set()
        async with client() as session:
            for batch in range(10):  # the kernel hands each new connection to one worker
                opened: list[tuple[int, aiohttp.ClientResponse]] = []
                contents = [content_for(batch * 8 + i, 4, 0.2) for i in range(8)]
                for content in contents:
                    payload = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
                    resp = await session.post(b.chat_url, data=orjson.dumps(payload))
                    assert resp.status == 200
                    assert resp.connection is not None and resp.connection.transport is not None
                    opened.append((resp.connection.transport.get_extra_info("sockname")[1], resp))
                owners = _owners(b, workers)
                for (port, resp), content in zip(opened, contents, strict=True):
                    assert owners.get(port) in {w.pid for w in workers}, (port, owners)
                    seen.add(owners[port])
                    text, end, _ = parse_stream(await resp.read())
                    assert (end, text) == ("done", expected(content))
                    resp.release()
                if len(seen) == 2:
                    break
        assert seen == {w.pid for w in workers}, "one worker answered every connection"


# ----------------------------------------------------------------------------- SIGTERM


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


async def _post(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=orjson.dumps(payload), headers={"content-type": "application/json"}) as resp:
        return resp.status, orjson.loads(await resp.read())


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_then_ends_the_rest_with_an_error_frame(
    gateway: str, tmp_path: Path, workers: int
) -> None:
    grace = 2.0
    with bridge(gateway, tmp_path, "--workers", str(workers), "--shutdown-grace", str(grace)) as b:
        # an idle keep-alive connection (one request answered, then nothing)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", b.port)
        idle_w.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await idle_r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await idle_r.readexactly(length)

        async with client() as session:
            short = [content_for(i, 8, 0.1) for i in range(6)]  # ~0.8 s: end within the grace
            long = [content_for(100 + i, 200, 0.1) for i in range(6)]  # ~20 s: cut by the grace
            started = asyncio.Semaphore(0)
            streams = [asyncio.create_task(one_stream(session, b.chat_url, c, started)) for c in short + long]
            chat = {"model": MODEL, "messages": [{"role": "user", "content": content_for(200, 200, 0.1)}]}
            plain = asyncio.create_task(_post(session, b.chat_url, chat))  # the raw chat route
            image = {"prompt": "a slow red fox [[sim delay=20]]"}
            picture = asyncio.create_task(_post(session, b.url + "/v1/images/generations", image))  # Starlette's
            async with asyncio.timeout(10):
                for _ in streams:
                    await started.acquire()  # every stream is under way (has its first chunk)
            await asyncio.sleep(0.2)  # and the two other requests are with the upstream
            signalled = time.monotonic()
            b.proc.send_signal(signal.SIGTERM)

            # idle keep-alive connections are closed at once
            async with asyncio.timeout(1.5):
                assert await idle_r.read() == b""
            idle_w.close()
            # new connections are refused at once (the signal is handled within ~0.1-0.5 s)
            while not _refused(b.port):
                assert time.monotonic() - signalled < 1.0, "still accepting connections after SIGTERM"
                await asyncio.sleep(0.05)

            outcomes = await asyncio.gather(*streams)
            answers = [await plain, await picture]
            ended = time.monotonic()
            assert _refused(b.port)

        for content, outcome in zip(short, outcomes[: len(short)], strict=True):
            assert (outcome.end, outcome.text) == ("done", expected(content))
            assert outcome.ended_at - signalled < grace
        for content, outcome in zip(long, outcomes[len(short) :], strict=True):
            assert outcome.status == 200
            assert outcome.end == "error", outcome
            assert outcome.error["code"] == "server_shutting_down"
            assert outcome.error["type"] == "server_error"
            assert outcome.text and expected(content).startswith(outcome.text)  # exact, up to the end
            assert grace - 0.2 < outcome.ended_at - signalled < grace + 2
        for status, body in answers:  # non-stream requests get a 503 saying why
            assert status == 503 and body["error"]["code"] == "server_shutting_down", body
        assert ended - signalled < grace + 2

        rc = await asyncio.to_thread(b.proc.wait, 5)
        assert rc == 0, b.log.read_text()[-3000:]
        assert time.monotonic() - signalled < grace + 4
    log = b.log.read_text()
    assert "Traceback" not in log, log[-3000:]
