"""OpenAI chat ⇄ Livepeer ``/llm``, both generations. Pure: no I/O.

``build_request`` validates first (a bad parameter can crash a gateway or get orchestrators
suspended: reference ``livepeer-gateway.md`` §3.3, §4) and refuses what the network cannot do.
``parse_response`` and ``parse_stream`` turn the gateway's answers into strict OpenAI output:
``object`` added, ``finish_reason`` ``""`` → ``null``, ``"length"`` when ``max_tokens`` was reached,
cumulative usage → one usage chunk, the legacy ``[DONE]`` sentinel hidden, a leaked
``assistant\\n\\n`` chat-template header stripped, and every mid-stream failure raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

from ...chunks import ChunkBuilder, StopCutter, completion, new_id
from ...errors import (
    BridgeError,
    InvalidRequest,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, FinishReason, Usage, text_only_gap
from .wire import (
    LEGACY_DONE_CHUNK,
    Generation,
    LegacyForm,
    LivepeerRequest,
    LLMMessage,
    LLMRequest,
)

__all__ = [
    "HeaderStripper",
    "StreamParser",
    "build_request",
    "error_from_response",
    "parse_response",
    "parse_stream",
]

log = logging.getLogger("oai_bridge.livepeer")

ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
ASSISTANT_HEADER = "assistant"


# --------------------------------------------------------------------------- request


def _flatten(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported by the Livepeer LLM pipeline (it takes text only).",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content",
            )
    return "\n".join(texts)


def _messages(request: ChatCompletionRequest) -> list[LLMMessage]:
    out: list[LLMMessage] = []
    for i, message in enumerate(request.messages):
        role = ROLE_MAP.get(message.role)
        if role is None:
            raise InvalidRequest(
                f"Messages with role {message.role!r} are not supported by the Livepeer LLM pipeline "
                "(roles system, developer, user and assistant only).",
                param=f"messages[{i}].role",
                code="unsupported_role",
            )
        if message.role == "assistant" and getattr(message, "tool_calls", None):
            raise InvalidRequest(
                "Assistant tool calls are not supported by the Livepeer LLM pipeline.",
                param=f"messages[{i}].tool_calls",
                code="unsupported_parameter",
            )
        out.append({"role": role, "content": _flatten(message.content, i)})  # type: ignore[typeddict-item]
    return out


def _unsupported(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"{what} is not supported by the Livepeer LLM pipeline.", param=param, code="unsupported_parameter"
    )


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    gap = text_only_gap(request)
    if gap is not None:
        raise _unsupported(*gap)
    if request.stream_options is not None and not request.is_stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    if request.top_k is not None and request.top_k != -1 and request.top_k < 1:
        raise InvalidRequest("top_k must be -1 or at least 1.", param="top_k")


def build_request(
    request: ChatCompletionRequest,
    *,
    generation: Generation = "json",
    default_max_tokens: int = 256,
    stream: bool | None = None,
) -> LivepeerRequest:
    """Validate ``request`` and translate it for a gateway of ``generation``.

    ``stream`` overrides the request's own flag (the backend streams legacy gateways internally).
    Raises ``InvalidRequest`` for anything that must not reach the gateway.
    """
    _refuse_unsupported(request)
    messages = _messages(request)
    max_tokens = request.token_limit or default_max_tokens
    do_stream = request.is_stream if stream is None else stream
    if generation == "json":
        body: LLMRequest = {
            "model": request.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": do_stream,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.top_k is not None:  # never 0: vLLM rejects it (checked above)
            body["top_k"] = request.top_k
        return LivepeerRequest("json", do_stream, max_tokens, request.model, json=body)

    if messages[-1]["role"] != "user":
        raise InvalidRequest(
            "The legacy Livepeer /llm route needs the conversation to end with a user message.",
            param=f"messages[{len(messages) - 1}].role",
        )
    system = ""
    history = messages[:-1]
    if history and history[0]["role"] == "system":
        system, history = history[0]["content"], history[1:]
    form: LegacyForm = {
        "prompt": messages[-1]["content"],
        "model_id": request.model,
        "system_msg": system,
        "history": orjson.dumps(history).decode(),
        "max_tokens": str(max_tokens),
        "stream": "true" if do_stream else "false",
    }
    if request.temperature is not None:
        form["temperature"] = repr(float(request.temperature))
    return LivepeerRequest("form", do_stream, max_tokens, request.model, form=form)


# --------------------------------------------------------------------------- errors


def _message_of(body: bytes) -> str | None:
    """The human message of any error body a gateway, runner or Studio writes."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        detail = data.get("detail")
        if isinstance(detail, dict) and isinstance(detail.get("msg"), str):
            return str(detail["msg"])
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return "; ".join(str(d.get("msg", d)) for d in detail)
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e) for e in errors)
    return None


def error_from_response(status: int, body: bytes, *, retry_after: float | None = None) -> BridgeError:
    """Map a gateway error answer to what the client should see (reference §4)."""
    message = _message_of(body)
    if status == 503:
        return UpstreamUnavailable(
            "The Livepeer gateway has no orchestrator available for this model right now "
            f"({message or 'Service Unavailable'}).",
            retry_after=retry_after or 1.0,
        )
    if status == 429:
        return UpstreamUnavailable(
            f"The Livepeer gateway is rate limiting requests ({message or 'Too Many Requests'}).",
            status=429,
            code="rate_limit_exceeded",
            retry_after=retry_after or 1.0,
        )
    if status in (400, 404, 413, 422):
        return UpstreamRejected(f"The Livepeer gateway rejected the request: {message or 'Bad Request'}", status=400)
    if status in (401, 403):
        return UpstreamError(
            f"The Livepeer gateway refused the bridge's credentials: {message or 'Unauthorized'}",
            code="upstream_auth_failed",
        )
    return UpstreamError(
        f"The Livepeer gateway failed (HTTP {status}: {message or 'no details'}); the gateway masks "
        "the cause, which is often an orchestrator or runner error."
    )


# --------------------------------------------------------------------------- responses


class HeaderStripper:
    """Removes a leading ``assistant`` + blank lines, the chat-template header the runner leaks.

    Text is held while it could still be that header (``"ass"``, ``"assistant"``, ``"assistant\\n"``);
    it is released unchanged as soon as it cannot.
    """

    __slots__ = ("_buf", "_done")

    def __init__(self, enabled: bool = True) -> None:
        self._buf = ""
        self._done = not enabled

    def feed(self, text: str) -> str:
        if self._done:
            return text
        buf = self._buf + text
        if len(buf) <= len(ASSISTANT_HEADER):
            if ASSISTANT_HEADER.startswith(buf):
                self._buf = buf
                return ""
            self._done = True
            self._buf = ""
            return buf
        if not buf.startswith(ASSISTANT_HEADER):
            self._done = True
            self._buf = ""
            return buf
        rest = buf[len(ASSISTANT_HEADER) :]
        stripped = rest.lstrip()
        if not stripped:
            self._buf = buf  # only whitespace after the header so far
            return ""
        self._done = True
        self._buf = ""
        space = rest[: len(rest) - len(stripped)]
        if "\n" not in space:
            return buf  # "assistant is ..." — real text, not a header
        return rest[space.rfind("\n") + 1 :]  # keep the indentation of the first real line

    def flush(self) -> str:
        buf, self._buf = self._buf, ""
        self._done = True
        if buf.startswith(ASSISTANT_HEADER) and "\n" in buf:
            return ""
        return buf


def _finish_reason(usage: Usage | None, max_tokens: int) -> FinishReason:
    if usage is not None and usage.get("completion_tokens", 0) >= max_tokens:
        return "length"
    return "stop"


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        p = int(raw.get("prompt_tokens") or 0)
        c = int(raw.get("completion_tokens") or 0)
        t = int(raw.get("total_tokens") or (p + c))
    except (TypeError, ValueError):
        return None
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}


def parse_response(
    body: dict[str, Any],
    *,
    request: ChatCompletionRequest,
    generation: Generation = "json",
    max_tokens: int | None = None,
    strip_header: bool = True,
) -> ChatCompletion:
    """A gateway's non-stream answer → ``chat.completion``. Raises ``UpstreamError`` on garbage."""
    limit = max_tokens or request.token_limit or 256
    if generation == "form":
        text = body.get("response")
        if not isinstance(text, str):
            raise UpstreamError("The Livepeer gateway answered without a 'response' text.")
        total = int(body.get("tokens_used") or 0)
        # The legacy body carries one count (prompt + completion); report it as the total.
        usage: Usage | None = {"prompt_tokens": 0, "completion_tokens": total, "total_tokens": total}
        ident, created, model = new_id(), None, request.model
        finish: FinishReason = "stop"
    else:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UpstreamError("The Livepeer gateway answered without choices.")
        message = choices[0].get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise UpstreamError("The Livepeer gateway answered with non-text content.")
        usage = _usage(body.get("usage"))
        ident = body.get("id") or new_id()
        created = body.get("created") or None
        model = body.get("model") or request.model
        finish = _finish_reason(usage, limit)
    stripper = HeaderStripper(strip_header)
    text = stripper.feed(text) + stripper.flush()
    cutter = StopCutter(request.stop_sequences)
    text = cutter.feed(text) + cutter.flush()
    if cutter.stopped:
        finish = "stop"
    return completion(
        id=str(ident),
        created=int(created) if isinstance(created, int | float) and created else _now(),
        model=str(model),
        content=text,
        finish_reason=finish,
        usage=usage,
    )


def _now() -> int:
    return int(time.time())


class StreamParser:
    """Sync core of ``parse_stream``: feed it each SSE event's data, get OpenAI chunks back.

    ``done`` becomes true when the answer is complete (finishing chunk, or a stop sequence cut it:
    stop reading then). ``end()`` at EOF raises ``UpstreamError`` if the answer was not complete.
    """

    __slots__ = (
        "_builder",
        "_chunks_seen",
        "_generation",
        "_include_usage",
        "_max_tokens",
        "_model",
        "_stops",
        "_stripper",
        "_raw_usage",
        "_usage",
        "done",
    )

    def __init__(
        self,
        *,
        request: ChatCompletionRequest,
        generation: Generation = "json",
        max_tokens: int | None = None,
        strip_header: bool = True,
        include_usage: bool | None = None,
    ) -> None:
        self._generation = generation
        self._max_tokens = max_tokens or request.token_limit or 256
        self._model = request.model
        self._stops = request.stop_sequences
        self._include_usage = request.include_usage if include_usage is None else include_usage
        self._stripper = HeaderStripper(strip_header)
        self._builder: ChunkBuilder | None = None
        self._usage: Usage | None = None
        self._raw_usage: Any = None
        self._chunks_seen = 0
        self.done = False

    def _get_builder(self, event: dict[str, Any]) -> ChunkBuilder:
        if self._builder is None:
            ident = event.get("id") if self._generation == "json" else None
            created = event.get("created") if self._generation == "json" else None
            self._builder = ChunkBuilder(
                model=str(event.get("model") or self._model),
                id=ident if isinstance(ident, str) and ident else None,
                created=created if isinstance(created, int) and created > 0 else None,
                include_usage=self._include_usage,
                stop=self._stops,
            )
        return self._builder

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("skipped an undecodable event from the gateway: %.200r", data)
            return []
        if not isinstance(event, dict):
            log.warning("skipped a non-object event from the gateway: %.200r", data)
            return []
        if self._generation == "json":
            return self._feed_json(event)
        return self._feed_form(event)

    def _text(self, builder: ChunkBuilder, text: str) -> list[ChatCompletionChunk]:
        out = builder.text(self._stripper.feed(text))
        if builder.stopped:
            out += self._finish(builder, "stop")
        return out

    def _resolve_usage(self) -> None:
        if self._raw_usage is not None:
            self._usage = _usage(self._raw_usage) or self._usage
            self._raw_usage = None

    def _finish(self, builder: ChunkBuilder, reason: FinishReason) -> list[ChatCompletionChunk]:
        self._resolve_usage()
        out = builder.text(self._stripper.flush())
        self.done = True
        return out + builder.finish(reason, self._usage)

    def _feed_json(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        if "error" in event:
            raise UpstreamError(f"The Livepeer runner failed mid-stream: {_message_of(orjson.dumps(event))}")
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UpstreamError(
                "The Livepeer gateway stream failed mid-way (a chunk without choices: the runner "
                "rejected the request or crashed)."
            )
        builder = self._get_builder(event)
        usage = event.get("usage")
        if usage is not None:
            self._raw_usage = usage  # cumulative: only the last one counts, parsed at the end
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        out = self._text(builder, text) if isinstance(text, str) and text else builder.start()
        if self.done:
            return out
        finish = choice.get("finish_reason")
        if finish:  # "" and null mean "not yet"
            self._resolve_usage()
            out += self._finish(builder, _finish_reason(self._usage, self._max_tokens))
        return out

    def _feed_form(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        builder = self._get_builder(event)
        if "tokens_used" in event:
            total = int(event.get("tokens_used") or 0)
            completion_tokens = self._chunks_seen
            self._usage = {
                "prompt_tokens": max(total - completion_tokens, 0),
                "completion_tokens": completion_tokens,
                "total_tokens": total,
            }
        chunk = event.get("chunk")
        if event.get("done") or chunk == LEGACY_DONE_CHUNK:
            return self._finish(builder, _finish_reason(self._usage, self._max_tokens))
        if isinstance(chunk, str):
            self._chunks_seen += 1
            return self._text(builder, chunk)
        if "tokens_used" not in event:
            # A runner error arrives as `data: {}` (the worker drops the error text).
            raise UpstreamError("The Livepeer gateway stream failed mid-way (the runner reported an error).")
        return builder.start()

    def end(self) -> list[ChatCompletionChunk]:
        if self.done:
            return []
        raise UpstreamError("The Livepeer gateway stream ended before the answer was complete (no finishing chunk).")


async def parse_stream(
    events: AsyncIterable[bytes],
    *,
    request: ChatCompletionRequest,
    generation: Generation = "json",
    max_tokens: int | None = None,
    strip_header: bool = True,
) -> AsyncIterator[ChatCompletionChunk]:
    """The gateway's SSE event data (one ``bytes`` per event) → OpenAI chunks.

    Stops reading once the answer is complete; raises ``UpstreamError`` for a cut or failed stream.
    """
    parser = StreamParser(request=request, generation=generation, max_tokens=max_tokens, strip_header=strip_header)
    async for data in events:
        for chunk in parser.feed(data):
            yield chunk
        if parser.done:
            return
    for chunk in parser.end():
        yield chunk
