"""Livepeer gateway wire types for the ``/llm`` route (reference ``livepeer-gateway.md`` §3).

Generation B (``"json"``, go-livepeer >= v0.8.3) takes a JSON ``LLMRequest`` and answers an
OpenAI-like ``LLMResponse`` (SSE without ``[DONE]`` when streaming). Generation A (``"form"``,
go-livepeer <= v0.8.2 and Livepeer Studio) takes multipart fields and answers
``{"response", "tokens_used"}`` or ``{"chunk": ...}`` events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

Generation = Literal["json", "form"]
GENERATIONS: tuple[Generation, ...] = ("json", "form")

LLM_PATH = "/llm"
CAPABILITIES_PATH = "/getNetworkCapabilities"
LLM_CAPABILITY = "33"

#: What a gen-A gateway answers (400) to a JSON body; ``auto`` falls back to multipart on it.
NOT_MULTIPART_MESSAGE = "request Content-Type isn't multipart/form-data"
#: The gen-A worker's end-of-stream sentinel; never content.
LEGACY_DONE_CHUNK = "[DONE]"


class LLMMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class LLMRequest(TypedDict):
    """Generation B body. The gateway 400s unless model, messages, max_tokens and stream are set."""

    model: str
    messages: list[LLMMessage]
    max_tokens: int
    stream: bool
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]


class LLMUsage(TypedDict):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int


class LegacyForm(TypedDict):
    """Generation A multipart fields (all strings on the wire)."""

    prompt: str
    model_id: str
    system_msg: str
    history: str
    max_tokens: str
    stream: str
    temperature: NotRequired[str]


@dataclass(frozen=True, slots=True)
class LivepeerRequest:
    """A translated request: exactly one of ``json`` / ``form`` is set, by ``generation``."""

    generation: Generation
    stream: bool
    max_tokens: int
    model: str
    json: LLMRequest | None = None
    form: LegacyForm | None = None
