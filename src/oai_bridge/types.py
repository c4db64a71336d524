"""OpenAI wire types: the chat request (validated with pydantic) and the response shapes.

Requests are parsed once per call, so they use pydantic models with the official field names and
``extra="allow"`` (unknown parameters are kept, ignored, and listed in ``docs/configuration.md``).
Responses and stream chunks are plain dicts described by ``TypedDict``s: they are built and
encoded on the hot path, once per streamed token, where a model instance per chunk costs more than
the rest of the proxy (measured in ``bench/``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

Role = Literal["system", "user", "assistant", "developer", "tool", "function"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
#: No model writes a million tokens in one answer: a larger ``max_tokens`` is a mistake (400).
MAX_TOKENS_CAP = 1_000_000


class ChatMessage(BaseModel):
    """One message of ``messages``. ``content`` is a string, a list of parts, or null."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body (OpenAI ``CreateChatCompletionRequest``).

    Ranges that hold for every backend are checked here; what a particular backend cannot do is
    refused by that backend's ``build_request``.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    top_k: int | None = None

    # Set by ``continued`` (on the copy's ``__dict__``, which ``model_copy`` carries over and
    # ``model_dump`` ignores): the last message is an assistant prefix the upstream must continue.
    # A class variable, not a ``PrivateAttr``: private attributes cost every request a slot
    # initialization and every read a ``__getattr__`` (measured on the hot path).
    _continuation: ClassVar[bool] = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > 4:
                raise ValueError("at most 4 stop sequences are allowed")
            if any(not s for s in value):
                raise ValueError("stop sequences must be non-empty strings")
        return value

    @property
    def is_stream(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` wins over the deprecated ``max_tokens`` when both are set."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def unknown_parameters(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())

    @property
    def is_continuation(self) -> bool:
        """The last message is a partial assistant answer to continue (stream resumption)."""
        return self._continuation

    def continued(self, prefix: str, *, model: str | None = None) -> ChatCompletionRequest:
        """This request with ``prefix`` (the answer so far) appended as an assistant message to be
        continued, for an upstream declared able to continue an assistant prefix."""
        messages = [*self.messages, ChatMessage(role="assistant", content=prefix)]
        update: dict[str, Any] = {"messages": messages}
        if model is not None:
            update["model"] = model
        copy = self.model_copy(update=update)
        object.__setattr__(copy, "_continuation", True)
        return copy


def text_only_gap(request: ChatCompletionRequest) -> tuple[str, str] | None:
    """The first parameter an upstream that only completes text (no tools, one choice, no
    logprobs, no JSON mode) cannot serve, as ``(param, what it asks for)``, else ``None``."""
    if request.tools or request.functions:
        return ("tools" if request.tools else "functions"), "Tool calling"
    if request.tool_choice not in (None, "none") or request.function_call not in (None, "none"):
        return ("tool_choice" if request.tool_choice else "function_call"), "Tool choice"
    if request.n not in (None, 1):
        return "n", "Generating more than one choice (n > 1)"
    if request.logprobs or request.top_logprobs:
        return ("logprobs" if request.logprobs else "top_logprobs"), "Log probabilities"
    fmt = request.response_format
    if fmt is not None and fmt.get("type") not in (None, "text"):
        return "response_format", f"response_format {fmt.get('type')!r}"
    return None


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class FunctionCallDelta(TypedDict, total=False):
    name: str
    arguments: str


class ToolCallDelta(TypedDict, total=False):
    """A streamed fragment of a tool call: ``index`` always; ``id``, ``type`` and ``function.name``
    only in a call's first fragment; ``function`` (maybe only ``arguments``) in every fragment."""

    index: int
    id: str
    type: Literal["function"]
    function: FunctionCallDelta


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: NotRequired[list[ToolCall]]


class Choice(TypedDict):
    index: int
    message: AssistantMessage
    logprobs: Any
    finish_reason: FinishReason


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: NotRequired[Usage]


class Delta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: list[ToolCallDelta]


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    logprobs: Any
    finish_reason: FinishReason | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage | None]


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    pipelines: NotRequired[list[str]]  # extension: what the model serves (Livepeer pipeline names)
    backends: NotRequired[list[str]]  # extension: the configured backends that serve it, in order


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]
