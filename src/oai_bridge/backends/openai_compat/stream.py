"""The stream normalizer (pure): an OpenAI-compatible server's chunks → strictly compliant ones.
See ``translate`` for what it repairs."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import orjson

from ...chunks import new_id
from ...errors import UpstreamError
from ...types import ChatCompletionChunk, ChatCompletionRequest, Usage
from .upstream_errors import cap, is_error, stream_error
from .wire import DONE, FINISH_ALIASES

__all__ = ["StreamNormalizer", "parse_stream"]

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
CHUNK_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage"})
STABLE_KEYS = ("system_fingerprint", "service_tier")


def finish_reason(raw: Any, has_tools: bool) -> str | None:
    """A ``finish_reason`` in the enum (``None`` for null/``""``)."""
    if raw is None or raw == "":
        return None
    reason = raw if raw in FINISH_REASONS else FINISH_ALIASES.get(str(raw), "stop")
    return "tool_calls" if reason == "stop" and has_tools else reason


def arguments_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def usage_of(raw: Any) -> Usage | None:
    """OpenAI usage (details kept) from an upstream's, or ``None`` when it is not one."""
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        done = int(raw.get("completion_tokens") or 0)
        total = int(raw.get("total_tokens") or (prompt + done))
    except (TypeError, ValueError):
        return None
    usage: dict[str, Any] = dict(raw)
    usage.update(prompt_tokens=prompt, completion_tokens=done, total_tokens=total)
    return usage  # type: ignore[return-value]


def as_object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def created_of(raw: Any) -> int:
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
        return int(raw)
    return int(time.time())


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def malformed(what: str, why: str) -> UpstreamError:
    return UpstreamError(f"{what} sent a malformed event ({why}).", code="malformed_event")


class _Choice:
    """What the normalizer knows about one choice of the stream."""

    __slots__ = ("by_upstream", "calls", "finish", "last", "started")

    def __init__(self) -> None:
        self.started = False
        self.finish: str | None = None
        self.calls: list[list[str]] = []  # our call index -> [id, name]
        self.by_upstream: dict[int, int] = {}  # the upstream's tool index -> ours
        self.last: int | None = None  # the call being streamed


class StreamNormalizer:
    """Sync core of ``parse_stream``: ``feed`` each SSE event's data, get compliant chunks back.
    ``done`` turns true at ``[DONE]`` (stop reading then); at the end of the body call ``end()``,
    which finishes a stream that saw its finish and raises ``stream_incomplete`` otherwise."""

    __slots__ = (
        "_choices",
        "_created",
        "_id",
        "_include_usage",
        "_model",
        "_request_model",
        "_stable",
        "_usage",
        "done",
        "what",
    )

    def __init__(
        self, *, request: ChatCompletionRequest, include_usage: bool | None = None, what: str = "the upstream"
    ) -> None:
        self._include_usage = request.include_usage if include_usage is None else include_usage
        self._request_model = request.model
        self._id: str | None = None
        self._created = 0
        self._model = request.model
        self._choices: dict[int, _Choice] = {}
        self._usage: Usage | None = None
        self._stable: dict[str, Any] = {}  # system_fingerprint / service_tier, for chunks we make
        self.done = False
        self.what = what

    # ------------------------------------------------------------ chunk building

    def _chunk(self, choices: list[dict[str, Any]], extras: Mapping[str, Any] | None = None) -> ChatCompletionChunk:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
        chunk.update(self._stable if extras is None else extras)
        chunk["choices"] = choices
        if self._include_usage:
            chunk["usage"] = None
        return chunk  # type: ignore[return-value]

    def _start(self, event: dict[str, Any]) -> None:
        ident, model = event.get("id"), event.get("model")
        self._id = ident if isinstance(ident, str) and ident else new_id()
        self._created = created_of(event.get("created"))
        self._model = model if isinstance(model, str) and model else self._request_model

    # ------------------------------------------------------------ feeding

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        """The chunks for one event's data (``[DONE]`` included)."""
        if self.done:
            return []
        if data.strip() == DONE:
            self.done = True
            return self._close()
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed(self.what, f"not JSON: {cap(data.decode('utf-8', 'replace'))[:80]!r}") from None
        if not isinstance(event, dict):
            raise malformed(self.what, "not a JSON object")
        if is_error(event):
            raise stream_error(event, what=self.what)
        return self.feed_event(event)

    def feed_event(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        """The chunks for one decoded upstream chunk."""
        if self._id is None:
            self._start(event)
        usage = usage_of(event.get("usage"))
        if usage is not None:
            self._usage = usage  # cumulative on servers that repeat it: the last one counts
        choices = event.get("choices")
        if choices is None:
            return []
        if not isinstance(choices, list):
            raise malformed(self.what, "'choices' is not a list")
        extras = {k: v for k, v in event.items() if k not in CHUNK_KEYS}
        self._stable = {k: extras[k] for k in STABLE_KEYS if k in extras}
        if len(choices) == 1:  # fast path: the text of a choice already started, nothing else
            text = self._plain_text(choices[0])
            if text is not None:
                choice = {"index": choices[0].get("index", 0), "delta": {"content": text}, "logprobs": None,
                          "finish_reason": None}  # fmt: skip
                return [self._chunk([choice], extras)]
        now: list[dict[str, Any]] = []
        finishes: list[dict[str, Any]] = []
        for position, raw in enumerate(choices):
            if not isinstance(raw, dict):
                raise malformed(self.what, "a choice is not an object")
            self._choice(raw, position, now, finishes)
        out = [self._chunk(now, extras)] if now else []
        if finishes:
            out.append(self._chunk(finishes, extras))
        return out

    def _plain_text(self, raw: Any) -> str | None:
        """The text of ``raw`` when it is only that — ``{"index", "delta": {"content": str}}`` with
        null/absent ``logprobs`` and ``finish_reason``, for a choice already started and not
        finished — else ``None`` (the general path then handles it)."""
        if type(raw) is not dict:
            return None
        delta = raw.get("delta")
        if type(delta) is not dict or len(delta) != 1:
            return None
        text = delta.get("content")
        if type(text) is not str or not text:
            return None
        reason = raw.get("finish_reason")
        if (reason is not None and reason != "") or raw.get("logprobs") is not None:
            return None
        index = raw.get("index", 0)
        state = self._choices.get(index) if type(index) is int else None
        if state is None or not state.started or state.finish is not None:
            return None
        return text

    def _choice(
        self, raw: dict[str, Any], position: int, now: list[dict[str, Any]], finishes: list[dict[str, Any]]
    ) -> None:
        index = raw.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        state = self._choices.setdefault(index, _Choice())
        if state.finish is not None:
            return  # nothing belongs to a choice after its finish
        delta = raw.get("delta") if raw.get("delta") is not None else {}
        if not isinstance(delta, dict):
            raise malformed(self.what, "'delta' is not an object")
        delta = self._delta(state, delta)
        logprobs = raw.get("logprobs")
        reason = finish_reason(raw.get("finish_reason"), bool(state.calls))
        if reason is None:
            if delta or logprobs is not None:
                now.append({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None})
            return
        state.finish = reason
        if delta or logprobs is not None:  # content with the finish: send it first, then finish
            now.append({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None})
            logprobs = None
        finishes.append({"index": index, "delta": {}, "logprobs": logprobs, "finish_reason": reason})

    def _delta(self, state: _Choice, raw: dict[str, Any]) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "tool_calls" and value is not None:
                if not isinstance(value, list):
                    raise malformed(self.what, "'tool_calls' is not a list")
                value = [self._fragment(state, call) for call in value]
            if key != "role":
                delta[key] = value
        if not state.started:
            state.started = True
            delta = {"role": "assistant", **delta}
            if "content" not in delta and "tool_calls" not in delta:
                delta.update(content="", refusal=delta.get("refusal"))
            return delta
        # Later deltas: nothing empty (a repeated role, "content": null/"", an empty list).
        return {k: v for k, v in delta.items() if v is not None and v != "" and v != []}

    def _fragment(self, state: _Choice, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise malformed(self.what, "a tool call fragment is not an object")
        function = as_object(raw.get("function"))
        name, ident = as_text(function.get("name")), as_text(raw.get("id"))
        upstream = raw.get("index") if isinstance(raw.get("index"), int) else None
        ours = self._which_call(state, upstream, ident, name)
        arguments = arguments_text(function.get("arguments"))
        if ours is None:  # a new call
            ours = len(state.calls)
            state.calls.append([ident or call_id(), name])
            if upstream is not None:
                state.by_upstream[upstream] = ours
            state.last = ours
            return {
                "index": ours,
                "id": state.calls[ours][0],
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        state.last = ours
        out: dict[str, Any] = {"arguments": arguments}
        if name and not state.calls[ours][1]:  # a name that came late (the first fragment had none)
            state.calls[ours][1] = name
            out = {"name": name, "arguments": arguments}
        return {"index": ours, "function": out}

    @staticmethod
    def _which_call(state: _Choice, upstream: int | None, ident: str, name: str) -> int | None:
        """Our index of the call a fragment continues, or ``None`` when it starts a new call."""
        if upstream is not None:
            ours = state.by_upstream.get(upstream)
            if ours is not None and ident and name and ident != state.calls[ours][0]:
                return None  # another call reusing the index
            return ours
        if ident:
            known = [i for i, (cid, _) in enumerate(state.calls) if cid == ident]
            return known[0] if known else None
        if state.last is None or (name and name != state.calls[state.last][1] and state.calls[state.last][1]):
            return None
        return state.last

    # ------------------------------------------------------------ ending

    def _close(self) -> list[ChatCompletionChunk]:
        """Finish chunks for choices the upstream left open, then the usage chunk if asked."""
        if self._id is None:
            self._start({})
        if not self._choices:
            self._choices[0] = _Choice()
        out: list[ChatCompletionChunk] = []
        for index, state in sorted(self._choices.items()):
            if state.finish is not None:
                continue
            state.finish = "tool_calls" if state.calls else "stop"
            if not state.started:
                state.started = True
                role = {"role": "assistant", "content": "", "refusal": None}
                out.append(self._chunk([{"index": index, "delta": role, "logprobs": None, "finish_reason": None}]))
            out.append(self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": state.finish}]))
        if self._include_usage:
            usage = self._usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            out.append({**self._chunk([]), "usage": usage})
        return out

    @property
    def complete(self) -> bool:
        """Every choice the upstream opened has finished."""
        return bool(self._choices) and all(s.finish is not None for s in self._choices.values())

    def end(self) -> list[ChatCompletionChunk]:
        """At the end of the body: the rest (usage) for a finished answer, else raise."""
        if self.done:
            return []
        if not self.complete:
            raise UpstreamError(
                f"{self.what} ended its stream before the answer was complete (no finish, no [DONE]).",
                code="stream_incomplete",
            )
        self.done = True
        return self._close()


async def parse_stream(
    events: AsyncIterable[bytes], *, request: ChatCompletionRequest, what: str = "the upstream"
) -> AsyncIterator[ChatCompletionChunk]:
    """An upstream's SSE event data (one ``bytes`` per event) → compliant chunks."""
    normalizer = StreamNormalizer(request=request, what=what)
    async for data in events:
        for chunk in normalizer.feed(data):
            yield chunk
        if normalizer.done:
            return
    for chunk in normalizer.end():
        yield chunk
