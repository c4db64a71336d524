"""OpenAI chat ⇄ Anthropic Messages (reference ``openai-anthropic-ollama.md`` §6.7). Pure: no I/O.

Requests: ``build_request`` (in ``request.py``, re-exported here; its rules are documented there).

Response: text blocks joined, ``tool_use`` → ``tool_calls`` (``id`` kept, ``arguments`` compact
JSON), ``stop_reason`` via ``FINISH_REASONS``, usage ``prompt_tokens = input_tokens +
cache_creation_input_tokens + cache_read_input_tokens``. ``thinking``/``redacted_thinking`` blocks
and other block kinds (server tools, citations) are skipped. The chat id is ``chatcmpl-`` + the
Anthropic message id without its ``msg_`` prefix, so logs on both sides match.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import orjson

from ...chunks import ChunkBuilder, completion, new_id
from ...errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    retry_after,
)
from ...sse import ServerSentEvent
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, FinishReason, ToolCall
from ...types import Usage as ChatUsage
from .request import HARMLESS_PARAMS, build_request
from .wire import ERROR_STATUS, FINISH_REASONS

__all__ = [
    "HARMLESS_PARAMS",
    "StreamParser",
    "build_request",
    "error_from_event",
    "error_from_response",
    "parse_models_page",
    "parse_response",
    "parse_stream",
]

log = logging.getLogger("oai_bridge.anthropic")

UPSTREAM = "the Anthropic API"
MESSAGE_CAP = 300

# --------------------------------------------------------------------------- errors


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    return retry_after(headers) if headers else None


def _error_of(body: bytes | dict[str, Any]) -> tuple[str | None, str]:
    """(``error.type``, the message capped) of an Anthropic error body, or of whatever text came."""
    data: Any = body
    if isinstance(body, bytes):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body.decode("utf-8", "replace").strip()
            return None, text[:MESSAGE_CAP] or "no details"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") if isinstance(err.get("type"), str) else None
        message = err.get("message") if isinstance(err.get("message"), str) else None
        return kind, (message or kind or "no details")[:MESSAGE_CAP]
    if isinstance(err, str):
        return None, err[:MESSAGE_CAP]
    return None, "no details"


def _is_context_length(message: str) -> bool:
    low = message.lower()
    return "prompt is too long" in low or "exceed context limit" in low or "context window" in low


def _is_content_policy(message: str) -> bool:
    low = message.lower()
    return "content filtering" in low or "content policy" in low


def _mapped(status: int, kind: str | None, message: str, retry: float | None, text: str) -> BridgeError:
    """The ``BridgeError`` for an upstream status (the table in ``backends/http.py``)."""
    if status == 400 or kind == "invalid_request_error":
        if _is_context_length(message):
            return ContextLengthExceeded(text)
        if _is_content_policy(message):
            return ContentPolicy(text)
    if status == 429:
        return RateLimited(text, retry_after=retry)
    if status in (503, 529):
        return UpstreamUnavailable(text, retry_after=retry if retry is not None else 1.0)
    if status == 504:
        return UpstreamTimeout(text, code="upstream_timeout")
    if status >= 500:
        return UpstreamError(text)
    return UpstreamRejected(text, status=status)


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None, *, what: str = UPSTREAM
) -> BridgeError:
    """An error answer of the Messages API → the ``BridgeError`` the client should see (§6.5)."""
    kind, message = _error_of(body)
    label = f"HTTP {status}" + (f" {kind}" if kind else "")
    return _mapped(status, kind, message, _retry_after(headers), f"{what} refused the request ({label}): {message}")


def error_from_event(data: dict[str, Any], *, what: str = UPSTREAM) -> BridgeError:
    """An ``event: error`` inside a 200 stream → the ``BridgeError`` its ``error.type`` stands for
    (``overloaded_error`` → 503, ``api_error`` → 502, ``rate_limit_error`` → 429, ...)."""
    kind, message = _error_of(data)
    status = ERROR_STATUS.get(kind or "", 500)
    return _mapped(status, kind, message, None, f"{what} failed mid-stream ({kind or 'error'}): {message}")


# --------------------------------------------------------------------------- responses


def _chat_id(message_id: Any) -> str | None:
    if not isinstance(message_id, str) or not message_id:
        return None
    return "chatcmpl-" + message_id.removeprefix("msg_")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    return (
        _int(usage.get("input_tokens"))
        + _int(usage.get("cache_creation_input_tokens"))
        + _int(usage.get("cache_read_input_tokens"))
    )


def _chat_usage(prompt: int, output: int) -> ChatUsage:
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def _finish(stop_reason: Any) -> FinishReason:
    if stop_reason is None:
        return "stop"
    reason = FINISH_REASONS.get(str(stop_reason))
    if reason is None:
        log.warning("unknown Anthropic stop_reason %r; reporting 'stop'", stop_reason)
        return "stop"
    return reason


def parse_response(body: Any, *, request: ChatCompletionRequest, what: str = UPSTREAM) -> ChatCompletion:
    """A non-stream ``Message`` → ``chat.completion``. Raises ``UpstreamError`` on a wrong shape and
    ``UpstreamError(code="stream_incomplete")`` for a message without ``stop_reason``."""
    if isinstance(body, dict) and body.get("type") == "error":
        raise error_from_event(body, what=what)
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, list):
        raise UpstreamError(f"{what} answered without a message content list.")
    if body.get("stop_reason") is None:
        raise UpstreamError(f"{what} answered an unfinished message (no stop_reason).", code="stream_incomplete")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise UpstreamError(f"{what} answered a tool_use block without id or name.")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
    finish = _finish(body.get("stop_reason"))
    if calls and finish == "stop":
        finish = "tool_calls"
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return completion(
        id=_chat_id(body.get("id")) or new_id(),
        created=int(time.time()),
        model=str(body.get("model") or request.model),
        content="".join(texts),
        finish_reason=finish,
        usage=_chat_usage(_prompt_tokens(usage), _int(usage.get("output_tokens"))),
        tool_calls=calls or None,
    )


_AFTER_START = frozenset(
    {"content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
)


def _malformed(what: str, detail: str) -> UpstreamError:
    return UpstreamError(f"{what} sent a malformed stream event ({detail}).", code="malformed_event")


class StreamParser:
    """Sync core of ``parse_stream``: feed it each SSE event (name, data), get OpenAI chunks back.

    ``message_start`` → the role chunk; text deltas → content; a ``tool_use`` block → the first
    fragment of tool call *k* (k = the ordinal of tool_use blocks, not the block index) and its
    ``input_json_delta`` slices → argument fragments; ``message_delta`` keeps ``stop_reason`` and
    usage; ``message_stop`` → the finish chunk (and the usage chunk when asked for), then ``done``.
    ``ping``, thinking/signature/citation deltas and unknown events are skipped; ``event: error``
    raises its ``BridgeError``. ``end()`` at EOF raises ``stream_incomplete`` unless ``done``.
    """

    __slots__ = (
        "_builder",
        "_include_usage",
        "_model",
        "_output",
        "_prompt",
        "_stop_reason",
        "_tools",
        "done",
        "what",
    )

    def __init__(
        self, *, request: ChatCompletionRequest, include_usage: bool | None = None, what: str = UPSTREAM
    ) -> None:
        self._model = request.model
        self._include_usage = request.include_usage if include_usage is None else include_usage
        self._builder: ChunkBuilder | None = None
        self._tools: dict[int, int] = {}  # content block index → tool call ordinal
        self._prompt = 0
        self._output = 0
        self._stop_reason: Any = None
        self.done = False
        self.what = what

    def feed(self, event: str, data: bytes) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _malformed(self.what, f"not JSON: {data[:80]!r}") from None
        if not isinstance(obj, dict):
            raise _malformed(self.what, "not an object")
        kind = obj.get("type") or event
        if kind == "ping":
            return []
        if kind == "error":
            raise error_from_event(obj, what=self.what)
        if kind == "message_start":
            return self._start(obj)
        builder = self._builder
        if builder is None:
            if kind in _AFTER_START:
                raise _malformed(self.what, f"{kind} before message_start")
            return []
        if kind == "content_block_start":
            return self._block_start(builder, obj)
        if kind == "content_block_delta":
            return self._delta(builder, obj)
        if kind == "message_delta":
            self._message_delta(obj)
            return []
        if kind == "message_stop":
            self.done = True
            return builder.finish(_finish(self._stop_reason), _chat_usage(self._prompt, self._output))
        return []  # content_block_stop, and event kinds newer than this parser

    def _start(self, obj: dict[str, Any]) -> list[ChatCompletionChunk]:
        message = obj.get("message")
        if self._builder is not None:
            raise _malformed(self.what, "a second message_start")
        if not isinstance(message, dict):
            raise _malformed(self.what, "message_start without a message")
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._prompt = _prompt_tokens(usage)
            self._output = _int(usage.get("output_tokens"))
        model = message.get("model")
        self._builder = ChunkBuilder(
            model=model if isinstance(model, str) and model else self._model,
            id=_chat_id(message.get("id")),
            include_usage=self._include_usage,
        )
        return self._builder.start()

    def _block_start(self, builder: ChunkBuilder, obj: dict[str, Any]) -> list[ChatCompletionChunk]:
        index, block = obj.get("index"), obj.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            raise _malformed(self.what, "content_block_start without index or block")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            return builder.text(text) if isinstance(text, str) and text else []
        if kind != "tool_use":
            return []  # thinking, redacted_thinking, server tools: skipped
        ident, name = block.get("id"), block.get("name")
        if not isinstance(ident, str) or not isinstance(name, str):
            raise _malformed(self.what, "tool_use block without id or name")
        ordinal = self._tools[index] = len(self._tools)
        given = block.get("input")
        arguments = orjson.dumps(given).decode() if isinstance(given, dict) and given else ""
        return builder.tool_call(ordinal, id=ident, name=name, arguments=arguments)

    def _delta(self, builder: ChunkBuilder, obj: dict[str, Any]) -> list[ChatCompletionChunk]:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            raise _malformed(self.what, "content_block_delta without delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if not isinstance(text, str):
                raise _malformed(self.what, "text_delta without text")
            return builder.text(text)
        if kind == "input_json_delta":
            partial = delta.get("partial_json")
            if not isinstance(partial, str):
                raise _malformed(self.what, "input_json_delta without partial_json")
            ordinal = self._tools.get(obj.get("index"))  # type: ignore[arg-type]
            if ordinal is None or not partial:
                return []
            return builder.tool_call(ordinal, arguments=partial)
        return []  # thinking_delta, signature_delta, citations_delta

    def _message_delta(self, obj: dict[str, Any]) -> None:
        delta = obj.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop_reason = delta["stop_reason"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("output_tokens"), int):
                self._output = _int(usage["output_tokens"])  # cumulative: overwrites
            if isinstance(usage.get("input_tokens"), int):
                self._prompt = _prompt_tokens(usage)

    def end(self) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        raise UpstreamError(
            f"{self.what} ended the stream before the answer was complete (no message_stop).", code="stream_incomplete"
        )


async def parse_stream(
    events: AsyncIterable[ServerSentEvent],
    *,
    request: ChatCompletionRequest,
    include_usage: bool | None = None,
    what: str = UPSTREAM,
) -> AsyncIterator[ChatCompletionChunk]:
    """OpenAI chunks from decoded Anthropic SSE events (library use; the backend feeds the parser)."""
    parser = StreamParser(request=request, include_usage=include_usage, what=what)
    async for event in events:
        for chunk in parser.feed(event.event, event.data):
            yield chunk
        if parser.done:
            return
    for chunk in parser.end():
        yield chunk


# --------------------------------------------------------------------------- models


def parse_models_page(body: Any) -> tuple[list[tuple[str, int]], bool, str | None]:
    """``GET /v1/models`` page → ([(id, created unix seconds)], has_more, last_id)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("a model page without a data list")
    out: list[tuple[str, int]] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        created = 0
        if isinstance(item.get("created_at"), str):
            try:
                created = int(datetime.fromisoformat(item["created_at"]).timestamp())
            except ValueError:
                created = 0
        out.append((item["id"], created))
    last = body.get("last_id")
    return out, bool(body.get("has_more")), last if isinstance(last, str) else None
