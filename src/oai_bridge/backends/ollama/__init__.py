"""Ollama backend (native API): ``wire`` (types), ``translate`` (pure), ``backend`` (I/O)."""

from .backend import OPTIONS, OllamaBackend
from .translate import (
    ChatSettings,
    StreamParser,
    build_embed_request,
    build_request,
    error_from_message,
    error_from_response,
    models_from_tags,
    parse_embed_response,
    parse_response,
    parse_stream,
)
from .wire import ChatRequest, ChatResponse, EmbedRequest, EmbedResponse

__all__ = [
    "OPTIONS",
    "ChatRequest",
    "ChatResponse",
    "ChatSettings",
    "EmbedRequest",
    "EmbedResponse",
    "OllamaBackend",
    "StreamParser",
    "build_embed_request",
    "build_request",
    "error_from_message",
    "error_from_response",
    "models_from_tags",
    "parse_embed_response",
    "parse_response",
    "parse_stream",
]
