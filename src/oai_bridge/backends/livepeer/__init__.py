"""Livepeer AI gateway backend: ``wire`` (types), ``translate`` (pure), ``backend`` (I/O)."""

from .backend import LivepeerBackend, LivepeerOptions, LivepeerTuning, chat, stream_chat
from .translate import StreamParser, build_request, error_from_response, parse_response, parse_stream
from .wire import GENERATIONS, Generation, LivepeerRequest

__all__ = [
    "GENERATIONS",
    "Generation",
    "LivepeerBackend",
    "LivepeerOptions",
    "LivepeerTuning",
    "LivepeerRequest",
    "StreamParser",
    "build_request",
    "chat",
    "error_from_response",
    "parse_response",
    "parse_stream",
    "stream_chat",
]
