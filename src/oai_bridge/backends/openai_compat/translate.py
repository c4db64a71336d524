"""OpenAI chat ⇄ an OpenAI-compatible upstream. Pure: no I/O.

The request goes out as the client sent it (``build_request``); the work is on the way back.
``StreamNormalizer`` turns whatever such a server streams into strictly compliant chunks
(reference ``openai-anthropic-ollama.md`` §2.2, §2.5), per choice for ``n > 1``:

* ``role`` only in a choice's first delta (added when missing, dropped when repeated);
* ``finish_reason`` ``""`` → ``null``; a finish sent together with content is split into the
  content chunk and a separate ``delta: {}`` finish chunk; a missing finish is synthesized at
  ``[DONE]`` (``tool_calls`` when calls were made, else ``stop``); ``stop`` after tool calls →
  ``tool_calls``; non-OpenAI values (``eos``, ``max_tokens``, ...) mapped to the enum;
* tool-call fragments get ``index`` (inferred when missing), ``id``/``type``/``function.name`` only
  in a call's first fragment (an ``id`` is made up when the server sent none), ``function`` in
  every fragment, arguments as a string;
* usage found on any chunk is held back and sent once, after the finish chunks, in a
  ``choices: []`` chunk, only when the client asked for it;
* ``id``/``created``/``model`` stay those of the first chunk; missing ones are filled;
* an ``{"error": ...}`` event raises the matching ``BridgeError``; a body that ends with no
  ``[DONE]`` and no finish raises ``UpstreamError(code="stream_incomplete")``.

Real OpenAI streams (``fixtures/openai-real-streams``) come out unchanged. ``parse_response``
does the same for non-stream answers, ``error_from_response`` maps every error-body shape in
``wire`` to the bridge's errors. The normalizer lives in ``stream.py`` and the error mapping in
``upstream_errors.py`` (both pure, re-exported here) to keep each file short.
"""

from __future__ import annotations

from typing import Any

from ...chunks import new_id
from ...embeddings import EmbeddingRequest, EmbeddingResponse, encode_response
from ...errors import UpstreamError
from ...types import ChatCompletion, ChatCompletionRequest, Model
from .stream import (
    CHUNK_KEYS,
    StreamNormalizer,
    arguments_text,
    as_object,
    call_id,
    created_of,
    finish_reason,
    parse_stream,
    usage_of,
)
from .upstream_errors import error_details, error_from_response, is_error, stream_error
from .wire import ContinueStyle

__all__ = [
    "StreamNormalizer",
    "build_embeddings_request",
    "build_request",
    "error_details",
    "error_from_response",
    "parse_embeddings",
    "parse_models",
    "parse_response",
    "parse_stream",
    "stream_error",
]

# --------------------------------------------------------------------------- requests


def build_request(
    request: ChatCompletionRequest,
    *,
    stream: bool | None = None,
    send_stream_options: bool = True,
    continue_style: ContinueStyle = "vllm",
) -> dict[str, Any]:
    """The upstream body: the client's request as sent (unknown parameters included) with the
    routed ``model``. A stream asks for usage (``stream_options.include_usage``) unless
    ``send_stream_options`` is off; a continuation adds vLLM's two keys for ``continue_style="vllm"``."""
    body = request.model_dump(exclude_unset=True)
    body["model"] = request.model
    do_stream = request.is_stream if stream is None else stream
    body["stream"] = do_stream
    options = body.pop("stream_options", None)
    if do_stream and send_stream_options:
        body["stream_options"] = {**(options or {}), "include_usage": True}
    if request.is_continuation and continue_style == "vllm":
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return body


def build_embeddings_request(request: EmbeddingRequest) -> dict[str, Any]:
    """``POST /embeddings`` body: as sent (``encoding_format`` and ``dimensions`` included)."""
    body = request.model_dump(exclude_unset=True)
    body["model"] = request.model
    return body


# --------------------------------------------------------------------------- non-stream


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    out = []
    for call in raw if isinstance(raw, list) else ():
        if not isinstance(call, dict):
            continue
        function = as_object(call.get("function"))
        name, arguments = str(function.get("name") or ""), arguments_text(function.get("arguments"))
        ident = call.get("id") or call_id()
        out.append({"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}})
    return out


def parse_response(body: Any, *, request: ChatCompletionRequest, what: str = "the upstream") -> ChatCompletion:
    """An upstream ``chat.completion`` made strictly compliant (fields filled, ``finish_reason``
    in the enum, tool calls with ids and string arguments, ``logprobs``/``refusal`` present)."""
    if not isinstance(body, dict):
        raise UpstreamError(f"{what} answered with JSON that is not an object.", code="malformed_event")
    if is_error(body):
        status = error_details(body)[4]
        raise error_from_response(status if status and 400 <= status <= 599 else 500, body, what=what)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        raise UpstreamError(f"{what} answered without choices.", code="malformed_event")
    out: dict[str, Any] = {
        "id": body.get("id") or new_id(),
        "object": "chat.completion",
        "created": created_of(body.get("created")),
        "model": body.get("model") or request.model,
    }
    out.update((k, v) for k, v in body.items() if k not in CHUNK_KEYS)
    out["choices"] = []
    for i, choice in enumerate(choices):
        raw = as_object(choice.get("message"))
        message: dict[str, Any] = {"role": "assistant", "content": raw.get("content"), "refusal": raw.get("refusal")}
        message.update((k, v) for k, v in raw.items() if k not in message)
        calls = _tool_calls(raw.get("tool_calls"))
        if calls:
            message["tool_calls"] = calls
        elif "tool_calls" in message:
            del message["tool_calls"]
        finish = finish_reason(choice.get("finish_reason"), bool(calls)) or ("tool_calls" if calls else "stop")
        index = choice.get("index")
        out["choices"].append(
            {
                "index": index if isinstance(index, int) else i,
                "message": message,
                "logprobs": choice.get("logprobs"),
                "finish_reason": finish,
            }
        )
    usage = usage_of(body.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out  # type: ignore[return-value]


def parse_embeddings(body: Any, *, request: EmbeddingRequest, what: str = "the upstream") -> EmbeddingResponse:
    """An upstream embeddings answer, completed and in the encoding the client asked for."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(data, list):
        raise UpstreamError(f"{what} answered embeddings without a 'data' list.", code="malformed_event")
    items = []
    for i, item in enumerate(data):
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, list | str):
            raise UpstreamError(f"{what} answered an embedding that is not a vector.", code="malformed_event")
        index = item.get("index")
        items.append({"object": "embedding", "index": index if isinstance(index, int) else i, "embedding": vector})
    usage = as_object(body.get("usage"))
    prompt = int(usage.get("prompt_tokens") or 0)
    response = {
        "object": "list",
        "data": items,
        "model": body.get("model") or request.model,
        "usage": {"prompt_tokens": prompt, "total_tokens": int(usage.get("total_tokens") or prompt)},
    }
    return encode_response(response, request.encoding_format)  # type: ignore[return-value]


def parse_models(body: Any, *, owned_by: str, created: int) -> list[Model]:
    """``GET /models`` → ``Model`` dicts (servers that omit ``created``/``owned_by`` get defaults)."""
    data = body.get("data") if isinstance(body, dict) else None
    out: list[Model] = []
    for item in data if isinstance(data, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        stamp = item.get("created")
        out.append(
            {
                "id": item["id"],
                "object": "model",
                "created": stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else created,
                "owned_by": str(item.get("owned_by") or owned_by),
            }
        )
    return out
