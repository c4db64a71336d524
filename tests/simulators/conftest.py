"""Fixtures shared by the simulator tests: a simulator on a free loopback port, a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from oai_bridge.simulators.livepeer import RunningSimulator, start_simulator


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    s = await start_simulator(port=0)
    yield s
    await s.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
