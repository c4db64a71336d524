"""What the handlers need at run time, built by the app's lifespan."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..router import Router

_PREFIX = "req_" + os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process run: a random prefix and a counter (cheaper than a uuid4 per request)."""
    return f"{_PREFIX}{next(_COUNTER):08x}"


@dataclass
class AppContext:
    settings: Settings
    router: Router
    simulator: Any = field(default=None)  # a RunningSimulator when no gateway is configured
