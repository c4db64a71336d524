"""The one seam every backend implements, and the small optional capabilities beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, Self, TypedDict, runtime_checkable

from ..embeddings import EmbeddingRequest, EmbeddingResponse
from ..media import (
    AudioResult,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    SpeechRequest,
    Transcript,
    TranscriptionRequest,
    Video,
    VideoCreateRequest,
)
from ..redact import register_secret
from ..types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model


@dataclass(kw_only=True)
class BackendConfig:
    """One configured backend (a ``[backends.NAME]`` table, or found from env vars). Timeouts are
    seconds. ``options`` holds what only its kind understands (documented in its ``backend.py``)."""

    name: str
    kind: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)  # read from the env var the config names
    connect_timeout: float = 10.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    request_timeout: float = 600.0
    models: list[str] = field(default_factory=list)  # listed by /v1/models besides what it reports
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        register_secret(self.api_key)  # redacted from every log line and error message


class Health(TypedDict):
    """One backend's line in ``GET /health/backends``."""

    name: str
    kind: str
    url: str
    status: Literal["connected", "unreachable", "error"]
    error: str | None
    latency_ms: float | None
    models: NotRequired[int]


@runtime_checkable
class Backend(Protocol):
    """A chat backend. ``stream`` raises a ``BridgeError`` before its first chunk if the upstream
    refuses, and raises (any exception) mid-stream if the upstream fails after that; the chunks
    it yields are already strictly compliant (role first, separate finish chunk, usage chunk only
    when ``stream_options.include_usage``). Closing the iterator closes the upstream request."""

    name: str
    kind: str
    #: Whether the upstream can continue a final assistant message (stream resumption); the
    #: config refuses ``resume = true`` on an upstream whose kind cannot.
    can_continue: bool

    @classmethod
    def from_config(cls, config: BackendConfig) -> Self:
        """The backend for one configured entry; a bad ``options`` value raises ``ValueError``."""
        ...

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion: ...

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]: ...

    async def models(self) -> list[Model]: ...

    async def health(self) -> Health:
        """A cheap reachability probe (never raises)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Embeddings(Protocol):
    """A backend that can answer ``POST /v1/embeddings`` (in the asked ``encoding_format``)."""

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse: ...


@runtime_checkable
class ImageGeneration(Protocol):
    """A backend that can answer ``POST /v1/images/generations``."""

    async def generate_images(self, request: ImageGenerationRequest) -> ImagesResponse: ...


@runtime_checkable
class Transcription(Protocol):
    """A backend that can answer ``POST /v1/audio/transcriptions``."""

    async def transcribe(self, request: TranscriptionRequest) -> Transcript: ...


@runtime_checkable
class SpeechSynthesis(Protocol):
    """A backend that can answer ``POST /v1/audio/speech`` (WAV, or raw PCM)."""

    async def speech(self, request: SpeechRequest) -> AudioResult: ...


@runtime_checkable
class ImageEditing(Protocol):
    """A backend that can answer ``POST /v1/images/edits``."""

    async def edit_images(self, request: ImageEditRequest) -> ImagesResponse: ...


@runtime_checkable
class PipelinePassthrough(Protocol):
    """A backend reachable as ``POST /v1/livepeer/{pipeline}`` (requests forwarded as sent)."""

    async def passthrough(self, pipeline: str, body: bytes, content_type: str) -> Any: ...


@runtime_checkable
class VideoGeneration(Protocol):
    """A backend that can run OpenAI's async video resource (``/v1/videos``)."""

    async def create_video(self, request: VideoCreateRequest) -> Video: ...

    async def get_video(self, video_id: str) -> Video: ...

    async def video_content(self, video_id: str) -> bytes: ...
