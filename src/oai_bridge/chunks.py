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

from .types import ChatCompletion, ChatCompletionChunk, FinishReason, Usage

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

    __slots__ = ("_cutter", "_started", "created", "id", "include_usage", "model")

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

    def finish(self, reason: FinishReason, usage: Usage | None = None) -> list[ChatCompletionChunk]:
        """Held-back text, the finish chunk and, when asked for, the usage chunk."""
        out = self.start() if not self._started else []
        held = self._cutter.flush()
        if held:
            out.append(self._chunk({"content": held}, None))
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
) -> ChatCompletion:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": int(created),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
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
    async for chunk in chunks:
        if first is None:
            first = chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            content = choice["delta"].get("content")
            if content:
                parts.append(content)
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
    )
