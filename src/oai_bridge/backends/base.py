"""The one seam every backend implements, and the small optional capabilities beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

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
from ..types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model


@runtime_checkable
class Backend(Protocol):
    """A chat backend. ``stream`` raises a ``BridgeError`` before its first chunk if the upstream
    refuses, and raises (any exception) mid-stream if the upstream fails after that; the chunks
    it yields are already strictly compliant (role first, separate finish chunk, usage chunk only
    when ``stream_options.include_usage``). Closing the iterator closes the upstream request."""

    name: str
    kind: str

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion: ...

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]: ...

    async def models(self) -> list[Model]: ...

    async def aclose(self) -> None: ...


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
