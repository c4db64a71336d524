"""Wire shapes of an OpenAI-compatible upstream (OpenAI, vLLM, llama.cpp ``llama-server``, LM Studio).

The upstream speaks our own protocol (reference ``openai-anthropic-ollama.md`` §1-§4), so requests
go out as the client sent them; what differs is what such servers get wrong on the way back, and
the several error-body shapes they use (§3.1):

* OpenAI / llama.cpp / new vLLM: ``{"error": {"message", "type", "param", "code"}}`` (llama.cpp's
  ``code`` is the HTTP status as an int, plus ``n_prompt_tokens``/``n_ctx`` on context errors);
* FastAPI apps: ``{"detail": "..."}`` or ``{"detail": [{"loc", "msg", "type"}, ...]}``;
* old vLLM: flat ``{"object": "error", "message", "type", "param", "code": 400}``;
* proxies and crashed servers: plain text.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "CHAT_PATH",
    "CONTENT_POLICY_CODES",
    "CONTENT_POLICY_PHRASES",
    "CONTEXT_LENGTH_CODES",
    "CONTEXT_LENGTH_PHRASES",
    "CONTINUE_STYLES",
    "DONE",
    "EMBEDDINGS_PATH",
    "FINISH_ALIASES",
    "MODELS_PATH",
    "ContinueStyle",
    "ErrorObject",
    "UpstreamModel",
]

#: Paths below ``base_url`` (which, like the OpenAI SDK's ``base_url``, includes ``/v1``).
CHAT_PATH = "/chat/completions"
MODELS_PATH = "/models"
EMBEDDINGS_PATH = "/embeddings"

#: The stream's end marker (the data of the last SSE event).
DONE = b"[DONE]"

#: How a continuation (trailing assistant prefix) is asked for: vLLM wants
#: ``continue_final_message: true, add_generation_prompt: false``; llama.cpp (and LM Studio)
#: prefill a trailing assistant message by themselves and only need the messages.
ContinueStyle = Literal["vllm", "prefill"]
CONTINUE_STYLES: tuple[ContinueStyle, ...] = ("vllm", "prefill")

#: ``finish_reason`` values seen from OpenAI-compatible servers that are not OpenAI's, mapped to
#: the enum (anything else unknown becomes ``stop``).
FINISH_ALIASES: dict[str, str] = {
    "eos": "stop",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "end_turn": "stop",
    "max_tokens": "length",
    "max_length": "length",
    "model_length": "length",
    "tool_call": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "function_call",
    "content_filter": "content_filter",
}

#: Error ``code``/``type`` values and message phrases (lower case) that mean "the prompt does not
#: fit the context window" (OpenAI, vLLM, llama.cpp's ``exceed_context_size_error``).
CONTEXT_LENGTH_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error", "context_window_exceeded"})
CONTEXT_LENGTH_PHRASES = (
    "maximum context length",
    "context length",
    "exceeds the context",
    "available context size",
    "context window",
    "too many tokens",
    "prompt is too long",
)

#: Error ``code`` values and phrases that mean a content-policy refusal (OpenAI, Azure OpenAI).
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
CONTENT_POLICY_PHRASES = ("content policy", "content management policy")


class ErrorObject(TypedDict, total=False):
    """The inner object of an OpenAI error body (every key optional from other servers)."""

    message: str
    type: str | None
    param: str | None
    code: str | int | None


class UpstreamModel(TypedDict):
    """One entry of ``GET /models`` (``created``/``owned_by`` missing on some servers)."""

    id: str
    object: NotRequired[str]
    created: NotRequired[int]
    owned_by: NotRequired[str]
    meta: NotRequired[dict[str, Any]]  # llama.cpp: n_ctx_train, n_params, ...
