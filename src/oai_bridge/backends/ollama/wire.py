"""Ollama's native API wire shapes (reference ``openai-anthropic-ollama.md`` §7; OLL ``api/types.go``).

Streaming is Ollama's default: a body of NDJSON lines (``application/x-ndjson``), one
``ChatResponse`` per line, the last with ``"done": true``, ``done_reason`` and the counts and
durations (integers, nanoseconds). ``"stream": false`` gives that last object alone, with the whole
message. Errors are ``{"error": "<string>"}``: with a real status before the first line, and as an
extra line (status stays 200) once the stream has started. Tool calls arrive whole, with the
arguments as a JSON **object**.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

CHAT_PATH = "/api/chat"
EMBED_PATH = "/api/embed"
TAGS_PATH = "/api/tags"
VERSION_PATH = "/api/version"
NDJSON = "application/x-ndjson"

#: ``done_reason`` values (OLL ``llm/server.go`` DoneReason): ``load``/``unload`` answer a request
#: with no messages (load or unload the model), which the bridge never sends.
DoneReason = Literal["stop", "length", "load", "unload"]


class ToolCallFunction(TypedDict):
    name: str
    arguments: dict[str, Any]  # an object, not a JSON string (OpenAI's form)
    index: NotRequired[int]


class ToolCall(TypedDict):
    function: ToolCallFunction
    id: NotRequired[str]  # newer Ollama versions send ``call_<8 chars>``


class Message(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    images: NotRequired[list[str]]  # raw base64, no ``data:`` prefix
    tool_calls: NotRequired[list[ToolCall]]
    tool_name: NotRequired[str]  # on a ``tool`` message: the function whose result it is
    thinking: NotRequired[str]


class ChatRequest(TypedDict):
    """``POST /api/chat``. ``options`` holds Modelfile parameters (``num_predict``, ``stop``, ...)."""

    model: str
    messages: list[Message]
    stream: bool
    tools: NotRequired[list[dict[str, Any]]]  # OpenAI's ``tools`` shape, as is
    format: NotRequired[str | dict[str, Any]]  # "json" or a JSON Schema
    options: NotRequired[dict[str, Any]]
    keep_alive: NotRequired[str | int | float]
    think: NotRequired[bool | str]
    truncate: NotRequired[bool]


class ChatResponse(TypedDict, total=False):
    """One NDJSON line of ``/api/chat`` (or the whole non-stream answer)."""

    model: str
    created_at: str  # RFC 3339 with nanoseconds
    message: Message
    done: bool
    done_reason: str
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    error: str


class EmbedRequest(TypedDict):
    """``POST /api/embed``: text only (no token arrays)."""

    model: str
    input: list[str]
    truncate: NotRequired[bool]
    dimensions: NotRequired[int]
    keep_alive: NotRequired[str | int | float]


class EmbedResponse(TypedDict, total=False):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class ModelDetails(TypedDict, total=False):
    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class TagModel(TypedDict, total=False):
    """One entry of ``GET /api/tags``."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(TypedDict):
    models: list[TagModel]
