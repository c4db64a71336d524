"""The bridge's own API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Pure: ``document()`` builds a dict (cached) and touches no I/O. The operations are here: each
route, its request body, its success answers and the error statuses it can answer, each with the
OpenAI error body ``{"error": {"message", "type", "param", "code"}}``; the schemas (derived from
the request models and response types) are in ``openapi_schemas.py``. Every response carries
``x-request-id``. ``tests/server/test_fuzz.py`` holds the live bridge to this document with
schemathesis, so a drift between the two fails CI.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import orjson

from .. import __version__
from .openapi_schemas import SSE_EVENT, Schema, component_schemas, ref

__all__ = ["document", "document_json"]

#: What the limits in the document default to (``Settings`` passes its own values).
DEFAULT_MAX_MESSAGES = 2048

#: status → (component name, description, extra headers)
ERRORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "400": ("BadRequest", "The request is invalid (`param` names what); it was not forwarded.", ()),
    "404": ("NotFound", "No such path, model, video or pipeline.", ()),
    "405": (
        "MethodNotAllowed",
        "Another method than the ones this path serves (listed in `Allow`).",
        ("allow",),
    ),
    "413": ("PayloadTooLarge", "The body (or one uploaded file) is over the configured limit.", ()),
    "415": ("UnsupportedMediaType", "This endpoint takes `multipart/form-data`.", ()),
    "429": (
        "RateLimited",
        "The upstream is rate limiting, after the bridge's own retries.",
        ("retry-after", "retry-after-ms"),
    ),
    "500": ("InternalError", "The bridge failed unexpectedly.", ("x-should-retry",)),
    "502": (
        "BadGateway",
        "The upstream failed (masked error, garbage, refused credentials).",
        ("x-should-retry",),
    ),
    "503": (
        "ServiceUnavailable",
        "No upstream capacity (no orchestrator, unreachable), or the bridge is starting or shutting "
        "down (a request still unanswered when the shutdown grace ends).",
        ("retry-after", "retry-after-ms", "x-should-retry"),
    ),
    "504": ("GatewayTimeout", "The upstream did not answer in time.", ("x-should-retry",)),
    "4XX": (
        "UpstreamClientError",
        "Another client error an upstream answered (e.g. 401, 403 or 422 from an OpenAI-compatible "
        "upstream), passed on with its status.",
        ("retry-after", "retry-after-ms"),
    ),
}

HEADERS: dict[str, Schema] = {
    "x-request-id": {
        "description": "The request's id: the client's `x-request-id` when it sent a usable one "
        "(1-128 printable ASCII characters), else one the bridge made. Also in the bridge's logs.",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    },
    "retry-after": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "retry-after-ms": {
        "description": "Milliseconds to wait before retrying.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "x-should-retry": {
        "description": "`false`: the upstream already failed; an immediate retry would not help.",
        "schema": {"type": "string", "enum": ["false"]},
    },
    "allow": {"description": "The methods this path serves.", "required": True, "schema": {"type": "string"}},
    "openai-poll-after-ms": {
        "description": "How long to wait before polling the video job again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}

#: The ``x-request-id`` a client may send; every operation takes it.
REQUEST_ID_PARAMETER: Schema = {
    "name": "x-request-id",
    "in": "header",
    "required": False,
    "description": "An id for this request (1-128 printable ASCII characters), echoed in the "
    "response and the logs; anything else is replaced by one the bridge makes.",
    "schema": {"type": "string"},
}

# Statuses per kind of route.
UPSTREAM = ("400", "405", "413", "429", "500", "502", "503", "504")
MULTIPART = ("400", "405", "413", "415", "429", "500", "502", "503", "504")
LOCAL = ("405", "500", "503")  # 503: shutting down


# --------------------------------------------------------------------------- operations


def _headers(*names: str) -> dict[str, Schema]:
    return {n: {"$ref": f"#/components/headers/{n}"} for n in ("x-request-id", *names)}


def _json(schema: Schema) -> dict[str, Schema]:
    return {"application/json": {"schema": schema}}


def _ok(content: dict[str, Any], description: str = "OK", headers: tuple[str, ...] = ()) -> Schema:
    return {"description": description, "headers": _headers(*headers), "content": content}


def _op(
    op_id: str,
    summary: str,
    ok: Schema,
    errors: tuple[str, ...],
    *,
    tag: str,
    body: Schema | None = None,
    params: tuple[Schema, ...] = (),
    more: dict[str, Schema] | None = None,
    description: str | None = None,
) -> Schema:
    responses: dict[str, Any] = {"200": ok, **(more or {})}
    responses.update({s: {"$ref": f"#/components/responses/{ERRORS[s][0]}"} for s in errors})
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "parameters": [*params, REQUEST_ID_PARAMETER],
        "responses": responses,
    }
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = body
    return op


def _json_body(name: str, **examples: Any) -> Schema:
    media: Schema = {"schema": ref(name)}
    if examples:
        media["examples"] = {key: {"value": value} for key, value in examples.items()}
    return {
        "required": True,
        "description": "A JSON object (UTF-8; the Content-Type header is not checked).",
        "content": {"application/json": media},
    }


LLM = "meta-llama/Meta-Llama-3.1-8B-Instruct"
HELLO = [{"role": "user", "content": "Say hello."}]


def _form_body(name: str) -> Schema:
    return {"required": True, "content": {"multipart/form-data": {"schema": ref(name)}}}


def _path_param(name: str, description: str, *, examples: list[str] | None = None) -> Schema:
    schema: Schema = {"type": "string", "minLength": 1}
    param: Schema = {"name": name, "in": "path", "required": True, "description": description, "schema": schema}
    if examples:
        param["examples"] = {e: {"value": e} for e in examples}
    return param


JSON_OBJECT: Schema = {"type": "object", "additionalProperties": True}


def _paths(schemas: dict[str, Schema]) -> dict[str, Any]:
    chat_ok = _ok(
        {
            "application/json": {"schema": ref("ChatCompletion")},
            "text/event-stream": {"schema": SSE_EVENT},
        },
        "The completion (JSON), or with `stream: true` its chunks as server-sent events.",
    )
    chat_description = (
        "Limits: at most the configured number of `messages` (400 `array_above_max_length`), "
        "`max_tokens`/`max_completion_tokens` up to 1,000,000, JSON nested at most the configured "
        "depth (400 `invalid_json`), the configured body size (413)."
    )

    def chat(op_id: str) -> Schema:
        return _op(
            op_id,
            "Create a chat completion",
            chat_ok,
            (*UPSTREAM, "4XX"),
            tag="chat",
            body=_json_body(
                "ChatCompletionRequest",
                hello={"model": LLM, "messages": HELLO, "max_tokens": 16},
                stream={
                    "model": LLM,
                    "messages": HELLO,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "stop": ["\n\n"],
                },
            ),
            description=chat_description,
        )

    video_id = _path_param("video_id", "A video job id from `POST /v1/videos`.")
    transcript_ok = _ok(
        {
            "application/json": {
                "schema": {
                    "anyOf": [ref("Transcription"), ref("TranscriptionVerbose")],
                    "description": "`json` (the default) or `verbose_json`.",
                }
            },
            "text/plain": {"schema": {"type": "string", "description": "`text`, `srt` or `vtt`."}},
        },
        "The transcript in the asked `response_format`.",
    )
    audio = {"type": "string", "format": "binary"}
    speech_ok = _ok(
        {
            "audio/wav": {"schema": audio},
            "audio/pcm": {"schema": {**audio, "description": "raw 16-bit little-endian mono, 24 kHz (`pcm`)"}},
            "audio/mpeg": {"schema": audio},
            "audio/ogg": {"schema": audio},
            "audio/flac": {"schema": audio},
        },
        "The audio: WAV unless another `response_format` was asked for (mp3, opus and flac need the "
        "optional `audio` extra).",
    )
    return {
        "/v1/chat/completions": {"post": chat("createChatCompletion")},
        "/chat/completions": {"post": chat("createChatCompletionUnversioned")},
        "/v1/embeddings": {
            "post": _op(
                "createEmbedding",
                "Create embeddings",
                _ok(_json(ref("EmbeddingResponse"))),
                (*UPSTREAM, "4XX"),
                tag="embeddings",
                body=_json_body("EmbeddingRequest", text={"model": "nomic-embed-text", "input": ["hello", "world"]}),
            )
        },
        "/v1/images/generations": {
            "post": _op(
                "createImage",
                "Generate images",
                _ok(_json(ref("ImagesResponse"))),
                UPSTREAM,
                tag="images",
                body=_json_body(
                    "ImageGenerationRequest",
                    url={"prompt": "a lighthouse at dawn", "size": "512x512"},
                    b64={"prompt": "a lighthouse at dawn", "n": 2, "response_format": "b64_json"},
                ),
            )
        },
        "/v1/images/edits": {
            "post": _op(
                "createImageEdit",
                "Edit an image",
                _ok(_json(ref("ImagesResponse"))),
                MULTIPART,
                tag="images",
                body=_form_body("ImageEditForm"),
            )
        },
        "/v1/audio/transcriptions": {
            "post": _op(
                "createTranscription",
                "Transcribe audio",
                transcript_ok,
                MULTIPART,
                tag="audio",
                body=_form_body("TranscriptionForm"),
            )
        },
        "/v1/audio/speech": {
            "post": _op(
                "createSpeech",
                "Synthesise speech",
                speech_ok,
                UPSTREAM,
                tag="audio",
                body=_json_body(
                    "SpeechRequest",
                    wav={"input": "Hello there.", "voice": "alloy"},
                    pcm={"input": "Hello there.", "response_format": "pcm"},
                ),
            )
        },
        "/v1/videos": {
            "post": _op(
                "createVideo",
                "Start a video job (from an image)",
                _ok(_json(ref("Video")), headers=("openai-poll-after-ms",))
                | {
                    "links": {
                        op: {"operationId": op, "parameters": {"video_id": "$response.body#/id"}}
                        for op in ("retrieveVideo", "retrieveVideoContent")
                    }
                },
                MULTIPART,
                tag="videos",
                body=_form_body("VideoCreateForm"),
            )
        },
        "/v1/videos/{video_id}": {
            "get": _op(
                "retrieveVideo",
                "Poll a video job",
                _ok(_json(ref("Video")), headers=("openai-poll-after-ms",)),
                ("400", "404", "405", "429", "500", "502", "503", "504"),
                tag="videos",
                params=(video_id,),
            )
        },
        "/v1/videos/{video_id}/content": {
            "get": _op(
                "retrieveVideoContent",
                "Download a finished video",
                _ok({"video/mp4": {"schema": {"type": "string", "format": "binary"}}}, "The MP4."),
                ("400", "404", *LOCAL),
                tag="videos",
                params=(
                    video_id,
                    {
                        "name": "variant",
                        "in": "query",
                        "required": False,
                        "description": "Only `video` exists (anything else: 400).",
                        "schema": {"type": "string", "default": "video"},
                    },
                ),
            )
        },
        "/v1/models": {
            "get": _op("listModels", "List models", _ok(_json(ref("ModelList"))), LOCAL, tag="models"),
        },
        "/v1/models/{model_id}": {
            "get": _op(
                "retrieveModel",
                "Retrieve a model",
                _ok(_json(ref("Model"))),
                ("404", *LOCAL),
                tag="models",
                params=(
                    _path_param(
                        "model_id",
                        "A model id; ids may hold `/` (e.g. `meta-llama/Meta-Llama-3.1-8B-Instruct`), sent as is.",
                        examples=[LLM],
                    ),
                ),
            )
        },
        "/v1/livepeer/{pipeline}": {
            "post": _op(
                "livepeerPipeline",
                "Call a Livepeer pipeline as is",
                _ok(_json({"description": "The gateway's JSON answer, media URLs made absolute."})),
                ("400", "404", "405", "413", "429", "500", "502", "503", "504"),
                tag="livepeer",
                params=(
                    _path_param(
                        "pipeline",
                        "A Livepeer batch pipeline without an OpenAI twin (unknown: 404).",
                        examples=["segment-anything-2", "text-to-image"],
                    ),
                ),
                body={
                    "required": True,
                    "description": "Forwarded to the gateway untouched, with its Content-Type.",
                    "content": {
                        "application/json": {
                            "schema": JSON_OBJECT,
                            "examples": {"text-to-image": {"value": {"prompt": "a lighthouse at dawn"}}},
                        },
                        "multipart/form-data": {"schema": JSON_OBJECT},
                    },
                },
            )
        },
        "/health": {
            "get": _op(
                "health",
                "Liveness (touches no upstream)",
                _ok(
                    _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"type": "string", "enum": ["ok"]}},
                        }
                    )
                ),
                LOCAL,
                tag="health",
            )
        },
        "/health/backends": {
            "get": _op(
                "healthBackends",
                "Each backend's reachability",
                _ok(_json(ref("BackendsHealth")), "At least one backend is connected."),
                ("405", "500"),
                tag="health",
                more={
                    "503": _ok(
                        _json({"anyOf": [ref("BackendsHealth"), ref("Error")]}),
                        "No backend is connected (or the bridge is shutting down: the error body).",
                        headers=("retry-after", "retry-after-ms", "x-should-retry"),
                    )
                },
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                _ok(_json(JSON_OBJECT), "The OpenAPI 3.1 document of this API."),
                LOCAL,
                tag="meta",
            )
        },
    }


@functools.lru_cache(maxsize=8)
def _build(max_messages: int) -> Schema:
    schemas = component_schemas(max_messages)
    responses = {
        name: {
            "description": description,
            "headers": _headers(*extra),
            "content": _json(ref("Error")),
        }
        for name, description, extra in ERRORS.values()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "oai-bridge",
            "version": __version__,
            "summary": "An OpenAI-compatible API in front of a Livepeer AI gateway and other backends.",
            "description": (
                "The OpenAI API subset this bridge serves. Errors use the OpenAI error body "
                '`{"error": {"message", "type", "param", "code"}}`; every response carries '
                "`x-request-id`. An unknown path answers 404, another method 405 (with `Allow`), a "
                "request head over the configured size 431 (and the connection closes)."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": _paths(schemas),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": responses,
            "headers": HEADERS,
        },
    }


def document(*, max_messages: int = DEFAULT_MAX_MESSAGES) -> Schema:
    """The OpenAPI document (a fresh copy: the cached one stays untouched)."""
    return copy.deepcopy(_build(max_messages))


@functools.lru_cache(maxsize=8)
def document_json(*, max_messages: int = DEFAULT_MAX_MESSAGES) -> bytes:
    """The document as the JSON ``GET /openapi.json`` serves (built once per limit)."""
    return orjson.dumps(_build(max_messages))
