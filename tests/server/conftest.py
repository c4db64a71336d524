"""Session-wide live stacks (simulator + bridge) for each gateway generation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from livestack import Stack, start_stack


@pytest.fixture(scope="session")
def json_stack() -> Iterator[Stack]:
    stack = start_stack("json")
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def form_stack() -> Iterator[Stack]:
    stack = start_stack("form")
    yield stack
    stack.stop()


@pytest.fixture(params=["json", "form"], scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The bridge (gateway_api auto) against each gateway generation."""
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]
