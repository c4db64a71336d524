"""The schemas of the OpenAPI document (``server/openapi.py``), pure: request schemas from the
pydantic models the handlers validate with (multipart forms rebuilt from them), response schemas
from the ``TypedDict``s the handlers answer with (``typed_schema`` walks their annotations), the
OpenAI error body, and one server-sent event of a chat stream."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..backends.base import Health
from ..embeddings import EmbeddingRequest, EmbeddingResponse
from ..media import (
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    SpeechRequest,
    TranscriptionRequest,
    Video,
    VideoCreateRequest,
)
from ..types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ModelList

__all__ = ["ERROR_SCHEMA", "SSE_EVENT", "Schema", "component_schemas", "ref", "typed_schema"]

Schema = dict[str, Any]
REF = "#/components/schemas/{model}"


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": "The OpenAI error body.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "examples": ["invalid_request_error", "server_error"]},
                "param": {"type": ["string", "null"], "description": "the request parameter at fault"},
                "code": {"type": ["string", "null"], "examples": ["invalid_value", "upstream_error"]},
            },
        }
    },
}

STREAM_DESCRIPTION = (
    "With `stream: true`: server-sent events, each `data: <ChatCompletionChunk JSON>` (schema "
    "`ChatCompletionChunk`), then `data: [DONE]`; `: keep-alive` comments while the upstream is "
    "silent; a failure after the first byte ends the stream with `data: <Error JSON>` instead of "
    "`[DONE]`. A failure before the first chunk is an error status with a JSON body instead."
)


#: One server-sent event of a chat stream (OpenAPI 3.1: a ``text/event-stream`` schema describes
#: each event, with its ``data`` as a string; ``: keep-alive`` comments are not events).
SSE_EVENT: Schema = {
    "type": "object",
    "description": STREAM_DESCRIPTION,
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "enum": ["message"], "description": "never sent: the default"},
        "data": {
            "type": "string",
            "anyOf": [
                {"const": "[DONE]"},
                {
                    "contentMediaType": "application/json",
                    "contentSchema": {"anyOf": [ref("ChatCompletionChunk"), ref("Error")]},
                },
            ],
        },
    },
}

TRANSCRIPTION: Schema = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}},
}
TRANSCRIPTION_VERBOSE: Schema = {
    "type": "object",
    "required": ["task", "language", "duration", "text"],
    "properties": {
        "task": {"type": "string", "enum": ["transcribe"]},
        "language": {"type": "string"},
        "duration": {"type": "number"},
        "text": {"type": "string"},
        "segments": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "start", "end", "text"],
                "properties": {
                    "id": {"type": "integer"},
                    "start": {"type": "number"},
                    "end": {"type": "number"},
                    "text": {"type": "string"},
                },
            },
        },
        "words": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["word", "start", "end"],
                "properties": {"word": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"}},
            },
        },
    },
}


# --------------------------------------------------------------------------- TypedDict → schema


def typed_schema(tp: Any, defs: dict[str, Schema]) -> Schema:
    """The JSON Schema of a response type (``TypedDict``s become ``$ref``s registered in ``defs``;
    ``NotRequired`` keys are optional; objects stay open: backends may add extension keys)."""
    if tp is Any:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return {"type": "string", "enum": list(args)} if all(isinstance(a, str) for a in args) else {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [typed_schema(a, defs) for a in args]}
    if origin is list:
        return {"type": "array", "items": typed_schema(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": typed_schema(args[1], defs)}
    if typing.is_typeddict(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: recursion
            hints = typing.get_type_hints(tp, include_extras=True)
            properties: dict[str, Schema] = {}
            required: list[str] = []
            for key, hint in hints.items():
                if typing.get_origin(hint) is typing.NotRequired:
                    hint = typing.get_args(hint)[0]
                elif typing.get_origin(hint) is typing.Required or tp.__total__:
                    required.append(key)
                properties[key] = typed_schema(hint, defs)
            schema: Schema = {"type": "object", "properties": properties}
            if required:
                schema["required"] = required
            if tp.__doc__ and not tp.__doc__.startswith(name + "("):
                schema["description"] = " ".join(tp.__doc__.split())
            defs[name] = schema
        return {"$ref": REF.format(model=name)}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _request_schemas() -> dict[str, Schema]:
    """Every request model's JSON Schema (validation mode), ``$defs`` hoisted to components."""
    models: list[type[BaseModel]] = [
        ChatCompletionRequest,
        EmbeddingRequest,
        ImageGenerationRequest,
        ImageEditRequest,
        SpeechRequest,
        TranscriptionRequest,
        VideoCreateRequest,
    ]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    defs: dict[str, Schema] = _strip_titles(top.get("$defs", {}))
    # What validators (not the field types) enforce, written out so the document says it too.
    stop = defs["ChatCompletionRequest"]["properties"]["stop"]["anyOf"]
    for branch in stop:
        if branch.get("type") == "array":
            branch.update(maxItems=4, items={"type": "string", "minLength": 1})
    embedding_input = defs["EmbeddingRequest"]["properties"]["input"]["anyOf"]
    for branch in embedding_input:
        if branch.get("type") == "array":
            branch.update(minItems=1, maxItems=2048)
            if branch["items"].get("type") == "array":
                branch["items"]["minItems"] = 1
    return defs


def _form_field(schema: Schema) -> Schema:
    """A form field cannot be null (absent means unset): the model's ``X | None`` as ``X``."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    out = {k: v for k, v in schema.items() if k not in ("anyOf", "default") or (k == "default" and v is not None)}
    if len(branches) == 1:
        out.update(branches[0])
    elif branches:
        out["anyOf"] = branches
    return out


def _multipart(defs: dict[str, Schema], name: str, files: dict[str, str], lists: tuple[str, ...] = ()) -> Schema:
    """A multipart request schema from its pydantic model: the upload under its form name(s)
    instead of the model's ``file``/``filename``/``content_type``; list fields as ``key[]``."""
    model = defs[name]
    properties = {
        k: _form_field(v) for k, v in model["properties"].items() if k not in ("file", "filename", "content_type")
    }
    required = [k for k in model.get("required", []) if k in properties]
    for key in lists:
        properties[key + "[]"] = properties.pop(key)
    upload: dict[str, Schema] = {}
    for field, description in files.items():
        upload[field] = {"type": "string", "format": "binary", "description": description}
    first = next(iter(files))
    return {
        "type": "object",
        "description": model.get("description", ""),
        "required": [first, *required],
        "properties": {**upload, **properties},
        "additionalProperties": True,
    }


def component_schemas(max_messages: int) -> dict[str, Schema]:
    """Every schema of ``components.schemas``."""
    schemas = _request_schemas()
    schemas["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] = max_messages
    schemas["ImageEditForm"] = _multipart(
        schemas, "ImageEditRequest", {"image": "The input image (also accepted as `image[]`; one image)."}
    )
    schemas["TranscriptionForm"] = _multipart(
        schemas, "TranscriptionRequest", {"file": "The audio."}, lists=("timestamp_granularities",)
    )
    schemas["VideoCreateForm"] = _multipart(
        schemas, "VideoCreateRequest", {"input_reference": "The image the video starts from (required)."}
    )
    for name in ("ImageEditRequest", "TranscriptionRequest", "VideoCreateRequest", "Upload", "ImageOptions"):
        schemas.pop(name, None)
    for tp in (ChatCompletion, ChatCompletionChunk, ModelList, EmbeddingResponse, ImagesResponse, Video):
        typed_schema(tp, schemas)
    health = typed_schema(Health, schemas)
    schemas["BackendsHealth"] = {
        "type": "object",
        "required": ["status", "backends"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "backends": {"type": "array", "items": health},
        },
    }
    schemas["Transcription"] = TRANSCRIPTION
    schemas["TranscriptionVerbose"] = TRANSCRIPTION_VERBOSE
    schemas["Error"] = ERROR_SCHEMA
    return schemas
