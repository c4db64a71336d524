"""uvicorn's httptools protocol with coalesced writes.

uvicorn writes the response head and every body message with its own ``transport.write``: one
syscall and one TCP segment each. On the bridge's hot path that is the largest single cost
(``bench/``: about a fifth of the CPU of a non-stream request goes to the extra write). Here every
write made during one turn of the event loop is joined and sent at the end of that turn
(``loop.call_soon``): a head and its body leave together, and stream chunks the upstream delivered
in one read leave in one write. Nothing waits longer than the current loop iteration, so
streaming latency is unchanged.

It also bounds the request head (request line and headers), which httptools alone does not: a
head over uvicorn's ``h11_max_incomplete_event_size`` bytes (the CLI sets it from
``max_header_bytes``; the same knob bounds uvicorn's h11 protocol), counted as it arrives, gets a
431 with an OpenAI error body before the app sees it, and the connection is closed. A request
httptools cannot parse gets the same JSON body (400) instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import InvalidRequest
from .context import new_request_id

__all__ = ["DISCONNECT_CALLBACKS", "CoalescingHttpToolsProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """Wraps an ``asyncio.Transport``; ``write`` is deferred to the end of the loop iteration."""

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._buffer))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


#: Scope key under which the protocol offers a list of callbacks run when the connection is lost.
DISCONNECT_CALLBACKS = "oai_bridge.disconnect_callbacks"
#: The request head limit when uvicorn's config sets none (``Settings.max_header_bytes``'s default).
MAX_HEAD_BYTES = 64 << 10


def closing_error(error: InvalidRequest, reason: bytes) -> bytes:
    """A whole error response written by the protocol itself (the connection closes after it):
    the OpenAI error body and an ``x-request-id``, like every answer of the app."""
    body = error.to_json()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        error.status,
        reason,
        len(body),
    )
    return head + b"x-request-id: " + new_request_id().encode() + b"\r\nconnection: close\r\n\r\n" + body


def head_too_large(limit: int) -> bytes:
    """The 431 for a request head over ``limit`` bytes."""
    message = f"The request head (request line and headers) is larger than {limit} bytes."
    error = InvalidRequest(message, status=431, code="request_header_fields_too_large")
    return closing_error(error, b"Request Header Fields Too Large")


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with coalesced writes, and a cheap disconnect signal: each
    request's scope carries a list (``DISCONNECT_CALLBACKS``) whose callbacks run when the client's
    connection is lost, so a handler needs no watcher task to notice it."""

    _lost_callbacks: list[Callable[[], None]] | None = None
    # The request head limit: bytes of the current head read before this read (None once it is
    # complete), the size of this read, and whether the head was refused.
    _head: int | None = 0
    _reading = 0
    _head_refused = False
    _head_limit = MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._head_limit = self.config.h11_max_incomplete_event_size or MAX_HEAD_BYTES

    def data_received(self, data: bytes) -> None:
        self._reading = len(data)
        super().data_received(data)
        if self._head is not None:  # the head is still incomplete after this read
            self._head += len(data)
            if self._head > self._head_limit and not self.transport.is_closing():
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0

    def on_headers_complete(self) -> None:
        head, self._head = self._head, None
        # Only a head that may be over the limit (judged by the bytes read) is measured.
        if head is not None and head + self._reading > self._head_limit:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 16
            if size > self._head_limit:
                self._head_refused = True
                raise ValueError("request head too large")  # stops the parser: send_400_response
        super().on_headers_complete()
        callbacks: list[Callable[[], None]] = []
        self.scope[DISCONNECT_CALLBACKS] = callbacks  # type: ignore[literal-required]
        self._lost_callbacks = callbacks

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse (a plain-text 400 there)."""
        if self._head_refused:
            self._refuse_head()
            return
        self.transport.write(closing_error(InvalidRequest(msg, code="invalid_http_request"), b"Bad Request"))
        self.transport.close()

    def _refuse_head(self) -> None:
        self.logger.warning("Request head over %d bytes: answered 431, connection closed.", self._head_limit)
        self.transport.write(head_too_large(self._head_limit))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for callback in self._lost_callbacks or ():
            callback()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown has begun (it calls this on every connection): tell the app,
        which gives the requests in flight their grace period (``server/shutdown.py``)."""
        begin_drain = getattr(self.app, "begin_drain", None)
        if begin_drain is not None:
            begin_drain(self.server_state.tasks)
        super().shutdown()
