"""Anthropic Messages API wire shapes and constants (reference ``openai-anthropic-ollama.md`` §6).

``POST {base}/v1/messages`` takes a ``MessagesRequest`` and answers a ``Message`` (or, with
``stream: true``, SSE events each with an ``event:`` line: ``message_start``, per content block
``content_block_start`` / ``content_block_delta`` / ``content_block_stop``, ``message_delta``,
``message_stop``; ``ping`` and ``error`` anywhere). Errors are
``{"type": "error", "error": {"type", "message"}, "request_id"?}``.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from ...types import FinishReason

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
#: ``GET /v1/models`` accepts ``limit`` 1..1000.
MODELS_PAGE_LIMIT = 1000

#: Media types the API takes in base64 image sources.
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

#: ``stop_reason`` → OpenAI ``finish_reason`` (reference §6.7; unknown reasons map to ``stop``).
FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}

#: HTTP status → the ``error.type`` the API writes (reference §6.5); 4xx not listed →
#: ``invalid_request_error``, 5xx not listed → ``api_error``.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

#: ``error.type`` → the HTTP status it comes with (for ``event: error`` inside a 200 stream).
ERROR_STATUS: dict[str, int] = {
    **{kind: status for status, kind in ERROR_TYPES.items()},
    "invalid_request_error": 400,
    "conflict_error": 409,
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    if status == 503:
        return "overloaded_error"
    return "api_error" if status >= 500 else "invalid_request_error"


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class ImageSource(TypedDict, total=False):
    type: Literal["base64", "url"]
    media_type: str
    data: str
    url: str


class ImageBlock(TypedDict):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(TypedDict):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: NotRequired[str | list[TextBlock]]


ContentBlock = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock


class MessageParam(TypedDict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolParam(TypedDict):
    name: str
    description: NotRequired[str]
    input_schema: dict[str, Any]


class ToolChoice(TypedDict):
    type: Literal["auto", "any", "none", "tool"]
    name: NotRequired[str]
    disable_parallel_tool_use: NotRequired[bool]


class Metadata(TypedDict):
    user_id: str


class MessagesRequest(TypedDict):
    """``POST /v1/messages`` body: ``model``, ``max_tokens`` and ``messages`` are required."""

    model: str
    max_tokens: int
    messages: list[MessageParam]
    stream: bool
    system: NotRequired[str]
    stop_sequences: NotRequired[list[str]]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]
    metadata: NotRequired[Metadata]
    tools: NotRequired[list[ToolParam]]
    tool_choice: NotRequired[ToolChoice]


class Usage(TypedDict):
    """``input_tokens`` is the uncached part of the prompt; the whole prompt adds both cache counts."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: NotRequired[int | None]
    cache_read_input_tokens: NotRequired[int | None]
    service_tier: NotRequired[str | None]


class Message(TypedDict):
    """The non-stream answer (also ``message_start.message``, with empty content)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


class ErrorDetail(TypedDict):
    type: str
    message: str


class ErrorBody(TypedDict):
    type: Literal["error"]
    error: ErrorDetail
    request_id: NotRequired[str]


class ModelInfo(TypedDict):
    type: Literal["model"]
    id: str
    display_name: str
    created_at: str  # RFC 3339


class ModelPage(TypedDict):
    """``GET /v1/models``: newest first, paged with ``after_id`` / ``before_id`` / ``limit``."""

    data: list[ModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None
