"""OpenAI chat ⇄ a generic server-sent-events service described by config. Pure: no I/O.

``parse_options`` (from ``options``, re-exported here) validates a ``[backends.NAME.options]``
table into a ``StreamSpec`` (paths, conditions and templates parsed once, see ``expressions``).
``build_request`` refuses what such a service cannot do (tools, ``n > 1``, logprobs, JSON modes,
continuation) and renders the request. ``StreamParser`` turns the service's events into strictly
compliant chunks (stop sequences emulated, usage and finish reason read from any event,
cumulative text reduced to new suffixes) and raises the contract's errors;
``error_from_response`` maps an error status and body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Final, cast

import orjson

from ...chunks import ChunkBuilder
from ...errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamError,
    status_error,
)
from ...sse import ServerSentEvent
from ...types import ChatCompletionChunk, ChatCompletionRequest, FinishReason, Usage, text_only_gap
from .expressions import MISSING, NOT_JSON, any_match, lookup, render, render_text, to_text
from .options import KNOWN_OPTIONS, StreamSpec, parse_options
from .wire import FINISH_REASONS, UpstreamRequest

__all__ = [
    "KNOWN_OPTIONS",
    "StreamParser",
    "StreamSpec",
    "build_request",
    "classify_error",
    "error_from_response",
    "error_message",
    "parse_options",
    "parse_stream",
    "request_params",
]

log = logging.getLogger("oai_bridge.generic_sse")

MESSAGE_CAP = 300
CONTEXT_PHRASES: Final = (
    "context length",
    "context_length",
    "context window",
    "maximum context",
    "prompt is too long",
    "prompt too long",
    "input is too long",
    "too many tokens",
    "maximum number of tokens",
    "token limit",
)
CONTENT_PHRASES: Final = (
    "content policy",
    "content_policy",
    "content management policy",
    "content filter",
    "content_filter",
    "safety policy",
    "flagged",
    "moderation",
)
# --------------------------------------------------------------------------- request


def _unsupported(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"{what} is not supported by this backend (a generic event-stream service).",
        param=param,
        code="unsupported_parameter",
    )


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    gap = text_only_gap(request)
    if gap is not None:
        raise _unsupported(*gap)
    if request.is_continuation:
        raise BridgeError(
            "This backend cannot continue a partial answer (the service has no assistant prefill); "
            "the router must not resume a stream on it.",
            code="continuation_unsupported",
        )


def _flatten(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for j, part in enumerate(content):
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise InvalidRequest(
                f"Content parts of type {part.get('type')!r} are not supported by this backend (text only).",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content",
            )
    return "\n".join(texts)


def request_params(request: ChatCompletionRequest, *, api_key: str | None = None) -> dict[str, Any]:
    """The values of every placeholder for ``request`` (unset ones are ``None``)."""
    messages: list[dict[str, str]] = []
    for i, m in enumerate(request.messages):
        if m.role in ("tool", "function") or (m.role == "assistant" and (m.model_extra or {}).get("tool_calls")):
            raise _unsupported(f"messages[{i}]", "A conversation with tool calls or tool results")
        role = "system" if m.role == "developer" else m.role
        messages.append({"role": role, "content": _flatten(m.content, i)})
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    systems = [m["content"] for m in messages if m["role"] == "system"]
    before = messages if last_user is None else messages[:last_user]
    return {
        "messages": messages,
        "last_user_message": None if last_user is None else messages[last_user]["content"],
        "system": "\n\n".join(systems) if systems else None,
        "history": [m for m in before if m["role"] != "system"],
        "model": request.model,
        "max_tokens": request.token_limit,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop_sequences or None,
        "user": request.user,
        "api_key": api_key,
        "stream": True,
    }


def build_request(request: ChatCompletionRequest, spec: StreamSpec, *, api_key: str | None = None) -> UpstreamRequest:
    """Validate ``request`` and render the service's request. Raises ``InvalidRequest`` (400) for
    what the service cannot do, and ``BridgeError`` (``continuation_unsupported``) for a
    continuation request."""
    _refuse_unsupported(request)
    params = request_params(request, api_key=api_key)
    headers = {k: render_text(v, params) for k, v in spec.headers.items()}
    query: dict[str, str] = {}
    for key, template in spec.query.items():
        value = render(template, params, drop_unset=False)
        if value is not None:
            query[key] = to_text(value)
    body = render(spec.body, params, drop_unset=spec.drop_unset) if spec.method == "POST" else None
    return UpstreamRequest(spec.method, spec.path, headers, query, body)


# --------------------------------------------------------------------------- errors


def error_message(body: bytes) -> str | None:
    """The human message of an error body: JSON ``message``/``error``/``detail`` (nested too), or
    the text; capped at ``MESSAGE_CAP`` characters."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return _cap(text) if text else None
    return _message_in(data)


def _message_in(data: Any, depth: int = 0) -> str | None:
    if isinstance(data, str):
        return _cap(data) if data.strip() else None
    if isinstance(data, dict) and depth < 3:
        for key in ("message", "error", "detail", "msg", "error_message", "errors"):
            found = _message_in(data.get(key), depth + 1)
            if found:
                return found
    if isinstance(data, list) and data and depth < 3:
        return _message_in(data[0], depth + 1)
    return None


def _cap(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CAP else text[: MESSAGE_CAP - 1] + "…"


def classify_error(status: int | None, message: str, *, retry_after: float | None = None) -> BridgeError:
    """The ``BridgeError`` for an upstream error: context-length and content-policy phrasings
    (on a 4xx or a status-less error event) first, then the shared status table
    (``backends/http.py``)."""
    if status is None or (400 <= status < 500 and status != 429):
        low = message.lower()
        if any(p in low for p in CONTEXT_PHRASES):
            return ContextLengthExceeded(message)
        if any(p in low for p in CONTENT_PHRASES):
            return ContentPolicy(message)
    if status is None or status < 400:
        return UpstreamError(message)
    return status_error(status, message, retry=retry_after)


def error_from_response(
    status: int, body: bytes, *, retry_after: float | None = None, what: str = "the upstream"
) -> BridgeError:
    """Map an error status and its body (message extracted, capped; never the whole body)."""
    message = error_message(body) or "no details"
    return classify_error(status, f"{what} answered HTTP {status}: {message}", retry_after=retry_after)


# --------------------------------------------------------------------------- stream


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class StreamParser:
    """Events of one answer → chunks. ``feed`` each event (its SSE name and data); stop when
    ``done``; call ``end`` when the body ended without ``done``. Raises the contract's errors:
    an error event (classified before the first chunk, ``UpstreamError`` after), ``malformed_event``,
    ``stream_incomplete``."""

    def __init__(
        self,
        spec: StreamSpec,
        *,
        request: ChatCompletionRequest,
        include_usage: bool | None = None,
        what: str = "the upstream",
        created: int | None = None,
    ) -> None:
        self.spec = spec
        self.what = what
        self.builder = ChunkBuilder(
            model=request.model,
            created=created if created is not None else int(time.time()),
            include_usage=request.include_usage if include_usage is None else include_usage,
            stop=request.stop_sequences,
        )
        self.done = False
        self.started = False  # a chunk was produced (errors are mid-stream from now on)
        self._sent = ""  # cumulative mode: the text seen so far
        self._prompt: int | None = None
        self._completion: int | None = None
        self._finish: FinishReason = "stop"

    def feed(self, event: str, data: bytes) -> list[ChatCompletionChunk]:
        if self.done or not data.strip():
            return []  # an empty data line is a keep-alive
        try:
            obj: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = NOT_JSON
        spec = self.spec
        if spec.error_when and any_match(spec.error_when, event, data, obj):
            raise self._event_error(obj)
        finished = bool(spec.done_when) and any_match(spec.done_when, event, data, obj)
        out: list[ChatCompletionChunk] = []
        if obj is NOT_JSON:
            if not finished:
                raise UpstreamError(
                    f"{self.what} sent an event that is not JSON: {_cap(data.decode('utf-8', 'replace'))[:80]!r}",
                    code="malformed_event",
                )
        else:
            self._read_metadata(obj)
            if not spec.text_when or any_match(spec.text_when, event, data, obj):
                out.extend(self._text(lookup(spec.text_path.steps, obj)))
        if finished or self.builder.stopped:
            out.extend(self._finish_chunks())
        return out

    def end(self) -> list[ChatCompletionChunk]:
        """The body ended cleanly: the finishing chunks (``done_on_close``) or ``stream_incomplete``."""
        if self.done:
            return []
        if not self.spec.done_on_close:
            raise UpstreamError(
                f"{self.what} ended its answer without the event that finishes it.", code="stream_incomplete"
            )
        return self._finish_chunks()

    @property
    def usage(self) -> Usage | None:
        if self._prompt is None and self._completion is None:
            return None
        prompt, completion = self._prompt or 0, self._completion or 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _finish_chunks(self) -> list[ChatCompletionChunk]:
        self.done = self.started = True
        return self.builder.finish(self._finish, self.usage)

    def _text(self, value: Any) -> list[ChatCompletionChunk]:
        if value is MISSING or value is None:
            return []
        if not isinstance(value, str):
            raise UpstreamError(
                f"{self.what} sent a {type(value).__name__} at {self.spec.text_path.text!r} instead of text.",
                code="malformed_event",
            )
        if self.spec.cumulative:
            if value.startswith(self._sent):
                value, self._sent = value[len(self._sent) :], value
            elif self._sent.startswith(value):
                return []  # a repeat of (part of) what was sent
            else:
                raise UpstreamError(
                    f"{self.what} rewrote text it had already sent (cumulative answers must only grow).",
                    code="malformed_event",
                )
        if not value:
            return []
        out = self.builder.text(value)
        if out:
            self.started = True
        return out

    def _read_metadata(self, obj: Any) -> None:
        spec = self.spec
        if spec.usage_prompt_path is not None:
            prompt = _int(lookup(spec.usage_prompt_path.steps, obj))
            self._prompt = prompt if prompt is not None else self._prompt
        if spec.usage_completion_path is not None:
            completion = _int(lookup(spec.usage_completion_path.steps, obj))
            self._completion = completion if completion is not None else self._completion
        if spec.finish_reason_path is not None:
            raw = lookup(spec.finish_reason_path.steps, obj)
            if raw is not MISSING and raw is not None:
                self._finish = self._map_finish(raw)

    def _map_finish(self, raw: Any) -> FinishReason:
        key = raw if isinstance(raw, str) else to_text(raw)
        if key in self.spec.finish_map:
            return self.spec.finish_map[key]
        if key in FINISH_REASONS:
            return cast(FinishReason, key)
        log.debug("unmapped finish reason %.40r from %s; using 'stop'", key, self.what)
        return "stop"

    def _event_error(self, obj: Any) -> BridgeError:
        spec = self.spec
        raw = lookup(spec.error_path.steps, obj) if spec.error_path is not None and obj is not NOT_JSON else MISSING
        message = _message_in(raw) or (_cap(to_text(raw)) if raw not in (MISSING, None) else None)
        text = f"{self.what} reported an error: {message or 'no details'}"
        if self.started:
            return UpstreamError(text)
        status = None
        if spec.error_status_path is not None and obj is not NOT_JSON:
            status = _int(lookup(spec.error_status_path.steps, obj))
        return classify_error(status, text)


async def parse_stream(
    events: AsyncIterable[ServerSentEvent],
    spec: StreamSpec,
    *,
    request: ChatCompletionRequest,
    include_usage: bool | None = None,
) -> AsyncIterator[ChatCompletionChunk]:
    """Chunks for decoded events (a library helper around ``StreamParser``)."""
    parser = StreamParser(spec, request=request, include_usage=include_usage)
    async for event in events:
        for chunk in parser.feed(event.event, event.data):
            yield chunk
        if parser.done:
            return
    for chunk in parser.end():
        yield chunk
