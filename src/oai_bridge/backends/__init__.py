"""Backends. ``BACKENDS`` is the only registry: ``kind`` → class. Each kind lives in its own
folder with ``wire.py`` (its types), ``translate.py`` (pure translation) and ``backend.py`` (I/O)."""

from .anthropic import AnthropicBackend
from .base import Backend
from .generic_sse import GenericSSEBackend
from .livepeer import LivepeerBackend
from .ollama import OllamaBackend
from .openai_compat import OpenAICompatBackend

BACKENDS: dict[str, type[Backend]] = {
    "livepeer": LivepeerBackend,
    "openai_compat": OpenAICompatBackend,
    "ollama": OllamaBackend,
    "anthropic": AnthropicBackend,
    "generic_sse": GenericSSEBackend,
}

__all__ = ["BACKENDS", "Backend"]
