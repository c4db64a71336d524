"""Backends. ``BACKENDS`` is the only registry: ``kind`` → class. Each kind lives in its own
folder with ``wire.py`` (its types), ``translate.py`` (pure translation) and ``backend.py`` (I/O)."""

from .base import Backend
from .livepeer import LivepeerBackend

BACKENDS: dict[str, type[Backend]] = {
    "livepeer": LivepeerBackend,
}

__all__ = ["BACKENDS", "Backend"]
