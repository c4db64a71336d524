"""uvicorn's httptools protocol with coalesced writes.

uvicorn writes the response head and every body message with its own ``transport.write``: one
syscall and one TCP segment each. On the bridge's hot path that is the largest single cost
(``bench/``: about a fifth of the CPU of a non-stream request goes to the extra write). Here every
write made during one turn of the event loop is joined and sent at the end of that turn
(``loop.call_soon``): a head and its body leave together, and stream chunks the upstream delivered
in one read leave in one write. Nothing waits longer than the current loop iteration, so
streaming latency is unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with coalesced writes, and a cheap disconnect signal: each
    request's scope carries a list (``DISCONNECT_CALLBACKS``) whose callbacks run when the client's
    connection is lost, so a handler needs no watcher task to notice it."""

    _lost_callbacks: list[Callable[[], None]] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        callbacks: list[Callable[[], None]] = []
        self.scope[DISCONNECT_CALLBACKS] = callbacks  # type: ignore[literal-required]
        self._lost_callbacks = callbacks

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for callback in self._lost_callbacks or ():
            callback()
