"""OpenAI media wire types (images so far): requests validated with pydantic, responses as
TypedDicts, and the pure helpers every media backend shares (``size`` parsing)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidRequest

__all__ = ["ImageData", "ImageEditRequest", "ImageGenerationRequest", "ImagesResponse", "parse_size"]

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
MIN_SIDE, MAX_SIDE = 64, 2048


class ImageOptions(BaseModel):
    """What image generations and edits share: the prompt, how many, how big, in what form."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None

    @property
    def count(self) -> int:
        return self.n or 1

    @property
    def wants_b64(self) -> bool:
        return self.response_format == "b64_json"


class ImageGenerationRequest(ImageOptions):
    """``POST /v1/images/generations``. Backend-specific knobs (Livepeer's ``negative_prompt``,
    ``guidance_scale``, ``num_inference_steps``, ``seed``, ``loras``, ``safety_check``) arrive as
    extra keys (the SDK's ``extra_body``)."""

    quality: str | None = None
    style: str | None = None
    user: str | None = None


class Upload(BaseModel):
    """A multipart request: its one uploaded file, and its other fields (extras allowed)."""

    model_config = ConfigDict(extra="allow")

    file: bytes
    filename: str
    content_type: str
    model: str | None = None


class ImageEditRequest(ImageOptions, Upload):
    """``POST /v1/images/edits``: the input image is ``file``."""


class ImageData(TypedDict):
    url: NotRequired[str]
    b64_json: NotRequired[str]
    revised_prompt: NotRequired[str]
    nsfw: NotRequired[bool]  # extension: the gateway's safety-checker flag (the SDK keeps extra keys)
    seed: NotRequired[int]  # extension: the seed the image was generated with


class ImagesResponse(TypedDict):
    created: int
    data: list[ImageData]


def parse_size(size: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """``"WxH"`` → ``(W, H)``; ``None``/``"auto"`` → ``default``. Sides 64–2048, multiples of 8
    (what diffusion pipelines accept)."""
    if size is None or size == "auto":
        return default
    match = _SIZE.match(size)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
        if MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE and width % 8 == 0 and height % 8 == 0:
            return width, height
    raise InvalidRequest(
        f"Invalid size {size!r}: use 'WIDTHxHEIGHT' with each side from {MIN_SIDE} to {MAX_SIDE} pixels "
        "and a multiple of 8 (e.g. '1024x1024'), or 'auto'.",
        param="size",
        code="invalid_value",
    )


# --------------------------------------------------------------------------- audio

TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


class Segment(TypedDict):
    start: float
    end: float
    text: str


class Transcript(TypedDict):
    """What a speech-to-text backend found: the text and timed pieces of it."""

    text: str
    segments: list[Segment]
    words: list[Segment]  # empty unless word timestamps were asked for
    duration: float
    language: str | None


def _clock(seconds: float, sep: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def format_transcript(
    transcript: Transcript, response_format: str, *, granularities: Sequence[str] | None = None
) -> tuple[bytes, str]:
    """A transcript in one of OpenAI's ``response_format``s → (body, content type)."""
    if response_format == "text":
        return (transcript["text"] + "\n").encode(), "text/plain; charset=utf-8"
    if response_format == "srt":
        cues = [
            f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text'].strip()}\n"
            for i, s in enumerate(transcript["segments"], 1)
        ]
        return "\n".join(cues).encode(), "text/plain; charset=utf-8"
    if response_format == "vtt":
        cues = [
            f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text'].strip()}\n"
            for s in transcript["segments"]
        ]
        return ("WEBVTT\n\n" + "\n".join(cues)).encode(), "text/plain; charset=utf-8"
    if response_format == "verbose_json":
        body: dict[str, object] = {
            "task": "transcribe",
            "language": transcript["language"] or "english",
            "duration": round(transcript["duration"], 3),
            "text": transcript["text"],
        }
        wanted = set(granularities or ["segment"])
        if "segment" in wanted:
            body["segments"] = [
                {
                    "id": i,
                    "seek": 0,
                    "start": s["start"],
                    "end": s["end"],
                    "text": s["text"],
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": 0.0,
                    "compression_ratio": 0.0,
                    "no_speech_prob": 0.0,
                }
                for i, s in enumerate(transcript["segments"])
            ]
        if "word" in wanted:
            body["words"] = [
                {"word": w["text"].strip(), "start": w["start"], "end": w["end"]} for w in transcript["words"]
            ]
        return orjson.dumps(body), "application/json"
    return orjson.dumps({"text": transcript["text"]}), "application/json"


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech`` (JSON)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict[str, str] | None = None
    instructions: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)


class TranscriptionRequest(Upload):
    """``POST /v1/audio/transcriptions``: the audio is ``file``."""

    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)


class AudioResult(TypedDict):
    """Audio bytes for the client, with their media type."""

    data: bytes
    content_type: str


def wav_to_pcm(data: bytes) -> tuple[bytes, int]:
    """The raw 16-bit little-endian samples of a WAV file, and its sample rate."""
    import io
    import wave

    try:
        with wave.open(io.BytesIO(data)) as wav:
            return wav.readframes(wav.getnframes()), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a PCM WAV file: {exc}") from None


# --------------------------------------------------------------------------- video

VIDEO_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")


class VideoCreateRequest(Upload):
    """``POST /v1/videos``: the ``input_reference`` image is ``file``."""

    prompt: str | None = None
    seconds: str | None = None
    size: Literal["720x1280", "1280x720", "1024x1792", "1792x1024"] | None = None


class VideoError(TypedDict):
    code: str
    message: str


class Video(TypedDict):
    """OpenAI's video job object; every key is present (the SDK's schema requires them)."""

    id: str
    object: Literal["video"]
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    created_at: int
    completed_at: int | None
    expires_at: int | None
    prompt: str | None
    size: str
    seconds: str
    remixed_from_video_id: str | None
    error: VideoError | None


#: OpenAI's ``pcm`` speech format: raw 16-bit little-endian mono at 24 kHz.
PCM_RATE = 24000


def resample_pcm16(pcm: bytes, rate: int, target: int = PCM_RATE) -> bytes:
    """Linear-interpolation resampling of 16-bit mono samples (numpy when installed)."""
    if rate == target or not pcm:
        return pcm
    import array

    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    count = max(1, round(len(samples) * target / rate))
    np: Any
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        src = np.frombuffer(samples.tobytes(), dtype="<i2").astype(np.float64)
        positions = np.arange(count) * (rate / target)
        out = np.interp(positions, np.arange(len(src)), src)
        return bytes(np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes())
    last = len(samples) - 1
    result = array.array("h", bytes(2 * count))
    step = rate / target
    for i in range(count):
        pos = i * step
        left = min(int(pos), last)
        frac = pos - left
        right = min(left + 1, last)
        result[i] = round(samples[left] + (samples[right] - samples[left]) * frac)
    return result.tobytes()
