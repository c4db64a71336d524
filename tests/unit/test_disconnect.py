"""cancel_on_disconnect: both the protocol callback and the watcher-task fallback."""

from __future__ import annotations

import asyncio
from typing import Any

from oai_bridge.server.disconnect import cancel_on_disconnect
from oai_bridge.server.protocol import DISCONNECT_CALLBACKS


async def test_watcher_fallback_cancels_the_block_and_absorbs_it() -> None:
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    reached_end = False
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, gone.set)
    with cancel_on_disconnect({}, receive) as guard:
        await asyncio.sleep(10)
        reached_end = True
    assert guard.disconnected and not reached_end
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # the task is usable afterwards


async def test_protocol_callback_cancels_without_a_watcher() -> None:
    callbacks: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the callback path must not call receive()")

    asyncio.get_running_loop().call_later(0.05, lambda: [cb() for cb in callbacks])
    with cancel_on_disconnect({DISCONNECT_CALLBACKS: callbacks}, receive) as guard:
        await asyncio.sleep(10)
    assert guard.disconnected
    assert callbacks == []  # unregistered at the end of the block (no reference cycle left)


async def test_finished_block_ignores_a_later_disconnect() -> None:
    callbacks: list[Any] = []
    with cancel_on_disconnect({DISCONNECT_CALLBACKS: callbacks}, None) as guard:
        await asyncio.sleep(0)
        registered = list(callbacks)
    assert len(registered) == 1 and callbacks == []
    registered[0]()  # a late connection-lost signal, e.g. the client closing its keep-alive connection
    await asyncio.sleep(0)
    assert not guard.disconnected
