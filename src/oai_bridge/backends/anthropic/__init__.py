"""Anthropic Messages API backend: ``wire`` (types), ``translate`` (pure), ``backend`` (I/O)."""

from .backend import OPTIONS, AnthropicBackend
from .translate import (
    HARMLESS_PARAMS,
    StreamParser,
    build_request,
    error_from_event,
    error_from_response,
    parse_models_page,
    parse_response,
    parse_stream,
)
from .wire import DEFAULT_MAX_TOKENS, DEFAULT_VERSION, FINISH_REASONS, MessagesRequest

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_VERSION",
    "FINISH_REASONS",
    "HARMLESS_PARAMS",
    "OPTIONS",
    "AnthropicBackend",
    "MessagesRequest",
    "StreamParser",
    "build_request",
    "error_from_event",
    "error_from_response",
    "parse_models_page",
    "parse_response",
    "parse_stream",
]
