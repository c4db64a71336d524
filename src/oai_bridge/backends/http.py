"""HTTP plumbing every HTTP backend shares (I/O): one pooled ``HttpClient`` per backend
(``httpclient.py``, the lean keep-alive client of the hot path), the request that waits for the
response head within the first-token limit, event readers with the idle limit, and the one
mapping of transport failures and upstream statuses to ``BridgeError``s.

The error codes are what the router's failover policy reads (``failover.classify``):

==========================  ======================================================  ==========
what happened               error                                                   code
==========================  ======================================================  ==========
cannot connect              ``UpstreamUnavailable`` 503                             ``upstream_unreachable``
closed before a response    ``UpstreamUnavailable`` 503                             ``server_disconnected``
reset / other socket error  ``UpstreamUnavailable`` 503                             ``connection_reset``
no response head in time    ``UpstreamTimeout`` 504                                 ``first_token_timeout``
no first event in time      ``UpstreamTimeout`` 504                                 ``first_token_timeout``
silence mid-stream          ``UpstreamTimeout`` 504                                 ``idle_timeout``
connection broke mid-body   ``UpstreamError`` 502                                   ``stream_cut``
body ended, no end marker   ``UpstreamError`` 502                                   ``stream_incomplete``
an event that isn't JSON    ``UpstreamError`` 502                                   ``malformed_event``
429                         ``RateLimited`` 429 (``retry_after`` from the headers)  ``rate_limit_exceeded``
500, 502                    ``UpstreamError`` 502                                   ``upstream_error``
503, 529                    ``UpstreamUnavailable`` 503                             ``upstream_unavailable``
504                         ``UpstreamTimeout`` 504                                 ``upstream_timeout``
other 4xx                   ``UpstreamRejected`` with the same status               its own
==========================  ======================================================  ==========
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson

from ..errors import BridgeError, UpstreamError, UpstreamTimeout, UpstreamUnavailable, retry_after, status_error
from ..ndjson import NDJSONDecoder
from ..redact import redact
from ..sse import ServerSentEvent, SSEDecoder
from .base import BackendConfig, Health
from .httpclient import ConnectFailed, HttpClient, Response

T = TypeVar("T")

__all__ = [
    "DRAIN_SECONDS",
    "HttpBackendBase",
    "StreamErrors",
    "drain",
    "lines",
    "open_response",
    "probe",
    "read_body",
    "request_twice",
    "retry_after",
    "settle",
    "sse_events",
    "status_error",
    "transport_errors",
]


@contextmanager
def transport_errors(what: str) -> Iterator[None]:
    """Map the client's exceptions (``HttpClient``'s subclass aiohttp's) raised inside the block
    before the response head; ``what`` names the upstream in messages (never a key)."""
    try:
        yield
    except aiohttp.ServerDisconnectedError:
        raise UpstreamUnavailable(
            f"{what} closed the connection without answering.", code="server_disconnected"
        ) from None
    except (aiohttp.ClientConnectorError, ConnectFailed) as exc:
        raise UpstreamUnavailable(
            f"Cannot connect to {what} ({exc.os_error}).", code="upstream_unreachable", retry_after=2.0
        ) from None
    except (aiohttp.ClientOSError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamUnavailable(
            f"The connection to {what} failed ({type(exc).__name__}).", code="connection_reset"
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The request to {what} failed ({type(exc).__name__}).") from None


async def request_twice(client: HttpClient, method: str, url: str, *, timeout: float, **kwargs: Any) -> Response:
    """``client.request``, once more when the connection closed before any answer (a pooled
    keep-alive connection the upstream had closed looks just like an upstream that closed without
    answering; the second attempt tells them apart). ``timeout`` covers both; the client's
    exceptions pass through (``TimeoutError`` past it)."""
    deadline = time.monotonic() + timeout
    try:
        return await client.request(method, url, timeout=timeout, **kwargs)
    except aiohttp.ServerDisconnectedError:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError from None
        return await client.request(method, url, timeout=left, **kwargs)


async def open_response(
    client: HttpClient,
    method: str,
    url: str,
    *,
    what: str,
    timeout: float,
    **kwargs: Any,
) -> Response:
    """Send a request and wait (at most ``timeout`` s) for the response head. A pooled keep-alive
    connection the upstream already closed gets one fresh attempt: a client cannot tell that
    apart from an upstream that closed without answering."""
    try:
        with transport_errors(what):
            return await request_twice(client, method, url, timeout=timeout, **kwargs)
    except TimeoutError:
        raise UpstreamTimeout(f"{what} sent nothing within {timeout:g} s.", code="first_token_timeout") from None


async def read_body(resp: Response, *, what: str, timeout: float) -> bytes:
    """The whole body (released afterwards)."""
    try:
        if resp.content.is_eof():  # the usual small answer came whole with its head: no timer needed
            return await resp.read()
        async with asyncio.timeout(timeout):
            return await resp.read()
    except TimeoutError:
        raise UpstreamTimeout(f"{what} did not finish its answer within {timeout:g} s.") from None
    except aiohttp.ClientError:
        raise UpstreamError(f"The connection to {what} broke during the answer.", code="stream_cut") from None
    finally:
        resp.release()


class IdleWatch:
    """One timer per body instead of two timer operations per read (each a ``call_at`` or a cancel,
    and a ``getpid`` syscall through ``get_running_loop``): the reader only stores when its pending
    read started in ``since`` (``None`` between reads), and the timer, due at most every ``limit`` s,
    expires ``deadline`` once a read has waited ``limit`` s. Time the consumer spends between reads
    never counts."""

    __slots__ = ("_deadline", "_handle", "_loop", "limit", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: asyncio.Timeout, limit: float) -> None:
        self._loop = loop
        self._deadline = deadline
        self.limit = limit
        self.since: float | None = loop.time()  # when the pending read started (None: not reading)
        self._handle = loop.call_at(self.since + limit, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        since = self.since
        if since is not None and now >= since + self.limit:
            self._deadline.reschedule(now)  # the read times out (TimeoutError inside the block)
            return
        self._handle = self._loop.call_at((since if since is not None else now) + self.limit, self._check)

    def set_limit(self, limit: float) -> None:
        if limit < self.limit:  # due sooner than the pending timer: re-arm it
            self._handle.cancel()
            self._handle = self._loop.call_at(self._loop.time() + limit, self._check)
        self.limit = limit

    def cancel(self) -> None:
        self._handle.cancel()


@dataclass(frozen=True, slots=True)
class StreamErrors:
    """How a backend words the failures of a body being read, when not as the table does:
    ``silent(code, limit)`` for a silence (``code`` is ``first_token_timeout`` before the first
    item, else ``idle_timeout``), ``broken()`` for a connection that broke."""

    silent: Callable[[str, float], BridgeError]
    broken: Callable[[], BridgeError]


async def _decoded(
    resp: Response,
    *,
    what: str,
    idle: float,
    first: float,
    decode: Callable[[bytes], list[T]],
    finish: Callable[[], list[T]],
    errors: StreamErrors | None = None,
) -> AsyncGenerator[T, None]:
    """What ``decode`` makes of the body as it comes: at most ``first`` s until the first decoded
    item (bytes that decode to nothing, like keep-alive comments, don't count), ``idle`` s between
    reads after it; ``finish()`` gives what is left when the body ends. The errors raised are the
    table's (``first_token_timeout`` / ``idle_timeout``, ``stream_cut``) unless ``errors`` says
    otherwise."""
    content = resp.content
    loop = asyncio.get_running_loop()
    code = "first_token_timeout"
    try:
        async with asyncio.timeout(None) as deadline:
            watch = IdleWatch(loop, deadline, first)
            try:
                while True:
                    watch.since = loop.time()
                    data = await content.readany()
                    watch.since = None
                    if not data:
                        break
                    items = decode(data)
                    if items:
                        if code == "first_token_timeout":
                            watch.set_limit(idle)
                            code = "idle_timeout"
                        for item in items:
                            yield item
            finally:
                watch.cancel()
    except TimeoutError:
        if errors is not None:
            raise errors.silent(code, watch.limit) from None
        where = "before its first event" if code == "first_token_timeout" else "in the middle of the answer"
        raise UpstreamTimeout(f"{what} went silent {where} for {watch.limit:g} s.", code=code) from None
    except aiohttp.ClientError:
        if errors is not None:
            raise errors.broken() from None
        raise UpstreamError(f"The connection to {what} broke in the middle of the answer.", code="stream_cut") from None
    for item in finish():
        yield item


def sse_events(
    resp: Response,
    *,
    what: str,
    idle: float,
    first: float | None = None,
    tail: Callable[[ServerSentEvent], bool] | None = None,
    errors: StreamErrors | None = None,
) -> AsyncGenerator[ServerSentEvent, None]:
    """The server-sent events of ``resp`` (comments skipped). An event the body ends in without
    its blank line is delivered only if ``tail(event)`` says it is whole (llama-server ends with a
    bare ``data: [DONE]``); otherwise it was cut and is dropped. ``errors``: see ``_decoded``."""
    decoder = SSEDecoder()

    def finish() -> list[ServerSentEvent]:
        if tail is None or not decoder.pending:
            return []
        return [e for e in decoder.feed(b"\n\n") if tail(e)]

    return _decoded(
        resp,
        what=what,
        idle=idle,
        first=idle if first is None else first,
        decode=decoder.feed,
        finish=finish,
        errors=errors,
    )


def lines(resp: Response, *, what: str, idle: float, first: float | None = None) -> AsyncGenerator[bytes, None]:
    """The non-empty lines of an NDJSON body (a last line without its newline included)."""
    decoder = NDJSONDecoder()

    def finish() -> list[bytes]:
        tail = decoder.flush()
        return [tail] if tail else []

    return _decoded(
        resp, what=what, idle=idle, first=idle if first is None else first, decode=decoder.feed, finish=finish
    )


DRAIN_SECONDS = 0.05


async def drain(resp: Response) -> None:
    """After an answer's end marker: read the body's terminator (bounded, never delays much) so
    the connection can go back to the pool."""
    if not resp.content.at_eof():
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await resp.content.read()
        except (TimeoutError, aiohttp.ClientError):
            pass


def settle(resp: Response, *, complete: bool) -> None:
    """Back to the pool after a complete, fully read body; otherwise close the connection, which
    stops the upstream's work at once (a client that left, a failure, a stop sequence)."""
    if complete and resp.content.at_eof():
        resp.release()
    else:
        resp.close()


async def probe(
    client: HttpClient,
    *,
    name: str,
    kind: str,
    base_url: str,
    path: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    ok_below: int = 500,
) -> Health:
    """``GET base_url + path`` as a health line: connected when it answers below ``ok_below``."""
    started = time.perf_counter()
    out: Health = {
        "name": name,
        "kind": kind,
        "url": redact(base_url),  # a URL's user:password never shows
        "status": "connected",
        "error": None,
        "latency_ms": None,
    }
    try:
        async with asyncio.timeout(timeout):
            resp = await client.request("GET", base_url + path, headers=headers)
            await resp.read()
            status = resp.status
    except TimeoutError:
        out["status"], out["error"] = "unreachable", f"no answer within {timeout:g} s"
        return out
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL or header the client refuses
        out["status"], out["error"] = "unreachable", redact(f"{type(exc).__name__}: {exc}")
        return out
    out["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if status >= ok_below:
        out["status"], out["error"] = "error", f"HTTP {status} from {path}"
    return out


class HttpBackendBase:
    """What an HTTP backend keeps: its config, one lazily created pooled client, and a health
    probe (``GET health_path``; any HTTP answer below 500 counts as connected)."""

    kind = "http"
    health_path = "/"

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.name
        self.base_url = config.base_url.rstrip("/")
        self._client: HttpClient | None = None
        self._created = int(time.time())
        #: How messages name this upstream: ``backend 'NAME' (kind)``.
        self.what = f"backend {self.name!r} ({self.kind})"

    def session(self) -> HttpClient:
        if self._client is None or self._client.closed:
            self._client = HttpClient(connect_timeout=self.config.connect_timeout)
        return self._client

    def health_headers(self) -> dict[str, str]:
        return {}

    def error_from_response(self, status: int, body: bytes, headers: Mapping[str, str]) -> BridgeError:
        """The ``BridgeError`` for an error status of this upstream (each kind reads its own
        error bodies; this default maps the status alone)."""
        return status_error(status, f"{self.what} answered HTTP {status}.", retry=retry_after(headers))

    async def post_json(self, path: str, body: Any, *, timeout: float, headers: Mapping[str, str]) -> Response:
        """POST ``body`` as JSON and wait (``timeout`` s) for the head: the 2xx response, or the
        mapped error of any other answer (its body read briefly, for the message)."""
        resp = await open_response(
            self.session(),
            "POST",
            self.base_url + path,
            what=self.what,
            timeout=timeout,
            data=orjson.dumps(body),
            headers=headers,
        )
        if resp.status < 300:
            return resp
        try:
            raw = await read_body(resp, what=self.what, timeout=min(timeout, 10.0))
        except BridgeError:  # the status says enough
            raw = b""
        raise self.error_from_response(resp.status, raw, resp.headers)

    async def health(self) -> Health:
        return await probe(
            self.session(),
            name=self.name,
            kind=self.kind,
            base_url=self.base_url,
            path=self.health_path,
            headers=self.health_headers(),
            timeout=min(self.config.connect_timeout, 5.0),
        )

    async def aclose(self) -> None:
        if self._client is not None and not self._client.closed:
            await self._client.aclose()
