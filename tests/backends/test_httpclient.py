"""The lean HTTP/1.1 client (``backends/httpclient.py``) against real loopback servers, no mocks:
``asyncio.start_server`` sending scripted raw bytes (the framing is exactly what a test says), an
aiohttp.web server for multipart forms, TLS with a throwaway certificate. Every test runs under the
default asyncio loop and under uvloop (production's, whose transports are not ``asyncio.Transport``
subclasses): ``on_both_loops`` makes an async test a sync one parametrized over the loop factories.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import json
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
import uvloop
from aiohttp import web

from oai_bridge import __version__
from oai_bridge.backends import httpclient
from oai_bridge.backends.httpclient import BadResponse, BodyBroken, ConnectFailed, HttpClient, UpstreamClosed
from oai_bridge.simulators.common import FaultPlan, serve

pytestmark = pytest.mark.timeout(5)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
BOUND = 4.0  # each test's coroutine (pytest-timeout's 5 s is the backstop)
PROMPT = 1.0  # how long a peer may take to notice a close that should be prompt
UA = f"oai-bridge/{__version__}"


def on_both_loops(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test as a sync one that pytest runs once per loop factory (``loop_kind``)."""

    def sync_test(*args: Any, loop_kind: str, **kwargs: Any) -> None:
        async def bounded() -> None:
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == (loop_kind == "uvloop")
            async with asyncio.timeout(BOUND):
                await test(*args, **kwargs)

        with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
            runner.run(bounded())

    parameters = [*inspect.signature(test).parameters.values()]
    parameters.append(inspect.Parameter("loop_kind", inspect.Parameter.KEYWORD_ONLY))
    sync_test.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    sync_test.__name__, sync_test.__qualname__, sync_test.__doc__ = test.__name__, test.__qualname__, test.__doc__
    marked: Callable[..., None] = pytest.mark.parametrize("loop_kind", list(LOOPS))(sync_test)
    return marked


# ---------------------------------------------------------------- scripted raw servers

Step = bytes | float  # bytes to write (and drain), or seconds to wait
Steps = bytes | tuple[Step, ...]


class Conn:
    """One accepted connection, as a server script sees it."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer

    async def request(self) -> bytes | None:
        """One whole request (head and ``Content-Length`` body), logged; ``None`` at a clean EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            self.server.eofs += 1
            return None
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        request = head + (await self.reader.readexactly(int(length[1])) if length else b"")
        self.server.requests.append(request)
        return request

    async def send(self, steps: Steps) -> None:
        for step in (steps,) if isinstance(steps, bytes) else steps:
            if isinstance(step, bytes):
                self.writer.write(step)
                await self.writer.drain()
            else:
                await asyncio.sleep(step)

    async def wait_eof(self) -> None:
        """Until the client closes its end (what it sends meanwhile is dropped)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.server.eofs += 1

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """``asyncio.start_server`` on a free loopback port; ``handler`` scripts each connection.
    Counts accepted connections (``accepted``) and those the client closed (``eofs``), logs the
    raw requests; a script's failure (not a client going away) fails the test."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.host, self.tls = handler, host, tls
        self.accepted = self.eofs = self.port = 0
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        if self.errors and exc[0] is None:
            raise self.errors[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            await self.handler(Conn(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass  # the client went away (on purpose), or the test is over (a task that ends cancelled: logged)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)

    async def closed_by_client(self, count: int = 1) -> None:
        """Wait (at most ``PROMPT`` s) until ``count`` connections were closed by the client."""
        async with asyncio.timeout(PROMPT):
            while self.eofs < count:
                await asyncio.sleep(0.005)


def keep_alive(answer: Callable[[bytes], Steps] | Steps) -> Handler:
    """Every request on a connection gets ``answer`` (or ``answer(request)``), until the client closes."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            await conn.send(answer(request) if callable(answer) else answer)

    return handler


def once(*steps: Step, then: Literal["fin", "eof", "reset"] = "fin") -> Handler:
    """Read one request, send ``steps``, then close (a FIN), wait for the client to close, or reset."""

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(steps)
        if then == "eof":
            await conn.wait_eof()
        elif then == "reset":
            conn.reset()

    return handler


def ok(body: bytes = b"ok", *headers: str) -> bytes:
    """A ``200`` with a ``Content-Length`` body (keep-alive: HTTP/1.1's default)."""
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def path_of(request: bytes) -> str:
    return request.split(b" ", 2)[1].decode()


def client(**options: Any) -> contextlib.aclosing[HttpClient]:
    return contextlib.aclosing(HttpClient(**options))


async def get(http: HttpClient, url: str) -> bytes:
    return await (await http.request("GET", url)).read()


async def assert_no_connections(http: HttpClient) -> None:
    """After pending transport callbacks (``connection_lost``) ran: nothing open, nothing pooled."""
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert http.connections() == (0, 0)


async def read_pieces(response: httpclient.Response, *, pause: float = 0.0) -> list[bytes]:
    pieces = []
    while piece := await response.content.readany():
        pieces.append(piece)
        await asyncio.sleep(pause)
    return pieces


# ---------------------------------------------------------------- 1. bodies


@on_both_loops
async def test_content_length_body() -> None:
    raw = b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-A: a\r\nx-a: b\r\nX-N: caf\xe9\r\n\r\nhello world"
    async with RawServer(keep_alive(raw)) as server, client() as http:
        response = await http.request("GET", server.url + "/x")
        assert response.status == 201
        assert response.headers["content-length"] == "11"
        assert response.headers.getall("X-a") == ["a", "b"]
        assert response.headers["x-n"] == "caf\u00e9"  # header values are latin-1
        assert await response.read() == b"hello world"
        assert response.content.at_eof() and response.content.is_eof()
        assert await response.content.readany() == b""
        assert http.connections() == (1, 1)


def in_pieces(*pieces: bytes, delay: float = 0.05) -> tuple[Step, ...]:
    """A chunked response whose chunks come ``delay`` s apart."""
    steps: list[Step] = [CHUNKED]
    for piece in pieces:
        steps += [delay, chunk(piece)]
    return (*steps, delay, b"0\r\n\r\n")


@on_both_loops
async def test_chunked_body_in_pieces() -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"b" * 300]
    async with RawServer(keep_alive(in_pieces(*pieces))) as server, client() as http:
        response = await http.request("GET", server.url + "/stream")
        assert response.status == 200
        assert not response.content.is_eof()
        assert await read_pieces(response) == pieces  # readany: each piece as it came
        assert response.content.at_eof()
        response.release()
        assert http.connections() == (1, 1)
        assert await get(http, server.url) == b"".join(pieces)  # read: all of them
        assert http.connections() == (1, 1)  # read() released it: the chunked body ended cleanly


@on_both_loops
async def test_body_until_close_completes_on_a_clean_close() -> None:
    script = once(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc", 0.05, b"def", 0.05)  # then a FIN
    async with RawServer(script) as server, client() as http:
        response = await http.request("GET", server.url)
        assert await response.content.readany() == b"abc"
        assert not response.content.is_eof()  # no length: complete only when the connection ends
        assert await response.content.readany() == b"def"
        assert not response.content.is_eof()
        assert await response.content.readany() == b""
        assert response.content.at_eof()
        response.release()
        await assert_no_connections(http)  # such a connection is never reused


# ---------------------------------------------------------------- 2. keep-alive


@on_both_loops
async def test_keep_alive_reuses_one_connection() -> None:
    async with RawServer(keep_alive(lambda r: ok(path_of(r).encode()))) as server, client() as http:
        for n in range(3):
            assert await get(http, f"{server.url}/{n}") == f"/{n}".encode()
            assert http.connections() == (1, 1)
        assert server.accepted == 1
        assert len(server.requests) == 3


@pytest.mark.parametrize(
    "answer",
    [ok(b"bye", "Connection: close"), b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye"],
    ids=["connection-close", "http-1.0"],
)
@on_both_loops
async def test_a_response_that_ends_the_connection_is_not_reused(answer: bytes) -> None:
    async with RawServer(once(answer, then="eof")) as server, client() as http:
        assert await get(http, server.url) == b"bye"
        await server.closed_by_client()  # the client closed it, not the server
        await assert_no_connections(http)
        assert await get(http, server.url) == b"bye"
        assert server.accepted == 2


@on_both_loops
async def test_release_before_the_body_was_read_closes_the_connection() -> None:
    def answer(request: bytes) -> bytes:
        if path_of(request) == "/partial":  # half the body now, the rest never
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"
        return ok(b"0123456789")  # the whole body, but the client will not read it

    async with RawServer(keep_alive(answer)) as server, client() as http:
        for n, path in enumerate(["/partial", "/whole"], start=1):
            response = await http.request("GET", server.url + path)
            await asyncio.sleep(0.05)  # the (whole or partial) body has arrived
            response.release()
            await server.closed_by_client(n)
            await assert_no_connections(http)
        assert await get(http, server.url + "/whole") == b"0123456789"
        assert server.accepted == 3


@on_both_loops
async def test_idle_connection_the_server_closed_is_not_reused() -> None:
    async with RawServer(once(ok(b"once"))) as server, client() as http:  # keep-alive by its headers, then a FIN
        assert await get(http, server.url) == b"once"
        await assert_no_connections(http)  # the server's close dropped it from the pool
        assert await get(http, server.url) == b"once"
        assert server.accepted == 2


@on_both_loops
async def test_keepalive_expiry_opens_a_new_connection() -> None:
    async with RawServer(keep_alive(ok())) as server, client(keepalive=0.05) as http:
        assert await get(http, server.url) == b"ok"
        assert await get(http, server.url) == b"ok"
        assert server.accepted == 1  # within the keep-alive time: reused
        await asyncio.sleep(0.1)
        assert await get(http, server.url) == b"ok"
        assert server.accepted == 2
        await server.closed_by_client()  # the expired connection was closed, not leaked
        assert http.connections() == (1, 1)


@on_both_loops
async def test_reused_connection_closed_without_answering() -> None:
    """A pooled connection the upstream drops as the request goes out: ``UpstreamClosed`` like a
    fresh one (``http.open_response`` retries once), and the retry gets a fresh connection."""

    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(ok(b"first"))
        await conn.request()  # the second request on this connection: dropped

    async with RawServer(script) as server, client() as http:
        assert await get(http, server.url) == b"first"
        assert http.connections() == (1, 1)
        with pytest.raises(UpstreamClosed):
            await http.request("GET", server.url)
        await assert_no_connections(http)
        assert await get(http, server.url) == b"first"
        assert server.accepted == 2


# ---------------------------------------------------------------- 3. the request on the wire


@on_both_loops
async def test_request_bytes_on_the_wire() -> None:
    async with RawServer(keep_alive(ok())) as server, client() as http:
        host = f"127.0.0.1:{server.port}"
        headers = {"Authorization": "Bearer k-1", "Content-Type": "application/json"}
        params = {"b": "c d", "e": "\u00fc/&="}
        await (await http.request("POST", server.url + "/v1?a=1", headers=headers, data=b"{}", params=params)).read()
        await (await http.request("GET", server.url, params={"q": "1"})).read()
        await (await http.request("POST", server.url + "/empty#fragment")).read()
        await (await http.request("GET", server.url + "/p?x=%20y", headers={"Accept": "*/*"})).read()
        assert server.requests == [
            f"POST /v1?a=1&b=c+d&e=%C3%BC%2F%26%3D HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {UA}\r\n"
            f"Authorization: Bearer k-1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode(),
            f"GET /?q=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {UA}\r\n\r\n".encode(),
            f"POST /empty HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {UA}\r\nContent-Length: 0\r\n\r\n".encode(),
            f"GET /p?x=%20y HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {UA}\r\nAccept: */*\r\n\r\n".encode(),
        ]
        assert server.accepted == 1


def ipv6_loopback() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return True
    return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
@on_both_loops
async def test_host_header_of_an_ipv6_origin() -> None:
    async with RawServer(keep_alive(ok()), host="::1") as server, client() as http:
        assert await get(http, server.url + "/v6") == b"ok"
        assert server.requests[0].split(b"\r\n")[1] == f"Host: [::1]:{server.port}".encode()


@on_both_loops
async def test_invalid_requests_are_refused_before_sending() -> None:
    injections = [{"X-A": "v\r\nInjected: 1"}, {"X-A": "v\nInjected: 1"}, {"X-A": "v\r"}, {"X-A\r\nInjected": "v"}]
    async with RawServer(keep_alive(ok())) as server, client() as http:
        for headers in injections:  # a CR or LF in a header value (or name)
            with pytest.raises(ValueError, match="invalid character"):
                await http.request("GET", server.url, headers=headers)
        with pytest.raises(ValueError, match="unsupported URL scheme"):
            await http.request("GET", f"ftp://127.0.0.1:{server.port}/x")
        with pytest.raises(ValueError, match="not an absolute"):
            await http.request("GET", "/relative/path")
        assert server.accepted == 0  # nothing was sent
        assert http.connections() == (0, 0)
        assert await get(http, server.url) == b"ok"


# ---------------------------------------------------------------- 4. failures


@on_both_loops
async def test_connection_refused() -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client() as http:
        with pytest.raises(ConnectFailed) as caught:
            await http.request("GET", f"http://127.0.0.1:{port}/")
        assert isinstance(caught.value, aiohttp.ClientOSError)  # like every failure, an aiohttp exception:
        assert issubclass(UpstreamClosed, aiohttp.ServerDisconnectedError) and issubclass(
            BadResponse, aiohttp.ClientError
        )
        assert isinstance(caught.value.os_error, ConnectionRefusedError)
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert http.connections() == (0, 0)


NO_HEAD: dict[str, tuple[Handler, type[aiohttp.ClientError]]] = {
    "fin": (once(), UpstreamClosed),  # closed without answering
    "reset": (once(then="reset"), UpstreamClosed),
    "ssh": (once(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", then="eof"), BadResponse),  # not HTTP: the client drops it
    "tls": (once(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", then="eof"), BadResponse),
    "bad-status": (once(b"HTTP/1.1 2OO X\r\n\r\n", then="eof"), BadResponse),
}


@pytest.mark.parametrize("case", list(NO_HEAD))
@on_both_loops
async def test_no_response_head(case: str) -> None:
    script, error = NO_HEAD[case]
    async with RawServer(script) as server, client() as http:
        with pytest.raises(error):
            await http.request("POST", server.url, data=b"{}")
        if error is BadResponse:
            await server.closed_by_client()
        await assert_no_connections(http)


BROKEN_BODIES: dict[str, tuple[tuple[Step, ...], Literal["fin", "eof", "reset"], bytes]] = {
    "chunked-cut": ((CHUNKED + chunk(b"ab"), 0.05, b"9\r\ncd"), "fin", b"abcd"),  # a chunk of 9 cut after 2 (a FIN)
    "length-cut": ((b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", 0.05, b"cd"), "fin", b"abcd"),  # 4 bytes of 9
    # no length (the body ends with the connection), but a reset: not a clean end
    "until-close-reset": ((b"HTTP/1.1 200 OK\r\n\r\nab", 0.1), "reset", b"ab"),
    # not HTTP framing, or not the encoding it says: the client drops the connection
    "bad-chunk-size": ((CHUNKED + chunk(b"ab"), 0.05, b"zz-not-a-size\r\n"), "eof", b"ab"),
    "bad-gzip": ((ok(b"not gzip", "Content-Encoding: gzip"),), "eof", b""),
}


@pytest.mark.parametrize("case", list(BROKEN_BODIES))
@on_both_loops
async def test_a_body_broken_in_the_middle(case: str) -> None:
    steps, then, expected = BROKEN_BODIES[case]
    async with RawServer(once(*steps, then=then)) as server, client() as http:
        response = await http.request("GET", server.url)
        received = b""
        with pytest.raises(BodyBroken) as caught:
            while True:  # what arrived before the break, then the failure
                received += await response.content.readany()
        assert isinstance(caught.value, aiohttp.ClientPayloadError)
        assert received == expected
        response.release()
        if then == "eof":
            await server.closed_by_client()
        await assert_no_connections(http)  # never pooled after a broken body


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose SYNs go unanswered (no network needed): a listener with a backlog
    of 0 that never accepts, its queue filled by one connection; Linux then drops further SYNs."""
    with socket.socket() as listener, socket.socket() as filler, socket.socket() as probe:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        filler.settimeout(1.0)
        filler.connect(("127.0.0.1", port))
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            yield port
        else:
            pytest.skip("this kernel completes loopback connections a full listener never accepts")


@on_both_loops
async def test_connect_timeout() -> None:
    with unanswered_port() as port:
        async with client(connect_timeout=0.2) as http:
            started = time.monotonic()
            with pytest.raises(ConnectFailed, match="no connection within 0.2 s"):
                await http.request("GET", f"http://127.0.0.1:{port}/")
            assert 0.15 < time.monotonic() - started < 1.0
            assert http.connections() == (0, 0)


# ---------------------------------------------------------------- 5-7. content encodings, interim answers, flow control

TEXT = b"".join(b'data: {"n": %d, "text": "hello"}\n\n' % n for n in range(2000))


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
@on_both_loops
async def test_compressed_bodies_are_decoded(encoding: str, framing: str) -> None:
    packed = gzip.compress(TEXT) if "gzip" in encoding else zlib.compress(TEXT)
    answer: Steps = ok(packed, f"Content-Encoding: {encoding}")
    if framing == "chunked":  # split anywhere, delivered in pieces
        pieces = [packed[start : start + 1000] for start in range(0, len(packed), 1000)]
        head = CHUNKED.replace(b"\r\n\r\n", f"\r\nContent-Encoding: {encoding}\r\n\r\n".encode())
        answer = (head, *in_pieces(*pieces, delay=0.001)[1:])
    async with RawServer(keep_alive(answer)) as server, client() as http:
        for _ in range(2):  # and the connection is reusable after a decoded body
            response = await http.request("GET", server.url)
            assert response.headers["Content-Encoding"] == encoding
            assert await response.read() == TEXT
        assert server.accepted == 1


INTERIM = (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")


@pytest.mark.parametrize(
    "answer",
    [b"".join([*INTERIM, ok(b"final", "X-Final: yes")]), (*INTERIM, 0.02, ok(b"final", "X-Final: yes"))],
    ids=["one-write", "separate-writes"],
)
@on_both_loops
async def test_interim_responses_are_skipped(answer: Steps) -> None:
    async with RawServer(keep_alive(answer)) as server, client() as http:
        for _ in range(2):
            response = await http.request("POST", server.url, data=b"x")
            assert response.status == 200
            assert response.headers["X-Final"] == "yes"
            assert "Link" not in response.headers  # the interim answer's headers are not the final's
            assert await response.read() == b"final"
        assert server.accepted == 1


@on_both_loops
async def test_flow_control_a_large_body_read_slowly() -> None:
    body = random.Random(7).randbytes(2 << 20)  # 2 MiB, 8 times HIGH_WATER
    async with RawServer(keep_alive(ok(body))) as server, client() as http:
        for _ in range(2):
            response = await http.request("GET", server.url + "/big")
            await asyncio.sleep(0.2)  # time to send all of it, were the client still reading
            pieces = await read_pieces(response, pause=0.005)
            assert b"".join(pieces) == body
            assert max(map(len, pieces)) <= 2 * httpclient.HIGH_WATER  # never buffered much more (one socket read)
            response.release()
            assert http.connections() == (1, 1)  # read whole and resumed: reusable
        assert server.accepted == 1


# ---------------------------------------------------------------- 8-10. closing and cancelling


@on_both_loops
async def test_cancelling_the_wait_for_the_head_closes_the_connection() -> None:
    async def script(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            if path_of(request) == "/hang":
                await conn.wait_eof()
                return
            await conn.send(ok())

    async with RawServer(script) as server, client() as http:
        assert await get(http, server.url) == b"ok"  # pooled first: the cancelled request reuses it
        task = asyncio.create_task(http.request("GET", server.url + "/hang"))
        async with asyncio.timeout(PROMPT):
            while len(server.requests) < 2:
                await asyncio.sleep(0.005)
        assert http.connections() == (1, 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.closed_by_client()
        await assert_no_connections(http)
        assert await get(http, server.url) == b"ok"  # still usable
        assert server.accepted == 2
        assert http.connections() == (1, 1)


@on_both_loops
async def test_aclose_closes_pooled_connections() -> None:
    async with RawServer(keep_alive(ok())) as server:
        http = HttpClient()
        assert await get(http, server.url) == b"ok"
        assert await get(http, server.url + "/other") == b"ok"
        assert http.connections() == (1, 1)
        response = await http.request("GET", server.url)  # its body came whole with the head
        assert http.connections() == (1, 0)
        await http.aclose()
        await server.closed_by_client()
        assert http.connections() == (0, 0)
        assert await response.read() == b"ok"  # and released after aclose: not pooled
        assert http.connections() == (0, 0)
        with pytest.raises(RuntimeError, match="closed"):
            await http.request("GET", server.url)
        await http.aclose()  # twice: harmless
        assert server.accepted == 1


@pytest.mark.parametrize("how", ["close", "aclose"])
@pytest.mark.parametrize(
    "answer", [CHUNKED + chunk(b"part"), b"HTTP/1.1 200 OK\r\n\r\npart"], ids=["chunked", "no-length"]
)
@on_both_loops
async def test_closing_in_the_middle_of_a_body(answer: bytes, how: str) -> None:
    async with RawServer(once(answer, then="eof")) as server, client() as http:  # a stream that goes on
        response = await http.request("GET", server.url)
        assert await response.content.readany() == b"part"
        started = time.monotonic()
        if how == "close":
            response.close()
        else:
            await http.aclose()
        await server.closed_by_client()  # the upstream sees its client leave: how the bridge stops its work
        assert time.monotonic() - started < 0.5
        with pytest.raises(BodyBroken):  # not a clean (truncated) end
            await response.content.readany()
        response.release()  # after close: a no-op
        await assert_no_connections(http)


# ---------------------------------------------------------------- 11-12. multipart, content types, no-body statuses


@on_both_loops
async def test_multipart_form_is_parsed_back_by_aiohttp() -> None:
    fields: dict[str, object] = {
        "model": "whisper-1",
        "prompt": 'She said "hi",\r\nthen left;\nnext line \u2014 caf\u00e9 \u65e5\u672c \U0001f600',
        "temperature": 0.5,
        "max_tokens": 12,
        "empty": "",
        "looks-like-a-boundary": "--oai-bridge-\r\n--",
    }

    async def receive(request: web.Request) -> web.Response:
        form = await request.post()
        return web.json_response({"content_type": request.headers["Content-Type"], "fields": [*form.items()]})

    app = web.Application()
    app.router.add_post("/form", receive)
    upstream = await serve(app, FaultPlan())  # how the simulators serve
    try:
        url = upstream.url + "/form"
        body, content_type = httpclient.multipart_form(fields)
        assert content_type.startswith("multipart/form-data; boundary=oai-bridge-")
        assert len(content_type.partition("boundary=")[2]) == len("oai-bridge-") + 24
        async with client() as http:
            response = await http.request("POST", url, data=body, headers={"Content-Type": content_type})
            assert response.status == 200
            assert response.content_type == "application/json"
            assert json.loads(await response.read()) == {
                "content_type": content_type,
                "fields": [[name, str(value)] for name, value in fields.items()],
            }
        assert httpclient.multipart_form(fields)[1] != content_type  # a fresh boundary each time
    finally:
        await upstream.aclose()


CONTENT_TYPES: list[tuple[str | None, str]] = [
    ("application/json; charset=utf-8", "application/json"),
    ("Text/Event-Stream ;charset=UTF-8", "text/event-stream"),
    ('multipart/form-data; boundary="a;b"', "multipart/form-data"),
    ("text/plain", "text/plain"),
    ("", "application/octet-stream"),
    (None, "application/octet-stream"),
]


@on_both_loops
async def test_content_type_parsing() -> None:
    def answer(request: bytes) -> bytes:
        raw = CONTENT_TYPES[int(path_of(request)[1:])][0]
        return ok(b"{}", *([] if raw is None else [f"Content-Type: {raw}"]))

    async with RawServer(keep_alive(answer)) as server, client() as http:
        for n, (raw, expected) in enumerate(CONTENT_TYPES):
            response = await http.request("GET", f"{server.url}/{n}")
            assert response.content_type == expected, raw
            await response.read()
        assert server.accepted == 1


@pytest.mark.parametrize("status", [204, 304])
@on_both_loops
async def test_statuses_without_a_body(status: int) -> None:
    async with RawServer(keep_alive(f"HTTP/1.1 {status} X\r\nETag: x\r\n\r\n".encode())) as server, client() as http:
        for _ in range(2):
            response = await http.request("GET", server.url)
            assert response.status == status
            assert response.content.is_eof()  # no body to wait for, no close to wait for
            assert await response.read() == b""
            assert http.connections() == (1, 1)
        assert server.accepted == 1


# ---------------------------------------------------------------- TLS (https origins)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (the openssl command line)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    cert, key = (tmp_path_factory.mktemp("tls") / name for name in ("cert.pem", "key.pem"))
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    command += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run([*command, "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=10)
    return cert, key


@pytest.fixture
def tls(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The server's TLS context; the client's (made once, a module global) trusts the certificate."""
    cert, key = certificate
    monkeypatch.setattr(httpclient, "_TLS", ssl.create_default_context(cafile=str(cert)))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server


@on_both_loops
async def test_https_origin(tls: ssl.SSLContext) -> None:
    big = random.Random(3).randbytes(1 << 20)
    answer = keep_alive(lambda request: ok(big) if path_of(request) == "/big" else ok(b"secure"))
    async with RawServer(answer, tls=tls) as server, client() as http:
        assert server.url.startswith("https://")
        assert await get(http, server.url) == b"secure"
        response = await http.request("GET", server.url + "/big")
        await asyncio.sleep(0.1)
        assert b"".join(await read_pieces(response, pause=0.002)) == big  # flow control over TLS
        response.release()
        assert await get(http, server.url) == b"secure"
        assert server.accepted == 1
        assert server.requests[0].split(b"\r\n")[1] == f"Host: 127.0.0.1:{server.port}".encode()


@on_both_loops
async def test_https_origin_with_an_untrusted_certificate(tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpclient, "_TLS", None)  # the default context: the system's CAs
    async with RawServer(keep_alive(ok()), tls=tls) as server, client() as http:
        with pytest.raises(ConnectFailed) as caught:
            await http.request("GET", server.url)
        assert isinstance(caught.value.os_error, ssl.SSLCertVerificationError)
        assert http.connections() == (0, 0)
