"""Build strictly compliant OpenAI chat completions and chunks from text pieces (pure).

Every text backend feeds its upstream's text into a ``ChunkBuilder``; the builder owns the rules
of the streaming contract (reference ``openai-anthropic-ollama.md`` §2.2): one role delta first,
content deltas with ``finish_reason: null``, a separate finish chunk with ``delta: {}``, one usage
chunk with ``choices: []`` only when asked for, the same ``id``/``created``/``model`` throughout.
It also emulates ``stop`` for upstreams that ignore it. ``fold_chunks`` turns a chunk stream into
a ``chat.completion`` so a stream-only upstream can answer non-stream requests the same way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, Iterable
from typing import Any

from .types import ChatCompletion, ChatCompletionChunk, FinishReason, ToolCall, Usage

__all__ = ["ChunkBuilder", "StopCutter", "completion", "fold_chunks", "new_id"]


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


class StopCutter:
    """Cuts a text stream at the first occurrence of any stop sequence.

    Text that could be the start of a stop sequence is held back until it is known not to be.
    """

    __slots__ = ("_held", "_longest", "_stops", "stopped")

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit now."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = -1
        for stop in self._stops:
            at = buf.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut = at
        if cut != -1:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = 0
        for n in range(min(self._longest - 1, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(stop.startswith(tail) for stop in self._stops):
                keep = n
                break
        if keep:
            self._held = buf[-keep:]
            return buf[:-keep]
        self._held = ""
        return buf

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


class ChunkBuilder:
    """Stateful producer of ``chat.completion.chunk`` dicts for one choice."""

    __slots__ = ("_cutter", "_started", "_tools", "created", "id", "include_usage", "model")

    def __init__(
        self,
        *,
        model: str,
        id: str | None = None,
        created: int | None = None,
        include_usage: bool = False,
        stop: Iterable[str] = (),
    ) -> None:
        self.id = id or new_id()
        self.created = int(created if created is not None else time.time())
        self.model = model
        self.include_usage = include_usage
        self._cutter = StopCutter(stop)
        self._started = False
        self._tools: set[int] = set()

    @property
    def stopped(self) -> bool:
        """A stop sequence was seen: the caller should finish and stop reading upstream."""
        return self._cutter.stopped

    def _chunk(self, delta: dict[str, Any], finish: FinishReason | None) -> ChatCompletionChunk:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk  # type: ignore[return-value]

    def start(self) -> list[ChatCompletionChunk]:
        """The role chunk, once."""
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": "", "refusal": None}, None)]

    def text(self, piece: str) -> list[ChatCompletionChunk]:
        out = self.start() if not self._started else []
        if piece:
            piece = self._cutter.feed(piece)
            if piece:
                out.append(self._chunk({"content": piece}, None))
        return out

    def tool_call(
        self, index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
    ) -> list[ChatCompletionChunk]:
        """A fragment of tool call ``index`` (0, 1, ... within the answer). The call's first
        fragment needs ``id`` and ``name``; later ones carry only ``arguments`` slices. A tool call
        that opens the answer shares the role chunk, with ``content: null``, as OpenAI sends it."""
        fragment: dict[str, Any] = {"index": index}
        if index not in self._tools:
            self._tools.add(index)
            fragment["id"] = id or f"call_{uuid.uuid4().hex[:24]}"
            fragment["type"] = "function"
            fragment["function"] = {"name": name or "", "arguments": arguments}
        else:
            fragment["function"] = {"arguments": arguments}
        if not self._started:
            self._started = True
            delta = {"role": "assistant", "content": None, "tool_calls": [fragment], "refusal": None}
            return [self._chunk(delta, None)]
        return [self._chunk({"tool_calls": [fragment]}, None)]

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._tools)

    def finish(self, reason: FinishReason, usage: Usage | None = None) -> list[ChatCompletionChunk]:
        """Held-back text, the finish chunk and, when asked for, the usage chunk. An answer with
        tool calls finishes with ``tool_calls`` (unless cut by ``length``)."""
        out = self.start() if not self._started else []
        held = self._cutter.flush()
        if held:
            out.append(self._chunk({"content": held}, None))
        if self._tools and reason == "stop" and not self._cutter.stopped:
            reason = "tool_calls"
        out.append(self._chunk({}, "stop" if self._cutter.stopped else reason))
        if self.include_usage:
            out.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            )
        return out


def completion(
    *,
    id: str,
    created: int,
    model: str,
    content: str,
    finish_reason: FinishReason,
    usage: Usage | None,
    tool_calls: list[ToolCall] | None = None,
) -> ChatCompletion:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
        if not content:
            message["content"] = None
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": int(created),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body  # type: ignore[return-value]


async def fold_chunks(chunks: AsyncIterable[ChatCompletionChunk]) -> ChatCompletion:
    """The non-stream answer equal to a (single-choice) chunk stream."""
    parts: list[str] = []
    first: ChatCompletionChunk | None = None
    finish: FinishReason = "stop"
    usage: Usage | None = None
    calls: dict[int, ToolCall] = {}
    async for chunk in chunks:
        if first is None:
            first = chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content = delta.get("content")
            if content:
                parts.append(content)
            for fragment in delta.get("tool_calls") or ():
                function = fragment.get("function") or {}
                call = calls.get(fragment["index"])
                if call is None:
                    call = calls[fragment["index"]] = {
                        "id": fragment.get("id", ""),
                        "type": "function",
                        "function": {"name": function.get("name", ""), "arguments": ""},
                    }
                call["function"]["arguments"] += function.get("arguments") or ""
            if choice["finish_reason"] is not None:
                finish = choice["finish_reason"]
    if first is None:
        raise ValueError("empty chunk stream")
    return completion(
        id=first["id"],
        created=first["created"],
        model=first["model"],
        content="".join(parts),
        finish_reason=finish,
        usage=usage,
        tool_calls=[calls[i] for i in sorted(calls)] or None,
    )
