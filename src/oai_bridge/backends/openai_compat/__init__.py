"""OpenAI-compatible backend (OpenAI, vLLM, llama.cpp, LM Studio): ``wire`` (shapes),
``translate`` (pure: request pass-through, stream normalizer, errors), ``backend`` (I/O)."""

from .backend import OpenAICompatBackend, OpenAICompatOptions
from .translate import (
    StreamNormalizer,
    build_embeddings_request,
    build_request,
    error_details,
    error_from_response,
    parse_embeddings,
    parse_models,
    parse_response,
    parse_stream,
    stream_error,
)
from .wire import CONTINUE_STYLES, ContinueStyle

__all__ = [
    "CONTINUE_STYLES",
    "ContinueStyle",
    "OpenAICompatBackend",
    "OpenAICompatOptions",
    "StreamNormalizer",
    "build_embeddings_request",
    "build_request",
    "error_details",
    "error_from_response",
    "parse_embeddings",
    "parse_models",
    "parse_response",
    "parse_stream",
    "stream_error",
]
