"""OpenAI chat ⇄ Ollama's native ``/api/chat`` (and ``/api/embed``, ``/api/tags``). Pure: no I/O.

Requests follow what Ollama's own OpenAI shim does (reference §7.5, OLL ``openai/openai.go``):
``max_tokens``/``max_completion_tokens`` → ``options.num_predict``; ``stop`` → ``options.stop``
(a list); ``temperature``, ``top_p``, ``top_k``, ``seed``, ``presence_penalty``,
``frequency_penalty`` → ``options``; ``response_format`` ``json_object`` → ``format: "json"``,
``json_schema`` → ``format: <schema>``; ``data:`` image URLs → raw base64 in the message's
``images``; assistant ``tool_calls`` with their arguments parsed into an object; ``tool`` messages
with ``tool_name`` (from ``name``, else found through ``tool_call_id``); ``tools`` as they are.
Unlike the shim it does not force ``temperature``/``top_p`` to 1.0 (the Modelfile's defaults stay).

Refused with a 400 naming the parameter: ``n`` > 1, ``logprobs``/``top_logprobs``,
``logit_bias``, ``functions``/``function_call``, ``tool_choice`` ``required`` or a named function
(Ollama cannot force a call; ``none`` is honoured by not sending the tools), audio output,
``prediction``, ``web_search_options``, http(s) image URLs (Ollama takes base64 only; the bridge
does not fetch URLs), audio/file parts. Accepted and ignored: see ``IGNORED_PARAMETERS``. Ollama
extras a client may send (``extra_body``): ``keep_alive``, ``think``, ``options`` (merged over
everything else) and ``reasoning_effort`` (→ ``think``). Any other unknown parameter is a 400
``unknown_parameter`` unless the backend is configured with ``strict_parameters = false``.

Answers: each NDJSON line → chunks through ``ChunkBuilder``; tool calls (whole, arguments an
object) → one fragment each with a compact JSON string and an id (Ollama's, or ``call_…``); the
``done`` line → the finish chunk (``length`` for ``done_reason: "length"``, ``tool_calls`` when
calls were made) and the usage chunk (``prompt_eval_count``/``eval_count``) when asked for; an
``{"error": …}`` line → the matching ``BridgeError``; a line that is not JSON →
``malformed_event``; no ``done`` line → ``stream_incomplete``. Thinking text
(``message.thinking``) is dropped: the chunk builder has no reasoning field.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ...chunks import ChunkBuilder, StopCutter, completion, new_id
from ...embeddings import EmbeddingRequest, EmbeddingResponse, embedding_response
from ...errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamError,
    UpstreamRejected,
    retry_after,
    status_error,
)
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, FinishReason, Model, ToolCall, Usage
from .wire import ChatRequest, EmbedRequest, Message
from .wire import ToolCall as OllamaToolCall

__all__ = [
    "IGNORED_PARAMETERS",
    "ChatSettings",
    "StreamParser",
    "build_embed_request",
    "build_request",
    "error_from_message",
    "error_from_response",
    "models_from_tags",
    "parse_embed_response",
    "parse_response",
    "parse_stream",
]

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
#: Parameters accepted and ignored (they change nothing Ollama could honour, or only bookkeeping).
IGNORED_PARAMETERS = frozenset(
    {
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "moderation",
        "verbosity",
        "parallel_tool_calls",
    }
)
#: Ollama-specific parameters a client may add (``extra_body``).
OLLAMA_PARAMETERS = frozenset({"keep_alive", "think", "options", "reasoning_effort"})
REFUSED_PARAMETERS = {
    "logit_bias": "logit_bias",
    "audio": "Audio output",
    "modalities": "Output modalities other than text",
    "prediction": "Predicted outputs",
    "web_search_options": "Web search",
}
REASONING_EFFORT: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}
THINK_LEVELS = frozenset({"low", "medium", "high", "max"})
CONTEXT_MARKERS = ("context length", "context size", "context window", "exceed_context_size", "maximum context")
POLICY_MARKERS = ("content policy", "content_policy", "content filter", "content management policy")
MESSAGE_CAP = 300


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """Backend-level defaults for every request (the backend's ``options``)."""

    keep_alive: str | int | float | None = None
    think: bool | str | None = None
    truncate: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)  # default Modelfile options, e.g. num_ctx
    strict_parameters: bool = True


DEFAULTS = ChatSettings()


# --------------------------------------------------------------------------- request


def _unsupported(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"{what} is not supported by Ollama.", param=param, code="unsupported_parameter")


def _check_parameters(request: ChatCompletionRequest, strict: bool) -> None:
    if request.n not in (None, 1):
        raise _unsupported("n", "Generating more than one choice (n > 1)")
    if request.logprobs or request.top_logprobs:
        raise _unsupported("logprobs" if request.logprobs else "top_logprobs", "Log probabilities")
    if request.functions or request.function_call is not None:
        raise _unsupported("functions" if request.functions else "function_call", "The deprecated 'functions' API")
    choice = request.tool_choice
    if choice not in (None, "auto", "none"):
        raise _unsupported("tool_choice", "Forcing a tool call (tool_choice 'required' or a named function)")
    if request.stream_options is not None and not request.is_stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    for key, value in (request.model_extra or {}).items():
        if key in OLLAMA_PARAMETERS or key in IGNORED_PARAMETERS or value is None:
            continue
        if key in REFUSED_PARAMETERS:
            harmless = (key == "logit_bias" and not value) or (key == "modalities" and value == ["text"])
            if not harmless:
                raise _unsupported(key, REFUSED_PARAMETERS[key])
        elif strict:
            raise InvalidRequest(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


def _image(value: Any, param: str) -> str:
    """The raw base64 of an ``image_url`` (object or, as Ollama's docs send it, a bare string)."""
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image_url part needs a 'url'.", param=param)
    if url.startswith(("http://", "https://")):
        raise InvalidRequest(
            "Ollama takes images as base64 only and the bridge does not fetch image URLs; "
            "send the image as a data: URL (data:image/png;base64,...).",
            param=param,
            code="unsupported_image_url",
        )
    header, comma, data = url.partition(",")
    if not (url.startswith("data:") and comma and header.endswith(";base64") and data.strip()):
        raise InvalidRequest("An image must be a base64 data: URL.", param=param, code="invalid_image")
    data = data.strip()
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("The image data is not valid base64.", param=param, code="invalid_image") from None
    return data


def _content(content: str | list[dict[str, Any]] | None, i: int) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url":
            images.append(_image(part.get("image_url"), f"messages[{i}].content[{j}].image_url"))
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported by Ollama (text and base64 images only).",
                param=f"messages[{i}].content[{j}]",
                code="unsupported_content",
            )
    return "\n\n".join(texts), images


def _arguments(raw: Any, param: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    value = raw
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "Tool call arguments are not valid JSON.", param=param, code="invalid_tool_arguments"
            ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            "Tool call arguments must be a JSON object (Ollama takes them as an object).",
            param=param,
            code="invalid_tool_arguments",
        )
    return value


def _tool_calls(calls: Any, i: int, names: dict[str, str]) -> list[OllamaToolCall]:
    if not isinstance(calls, list):
        raise InvalidRequest("'tool_calls' must be a list.", param=f"messages[{i}].tool_calls")
    out: list[OllamaToolCall] = []
    for k, call in enumerate(calls):
        param = f"messages[{i}].tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest("Each tool call needs a 'function' with a 'name'.", param=param)
        entry: OllamaToolCall = {
            "function": {
                "name": function["name"],
                "arguments": _arguments(function.get("arguments"), f"{param}.function.arguments"),
            }
        }
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            entry["id"] = call_id
            names[call_id] = function["name"]
        out.append(entry)
    return out


def _messages(request: ChatCompletionRequest) -> list[Message]:
    out: list[Message] = []
    names: dict[str, str] = {}  # tool call id → function name, for the tool messages
    for i, message in enumerate(request.messages):
        role = ROLES.get(message.role)
        if role is None:
            raise InvalidRequest(
                f"Messages with role {message.role!r} are not supported by Ollama (use 'tool' messages).",
                param=f"messages[{i}].role",
                code="unsupported_role",
            )
        extra = message.model_extra or {}
        text, images = _content(message.content, i)
        entry: Message = {"role": role, "content": text}  # type: ignore[typeddict-item]
        if images:
            entry["images"] = images
        if role == "assistant" and extra.get("tool_calls"):
            entry["tool_calls"] = _tool_calls(extra["tool_calls"], i, names)
        elif role == "tool":
            name = message.name or names.get(str(extra.get("tool_call_id")))
            if name:
                entry["tool_name"] = name
        out.append(entry)
    return out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for k, tool in enumerate(tools):
        function = tool.get("function")
        named = isinstance(function, dict) and isinstance(function.get("name"), str)
        if tool.get("type") != "function" or not named:
            raise InvalidRequest(
                "Only function tools with a name are supported by Ollama.", param=f"tools[{k}]", code="unsupported_tool"
            )
    return list(tools)


def _format(fmt: dict[str, Any]) -> str | dict[str, Any] | None:
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format json_schema needs a 'schema' object.", param="response_format")
        return schema
    raise _unsupported("response_format", f"response_format {kind!r}")


def _think(extra: Mapping[str, Any], default: bool | str | None) -> bool | str | None:
    think = extra.get("think")
    if think is not None:
        if isinstance(think, bool) or think in THINK_LEVELS:
            return think  # type: ignore[no-any-return]
        raise InvalidRequest("'think' must be true, false, 'low', 'medium', 'high' or 'max'.", param="think")
    effort = extra.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORT:
            raise InvalidRequest(f"Unknown reasoning_effort {effort!r}.", param="reasoning_effort")
        return REASONING_EFFORT[effort]
    return default


def build_request(
    request: ChatCompletionRequest, settings: ChatSettings = DEFAULTS, *, stream: bool | None = None
) -> ChatRequest:
    """Validate ``request`` and translate it to an ``/api/chat`` body (``stream`` overrides the
    request's flag). A continuation request's trailing assistant message is sent as it is: Ollama
    continues a final assistant message (prefill; ``ollama/ollama#6778``). Raises ``InvalidRequest``."""
    _check_parameters(request, settings.strict_parameters)
    extra = request.model_extra or {}
    body: ChatRequest = {
        "model": request.model,
        "messages": _messages(request),
        "stream": request.is_stream if stream is None else stream,
    }
    if request.tools and request.tool_choice != "none":
        body["tools"] = _tools(request.tools)
    if request.response_format and (fmt := _format(request.response_format)) is not None:
        body["format"] = fmt
    options = dict(settings.options)
    if request.token_limit is not None:
        options["num_predict"] = request.token_limit
    for key in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, key)
        if value is not None:
            options[key] = value
    if request.stop_sequences:
        options["stop"] = request.stop_sequences
    overrides = extra.get("options")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise InvalidRequest("'options' must be an object of Ollama model options.", param="options")
        options.update(overrides)
    if options:
        body["options"] = options
    keep_alive = extra["keep_alive"] if extra.get("keep_alive") is not None else settings.keep_alive
    if keep_alive is not None:
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float):
            raise InvalidRequest("'keep_alive' must be a duration string or a number of seconds.", param="keep_alive")
        body["keep_alive"] = keep_alive
    think = _think(extra, settings.think)
    if think is not None:
        body["think"] = think
    if settings.truncate is not None:
        body["truncate"] = settings.truncate
    return body


def build_embed_request(request: EmbeddingRequest, settings: ChatSettings = DEFAULTS) -> EmbedRequest:
    """An ``/api/embed`` body. Ollama embeds text only: token-array inputs are a 400."""
    texts = request.texts
    if texts is None:
        raise InvalidRequest(
            "Ollama embeds text only; token-array inputs are not supported.", param="input", code="unsupported_input"
        )
    body: EmbedRequest = {"model": request.model, "input": texts}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if settings.truncate is not None:
        body["truncate"] = settings.truncate
    if settings.keep_alive is not None:
        body["keep_alive"] = settings.keep_alive
    return body


# --------------------------------------------------------------------------- errors


def _message_of(body: bytes) -> str:
    """Ollama's ``{"error": "<text>"}`` (also an ``{"error": {"message"}}`` object, or plain text).
    llama.cpp-engine errors arrive as a JSON document inside the string: unwrapped."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:MESSAGE_CAP]
    for _ in range(2):
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            err = err.get("message")
        if not isinstance(err, str):
            break
        text = err.strip()
        if not text.startswith("{"):
            return text[:MESSAGE_CAP]
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text[:MESSAGE_CAP]
    return ""


def error_from_message(status: int, message: str, *, retry: float | None = None, what: str = "Ollama") -> BridgeError:
    """The ``BridgeError`` for an Ollama error ``message`` answered with ``status`` (mid-stream
    error lines use 500). Codes follow the table in ``backends/http.py``."""
    message = message[:MESSAGE_CAP] or f"HTTP {status}"
    low = message.lower()
    if status <= 500:
        if any(m in low for m in CONTEXT_MARKERS):
            return ContextLengthExceeded(f"{what}: {message}")
        if any(m in low for m in POLICY_MARKERS):
            return ContentPolicy(f"{what} refused the request: {message}")
    if status == 404:
        code = "model_not_found" if "not found" in low else "not_found"
        return UpstreamRejected(f"{what}: {message}", status=404, code=code)
    if status >= 500:
        return status_error(status, f"{what} failed (HTTP {status}): {message}", retry=retry)
    if status == 429:
        return status_error(status, f"{what} is rate limiting requests: {message}", retry=retry)
    return status_error(status, f"{what} rejected the request (HTTP {status}): {message}", retry=retry)


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None, *, what: str = "Ollama"
) -> BridgeError:
    """Map an Ollama error answer (``{"error": "..."}`` with ``status``) to a ``BridgeError``."""
    return error_from_message(status, _message_of(body), retry=retry_after(headers or {}), what=what)


# --------------------------------------------------------------------------- answers


def _timestamp(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None


def _usage(event: Mapping[str, Any]) -> Usage:
    prompt = event.get("prompt_eval_count")
    done = event.get("eval_count")
    p = prompt if isinstance(prompt, int) else 0
    c = done if isinstance(done, int) else 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _malformed(what: str, detail: str) -> UpstreamError:
    return UpstreamError(f"{what} sent {detail}.", code="malformed_event")


def _call_parts(call: Any, what: str) -> tuple[str | None, str, str]:
    """(id, name, arguments as a compact JSON string) of one Ollama tool call."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise _malformed(what, "a tool call without a function name")
    args = function.get("arguments")
    arguments = args if isinstance(args, str) else orjson.dumps(args if args is not None else {}).decode()
    call_id = call.get("id")
    return (call_id if isinstance(call_id, str) and call_id else None), function["name"], arguments


class StreamParser:
    """Sync core of ``parse_stream``: feed it each NDJSON line, get OpenAI chunks back. ``done``
    turns true with the ``done`` line; ``end()`` at EOF raises ``stream_incomplete`` before that."""

    __slots__ = ("_builder", "_calls", "_include_usage", "_model", "_stops", "done", "what")

    def __init__(
        self, *, request: ChatCompletionRequest, include_usage: bool | None = None, what: str = "Ollama"
    ) -> None:
        self._model = request.model
        self._stops = request.stop_sequences
        self._include_usage = request.include_usage if include_usage is None else include_usage
        self._builder: ChunkBuilder | None = None
        self._calls = 0
        self.done = False
        self.what = what

    def feed(self, line: bytes) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _malformed(self.what, f"a line that is not JSON ({bytes(line[:80])!r})") from None
        if not isinstance(event, dict):
            raise _malformed(self.what, "a line that is not a JSON object")
        return self.feed_event(event)

    def feed_event(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        if "error" in event:
            raise error_from_message(500, _message_of(orjson.dumps(event)), what=self.what)
        message = event.get("message")
        done = event.get("done") is True
        if not isinstance(message, dict) and not done:
            raise _malformed(self.what, "a line without a message")
        if self._builder is None:
            model = event.get("model")
            self._builder = ChunkBuilder(
                model=model if isinstance(model, str) and model else self._model,
                created=_timestamp(event.get("created_at")),
                include_usage=self._include_usage,
                stop=self._stops,
            )
        builder = self._builder
        out: list[ChatCompletionChunk] = []
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str) and content:
                out += builder.text(content)  # after a stop sequence: nothing (wait for done)
            for call in message.get("tool_calls") or ():
                call_id, name, arguments = _call_parts(call, self.what)
                if not builder.stopped:
                    out += builder.tool_call(self._calls, id=call_id, name=name, arguments=arguments)
                    self._calls += 1
        if done:
            self.done = True
            reason: FinishReason = "length" if event.get("done_reason") == "length" else "stop"
            out += builder.finish(reason, _usage(event))
        elif not out:
            out = builder.start()  # the role chunk as soon as the first line arrived
        return out

    def end(self) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        raise UpstreamError(
            f'{self.what} ended the stream before its final line (no "done": true).', code="stream_incomplete"
        )


async def parse_stream(
    lines: AsyncIterable[bytes], *, request: ChatCompletionRequest, what: str = "Ollama"
) -> AsyncIterator[ChatCompletionChunk]:
    """Ollama's NDJSON lines → OpenAI chunks; stops at the ``done`` line."""
    parser = StreamParser(request=request, what=what)
    async for line in lines:
        for chunk in parser.feed(line):
            yield chunk
        if parser.done:
            return
    for chunk in parser.end():
        yield chunk


def parse_response(body: Any, *, request: ChatCompletionRequest, what: str = "Ollama") -> ChatCompletion:
    """A ``stream: false`` answer → ``chat.completion``."""
    if not isinstance(body, dict):
        raise _malformed(what, "an answer that is not a JSON object")
    if "error" in body:
        raise error_from_message(500, _message_of(orjson.dumps(body)), what=what)
    message = body.get("message")
    if not isinstance(message, dict):
        raise _malformed(what, "an answer without a message")
    if body.get("done") is not True:
        raise UpstreamError(f'{what} answered without finishing ("done" is not true).', code="stream_incomplete")
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    cutter = StopCutter(request.stop_sequences)
    text = cutter.feed(text) + cutter.flush()
    calls: list[ToolCall] = []
    if not cutter.stopped:
        for call in message.get("tool_calls") or ():
            call_id, name, arguments = _call_parts(call, what)
            calls.append(
                {
                    "id": call_id or f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
    finish: FinishReason = "length" if body.get("done_reason") == "length" and not cutter.stopped else "stop"
    if calls and finish == "stop":
        finish = "tool_calls"
    model = body.get("model")
    return completion(
        id=new_id(),
        created=_timestamp(body.get("created_at")) or int(time.time()),
        model=model if isinstance(model, str) and model else request.model,
        content=text,
        finish_reason=finish,
        usage=_usage(body),
        tool_calls=calls or None,
    )


def parse_embed_response(body: Any, *, request: EmbeddingRequest, what: str = "Ollama") -> EmbeddingResponse:
    """An ``/api/embed`` answer → OpenAI's embeddings response, in the asked ``encoding_format``."""
    vectors = body.get("embeddings") if isinstance(body, dict) else None
    count = len(request.texts or ())
    if not isinstance(vectors, list) or len(vectors) != count:
        raise _malformed(what, f"an embeddings answer without {count} vector(s)")
    out: list[list[float]] = []
    for vector in vectors:
        if not isinstance(vector, list) or not all(isinstance(x, int | float) for x in vector):
            raise _malformed(what, "an embedding that is not a list of numbers")
        out.append([float(x) for x in vector])
    tokens = body.get("prompt_eval_count")
    return embedding_response(
        out,
        model=request.model,
        prompt_tokens=tokens if isinstance(tokens, int) else 0,
        encoding=request.encoding_format,
    )


def models_from_tags(body: Any, *, owned_by: str = "ollama", created: int = 0) -> list[Model]:
    """``GET /api/tags`` → OpenAI ``Model``s (``created`` = the model's ``modified_at``)."""
    entries = body.get("models") if isinstance(body, dict) else None
    out: list[Model] = []
    for entry in entries if isinstance(entries, list) else ():
        name = entry.get("name") or entry.get("model") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            stamp = _timestamp(entry.get("modified_at")) or created
            out.append({"id": name, "object": "model", "created": stamp, "owned_by": owned_by})
    return out
