"""A lean HTTP/1.1 client for the upstream hot path (I/O): keep-alive connections pooled per
origin, requests written in one ``transport.write``, responses parsed by ``httptools`` (the C
parser uvicorn already uses), bodies read as they arrive.

Why not aiohttp's ``ClientSession`` (the starting design): on the bridge's hot path it was the
largest single cost, about a third of the CPU of a proxied non-stream request (``bench/``,
py-spy). This client does only what the backends need — ``request`` → ``Response`` with
``status``, ``headers``, ``content_type``, ``content.readany()`` / ``read()``, ``release()`` /
``close()`` — the names aiohttp gives them, so readers work on either. aiohttp still does what
is not hot (multipart uploads of media, downloads of media URLs).

Failures raise subclasses of aiohttp's exceptions, so one mapping (``backends/http.py``'s
``transport_errors``, Livepeer's ``gateway_errors``) serves both clients:

* ``ConnectFailed`` (an ``aiohttp.ClientOSError``): no connection (refused, DNS, connect timeout);
* ``UpstreamClosed`` (an ``aiohttp.ServerDisconnectedError``): the connection ended before a
  response head (closed or reset; on a pooled connection, also a stale keep-alive);
* ``BodyBroken`` (an ``aiohttp.ClientPayloadError``): the connection ended in the middle of a body;
* ``BadResponse`` (an ``aiohttp.ClientResponseError``'s base ``ClientError``): not HTTP.

Gzip/deflate bodies are decoded (the client asks for none, a server may send them anyway).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from .. import __version__

__all__ = [
    "BadResponse",
    "BodyBroken",
    "ConnectFailed",
    "HttpClient",
    "Response",
    "UpstreamClosed",
    "multipart_form",
]

USER_AGENT = f"oai-bridge/{__version__}"
#: Bytes buffered from a response body before the connection stops reading (flow control).
HIGH_WATER = 1 << 18


class ConnectFailed(aiohttp.ClientOSError):
    """No connection could be made; ``os_error`` says why."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(os_error.errno, f"Cannot connect to {host}:{port}: {os_error.strerror or os_error}")
        self.os_error = os_error


class UpstreamClosed(aiohttp.ServerDisconnectedError):
    """The connection ended before the response head."""


class BodyBroken(aiohttp.ClientPayloadError):
    """The connection ended in the middle of the response body."""


class BadResponse(aiohttp.ClientError):
    """The upstream's answer is not HTTP/1.x."""


class _Origin:
    """What a URL's scheme and authority fix: where to connect, the ``Host`` header, TLS."""

    __slots__ = ("host", "host_header", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int | None) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {scheme!r} (http or https)")
        self.tls = scheme == "https"
        self.host = host
        self.port = port or (443 if self.tls else 80)
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port is None else f"{name}:{port}"


def _split(url: str) -> tuple[tuple[str, str, int | None], str]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme.lower(), parts.hostname, parts.port), target


_DEFLATE = object()  # Body._decoder until the first bytes of a "deflate" body arrive


class Body:
    """A response body as it arrives (aiohttp's ``StreamReader`` names: ``readany``, ``read``,
    ``at_eof``, ``is_eof``)."""

    __slots__ = ("_buffer", "_conn", "_decoder", "_eof", "_error", "_size", "_waiter")

    def __init__(self, conn: _Connection, encoding: str) -> None:
        self._conn = conn
        self._buffer: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = _DEFLATE  # zlib-wrapped or raw: told by the first bytes (_feed)

    # ------------------------------------------------------------ fed by the connection

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            if self._decoder is _DEFLATE:
                # RFC 9110 "deflate" is zlib-wrapped; some servers send raw deflate (no header).
                wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
                self._decoder = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                self._fail(BodyBroken("the response body does not decode"))
                return
            if not data:
                return
        self._buffer.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._buffer.append(tail)
                self._size += len(tail)
        self._eof = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
            self._eof = True
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------ read by the backend

    def is_eof(self) -> bool:
        """The whole body has arrived (possibly not read yet)."""
        return self._eof

    def at_eof(self) -> bool:
        """The whole body has arrived and been read."""
        return self._eof and not self._buffer

    def _take(self) -> bytes:
        buffer = self._buffer
        data = buffer.popleft() if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        if self._size > HIGH_WATER:
            self._conn.resume()
        self._size = 0
        return data

    async def readany(self) -> bytes:
        """What has arrived since the last read (waiting for some); ``b""`` at the end."""
        while not self._buffer:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = self._conn.loop.create_future()
            await self._waiter
        return self._take()

    async def read(self) -> bytes:
        """The rest of the body."""
        parts: list[bytes] = []
        while True:
            data = await self.readany()
            if not data:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(data)


class Response:
    """A response whose head has arrived; its body is ``content``. ``release()`` returns the
    connection to the pool once the body has been read whole, ``close()`` drops it (the upstream
    sees the connection close: how the bridge stops its work)."""

    __slots__ = ("_conn", "_done", "content", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: CIMultiDict[str]) -> None:
        self._conn = conn
        self._done = False
        self.status = status
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.content = Body(conn, headers.get("Content-Encoding", "").strip().lower())

    @property
    def content_type(self) -> str:
        raw = self.headers.get("Content-Type")
        if not raw:
            return "application/octet-stream"
        return raw.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool (or is closed on a failure)."""
        try:
            return await self.content.read()
        finally:
            self.release()

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        self._conn.release(reusable=self.content.at_eof() and self.content._error is None)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.release(reusable=False)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its response parsed as it comes."""

    def __init__(self, client: HttpClient, key: tuple[str, str, int | None], loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self._head: asyncio.Future[Response] | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._response: Response | None = None
        self._until_close = False  # a body with no length that ends when the connection does
        self._paused = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._response is None:  # bytes on an idle connection: not ours to parse
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._abort(BadResponse("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._abort(BadResponse(f"the upstream's answer is not valid HTTP ({exc})"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        local = self.closed  # closed on this side (close(), aclose()): not the end of a body with no length
        self.closed = True
        head = self._head
        if head is not None and not head.done():
            why = f": {exc}" if exc else ""
            head.set_exception(UpstreamClosed(f"the upstream closed the connection before answering{why}"))
        response = self._response
        if response is not None and not response.content.is_eof():
            if self._until_close and exc is None and not local:
                response.content._finish()
            else:
                response.content._fail(BodyBroken("the connection closed in the middle of the response body"))
        self.client._forget(self)

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = CIMultiDict()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers = self._headers
        if status < 200:  # 100 Continue and other interim answers: wait for the real one
            return
        response = Response(self, status, headers)
        self._response = response
        self._until_close = (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            and status not in (204, 304)
        )
        head = self._head
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.content._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None:  # the end of an interim (1xx) message
            return
        self.keep_alive = self.parser.should_keep_alive() and not self._until_close
        response.content._finish()

    # ------------------------------------------------------------ use

    def _abort(self, error: BaseException) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        elif self._response is not None:
            self._response.content._fail(BodyBroken(str(error)))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def send(self, data: bytes, timeout: float | None) -> Response:
        """Write a whole request; the response once its head has arrived (``TimeoutError`` when
        it has not within ``timeout`` s: one timer, cheaper than ``asyncio.timeout``)."""
        assert self.transport is not None
        self._response = None
        self.keep_alive = False
        head: asyncio.Future[Response] = self.loop.create_future()
        self._head = head
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, head)
        self.transport.write(data)
        try:
            return await head
        except BaseException:
            self.close()  # an answer may still come: the connection cannot serve another request
            raise
        finally:
            self._head = None
            if timer is not None:
                timer.cancel()

    def release(self, *, reusable: bool) -> None:
        if reusable and self.keep_alive and not self.closed and not self._paused:
            self._response = None
            self.idle_since = time.monotonic()
            self.client._put(self)
        else:
            self.close()


def _expire(head: asyncio.Future[Response]) -> None:
    if not head.done():
        head.set_exception(TimeoutError())


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


class HttpClient:
    """Keep-alive connections to any number of origins (a backend has one client). Idle
    connections older than ``keepalive`` seconds are not reused."""

    def __init__(self, *, connect_timeout: float = 10.0, keepalive: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._idle: dict[tuple[str, str, int | None], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._urls: dict[str, tuple[tuple[str, str, int | None], _Origin, str]] = {}
        self.closed = False

    def _target(self, url: str) -> tuple[tuple[str, str, int | None], _Origin, str]:
        found = self._urls.get(url)
        if found is None:
            key, target = _split(url)
            found = (key, _Origin(*key), target)
            if len(self._urls) < 1024:  # a backend's handful of URLs; never grows without bound
                self._urls[url] = found
        return found

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send ``method url`` (with ``data`` as the body) and return once the head arrived;
        ``TimeoutError`` when connecting and the head together take over ``timeout`` s.
        A pooled connection that turns out closed raises ``UpstreamClosed`` like a fresh one
        the upstream closes: the caller retries once (``http.open_response``)."""
        if self.closed:
            raise RuntimeError("the HTTP client is closed")
        key, origin, target = self._target(url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\nUser-Agent: {USER_AGENT}\r\n"]
        if headers:
            for name, value in headers.items():
                if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                    raise ValueError(f"invalid character in the value of header {name!r}")
                lines.append(f"{name}: {value}\r\n")
        if data is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(data or b'')}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        conn = self._take(key)
        if conn is None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            conn = await self._connect(key, origin, timeout)
            if timeout is not None:
                timeout = max(timeout - (loop.time() - started), 0.0)
        return await conn.send(head + data if data else head, timeout)

    def _take(self, key: tuple[str, str, int | None]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        limit = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have timed out upstream
            if not conn.closed and conn.idle_since > limit:
                return conn
            conn.close()
        return None

    async def _connect(self, key: tuple[str, str, int | None], origin: _Origin, timeout: float | None) -> _Connection:
        """A new connection within ``connect_timeout`` (``ConnectFailed`` past it), or within the
        request's ``timeout`` when that is shorter (``TimeoutError`` past it)."""
        loop = asyncio.get_running_loop()
        tls = _tls() if origin.tls else None
        overall = timeout is not None and timeout < self.connect_timeout
        try:
            async with asyncio.timeout(timeout if overall else self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key, loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            if overall:
                raise
            raise ConnectFailed(
                origin.host, origin.port, OSError(f"no connection within {self.connect_timeout:g} s")
            ) from None
        except OSError as exc:
            raise ConnectFailed(origin.host, origin.port, exc) from None
        self._all.add(conn)
        return conn

    def connections(self) -> tuple[int, int]:
        """(open connections, idle ones in the pool)."""
        return len(self._all), sum(len(idle) for idle in self._idle.values())

    def _put(self, conn: _Connection) -> None:
        if self.closed:
            conn.close()
            return
        self._idle.setdefault(conn.key, []).append(conn)

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def aclose(self) -> None:
        """Close every connection (responses still being read end with ``BodyBroken``)."""
        self.closed = True
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost


def multipart_form(fields: Mapping[str, object]) -> tuple[bytes, str]:
    """Text form fields as a ``multipart/form-data`` body and its content type."""
    boundary = f"oai-bridge-{secrets.token_hex(12)}"
    parts = []
    for name, value in fields.items():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode()
            + str(value).encode()
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
