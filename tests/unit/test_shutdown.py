"""``server.shutdown.Drain``: the grace, the cancellation at its end, and who may absorb it."""

from __future__ import annotations

import asyncio
import math

from oai_bridge.server.shutdown import Drain, last_resort, shutting_down


async def _request(drain: Drain, seconds: float, log: list[str]) -> None:
    try:
        await asyncio.sleep(seconds)
        log.append("finished")
    except asyncio.CancelledError:
        if not drain.absorb():
            log.append("cancelled")
            raise
        log.append("answered")
        await asyncio.sleep(0)  # the task is usable again: it can still send its error
        log.append("sent")


async def test_requests_finish_within_the_grace_and_the_rest_are_told() -> None:
    drain = Drain(0.2)
    log: list[str] = []
    tasks = {asyncio.create_task(_request(drain, s, log)) for s in (0.05, 5, 5)}
    await asyncio.sleep(0)
    drain.begin(tasks)
    drain.begin(tasks)  # once only
    assert drain.draining and not drain.expired
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks)
    assert drain.expired
    assert sorted(log) == ["answered", "answered", "finished", "sent", "sent"]


async def test_a_cancellation_before_the_end_of_the_grace_is_not_absorbed() -> None:
    drain = Drain(10)
    log: list[str] = []
    task = asyncio.create_task(_request(drain, 5, log))
    await asyncio.sleep(0)
    drain.begin({task})
    task.cancel()  # e.g. the client left
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and log == ["cancelled"]


def test_the_error_and_uvicorns_last_resort() -> None:
    error = shutting_down()
    assert (error.status, error.code, error.type) == (503, "server_shutting_down", "server_error")
    assert error.headers()["retry-after"] == "1"
    assert last_resort(25.0) == 30 and last_resort(0.5) == 6 and last_resort(math.inf) > 10**8
