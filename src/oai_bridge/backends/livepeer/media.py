"""OpenAI media requests ⇄ Livepeer batch pipelines (reference ``livepeer-gateway.md`` §2). Pure.

Images: ``/v1/images/generations`` → ``/text-to-image`` (JSON). The gateway answers
``{"images": [{"nsfw", "seed", "url"}]}`` where ``url`` is usually gateway-relative
(``/stream/<id>/<file>.png``, served by the gateway's in-memory store, which keeps only a few
items): ``resolve_url`` joins it to the gateway, and ``b64_json`` answers are fetched at once.
"""

from __future__ import annotations

import base64
from typing import Any, TypedDict

import orjson

from ...errors import InvalidRequest, UpstreamError
from ...media import (
    ImageEditRequest,
    ImageGenerationRequest,
    Segment,
    SpeechRequest,
    Transcript,
    TranscriptionRequest,
    VideoCreateRequest,
    parse_size,
)
from ...types import ChatCompletionRequest

__all__ = [
    "DEFAULT_MODELS",
    "LIVEPEER_IMAGE_KNOBS",
    "GatewayImage",
    "parse_images",
    "resolve_url",
    "text_to_image_body",
]

#: The model the gateway itself picks per pipeline when none is given (``server/ai_process.go``);
#: the bridge always sends one (some gateway code paths dereference it).
DEFAULT_MODELS = {
    "text-to-image": "stabilityai/sdxl-turbo",
    "image-to-image": "stabilityai/sdxl-turbo",
    "upscale": "stabilityai/stable-diffusion-x4-upscaler",
    "image-to-video": "stabilityai/stable-video-diffusion-img2vid-xt",
    "audio-to-text": "openai/whisper-large-v3",
    "segment-anything-2": "facebook/sam2-hiera-large",
    "image-to-text": "Salesforce/blip-image-captioning-large",
    "text-to-speech": "parler-tts/parler-tts-large-v1",
}

#: What the gateway's known default models serve; ``model_pipelines`` in the config adds to it.
KNOWN_MODELS: dict[str, frozenset[str]] = {
    "stabilityai/sdxl-turbo": frozenset({"text-to-image", "image-to-image"}),
    "stabilityai/stable-diffusion-x4-upscaler": frozenset({"upscale"}),
    "stabilityai/stable-video-diffusion-img2vid-xt": frozenset({"image-to-video"}),
    "openai/whisper-large-v3": frozenset({"audio-to-text"}),
    "facebook/sam2-hiera-large": frozenset({"segment-anything-2"}),
    "Salesforce/blip-image-captioning-large": frozenset({"image-to-text"}),
    "parler-tts/parler-tts-large-v1": frozenset({"text-to-speech"}),
    "meta-llama/Meta-Llama-3.1-8B-Instruct": frozenset({"llm"}),
}


def pipelines_of(model: str | None, overrides: dict[str, str]) -> frozenset[str]:
    """The pipelines a model is known to serve (empty: unknown, any endpoint may try it)."""
    if not model:
        return frozenset()
    if model in overrides:
        return frozenset({overrides[model]})
    return KNOWN_MODELS.get(model, frozenset())


def check_kind(model: str | None, wanted: frozenset[str], overrides: dict[str, str], endpoint: str) -> None:
    """Refuse a model known to serve other pipelines than the endpoint's."""
    known = pipelines_of(model, overrides)
    if known and not known & wanted:
        raise InvalidRequest(
            f"The model {model!r} serves {' / '.join(sorted(known))} on the Livepeer network; "
            f"{endpoint} needs a model for {' / '.join(sorted(wanted))}.",
            param="model",
            code="wrong_model_kind",
        )


#: ``TextToImageParams`` fields a client may set through the SDK's ``extra_body``, with their types.
LIVEPEER_IMAGE_KNOBS: dict[str, type | tuple[type, ...]] = {
    "negative_prompt": str,
    "guidance_scale": (int, float),
    "num_inference_steps": int,
    "seed": int,
    "loras": (str, dict),
    "safety_check": bool,
}

#: When the client names no size: the OpenAI default for square images.
DEFAULT_SIZE = (1024, 1024)


def livepeer_model(model: str | None, pipeline: str) -> str:
    """The model id to send: a Hugging Face style id (``org/name``) as given; an OpenAI name
    (``dall-e-3``, ``whisper-1``, ``tts-1``) or none → the pipeline's default model."""
    if model and "/" in model:
        return model
    return DEFAULT_MODELS[pipeline]


class GatewayImage(TypedDict):
    url: str
    nsfw: bool
    seed: int | None


def _knobs(request: ImageGenerationRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (request.model_extra or {}).items():
        kind = LIVEPEER_IMAGE_KNOBS.get(key)
        if kind is None or value is None:
            continue  # unknown extras are ignored, like the chat endpoint does
        if isinstance(value, bool) and kind is not bool:
            raise InvalidRequest(f"{key} must be a number, not a boolean.", param=key, code="invalid_value")
        if not isinstance(value, kind):
            raise InvalidRequest(f"{key} has the wrong type.", param=key, code="invalid_value")
        out[key] = value
    if isinstance(out.get("loras"), dict):
        out["loras"] = orjson.dumps(out["loras"]).decode()  # the gateway takes a JSON string
    return out


def text_to_image_body(request: ImageGenerationRequest) -> dict[str, Any]:
    """The ``/text-to-image`` JSON body. Width and height are always sent: a gateway fills in 512×512
    otherwise, whatever the client asked for."""
    width, height = parse_size(request.size, DEFAULT_SIZE)
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "model_id": livepeer_model(request.model, "text-to-image"),
        "width": width,
        "height": height,
        "num_images_per_prompt": request.count,
    }
    body.update(_knobs(request))
    return body


#: Multipart fields of ``/image-to-image`` a client may set (form values are strings).
IMAGE_EDIT_KNOBS = (
    "strength",
    "guidance_scale",
    "image_guidance_scale",
    "negative_prompt",
    "num_inference_steps",
    "seed",
    "safety_check",
    "loras",
)


def is_upscaler(model: str | None) -> bool:
    """Upscaling models go to ``/upscale`` instead of ``/image-to-image``."""
    return bool(model) and "upscal" in str(model).lower()


def image_edit_fields(request: ImageEditRequest) -> tuple[str, dict[str, str]]:
    """The pipeline path and the multipart fields (the image goes as ``image``). ``size`` is
    dropped: both pipelines derive the output size from the input image."""
    if is_upscaler(request.model):
        path, fields = "/upscale", {"prompt": request.prompt, "model_id": str(request.model)}
    else:
        path = "/image-to-image"
        fields = {
            "prompt": request.prompt,
            "model_id": livepeer_model(request.model, "image-to-image"),
            "num_images_per_prompt": str(request.count),
        }
    for key in IMAGE_EDIT_KNOBS if path == "/image-to-image" else ("seed", "safety_check", "num_inference_steps"):
        value = (request.model_extra or {}).get(key)
        if isinstance(value, str) and value:
            fields[key] = value
    return path, fields


def resolve_url(url: str, gateway_url: str) -> str:
    """A gateway-relative ``/stream/...`` URL joined to the gateway; absolute and data URLs as they are."""
    if url.startswith("/"):
        return gateway_url.rstrip("/") + url
    return url


def parse_images(body: Any, *, gateway_url: str) -> list[GatewayImage]:
    """``ImageResponse`` → images with absolute URLs. Raises ``UpstreamError`` on a malformed body."""
    images = body.get("images") if isinstance(body, dict) else None
    if not isinstance(images, list) or not images:
        raise UpstreamError("The Livepeer gateway answered without images.")
    out: list[GatewayImage] = []
    for item in images:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"]:
            raise UpstreamError("The Livepeer gateway answered an image without a URL.")
        seed = item.get("seed")
        out.append(
            {
                "url": resolve_url(item["url"], gateway_url),
                "nsfw": bool(item.get("nsfw")),
                "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            }
        )
    return out


# --------------------------------------------------------------------------- audio

#: OpenAI's stock voice names; Parler-TTS is steered by a description instead.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)


def audio_to_text_fields(request: TranscriptionRequest) -> dict[str, str]:
    """Form fields of ``/audio-to-text`` (the file goes as ``audio``)."""
    return {
        "model_id": livepeer_model(request.model, "audio-to-text"),
        "return_timestamps": "word" if "word" in request.timestamp_granularities else "true",
    }


def parse_transcript(body: Any, *, request: TranscriptionRequest) -> Transcript:
    """``TextResponse`` ``{"chunks": [{"text", "timestamp": [start, end]}], "text"}`` → a transcript."""
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise UpstreamError("The Livepeer gateway answered without a transcript text.")
    pieces: list[Segment] = []
    for chunk in body.get("chunks") or []:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            continue
        stamp = chunk.get("timestamp") or []
        start = float(stamp[0]) if len(stamp) > 0 and isinstance(stamp[0], int | float) else 0.0
        end = float(stamp[1]) if len(stamp) > 1 and isinstance(stamp[1], int | float) else start
        pieces.append({"start": start, "end": end, "text": chunk["text"]})
    text = body["text"].strip()
    duration = max((p["end"] for p in pieces), default=0.0)
    if "word" in request.timestamp_granularities:
        segments: list[Segment] = [{"start": 0.0, "end": duration, "text": text}]
        words = pieces
    else:
        segments, words = pieces or [{"start": 0.0, "end": duration, "text": text}], []
    return {"text": text, "segments": segments, "words": words, "duration": duration, "language": request.language}


def text_to_speech_body(request: SpeechRequest) -> dict[str, Any]:
    """``/text-to-speech`` JSON. Parler-TTS takes a description of the voice: ``instructions`` when
    given, else a ``voice`` that is not one of OpenAI's stock names (a description itself)."""
    body: dict[str, Any] = {
        "model_id": livepeer_model(request.model, "text-to-speech"),
        "text": request.input,
    }
    voice = request.voice.get("id") if isinstance(request.voice, dict) else request.voice
    if request.instructions:
        body["description"] = request.instructions
    elif voice and voice not in OPENAI_VOICES:
        body["description"] = voice
    return body


def parse_audio_url(body: Any, *, gateway_url: str) -> str:
    audio = body.get("audio") if isinstance(body, dict) else None
    url = audio.get("url") if isinstance(audio, dict) else None
    if not isinstance(url, str) or not url:
        raise UpstreamError("The Livepeer gateway answered without an audio URL.")
    return resolve_url(url, gateway_url)


# --------------------------------------------------------------------------- pass-through

#: Every batch pipeline of a gateway (reference §2).
PIPELINES = (
    "llm",
    "text-to-image",
    "image-to-image",
    "upscale",
    "image-to-video",
    "audio-to-text",
    "segment-anything-2",
    "image-to-text",
    "text-to-speech",
)
#: Those reachable as ``POST /v1/livepeer/{pipeline}``; ``llm`` is left out on purpose: chat goes
#: through ``/v1/chat/completions`` and its validation.
PASSTHROUGH_PIPELINES = frozenset(PIPELINES) - {"llm"}


def resolve_urls(answer: Any, gateway_url: str) -> Any:
    """Every gateway-relative ``"url"`` in an answer made absolute (the client cannot reach them
    otherwise when it talks to the bridge only)."""
    if isinstance(answer, dict):
        return {
            k: resolve_url(v, gateway_url) if k == "url" and isinstance(v, str) else resolve_urls(v, gateway_url)
            for k, v in answer.items()
        }
    if isinstance(answer, list):
        return [resolve_urls(v, gateway_url) for v in answer]
    return answer


# --------------------------------------------------------------------------- video


def image_to_video_fields(request: VideoCreateRequest) -> dict[str, str]:
    """``/image-to-video`` form fields (the image goes as ``image``); the OpenAI size as width ×
    height (a gateway fills in 1024×576 otherwise)."""
    width, height = (int(side) for side in (request.size or "1280x720").split("x"))
    return {
        "model_id": livepeer_model(request.model, "image-to-video"),
        "width": str(width),
        "height": str(height),
    }


def parse_video_result(body: Any, *, gateway_url: str) -> tuple[str, str | None]:
    """``/image-to-video/result`` → ``("processing", None)``, ``("complete", url)`` or
    ``("failed", message)``."""
    if not isinstance(body, dict):
        raise UpstreamError("The Livepeer gateway answered the video poll with unexpected JSON.")
    if body.get("status") != "complete":
        return "processing", None
    result = body.get("result")
    if not isinstance(result, dict):
        result = {}
    error = result.get("error")
    if isinstance(error, dict) and error.get("message"):
        return "failed", str(error["message"])
    images = result.get("images")
    if not isinstance(images, list) or not images or not isinstance(images[0], dict) or not images[0].get("url"):
        return "failed", "the gateway finished the job without a video"
    return "complete", resolve_url(str(images[0]["url"]), gateway_url)


# --------------------------------------------------------------------------- vision


def vision_parts(request: ChatCompletionRequest) -> tuple[str, str]:
    """A chat for an image-to-text model → (image URL, prompt): the last user message's one
    ``image_url`` part, and its text parts as the conditioning prompt (BLIP captions, it does not chat)."""
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidRequest("An image-to-text model needs a user message with an image.", param="messages")
    images = [url for i, _, url in image_parts(request) if i == last_user]
    if len(images) != 1:
        raise InvalidRequest(
            "An image-to-text model needs exactly one image_url part in the last user message.",
            param=f"messages[{last_user}].content",
            code="invalid_value",
        )
    content = request.messages[last_user].content
    parts = content if isinstance(content, list) else []
    texts = [p["text"] for p in parts if p.get("type") == "text" and isinstance(p.get("text"), str)]
    return images[0], " ".join(t.strip() for t in texts if t.strip())


def decode_data_url(url: str) -> tuple[bytes, str]:
    """``data:image/png;base64,...`` → (bytes, media type)."""
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        raise InvalidRequest("image_url data URLs must be base64 encoded.", param="messages", code="invalid_value")
    try:
        return base64.b64decode(payload, validate=True), head[5:].split(";")[0] or "application/octet-stream"
    except ValueError:
        raise InvalidRequest("image_url holds invalid base64.", param="messages", code="invalid_value") from None


def image_parts(request: ChatCompletionRequest) -> list[tuple[int, int, str]]:
    """Every ``image_url`` part of a chat: (message index, part index, URL)."""
    found: list[tuple[int, int, str]] = []
    for i, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            if part.get("type") == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
                    raise InvalidRequest(
                        "image_url must be a data: URL or an http(s) URL.",
                        param=f"messages[{i}].content[{j}]",
                        code="invalid_value",
                    )
                found.append((i, j, url))
    return found


def inline_captions(request: ChatCompletionRequest, captions: dict[tuple[int, int], str]) -> ChatCompletionRequest:
    """The chat with each image part replaced by a text part holding the image's caption
    (``vision = "caption"``: an LLM that cannot see gets told what the image shows)."""
    messages = []
    for i, message in enumerate(request.messages):
        if isinstance(message.content, list) and any((i, j) in captions for j in range(len(message.content))):
            parts = [
                {"type": "text", "text": f"[Image: {captions[(i, j)]}]"} if (i, j) in captions else part
                for j, part in enumerate(message.content)
            ]
            message = message.model_copy(update={"content": parts})
        messages.append(message)
    return request.model_copy(update={"messages": messages})
