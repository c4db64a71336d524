"""GenericSSEBackend with the example (Dify-like) config against the simulator on loopback: text,
usage, stop sequences, cumulative mode, every fault kind → the exact error, disconnects."""

from __future__ import annotations

import asyncio
import logging
import socket
import textwrap
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from oai_bridge.backends.base import BackendConfig
from oai_bridge.backends.generic_sse import DIFY_EXAMPLE, GenericSSEBackend
from oai_bridge.backends.generic_sse import backend as backend_module
from oai_bridge.errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from oai_bridge.simulators import generic_sse as sim_mod
from oai_bridge.simulators.common import Fault, FaultPlan, RunningServer, continuation_pieces, serve
from oai_bridge.types import ChatCompletionChunk, ChatCompletionRequest

KEY = "sk-sim-secret"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "earlier question"},
    {"role": "assistant", "content": "earlier answer"},
    {"role": "user", "content": "tell me about event streams"},
]
EXPECTED = "".join(continuation_pieces(MESSAGES))

Factory = Callable[..., Awaitable[tuple[RunningServer, GenericSSEBackend]]]


def req(stream: bool = True, **extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "dify-app", "messages": MESSAGES, "stream": stream, **extra}
    return ChatCompletionRequest.model_validate(body)


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    opened: list[tuple[RunningServer, GenericSSEBackend]] = []

    async def factory(
        options: dict[str, Any] | None = None, api_key: str | None = KEY, **sim_options: Any
    ) -> tuple[RunningServer, GenericSSEBackend]:
        server = await sim_mod.start(api_key=KEY, **sim_options)
        config = BackendConfig(
            name="dify",
            kind="generic_sse",
            base_url=server.url,
            api_key=api_key,
            first_token_timeout=0.3,
            idle_timeout=0.3,
            request_timeout=5,
            models=["dify-app"],
            options={**DIFY_EXAMPLE, **(options or {})},
        )
        backend = GenericSSEBackend.from_config(config)
        opened.append((server, backend))
        return server, backend

    yield factory
    for server, backend in opened:
        await backend.aclose()
        await server.aclose()


async def collect(backend: GenericSSEBackend, request: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in backend.stream(request)]


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# --------------------------------------------------------------------------- answers


async def test_stream_text_usage_and_request(make: Factory) -> None:
    server, backend = await make()
    chunks = await collect(backend, req(stream_options={"include_usage": True}, temperature=0.3))
    assert text_of(chunks) == EXPECTED
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    prompt = sum(len(m["content"].split()) for m in MESSAGES)
    completion = len(continuation_pieces(MESSAGES))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    assert len({c["id"] for c in chunks}) == 1 and {c["model"] for c in chunks} == {"dify-app"}
    sent = server.requests[-1]
    assert sent["path"] == "/stream" and sent["headers"]["X-Api-Key"] == KEY
    assert sent["headers"]["Accept"] == "text/event-stream"
    assert sent["body"] == {
        "query": "tell me about event streams",
        "history": MESSAGES[1:3],
        "system": "Be brief.",
        "model": "dify-app",
        "temperature": 0.3,
        "response_mode": "streaming",
        "inputs": {},
    }


async def test_chat_is_the_fold_of_the_stream(make: Factory) -> None:
    _, backend = await make()
    result = await backend.chat(req(stream=False))
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": EXPECTED, "refusal": None}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == len(continuation_pieces(MESSAGES))


async def test_max_tokens_gives_length(make: Factory) -> None:
    _, backend = await make()
    result = await backend.chat(req(stream=False, max_tokens=2))
    assert result["choices"][0]["message"]["content"] == "".join(continuation_pieces(MESSAGES, 2))
    assert result["choices"][0]["finish_reason"] == "length"


async def test_stop_sequence_is_emulated_and_closes_upstream(make: Factory) -> None:
    server, backend = await make(token_delay=0.05)
    chunks = await collect(backend, req(stop=[" about"]))
    assert text_of(chunks) == "Simulated reply to: tell me"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    await _until(lambda: sim_mod.disconnects(server) == 1)


async def test_cumulative_mode(make: Factory) -> None:
    server, backend = await make({"cumulative": True}, cumulative=True)
    chunks = await collect(backend, req())
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == continuation_pieces(MESSAGES)
    assert text_of(chunks) == EXPECTED


async def test_ping_events_are_ignored(make: Factory) -> None:
    _, backend = await make(ping=True)
    assert text_of(await collect(backend, req())) == EXPECTED


async def test_models_and_health(make: Factory) -> None:
    server, backend = await make()
    assert await backend.models() == [
        {"id": "dify-app", "object": "model", "created": backend._created, "owned_by": "dify"}
    ]
    health = await backend.health()
    assert health["status"] == "connected" and health["kind"] == "generic_sse"  # GET /stream → 405
    await server.aclose()
    assert (await backend.health())["status"] == "unreachable"


# --------------------------------------------------------------------------- refusals


async def test_unsupported_requests_never_reach_the_service(make: Factory) -> None:
    server, backend = await make()
    with pytest.raises(InvalidRequest) as info:
        await collect(backend, req(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert info.value.param == "tools"
    with pytest.raises(InvalidRequest):
        await backend.chat(req(stream=False, n=2))
    with pytest.raises(BridgeError) as cont:
        await collect(backend, req().continued("Simulated"))
    assert cont.value.code == "continuation_unsupported"
    assert server.requests == [] and GenericSSEBackend.can_continue is False


async def test_wrong_key_is_401_without_the_key_in_the_message(make: Factory) -> None:
    _, backend = await make(api_key="sk-wrong-key")
    with pytest.raises(UpstreamRejected) as info:
        await collect(backend, req())
    assert info.value.status == 401 and "Access token is invalid" in info.value.message
    assert "sk-wrong-key" not in info.value.message and "backend 'dify' (generic_sse)" in info.value.message


async def test_unreachable_service(make: Factory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = BackendConfig(name="gone", kind="generic_sse", base_url=f"http://127.0.0.1:{port}", options=DIFY_EXAMPLE)
    config.api_key = KEY
    backend = GenericSSEBackend.from_config(config)
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await collect(backend, req())
        assert info.value.code == "upstream_unreachable"
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "times", "cls", "status", "code"),
    [
        (Fault("status", status=500), 1, UpstreamError, 502, "upstream_error"),
        (Fault("status", status=503), 1, UpstreamUnavailable, 503, "upstream_unavailable"),
        (Fault("status", status=504), 1, UpstreamTimeout, 504, "upstream_timeout"),
        (Fault("status", status=400, message="bad thing"), 1, UpstreamRejected, 400, "upstream_rejected"),
        (Fault("context_length"), 1, ContextLengthExceeded, 400, "context_length_exceeded"),
        (Fault("content_policy"), 1, ContentPolicy, 400, "content_policy_violation"),
        (Fault("reset"), None, UpstreamUnavailable, 503, "server_disconnected"),
        (Fault("silent", delay=3), 1, UpstreamTimeout, 504, "first_token_timeout"),
        (Fault("slow_first", delay=3), 1, UpstreamTimeout, 504, "first_token_timeout"),
        (Fault("cut", after=0), 1, UpstreamError, 502, "stream_cut"),
        (Fault("garbage", after=0), 1, UpstreamError, 502, "malformed_event"),
        (Fault("no_finish", after=0), 1, UpstreamError, 502, "stream_incomplete"),
    ],
)
async def test_fault_before_the_first_chunk(
    make: Factory, fault: Fault, times: int | None, cls: type[BridgeError], status: int, code: str
) -> None:
    server, backend = await make()
    server.plan.add(fault, times=times)
    with pytest.raises(cls) as info:
        await collect(backend, req())
    assert type(info.value) is cls and (info.value.status, info.value.code) == (status, code)
    assert "backend 'dify' (generic_sse)" in info.value.message
    server.plan.clear()
    assert text_of(await collect(backend, req())) == EXPECTED  # the next request is fine again


async def test_rate_limit_carries_retry_after(make: Factory) -> None:
    server, backend = await make()
    server.plan.add(Fault("status", status=429, message="quota", retry_after="7"))
    with pytest.raises(RateLimited) as info:
        await backend.chat(req(stream=False))
    assert info.value.retry_after == 7.0 and "quota" in info.value.message


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        (Fault("cut", after=2), UpstreamError, "stream_cut"),
        (Fault("stall", after=2, delay=3), UpstreamTimeout, "idle_timeout"),
        (Fault("garbage", after=2), UpstreamError, "malformed_event"),
        (Fault("no_finish", after=2), UpstreamError, "stream_incomplete"),
        (Fault("status", after=2, status=429, message="provider quota"), UpstreamError, "upstream_error"),
        (Fault("context_length", after=2), UpstreamError, "upstream_error"),
    ],
)
async def test_fault_mid_stream(make: Factory, fault: Fault, cls: type[BridgeError], code: str) -> None:
    server, backend = await make()
    server.plan.add(fault)
    got: list[ChatCompletionChunk] = []
    with pytest.raises(cls) as info:
        async for chunk in backend.stream(req()):
            got.append(chunk)
    assert type(info.value) is cls and info.value.code == code
    assert text_of(got) == "".join(continuation_pieces(MESSAGES)[:2])
    assert all(c["choices"][0]["finish_reason"] is None for c in got)


async def test_done_on_close_accepts_a_body_without_message_end(make: Factory) -> None:
    server, backend = await make({"done_on_close": True})
    server.plan.add(Fault("no_finish", after=3))
    result = await backend.chat(req(stream=False))
    assert result["choices"][0]["message"]["content"] == "".join(continuation_pieces(MESSAGES)[:3])
    assert result["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        (Fault("status", status=429, message="provider quota"), RateLimited, "rate_limit_exceeded"),
        (Fault("status", status=500), UpstreamError, "upstream_error"),
        (Fault("context_length"), ContextLengthExceeded, "context_length_exceeded"),
        (Fault("content_policy"), ContentPolicy, "content_policy_violation"),
    ],
)
async def test_error_event_before_the_first_chunk_is_classified(
    make: Factory, fault: Fault, cls: type[BridgeError], code: str
) -> None:
    server, backend = await make(stream_errors=True)
    server.plan.add(fault)
    with pytest.raises(cls) as info:
        await collect(backend, req())
    assert type(info.value) is cls and info.value.code == code


async def test_slow_first_within_the_limit_answers(make: Factory) -> None:
    server, backend = await make()
    server.plan.add(Fault("slow_first", delay=0.1))
    assert text_of(await collect(backend, req())) == EXPECTED


async def test_chat_request_timeout(make: Factory) -> None:
    server, backend = await make(token_delay=0.1)
    backend.config.request_timeout = 0.3
    with pytest.raises(UpstreamTimeout) as info:
        await backend.chat(req(stream=False))
    assert info.value.code == "upstream_timeout"


async def test_a_get_service_with_query_and_done_marker() -> None:
    """Another shape entirely: ``GET /sse?q=...`` answered by OpenAI-style chunks and ``[DONE]``."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("Echo: ", request.query["q"]):
            await resp.write(b"data: " + orjson.dumps({"choices": [{"delta": {"content": piece}}]}) + b"\n\n")
        await resp.write(b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/sse", handler)
    plan = FaultPlan()
    server = await serve(app, plan)
    options = {
        "method": "GET",
        "path": "/sse",
        "headers": {"accept": "text/event-stream; charset=utf-8", "Authorization": "Bearer {{api_key}}"},
        "query": {"q": "{{last_user_message}}", "temperature": "{{temperature}}", "model": "{{model}}"},
        "text_path": "choices[0].delta.content",
        "done_when": "@data == [DONE]",
        "finish_reason_path": "choices[0].finish_reason",
    }
    config = BackendConfig(name="g", kind="generic_sse", base_url=server.url, api_key="k", options=options)
    backend = GenericSSEBackend.from_config(config)
    try:
        result = await backend.chat(req(stream=False))
        assert result["choices"][0]["message"]["content"] == "Echo: tell me about event streams"
        assert result["choices"][0]["finish_reason"] == "length"
        assert dict(seen[0].query) == {"q": "tell me about event streams", "model": "dify-app"}
        assert seen[0].headers.getall("Accept") == ["text/event-stream; charset=utf-8"]
        assert seen[0].headers["Authorization"] == "Bearer k" and not seen[0].can_read_body
        assert backend.health_path == "/" and (await backend.health())["status"] == "connected"  # 404 < 500
    finally:
        await backend.aclose()
        await server.aclose()


# --------------------------------------------------------------------------- disconnect, pool, key


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_closing_the_stream_early_closes_the_upstream(make: Factory) -> None:
    server, backend = await make(token_delay=0.05)
    stream = backend.stream(req())
    got = [await anext(stream), await anext(stream)]
    assert text_of(got) == "Simulated"
    await stream.aclose()  # type: ignore[attr-defined]
    await _until(lambda: sim_mod.disconnects(server) == 1 and sim_mod.state(server).active == 0)


async def test_complete_answers_reuse_the_connection(make: Factory) -> None:
    server, backend = await make()
    for _ in range(3):
        assert text_of(await collect(backend, req())) == EXPECTED
    ports = {r["headers"].get("Host") for r in server.requests}
    assert len(ports) == 1
    assert backend.session().connections() == (1, 1)  # one pooled keep-alive connection, idle


async def test_the_key_is_never_logged(make: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server, backend = await make()
    server.plan.add(Fault("status", status=500, message="boom"))
    with pytest.raises(UpstreamError) as info:
        await collect(backend, req())
    await collect(backend, req())
    assert KEY not in caplog.text and KEY not in str(info.value) and KEY not in repr(backend.config)


def test_the_documented_example_is_the_example_config() -> None:
    doc = backend_module.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 3)
    text = "\n\n".join(block[:3])
    parsed = tomllib.loads(textwrap.dedent(text))
    assert parsed["backends"]["dify"]["options"] == DIFY_EXAMPLE


def test_from_config_validates_options() -> None:
    config = BackendConfig(name="x", kind="generic_sse", base_url="http://h", options={"text_path": "a"})
    with pytest.raises(ValueError, match="done_when"):
        GenericSSEBackend.from_config(config)
    config.options = DIFY_EXAMPLE
    with pytest.raises(ValueError, match="no api_key"):
        GenericSSEBackend.from_config(config)
    config.api_key = "k"
    assert GenericSSEBackend.from_config(config).health_path == "/stream"
