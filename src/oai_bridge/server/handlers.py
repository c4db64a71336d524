"""One short function per endpoint: parse → route → call → respond. No translation here.

``chat_completions`` is a raw ASGI handler: it is the hot path (every request and every streamed
chunk), and Starlette's middleware chain, ``Request`` and per-message ``send`` wrappers cost more
than the rest of the bridge (measured in ``bench/``). The other endpoints are ordinary Starlette
endpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response

from ..backends.base import (
    Embeddings,
    ImageEditing,
    ImageGeneration,
    PipelinePassthrough,
    SpeechSynthesis,
    Transcription,
    VideoGeneration,
)
from ..embeddings import EmbeddingRequest
from ..errors import BridgeError, InvalidRequest, NotFound
from ..media import (
    ImageEditRequest,
    ImageGenerationRequest,
    SpeechRequest,
    TranscriptionRequest,
    Upload,
    VideoCreateRequest,
    format_transcript,
)
from ..types import ChatCompletionRequest
from . import openapi
from .context import AppContext
from .disconnect import cancel_on_disconnect
from .limits import check_messages, parse_json
from .shutdown import shutting_down
from .streaming import SSEResponse, json_message

log = logging.getLogger("oai_bridge.server")

JSON = "application/json"
T = TypeVar("T", bound=BaseModel)
U = TypeVar("U", bound=Upload)


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def too_large(limit: int) -> BridgeError:
    return InvalidRequest(f"The request body is larger than {limit} bytes.", status=413, code="request_too_large")


async def read_body(scope: Mapping[str, Any], receive: Any, limit: int) -> bytes:
    for key, value in scope["headers"]:
        if key == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise too_large(limit)
            break
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise too_large(limit)
        parts.append(body)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[dict[str,any]]", "function-after[_stop_list(), union[str,list[str]]]"):
            continue  # pydantic's union-branch labels, not fields
        else:
            out += ("." if out else "") + str(part)
    return out


def _invalid(exc: ValidationError) -> InvalidRequest:
    """A pydantic error → the OpenAI 400 naming the first wrong parameter."""
    error = exc.errors(include_url=False)[0]
    param = _param(tuple(error["loc"]))
    if error["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return InvalidRequest(f"Invalid value for '{param}': {error['msg']}.", param=param, code="invalid_value")


def validated(model: type[T], payload: Any, *, strict: bool = True) -> T:
    """``payload`` validated as ``model`` (strictly for JSON; form fields are all strings), or the
    OpenAI 400 for it."""
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(payload, strict=strict)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_chat_request(payload: Any) -> ChatCompletionRequest:
    return validated(ChatCompletionRequest, payload)


async def send_error(send: Any, error: BridgeError, request_id: str) -> None:
    start, body = json_message(error.status, error.to_json(), request_id, error.headers())
    await send(start)
    await send(body)


async def chat_completions(ctx: AppContext, scope: dict[str, Any], receive: Any, send: Any, request_id: str) -> None:
    """``POST /v1/chat/completions`` (raw ASGI)."""
    streaming = False
    try:
        settings = ctx.settings
        payload = parse_json(await read_body(scope, receive, settings.max_body_bytes), settings.max_json_depth)
        check_messages(payload, settings.max_messages)
        chat = parse_chat_request(payload)
        router = ctx.router
        if chat.is_stream:
            streaming = True
            response = SSEResponse(
                router.stream(chat), request_id=request_id, keepalive=ctx.settings.keepalive_interval, drain=ctx.drain
            )
            await response(scope, receive, send)
            return
        with cancel_on_disconnect(scope, receive) as guard:
            result = await router.chat(chat)
        if guard.disconnected:
            log.info("client disconnected; upstream request closed (request %s)", request_id)
            return
    except ClientGone:
        return
    except BridgeError as exc:
        if exc.status >= 500:
            log.warning("request %s failed: %s", request_id, exc.message)
        await send_error(send, exc, request_id)
        return
    except asyncio.CancelledError:
        if streaming or not ctx.drain.absorb():  # a stream ends itself (SSEResponse)
            raise
        await send_error(send, shutting_down(), request_id)  # the shutdown grace is over
        return
    except Exception:
        log.exception("unexpected error in request %s", request_id)
        await send_error(send, BridgeError("The bridge failed unexpectedly.", status=500), request_id)
        return
    start, body = json_message(200, orjson.dumps(result), request_id)
    await send(start)
    await send(body)


# ----------------------------------------------------------------------- Starlette endpoints


def json_response(data: Any, request: Request, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type=JSON, headers={"x-request-id": request.state.request_id}
    )


def error_response(error: BridgeError, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **error.headers()}
    return Response(error.to_json(), status_code=error.status, media_type=JSON, headers=headers)


def _ctx(request: Request) -> AppContext:
    ctx: AppContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:  # before the lifespan has built it (or after it closed)
        raise BridgeError("The bridge is still starting.", status=503, retry_after=1.0)
    return ctx


async def list_models(request: Request) -> Response:
    return json_response({"object": "list", "data": await _ctx(request).router.models()}, request)


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    model = await _ctx(request).router.model(model_id)
    if model is None:
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return json_response(model, request)


def capable(ctx: AppContext, model: str | None, capability: Any, what: str) -> Any:
    """The backend routed for ``model``, if it has ``capability`` (a runtime-checkable protocol of
    ``backends.base``); else the OpenAI 400."""
    backend = ctx.router.route(model or "")
    if not isinstance(backend, capability):
        raise InvalidRequest(f"The backend for model {model!r} cannot {what}.", param="model")
    return backend


def routed(ctx: AppContext, job: T, capability: Any, what: str) -> tuple[Any, T]:
    """The capable backend for ``job.model`` and the job renamed to the model that backend is
    asked for (a route may map a public name to an upstream name)."""
    model = getattr(job, "model", None)
    backend = capable(ctx, model, capability, what)
    if model:
        upstream_model = ctx.router.resolve(model)[1]
        if upstream_model != model:
            job = job.model_copy(update={"model": upstream_model})
    return backend, job


async def image_generations(request: Request) -> Response:
    """``POST /v1/images/generations``."""
    ctx = _ctx(request)
    body = await read_body(request.scope, request.receive, ctx.settings.max_body_bytes)
    images = validated(ImageGenerationRequest, parse_json(body, ctx.settings.max_json_depth))
    backend, images = routed(ctx, images, ImageGeneration, "generate images")
    return json_response(await backend.generate_images(images), request)


async def audio_speech(request: Request) -> Response:
    """``POST /v1/audio/speech``: the audio bytes (WAV unless ``pcm`` is asked for)."""
    ctx = _ctx(request)
    body = await read_body(request.scope, request.receive, ctx.settings.max_body_bytes)
    speech = validated(SpeechRequest, parse_json(body, ctx.settings.max_json_depth))
    backend, speech = routed(ctx, speech, SpeechSynthesis, "synthesise speech")
    audio = await backend.speech(speech)
    data, media_type = audio["data"], audio["content_type"]
    return Response(data, media_type=media_type, headers={"x-request-id": request.state.request_id})


def _capped(receive: Any, limit: int) -> Any:
    """``receive`` raising the 413 once the body it delivered passes ``limit`` bytes."""
    size = 0

    async def capped() -> Any:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise too_large(limit)
        return message

    return capped


async def _form(request: Request, limit: int) -> FormData:
    """The multipart form of a request (uploads spooled to private temporary files)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidRequest("This endpoint takes multipart/form-data.", status=415, code="invalid_content_type")
    try:  # the body counted as it arrives: a chunked body has no content-length to check first
        return await Request(request.scope, _capped(request.receive, limit)).form(max_files=8, max_fields=64)
    except (MultiPartException, HTTPException) as exc:  # Starlette wraps the parser's errors in a 400
        message = exc.message if isinstance(exc, MultiPartException) else exc.detail
        raise InvalidRequest(f"The multipart body is malformed: {message}", code="invalid_multipart") from None


async def multipart_job(request: Request, model: type[U], names: tuple[str, ...], *, lists: tuple[str, ...] = ()) -> U:
    """A multipart request as ``model``: exactly one file (under the first of ``names`` present,
    e.g. ``image`` or ``image[]``), the string fields, and ``lists`` collected from ``key[]`` parts.
    Uploads are spooled to private temporary files, removed when the form is closed."""
    limit = _ctx(request).settings.max_upload_bytes
    form = await _form(request, limit)
    try:
        name = next((n for n in names if n in form), names[0])
        uploads = form.getlist(name)
        if not uploads or not isinstance(uploads[0], UploadFile):
            raise InvalidRequest(
                f"Missing required parameter: '{names[0]}'.", param=names[0], code="missing_required_parameter"
            )
        if len(uploads) > 1:
            raise InvalidRequest(
                f"Send one file as '{names[0]}': the Livepeer pipeline takes one.",
                param=names[0],
                code="unsupported_value",
            )
        upload = uploads[0]
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise too_large(limit)
        fields: dict[str, Any] = {k: v for k, v in form.multi_items() if isinstance(v, str) and not k.endswith("[]")}
        for key in lists:
            fields[key] = form.getlist(key + "[]") + form.getlist(key)
        fields.update(
            file=data,
            filename=upload.filename or names[0],
            content_type=upload.content_type or "application/octet-stream",
        )
        return validated(model, fields, strict=False)
    finally:
        await form.close()


async def audio_transcriptions(request: Request) -> Response:
    """``POST /v1/audio/transcriptions`` (multipart)."""
    ctx = _ctx(request)
    job = await multipart_job(request, TranscriptionRequest, ("file",), lists=("timestamp_granularities",))
    backend, job = routed(ctx, job, Transcription, "transcribe audio")
    transcript = await backend.transcribe(job)
    body, media_type = format_transcript(transcript, job.response_format, granularities=job.timestamp_granularities)
    return Response(body, media_type=media_type, headers={"x-request-id": request.state.request_id})


async def image_edits(request: Request) -> Response:
    """``POST /v1/images/edits`` (multipart; one input image, as ``image`` or ``image[]``)."""
    ctx = _ctx(request)
    job = await multipart_job(request, ImageEditRequest, ("image", "image[]"))
    backend, job = routed(ctx, job, ImageEditing, "edit images")
    return json_response(await backend.edit_images(job), request)


POLL_AFTER_MS = "500"


def _video_backend(ctx: AppContext, model: str | None) -> VideoGeneration:
    backend: VideoGeneration = capable(ctx, model, VideoGeneration, "make videos")
    return backend


async def videos_create(request: Request) -> Response:
    """``POST /v1/videos`` (multipart): an image-to-video job; the network needs an input image."""
    ctx = _ctx(request)
    try:
        job = await multipart_job(request, VideoCreateRequest, ("input_reference",))
    except InvalidRequest as exc:
        if exc.code != "missing_required_parameter":
            raise
        raise InvalidRequest(
            "The Livepeer network only makes videos from an image: send one as 'input_reference'.",
            param="input_reference",
            code="missing_required_parameter",
        ) from None
    video = await _video_backend(ctx, job.model).create_video(job)
    response = json_response(video, request)
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


async def videos_retrieve(request: Request) -> Response:
    """``GET /v1/videos/{video_id}``: the job, polled from the gateway while it runs."""
    video = await _video_backend(_ctx(request), None).get_video(request.path_params["video_id"])
    response = json_response(video, request)
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


async def videos_content(request: Request) -> Response:
    """``GET /v1/videos/{video_id}/content``: the MP4."""
    if request.query_params.get("variant", "video") != "video":
        raise InvalidRequest("Only the 'video' variant exists for Livepeer videos.", param="variant")
    data = await _video_backend(_ctx(request), None).video_content(request.path_params["video_id"])
    return Response(data, media_type="video/mp4", headers={"x-request-id": request.state.request_id})


async def livepeer_passthrough(request: Request) -> Response:
    """``POST /v1/livepeer/{pipeline}``: any gateway pipeline without an OpenAI twin, as is."""
    ctx = _ctx(request)
    body = await read_body(request.scope, request.receive, ctx.settings.max_upload_bytes)
    backend = next((b for b in ctx.router.backends if isinstance(b, PipelinePassthrough)), None)
    if backend is None:
        raise NotFound("No configured backend offers Livepeer pipelines.", code="unknown_url")
    content_type = request.headers.get("content-type", "application/json")
    return json_response(await backend.passthrough(request.path_params["pipeline"], body, content_type), request)


async def not_ready(request: Request) -> Response:
    """Chat requests reach Starlette only before startup has finished (or for a wrong method)."""
    raise BridgeError("The bridge is still starting.", status=503, retry_after=1.0)


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings`` (float or base64, as asked)."""
    ctx = _ctx(request)
    body = await read_body(request.scope, request.receive, ctx.settings.max_body_bytes)
    job = validated(EmbeddingRequest, parse_json(body, ctx.settings.max_json_depth))
    backend, job = routed(ctx, job, Embeddings, "make embeddings")
    result = await backend.embeddings(job)
    result["model"] = result.get("model") or job.model
    return json_response(result, request)


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: this API's OpenAPI 3.1 document (``server/openapi.py``)."""
    body = openapi.document_json(max_messages=_ctx(request).settings.max_messages)
    return Response(body, media_type=JSON, headers={"x-request-id": request.state.request_id})


async def health(request: Request) -> Response:
    """Liveness: the process answers (cheap, touches no upstream)."""
    return json_response({"status": "ok"}, request)


async def health_backends(request: Request) -> Response:
    """Each backend's reachability (``connected`` / ``unreachable`` / ``error``, with the error);
    503 when none is connected."""
    lines = await _ctx(request).router.health()
    ok = any(line["status"] == "connected" for line in lines)
    body = {"status": "ok" if ok else "unavailable", "backends": lines}
    return json_response(body, request, status=200 if ok else 503)
