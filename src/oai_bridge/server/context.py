"""What the handlers need at run time, built by the app's lifespan."""

from __future__ import annotations

import itertools
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..router import Router
from .shutdown import Drain

_PREFIX = "req_" + os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process run: a random prefix and a counter (cheaper than a uuid4 per request)."""
    return f"{_PREFIX}{next(_COUNTER):08x}"


def with_request_id(message: MutableMapping[str, Any], request_id: str) -> None:
    """Add ``x-request-id`` to an ``http.response.start`` message that has none."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers") or ())
    if not any(key.lower() == b"x-request-id" for key, _ in headers):
        headers.append((b"x-request-id", request_id.encode()))
        message["headers"] = headers


@dataclass
class AppContext:
    settings: Settings
    router: Router
    simulator: Any = field(default=None)  # a RunningSimulator when no gateway is configured
    drain: Drain = field(init=False)  # graceful shutdown (server/shutdown.py)

    def __post_init__(self) -> None:
        self.drain = Drain(self.settings.shutdown_grace)
