"""The Livepeer backend's media capabilities (I/O): batch pipeline calls and prompt media fetches.

A mixin of ``LivepeerBackend``: it uses the backend's pooled session, headers, timeouts and error
mapping, and the pure translation in ``media.py``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import orjson

from ... import audio_codec
from ...errors import InvalidRequest, NotFound, UpstreamError, UpstreamTimeout
from ...media import (
    PCM_RATE,
    AudioResult,
    ImageData,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    SpeechRequest,
    Transcript,
    TranscriptionRequest,
    resample_pcm16,
    wav_to_pcm,
)
from ...types import ChatCompletionRequest
from .media import (
    PASSTHROUGH_PIPELINES,
    audio_to_text_fields,
    check_kind,
    decode_data_url,
    image_edit_fields,
    image_parts,
    inline_captions,
    parse_audio_url,
    parse_images,
    parse_transcript,
    resolve_urls,
    text_to_image_body,
    text_to_speech_body,
    vision_parts,
)
from .translate import error_from_response
from .transport import gateway_errors

MEDIA_FETCH_TIMEOUT = 30.0


class LivepeerMediaMixin:
    """``generate_images`` (more pipelines follow). Expects the attributes of ``LivepeerBackend``."""

    options: Any
    _headers: dict[str, str]

    def _http(self) -> aiohttp.ClientSession:  # provided by LivepeerBackend
        raise NotImplementedError

    def _url(self, path: str) -> str:
        return str(self.options.gateway_url).rstrip("/") + path

    async def _post_pipeline(
        self,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        fields: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        as_is: tuple[bytes, str] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """POST to a batch pipeline (JSON, or multipart ``fields`` + ``files``: name → (filename,
        bytes, content type)) and return its decoded JSON answer, or raise a ``BridgeError``."""
        data: Any
        extra = headers or {}
        if as_is is not None:  # (body, content type) forwarded untouched
            headers = {**self._headers, **extra, "Content-Type": as_is[1]}
            data = as_is[0]
        elif json is not None:
            headers = {**self._headers, **extra, "Content-Type": "application/json"}
            data = orjson.dumps(json)
        else:
            headers = {**self._headers, **extra}
            data = aiohttp.FormData(default_to_multipart=True)
            for key, value in (fields or {}).items():
                data.add_field(key, value)
            for key, (filename, blob, content_type) in (files or {}).items():
                data.add_field(key, blob, filename=filename, content_type=content_type)
        try:
            async with asyncio.timeout(self.options.request_timeout):
                with gateway_errors(str(self.options.gateway_url)):
                    async with self._http().post(self._url(path), data=data, headers=headers) as resp:
                        raw = await resp.read()
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise UpstreamTimeout(
                f"The Livepeer gateway did not answer {path} within {self.options.request_timeout:g} s."
            ) from None
        if status not in ok:
            after = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            raise error_from_response(status, raw, retry_after=after)
        if not raw.strip():
            raise UpstreamError("The Livepeer gateway answered 200 with an empty body.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The Livepeer gateway answered {path} with invalid JSON.") from None

    async def fetch_media(self, url: str) -> bytes:
        """The bytes behind a media URL the gateway returned (fetch promptly: its store is small)."""
        if url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, ValueError):
                raise UpstreamError("The Livepeer gateway returned an unreadable data URL.") from None
        try:
            async with asyncio.timeout(MEDIA_FETCH_TIMEOUT):
                with gateway_errors(str(self.options.gateway_url)):
                    async with self._http().get(url, headers=self._headers) as resp:
                        if resp.status != 200:
                            raise UpstreamError(
                                f"Fetching generated media from the Livepeer gateway failed (HTTP {resp.status}); "
                                "its in-memory store keeps only a few recent items."
                            )
                        return await resp.read()
        except TimeoutError:
            raise UpstreamTimeout("Fetching generated media from the Livepeer gateway timed out.") from None

    def _check_kind(self, model: str | None, *pipelines: str, endpoint: str) -> None:
        check_kind(model, frozenset(pipelines), self.options.model_pipelines, endpoint)

    async def generate_images(self, request: ImageGenerationRequest) -> ImagesResponse:
        self._check_kind(request.model, "text-to-image", endpoint="/v1/images/generations")
        answer = await self._post_pipeline("/text-to-image", json=text_to_image_body(request))
        return await self._images_response(answer, b64=request.wants_b64)

    async def edit_images(self, request: ImageEditRequest) -> ImagesResponse:
        self._check_kind(request.model, "image-to-image", "upscale", endpoint="/v1/images/edits")
        path, fields = image_edit_fields(request)
        answer = await self._post_pipeline(
            path, fields=fields, files={"image": (request.filename, request.file, request.content_type)}
        )
        return await self._images_response(answer, b64=request.wants_b64)

    async def _images_response(self, answer: Any, *, b64: bool) -> ImagesResponse:
        images = parse_images(answer, gateway_url=str(self.options.gateway_url))
        blobs: list[bytes] = []
        if b64:
            blobs = list(await asyncio.gather(*(self.fetch_media(image["url"]) for image in images)))
        data: list[ImageData] = []
        for i, image in enumerate(images):
            item: ImageData = {"b64_json": base64.b64encode(blobs[i]).decode("ascii")} if b64 else {"url": image["url"]}
            item["nsfw"] = image["nsfw"]
            if image["seed"] is not None:
                item["seed"] = image["seed"]
            data.append(item)
        return {"created": int(time.time()), "data": data}

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        self._check_kind(request.model, "audio-to-text", endpoint="/v1/audio/transcriptions")
        answer = await self._post_pipeline(
            "/audio-to-text",
            fields=audio_to_text_fields(request),
            files={"audio": (request.filename, request.file, request.content_type)},
        )
        return parse_transcript(answer, request=request)

    async def speech(self, request: SpeechRequest) -> AudioResult:
        self._check_kind(request.model, "text-to-speech", endpoint="/v1/audio/speech")
        wanted = request.response_format or "wav"
        if wanted not in ("wav", "pcm") and not audio_codec.available(wanted):
            raise InvalidRequest(
                f"response_format {wanted!r} is not available: the Livepeer text-to-speech pipeline makes WAV "
                "audio; this bridge returns wav and pcm always, and mp3, opus and flac with the optional "
                "'audio' extra installed (there is no AAC encoder).",
                param="response_format",
                code="unsupported_value",
            )
        answer = await self._post_pipeline("/text-to-speech", json=text_to_speech_body(request))
        wav = await self.fetch_media(parse_audio_url(answer, gateway_url=str(self.options.gateway_url)))
        if wanted == "wav":
            return {"data": wav, "content_type": "audio/wav"}
        if wanted == "pcm":
            try:
                pcm, rate = wav_to_pcm(wav)
            except ValueError:
                raise UpstreamError("The Livepeer gateway's audio is not a PCM WAV file.") from None
            pcm = await asyncio.to_thread(resample_pcm16, pcm, rate)  # OpenAI's pcm is 24 kHz
            return {"data": pcm, "content_type": f"audio/pcm;rate={PCM_RATE}"}
        try:
            data, content_type = await asyncio.to_thread(audio_codec.encode, wav, wanted)
        except audio_codec.EncoderUnavailable as exc:
            raise InvalidRequest(
                f"response_format {wanted!r}: {exc}.", param="response_format", code="unsupported_value"
            ) from None
        return {"data": data, "content_type": content_type}

    async def passthrough(self, pipeline: str, body: bytes, content_type: str) -> Any:
        """The body as the client sent it, to ``/{pipeline}``; the answer with absolute media URLs."""
        if pipeline not in PASSTHROUGH_PIPELINES:
            raise NotFound(
                f"Unknown Livepeer pipeline {pipeline!r}; known: {', '.join(sorted(PASSTHROUGH_PIPELINES))}.",
                code="unknown_pipeline",
            )
        answer = await self._post_pipeline("/" + pipeline, as_is=(body, content_type))
        return resolve_urls(answer, str(self.options.gateway_url))

    async def caption(self, request: ChatCompletionRequest) -> str:
        """A chat for an image-to-text model: the caption of its image."""
        url, prompt = vision_parts(request)
        return await self._caption_url(url, prompt, str(request.model))

    async def with_captions(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        """``vision = "caption"``: every image of the chat captioned by ``vision_model`` and inlined."""
        found = image_parts(request)
        if not found:
            return request
        captions = await asyncio.gather(*(self._caption_url(url, "", self.options.vision_model) for _, _, url in found))
        return inline_captions(request, {(i, j): text for (i, j, _), text in zip(found, captions, strict=True)})

    async def _caption_url(self, url: str, prompt: str, model: str) -> str:
        if url.startswith("data:"):
            image, content_type = decode_data_url(url)
        else:
            image, content_type = await self._fetch_user_image(url)
        fields = {"model_id": model}
        if prompt:
            fields["prompt"] = prompt
        answer = await self._post_pipeline(
            "/image-to-text", fields=fields, files={"image": ("image", image, content_type)}
        )
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise UpstreamError("The Livepeer gateway answered /image-to-text without a text.")
        return text

    async def _fetch_user_image(self, url: str) -> tuple[bytes, str]:
        """An image the client linked to (no gateway credentials are sent; size-limited)."""
        limit = 50 << 20  # the image-to-text runner's own limit
        try:
            async with asyncio.timeout(MEDIA_FETCH_TIMEOUT):
                async with self._http().get(url) as resp:
                    if resp.status != 200:
                        raise InvalidRequest(
                            f"The image_url could not be fetched (HTTP {resp.status}).", param="messages"
                        )
                    data = await resp.content.read(limit + 1)
                    content_type = resp.headers.get("Content-Type", "application/octet-stream")
        except (TimeoutError, aiohttp.ClientError):
            raise InvalidRequest("The image_url could not be fetched.", param="messages") from None
        if len(data) > limit:
            raise InvalidRequest("The image_url is larger than 50 MB.", status=413, code="request_too_large")
        return data, content_type
