"""Fixtures of the Anthropic backend tests: the simulator on a loopback port and a backend for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from oai_bridge.backends.anthropic import AnthropicBackend
from oai_bridge.backends.base import BackendConfig
from oai_bridge.simulators import anthropic
from oai_bridge.simulators.common import RunningServer

API_KEY = "sk-ant-test-0123456789"

MakeBackend = Callable[..., AnthropicBackend]


@pytest.fixture
async def sim() -> AsyncIterator[RunningServer]:
    server = await anthropic.start(api_key=API_KEY)
    yield server
    await server.aclose()


@pytest.fixture
async def make_backend(sim: RunningServer) -> AsyncIterator[MakeBackend]:
    made: list[AnthropicBackend] = []

    def make(url: str | None = None, *, options: dict[str, Any] | None = None, **config: Any) -> AnthropicBackend:
        settings: dict[str, Any] = {"api_key": API_KEY, "first_token_timeout": 5.0, "idle_timeout": 5.0}
        settings.update(config)
        backend = AnthropicBackend.from_config(
            BackendConfig(name="claude", kind="anthropic", base_url=url or sim.url, options=options or {}, **settings)
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


@pytest.fixture
def backend(make_backend: MakeBackend) -> AnthropicBackend:
    return make_backend()
