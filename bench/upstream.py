"""A fast OpenAI-compatible upstream for bench/overhead.py: direct access, oai-bridge (``openai_compat``
backend) and LiteLLM's proxy all talk to it, so the three are compared against the same server.

    python bench/upstream.py --port P

``POST /v1/chat/completions`` (also ``/chat/completions``) answers in OpenAI's wire form, built from
templates cached per (model, stream, include_usage, max_tokens, last user message) so the
upstream costs little next to the proxies measured:

* the text is the Livepeer simulator's reply to the same messages (``[[sim tokens=N]]`` honoured,
  capped by ``max_tokens``/``max_completion_tokens``), so all the ways of the bench give the same
  words;
* non-stream: one ``chat.completion`` with ``usage``;
* stream (``"stream": true``): chunked ``text/event-stream``, one write per event as a real server
  writes tokens as they come: a role chunk, one chunk per word, a finish chunk with ``delta: {}``,
  the usage chunk (``choices: []``) when ``stream_options.include_usage``, ``data: [DONE]``.
  With ``[[sim delay=D first_delay=F]]`` in the last user message (the Livepeer simulator's
  directives, same meaning) the role chunk goes out at once and content event k (from 0) at
  F + k × D seconds, the finish/usage/``[DONE]`` right after the last one: the slow streams of the
  bench (``tokens=50 delay=0.1 first_delay=0.1`` lasts 5.0 s here).

``GET /v1/models`` lists the models seen so far; ``GET /health`` answers 200; anything else 404.
Keep-alive HTTP/1.1 with httptools (uvloop when installed). Loopback only; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import OrderedDict
from typing import Any

import httptools
import orjson

from oai_bridge.simulators.livepeer import parse_directives, reply_tokens

try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    uvloop = None  # type: ignore[assignment]

CACHE_SIZE = 64
SERVER_ID = b"chatcmpl-bench0000000000000000000"


def _event(obj: dict[str, Any]) -> bytes:
    data = b"data: " + orjson.dumps(obj) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _done_event() -> bytes:
    data = b"data: [DONE]\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class Template:
    """The bytes of one answer: a whole response, or a stream's head and events."""

    __slots__ = ("delay", "events", "first_delay", "head", "whole")

    def __init__(self, model: str, stream: bool, include_usage: bool, pieces: list[str], prompt: int) -> None:
        self.delay = self.first_delay = 0.0
        created = int(time.time())
        n = len(pieces)
        usage = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        rid = SERVER_ID.decode()
        self.events: list[bytes] = []
        self.whole = b""
        self.head = b""
        if not stream:
            body = orjson.dumps(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_bench",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
            self.whole = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
            return
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_bench"}  # fmt: skip

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _event({**base, "choices": [choice]})

        self.head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        self.events += [chunk({"content": p}) for p in pieces]
        tail = chunk({}, "stop")
        if include_usage:
            tail += _event({**base, "choices": [], "usage": usage})
        self.events.append(tail + _done_event() + b"0\r\n\r\n")


class Upstream:
    def __init__(self) -> None:
        self.cache: OrderedDict[tuple[Any, ...], Template] = OrderedDict()
        self.models: dict[str, None] = {}
        self.requests = 0

    def template(self, body: dict[str, Any]) -> Template:
        model = str(body.get("model") or "")
        stream = body.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        messages = body.get("messages") or []
        user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        key = (model, stream, include_usage, limit, user if isinstance(user, str) else repr(user))
        tpl = self.cache.get(key)
        if tpl is None:
            text = [{"role": "user", "content": key[4]}]
            prompt = sum(len(str(m.get("content") or "").split()) + 4 for m in messages)
            tpl = Template(model, stream, include_usage, reply_tokens(text, int(limit)), prompt)
            d = parse_directives(key[4])
            with contextlib.suppress(ValueError):
                tpl.delay = max(float(d.get("delay", 0)), 0.0)
                tpl.first_delay = max(float(d.get("first_delay", 0)), 0.0)
            self.cache[key] = tpl
            if len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
            self.models[model] = None
        return tpl


def _simple(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status, content_type, len(body), body,
    )  # fmt: skip


class Conn(asyncio.Protocol):
    """One client connection: httptools parses requests, answers go out from templates."""

    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.keep_alive = True
        self.timers: set[asyncio.TimerHandle] = set()
        self.busy = False  # a slow stream is being written: further requests wait (no pipelining expected)
        self.pending: list[tuple[bytes, bytes, bytes]] = []

    # ---- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_simple(b"400 Bad Request", b'{"error":{"message":"bad request"}}'))
                self.transport.close()

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        req = (method, self.url.split(b"?", 1)[0], b"".join(self.body))
        if self.busy:
            self.pending.append(req)
        else:
            self.handle(*req)

    # ---- answers
    def handle(self, method: bytes, path: bytes, raw: bytes) -> None:
        t = self.transport
        if t is None:
            return
        self.up.requests += 1
        if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
            try:
                body = orjson.loads(raw)
                tpl = self.up.template(body)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
                msg = orjson.dumps({"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}})
                t.write(_simple(b"400 Bad Request", msg))
                return self.finish()
            if not tpl.events:
                t.write(tpl.whole)
                return self.finish()
            if tpl.delay > 0 or tpl.first_delay > 0:
                return self.slow(tpl)
            t.write(tpl.head)
            for ev in tpl.events:  # one write per event, as tokens would leave a real server
                t.write(ev)
            return self.finish()
        if method == b"GET" and path in (b"/v1/models", b"/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "bench"} for m in self.up.models]
            t.write(_simple(b"200 OK", orjson.dumps({"object": "list", "data": data})))
        elif method == b"GET" and path in (b"/health", b"/healthz"):
            t.write(_simple(b"200 OK", b'{"status":"ok"}'))
        else:
            t.write(_simple(b"404 Not Found", b'{"error":{"message":"not found"}}'))
        self.finish()

    def slow(self, tpl: Template) -> None:
        """The role chunk now, content event k at first_delay + k × delay, then the tail."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.busy = True
        self.transport.write(tpl.head + tpl.events[0])
        content = tpl.events[1:-1]
        t0 = loop.time() + tpl.first_delay
        for k, ev in enumerate(content):
            last = k == len(content) - 1
            self.timers.add(loop.call_at(t0 + k * tpl.delay, self._write, ev + tpl.events[-1] if last else ev, last))
        if not content:
            self._write(tpl.events[-1], True)

    def _write(self, data: bytes, last: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(data)
        if last:
            self.timers.clear()
            self.busy = False
            self.finish()
            while self.pending and not self.busy and self.transport is not None:
                self.handle(*self.pending.pop(0))

    def finish(self) -> None:
        if not self.keep_alive and self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    up = Upstream()
    server = await loop.create_server(lambda: Conn(up), host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"bench upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A fast OpenAI-compatible upstream for the overhead bench.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the bench upstream listens on loopback only")
    coro = serve(a.host, a.port)
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
