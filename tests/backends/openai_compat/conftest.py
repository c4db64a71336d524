"""Fixtures of the openai_compat backend tests: a simulator on a free loopback port and a backend
pointed at it (short timeouts, so fault tests stay fast)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai_compat_helpers import KEY, MakeBackend, config

from oai_bridge.backends.openai_compat import OpenAICompatBackend
from oai_bridge.simulators.common import RunningServer
from oai_bridge.simulators.openai_compat import start


@pytest.fixture
async def osim() -> AsyncIterator[RunningServer]:
    server = await start(api_key=KEY)
    yield server
    await server.aclose()


@pytest.fixture
async def make_backend(osim: RunningServer) -> AsyncIterator[MakeBackend]:
    made: list[OpenAICompatBackend] = []

    def make(**fields: Any) -> OpenAICompatBackend:
        backend = OpenAICompatBackend.from_config(config(osim.url, **fields))
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> OpenAICompatBackend:
    return make_backend()
