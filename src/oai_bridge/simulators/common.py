"""What every upstream simulator shares: the deterministic answer, scripted faults, a request log
and serving on a loopback port.

**The answer** depends only on the conversation (``reply_pieces``), so two simulators of different
kinds give the same text for the same messages, and a *continuation* request (the conversation
plus a trailing assistant message holding a prefix of that answer) gets exactly the rest of it
(``continuation_pieces``). That is what makes stream resumption testable end to end.

**Faults** are scripted per simulator instance (``sim.plan``), never per prompt, so the primary and
the fallback of one route can behave differently for the same request. A ``Fault`` applies to the
next ``times`` requests (``None``: all of them). Kinds, whose wire form each simulator gives in
its own protocol:

=================  ==========================================================================
``status``         answer ``status`` with the kind's error body (``message``), and ``Retry-After:
                   retry_after`` when set
``context_length`` a 400 saying the prompt is longer than the context window
``content_policy`` a 400 saying the request was refused by the content policy
``reset``          close the connection without any response
``silent``         accept, then say nothing (until the client gives up; bounded by ``delay``)
``slow_first``     wait ``delay`` seconds before the first token, then answer normally
``cut``            send ``after`` content events, then close the connection mid-body
``stall``          send ``after`` content events, then go silent for ``delay`` seconds, then close
``garbage``        send ``after`` content events, then one malformed event, then close
``no_finish``      send ``after`` content events, then end the body cleanly with no finishing
                   event (and no ``[DONE]``)
=================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultPlan",
    "RunningServer",
    "close_connection",
    "continuation_pieces",
    "conversation_text",
    "count_tokens",
    "embed",
    "hold",
    "reply_pieces",
    "reply_words",
    "serve",
    "tool_call_for",
    "tool_result_reply",
]

FaultKind = Literal[
    "status",
    "context_length",
    "content_policy",
    "reset",
    "silent",
    "slow_first",
    "cut",
    "stall",
    "garbage",
    "no_finish",
]
FAULT_KINDS: frozenset[str] = frozenset(FaultKind.__args__)  # type: ignore[attr-defined]
REQUEST_LOG_SIZE = 1000


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 500
    message: str = "simulated failure"
    retry_after: str | None = None
    after: int = 0  # content events sent before a mid-stream fault
    delay: float = 30.0  # seconds for silent / stall / slow_first


class FaultPlan:
    """Scripted faults of one simulator, consumed one per request, plus a log of what came in."""

    def __init__(self) -> None:
        self._queue: deque[list[Any]] = deque()  # [fault, remaining or None]
        self.requests: list[dict[str, Any]] = []

    def add(self, fault: Fault, *, times: int | None = 1) -> FaultPlan:
        """Apply ``fault`` to the next ``times`` requests (after the faults already queued)."""
        self._queue.append([fault, times])
        return self

    def clear(self) -> None:
        self._queue.clear()
        self.requests.clear()

    def next(self) -> Fault | None:
        """The fault for the request being served now (consumes one use)."""
        if not self._queue:
            return None
        entry = self._queue[0]
        fault, remaining = entry
        if remaining is not None:
            entry[1] = remaining - 1
            if entry[1] <= 0:
                self._queue.popleft()
        assert isinstance(fault, Fault)
        return fault

    def log(self, request: web.Request, body: Any) -> None:
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if len(self.requests) > REQUEST_LOG_SIZE:
            del self.requests[0]


# --------------------------------------------------------------------------- the answer


def _text(content: Any) -> str:
    """The text of an OpenAI/Anthropic/Ollama message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def conversation_text(messages: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(the last user message's text, the trailing assistant prefix or ``None``)."""
    prefix: str | None = None
    if messages and messages[-1].get("role") == "assistant":
        prefix = _text(messages[-1].get("content"))
        messages = messages[:-1]
    for m in reversed(messages):
        if m.get("role") == "user":
            return _text(m.get("content")), prefix
    return "", prefix


def reply_pieces(user_text: str, max_tokens: int | None = None) -> list[str]:
    """The answer to ``user_text``: ``Simulated reply to: <its words>``, one piece per word."""
    words = user_text.split()
    pieces = reply_words(["Simulated", "reply", "to:", *words] if words else ["Simulated", "reply."])
    return pieces if max_tokens is None else pieces[: max(max_tokens, 0)]


def continuation_pieces(messages: list[dict[str, Any]], max_tokens: int | None = None) -> list[str]:
    """The pieces to stream for ``messages``: the whole answer, or, when the last message is an
    assistant prefix of it, the rest (whitespace at the prefix's end is tolerated, as prefill APIs
    strip it). A prefix that is not the start of the answer gets a visible marker instead."""
    user, prefix = conversation_text(messages)
    pieces = reply_pieces(user)
    if prefix is None:
        return pieces[: max(max_tokens, 0)] if max_tokens is not None else pieces
    full = "".join(pieces)
    if not full.startswith(prefix):
        return [" [continuation of an unknown prefix]"]
    rest = full[len(prefix) :]
    out = re.findall(r"\s*\S+", rest) or ([rest] if rest else [])
    return out[: max(max_tokens, 0)] if max_tokens is not None else out


def count_tokens(text: str) -> int:
    """Deterministic token count: whitespace-separated words."""
    return len(text.split())


def tool_call_for(messages: list[dict[str, Any]], tool_names: list[str]) -> tuple[str, str] | None:
    """The tool call every simulator makes: when tools are offered and the conversation has no
    tool result yet, call the first tool with ``{"text": <last user text>}`` (compact JSON).
    Returns ``(name, arguments)`` or ``None`` (answer with text)."""
    if not tool_names or any(m.get("role") == "tool" or _has_tool_result(m) for m in messages):
        return None
    user, _ = conversation_text(messages)
    return tool_names[0], orjson.dumps({"text": user}).decode()


def _has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content)


def tool_result_reply(messages: list[dict[str, Any]]) -> list[str] | None:
    """After a tool result, every simulator answers ``Tool result: <the result text>``."""
    for m in reversed(messages):
        if m.get("role") == "tool":
            return reply_words(["Tool", "result:", *_text(m.get("content")).split()])
        if _has_tool_result(m):
            parts = [p for p in m["content"] if isinstance(p, dict) and p.get("type") == "tool_result"]
            inner = parts[-1].get("content")
            return reply_words(["Tool", "result:", *_text(inner).split()])
        if m.get("role") == "user":
            return None
    return None


def reply_words(words: list[str]) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def embed(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic embedding of ``text``: ``dimensions`` floats in [-1, 1) that float32 holds
    exactly (multiples of 1/1024), so float and base64 answers decode to equal vectors."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest).digest()
    return [(digest[i] - 128) / 128 + (digest[(i + 7) % len(digest)] % 8) / 1024 for i in range(dimensions)]


# --------------------------------------------------------------------------- serving


def close_connection(request: web.Request) -> None:
    """Drop the TCP connection under ``request`` (a reset, or a cut mid-body)."""
    if request.transport is not None:
        request.transport.close()


async def hold(seconds: float) -> None:
    """Stay silent for ``seconds`` (a silent or stalled upstream); cancelled when the client goes."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(seconds)


class RunningServer:
    """An aiohttp app served on a real loopback socket; ``await aclose()`` when done."""

    def __init__(self, runner: web.AppRunner, app: web.Application, host: str, port: int, plan: FaultPlan) -> None:
        self._runner = runner
        self.app = app
        self.port = port
        self.plan = plan
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.plan.requests

    async def aclose(self) -> None:
        await self._runner.cleanup()


async def serve(app: web.Application, plan: FaultPlan, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` on ``host:port`` (0: a free port) in the running loop."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return RunningServer(runner, app, host, int(bound), plan)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
