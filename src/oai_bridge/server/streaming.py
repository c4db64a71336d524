"""Chunks → SSE on the wire: the streaming contract of design §5, as a raw ASGI response.

- The first upstream chunk is awaited before the status is committed, so a refusal before the
  first token becomes a real HTTP error with an OpenAI body.
- While the upstream is silent, a ``: keep-alive`` comment goes out every ``keepalive`` seconds
  (committing 200 if it must: a later failure then becomes an error frame).
- Every chunk is ``data: <compact json>\\n\\n``; success ends with ``data: [DONE]\\n\\n`` and the body
  ends at once; a failure after the first byte ends with ``data: {"error": {...}}\\n\\n``.
- A client disconnect cancels the producer, which closes the upstream request.
- A stream still running when the shutdown grace ends gets a ``server_shutting_down`` error frame
  (``server/shutdown.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..errors import BridgeError, UpstreamError
from ..sse import DONE, KEEPALIVE
from ..types import ChatCompletionChunk
from .disconnect import cancel_on_disconnect
from .shutdown import Drain, shutting_down

log = logging.getLogger("oai_bridge.server")

Scope = dict[str, Any]
Message = dict[str, Any]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def json_message(
    status: int, body: bytes, request_id: str, headers: dict[str, str] | None = None
) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON response."""
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if headers:
        raw.extend((k.encode(), v.encode()) for k, v in headers.items())
    return (
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body, "more_body": False},
    )


def json_error_message(error: BridgeError, request_id: str) -> tuple[Message, Message]:
    return json_message(error.status, error.to_json(), request_id, error.headers())


def error_frame(exc: BaseException) -> bytes:
    if not isinstance(exc, BridgeError):
        exc = UpstreamError("The upstream failed in the middle of the answer.")
    return b"data: " + exc.to_json() + b"\n\n"


class SSEResponse:
    """ASGI response streaming ``chunks`` as OpenAI server-sent events."""

    __slots__ = (
        "_chunks",
        "_closed",
        "_drain",
        "_keepalive",
        "_last",
        "_ping_task",
        "_send",
        "_started",
        "_timer",
        "request_id",
    )

    def __init__(
        self,
        chunks: AsyncIterator[ChatCompletionChunk],
        *,
        request_id: str,
        keepalive: float,
        drain: Drain | None = None,
    ) -> None:
        self._chunks = chunks
        self._drain = drain
        self.request_id = request_id
        self._keepalive = keepalive
        self._started = False
        self._closed = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._send: Any = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self._send = send
        loop = asyncio.get_running_loop()
        if self._keepalive > 0:
            self._last = loop.time()
            self._timer = loop.call_at(self._last + self._keepalive, self._tick)
        try:
            with cancel_on_disconnect(scope, receive) as guard:
                await self._pump()
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        if guard.disconnected:
            log.info("client disconnected; upstream request closed (request %s)", self.request_id)

    async def _start(self) -> None:
        self._started = True
        headers = [*SSE_HEADERS, (b"x-request-id", self.request_id.encode())]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _body(self, data: bytes, more: bool = True) -> None:
        if not more:
            self._closed = True
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    def _tick(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        due = self._last + self._keepalive
        if loop.time() >= due:
            self._last = loop.time()
            self._ping_task = loop.create_task(self._ping())  # keep a reference while it runs
            due = self._last + self._keepalive
        self._timer = loop.call_at(due, self._tick)

    async def _ping(self) -> None:
        if self._closed:
            return
        if not self._started:
            await self._start()
        await self._body(KEEPALIVE)

    async def _end(self, error: BridgeError) -> None:
        """End the response with ``error``: its status and body before the first byte, else an
        error frame."""
        if self._started:
            await self._body(error_frame(error), more=False)
        else:
            start, body = json_error_message(error, self.request_id)
            self._closed = True
            await self._send(start)
            await self._send(body)

    async def _pump(self) -> None:
        chunks = self._chunks
        dumps = orjson.dumps
        loop = asyncio.get_running_loop()
        try:
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = None
            except BridgeError as exc:
                if not self._started:
                    start, body = json_error_message(exc, self.request_id)
                    self._closed = True
                    await self._send(start)
                    await self._send(body)
                    return
                raise
            if not self._started:
                await self._start()
            if first is not None:
                await self._body(b"data: " + dumps(first) + b"\n\n")
                self._last = loop.time()
                async for chunk in chunks:
                    await self._body(b"data: " + dumps(chunk) + b"\n\n")
                    self._last = loop.time()
            await self._body(DONE, more=False)
        except asyncio.CancelledError:
            if self._drain is None or not self._drain.absorb():
                raise
            if not self._closed:  # the shutdown grace is over: end the stream, say why
                await self._end(shutting_down())
        except Exception as exc:
            if isinstance(exc, BridgeError):
                log.warning("stream failed after the first byte (request %s): %s", self.request_id, exc.message)
            else:
                log.exception("stream failed after the first byte (request %s)", self.request_id)
            if self._closed:
                return
            if not self._started:
                start, body = json_error_message(
                    exc if isinstance(exc, BridgeError) else UpstreamError("The upstream failed."),
                    self.request_id,
                )
                self._closed = True
                await self._send(start)
                await self._send(body)
                return
            await self._body(error_frame(exc), more=False)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
