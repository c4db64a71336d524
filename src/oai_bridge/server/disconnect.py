"""Stop the work of a request whose client has gone away.

``with cancel_on_disconnect(scope, receive) as guard:`` (inside a coroutine) runs its block in the request's own
task and cancels the block when the client leaves. Under the bridge's own uvicorn protocol
(``protocol.DISCONNECT_CALLBACKS``) the connection-lost callback does it at no cost per request;
under any other server one small watcher task waits for ``http.disconnect``. The cancellation is
absorbed at the end of the block (``guard.disconnected`` tells it happened), so the server never
sees it. Cancelling the block closes the upstream request (aiohttp drops the connection), which
in turn stops the gateway's work.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from .protocol import DISCONNECT_CALLBACKS

__all__ = ["cancel_on_disconnect"]


class cancel_on_disconnect:
    __slots__ = ("_active", "_receive", "_scope", "_task", "_watcher", "disconnected")

    def __init__(self, scope: dict[str, Any], receive: Any) -> None:
        self._scope = scope
        self._receive = receive
        self._active = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.disconnected = False

    def __enter__(self) -> cancel_on_disconnect:
        self._task = asyncio.current_task()
        self._active = True
        callbacks = self._scope.get(DISCONNECT_CALLBACKS)
        if callbacks is not None:
            callbacks.append(self._lost)
        else:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self

    def _lost(self) -> None:
        if self._active and self._task is not None:
            self.disconnected = True
            self._task.cancel()

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        self._lost()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._active = False
        task, self._task = self._task, None  # break the scope → callback → task cycle at once
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        else:
            callbacks = self._scope.get(DISCONNECT_CALLBACKS)
            if callbacks:
                callbacks.clear()
        if self.disconnected and exc_type is asyncio.CancelledError and task is not None:
            task.uncancel()
            return True
        return False
