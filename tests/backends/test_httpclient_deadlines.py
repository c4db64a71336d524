"""The lean HTTP client's request deadline (``timeout=``: connecting and the response head
together, one timer), raw deflate bodies and bytes arriving on an idle pooled connection, against
scripted loopback servers, on both loops (helpers from ``test_httpclient``)."""

from __future__ import annotations

import asyncio
import time
import zlib

import pytest
from test_httpclient import (
    TEXT,
    Conn,
    RawServer,
    client,
    get,
    keep_alive,
    ok,
    on_both_loops,
    path_of,
    unanswered_port,
)

pytestmark = pytest.mark.timeout(5)


async def slow_head(conn: Conn) -> None:
    """``/slow`` gets its answer after 0.5 s, anything else at once; keep-alive."""
    while (request := await conn.request()) is not None:
        await conn.send((0.5, ok()) if path_of(request) == "/slow" else ok())


@on_both_loops
async def test_a_head_that_comes_too_late_raises_timeout_and_drops_the_connection() -> None:
    async with RawServer(slow_head) as server, client() as http:
        assert await get(http, server.url) == b"ok"  # pooled: the late request reuses it
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await http.request("GET", server.url + "/slow", timeout=0.1)
        assert 0.08 < time.monotonic() - started < 0.4
        await server.closed_by_client()  # the late answer could not be told apart: closed
        assert http.connections() == (0, 0)
        assert await get(http, server.url) == b"ok"
        assert server.accepted == 2


@on_both_loops
async def test_a_head_within_the_deadline_cancels_its_timer() -> None:
    async with RawServer(slow_head) as server, client() as http:
        response = await http.request("GET", server.url + "/slow", timeout=2.0)
        assert await response.read() == b"ok"
        assert http.connections() == (1, 1)
        started = time.monotonic()
        assert await get(http, server.url) == b"ok"  # no stale timer fires on the reused connection
        await asyncio.sleep(0.1)
        assert time.monotonic() - started < 1.0 and http.connections() == (1, 1)


@on_both_loops
async def test_connecting_counts_against_the_deadline() -> None:
    """A deadline shorter than ``connect_timeout`` ends a hanging connect with ``TimeoutError``
    (the request's deadline), not ``ConnectFailed`` (the connect limit)."""
    with unanswered_port() as port:
        async with client(connect_timeout=3.0) as http:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await http.request("GET", f"http://127.0.0.1:{port}/", timeout=0.2)
            assert 0.15 < time.monotonic() - started < 1.0
            assert http.connections() == (0, 0)


@pytest.mark.parametrize("wrapped", [True, False], ids=["zlib-wrapped", "raw"])
@on_both_loops
async def test_deflate_bodies_wrapped_or_raw(wrapped: bool) -> None:
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    packed = packer.compress(TEXT) + packer.flush()
    async with RawServer(keep_alive(ok(packed, "Content-Encoding: deflate"))) as server, client() as http:
        for _ in range(2):
            assert await get(http, server.url) == TEXT
        assert server.accepted == 1


@on_both_loops
async def test_bytes_on_an_idle_pooled_connection_drop_it() -> None:
    """An upstream that sends something while no request is out (a stray answer, garbage) has lost
    track of the exchange: the pooled connection is closed, the next request opens a new one."""

    async def stray(conn: Conn) -> None:
        await conn.request()
        await conn.send((ok(), 0.05, ok(b"stray")))
        await conn.wait_eof()

    async with RawServer(stray) as server, client() as http:
        assert await get(http, server.url) == b"ok"
        assert http.connections() == (1, 1)
        await server.closed_by_client()  # the stray answer made the client close it
        assert http.connections() == (0, 0)
        assert await get(http, server.url) == b"ok"
        assert server.accepted == 2
