"""OllamaBackend against the Ollama simulator on loopback: text, stream, usage, tools, length and
stop, continuation, embeddings, models, health, options, every fault kind, disconnect."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ollama_helpers import check_completion, check_stream, req, text_of

from oai_bridge.backends.base import BackendConfig
from oai_bridge.backends.ollama import OllamaBackend
from oai_bridge.embeddings import EmbeddingRequest, decode_base64
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
from oai_bridge.simulators import ollama as sim
from oai_bridge.simulators.common import Fault, RunningServer, embed, reply_pieces

REPLY = "".join(reply_pieces("hello world"))  # "Simulated reply to: hello world"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    s = await sim.start()
    yield s
    await s.aclose()


def make(url: str, **config: Any) -> OllamaBackend:
    config.setdefault("first_token_timeout", 3.0)
    config.setdefault("idle_timeout", 3.0)
    config.setdefault("request_timeout", 5.0)
    return OllamaBackend.from_config(BackendConfig(name="o", kind="ollama", base_url=url, **config))


@pytest.fixture
async def backend(server: RunningServer) -> AsyncIterator[OllamaBackend]:
    b = make(server.url)
    yield b
    await b.aclose()


async def collect(b: OllamaBackend, request: Any) -> tuple[list[dict[str, Any]], BridgeError | None]:
    chunks: list[dict[str, Any]] = []
    try:
        async for chunk in b.stream(request):
            chunks.append(chunk)  # type: ignore[arg-type]
    except BridgeError as exc:
        return chunks, exc
    return chunks, None


# --------------------------------------------------------------------------- answers


async def test_chat_text(backend: OllamaBackend, server: RunningServer) -> None:
    body = await backend.chat(req())
    check_completion(body)  # type: ignore[arg-type]
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["model"] == "llama3.2"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    sent = server.requests[-1]
    assert sent["path"] == "/api/chat"
    assert sent["body"] == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hello world"}],
        "stream": False,
    }


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_text(backend: OllamaBackend, server: RunningServer, include_usage: bool) -> None:
    so = {"include_usage": True} if include_usage else None
    chunks, err = await collect(backend, req(stream=True, stream_options=so))
    assert err is None
    check_stream(chunks, include_usage=include_usage)
    assert text_of(chunks) == REPLY
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 5
    if include_usage:
        assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    assert server.requests[-1]["body"]["stream"] is True


async def test_backend_options_and_key_reach_ollama(server: RunningServer) -> None:
    options = {"keep_alive": "1m", "num_ctx": 2048, "think": False, "truncate": False, "options": {"top_k": 9}}
    b = make(server.url, api_key="sk-secret", options=options)
    try:
        await b.chat(req(temperature=0.5, max_tokens=50))
    finally:
        await b.aclose()
    sent = server.requests[-1]
    assert sent["headers"]["Authorization"] == "Bearer sk-secret"
    body = sent["body"]
    assert (body["keep_alive"], body["think"], body["truncate"]) == ("1m", False, False)
    assert body["options"] == {"top_k": 9, "num_ctx": 2048, "num_predict": 50, "temperature": 0.5}


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_call_then_tool_result(backend: OllamaBackend, server: RunningServer, stream: bool) -> None:
    first = req(stream=stream, tools=[TOOL])
    if stream:
        chunks, err = await collect(backend, first)
        assert err is None
        check_stream(chunks, include_usage=False)
        fragments = [f for c in chunks if c["choices"] for f in c["choices"][0]["delta"].get("tool_calls") or ()]
        assert len(fragments) == 1 and fragments[0]["index"] == 0
        call = {"id": fragments[0]["id"], "type": "function", "function": fragments[0]["function"]}
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        body = await backend.chat(first)
        check_completion(body)  # type: ignore[arg-type]
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        call = body["choices"][0]["message"]["tool_calls"][0]  # type: ignore[assignment]
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"text":"hello world"}'}
    assert server.requests[-1]["body"]["tools"] == [TOOL]

    messages = [
        {"role": "user", "content": "hello world"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "22C sunny"},
    ]
    second = await backend.chat(req(messages=messages, tools=[TOOL]))
    assert second["choices"][0]["message"]["content"] == "Tool result: 22C sunny"
    sent = server.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"text": "hello world"}}, "id": call["id"]}
    ]
    assert sent[2] == {"role": "tool", "content": "22C sunny", "tool_name": "get_weather"}


async def test_max_tokens_gives_length(backend: OllamaBackend) -> None:
    chunks, err = await collect(backend, req(stream=True, max_tokens=2))
    assert err is None and text_of(chunks) == "Simulated reply"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    body = await backend.chat(req(max_tokens=2))
    assert (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == (
        "Simulated reply",
        "length",
    )


async def test_stop_sequence(backend: OllamaBackend, server: RunningServer) -> None:
    chunks, err = await collect(backend, req(stream=True, stop=[" to:"]))
    assert err is None and text_of(chunks) == "Simulated reply"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert server.requests[-1]["body"]["options"] == {"stop": [" to:"]}


async def test_continuation_streams_only_the_rest(backend: OllamaBackend, server: RunningServer) -> None:
    request = req(stream=True).continued("Simulated reply")
    chunks, err = await collect(backend, request)
    assert err is None
    check_stream(chunks, include_usage=False)
    assert text_of(chunks) == " to: hello world"
    assert server.requests[-1]["body"]["messages"][-1] == {"role": "assistant", "content": "Simulated reply"}
    body = await backend.chat(req().continued("Simulated reply to:"))
    assert body["choices"][0]["message"]["content"] == " hello world"


async def test_unknown_model_is_404(backend: OllamaBackend) -> None:
    with pytest.raises(UpstreamRejected) as info:
        await backend.chat(req(model="llama9"))
    assert (info.value.status, info.value.code) == (404, "model_not_found")
    assert "llama9" in info.value.message and "backend 'o' (ollama)" in info.value.message
    chunks, err = await collect(backend, req(model="llama9", stream=True))
    assert chunks == [] and isinstance(err, UpstreamRejected) and err.status == 404


async def test_refusal_is_raised_before_sending(backend: OllamaBackend, server: RunningServer) -> None:
    with pytest.raises(InvalidRequest):
        await backend.chat(req(n=2))
    chunks, err = await collect(backend, req(stream=True, logprobs=True))
    assert chunks == [] and isinstance(err, InvalidRequest) and err.param == "logprobs"
    assert server.requests == []


# --------------------------------------------------------------------------- embeddings, models, health


@pytest.mark.parametrize("encoding", ["float", "base64", None])
async def test_embeddings(backend: OllamaBackend, server: RunningServer, encoding: str | None) -> None:
    request = EmbeddingRequest(model="all-minilm", input=["a b", "c"], dimensions=16, encoding_format=encoding)
    out = await backend.embeddings(request)
    vectors = [d["embedding"] for d in out["data"]]
    if encoding == "base64":
        vectors = [decode_base64(v) for v in vectors]  # type: ignore[arg-type]
    assert vectors == [embed("a b", 16), embed("c", 16)]
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert out["model"] == "all-minilm"
    assert server.requests[-1]["body"] == {"model": "all-minilm", "input": ["a b", "c"], "dimensions": 16}


async def test_embeddings_refusals_and_errors(backend: OllamaBackend, server: RunningServer) -> None:
    with pytest.raises(InvalidRequest):
        await backend.embeddings(EmbeddingRequest(model="all-minilm", input=[1, 2, 3]))
    assert server.requests == []
    with pytest.raises(UpstreamRejected) as info:
        await backend.embeddings(EmbeddingRequest(model="nope", input="x"))
    assert info.value.code == "model_not_found"
    server.plan.add(Fault("context_length"))
    with pytest.raises(ContextLengthExceeded):
        await backend.embeddings(EmbeddingRequest(model="all-minilm", input="x"))


async def test_models_merge_configured_and_tags(server: RunningServer) -> None:
    b = make(server.url, models=["custom:1", "llama3.2:latest"], options={"owned_by": "lab"})
    try:
        models = await b.models()
    finally:
        await b.aclose()
    assert [m["id"] for m in models] == ["custom:1", "llama3.2:latest", "qwen3:0.6b", "all-minilm:latest"]
    assert all(m["object"] == "model" and m["owned_by"] == "lab" for m in models)
    assert models[2]["created"] == 1748779200  # the simulator's modified_at


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_ollama() -> None:
    b = make(f"http://127.0.0.1:{free_port()}", models=["mine"], connect_timeout=2.0)
    try:
        assert [m["id"] for m in await b.models()] == ["mine"]
        assert (await b.health())["status"] == "unreachable"
        with pytest.raises(UpstreamUnavailable) as info:
            await b.chat(req())
        assert info.value.code == "upstream_unreachable"
    finally:
        await b.aclose()


async def test_health(backend: OllamaBackend) -> None:
    health = await backend.health()
    assert (health["status"], health["kind"], health["error"]) == ("connected", "ollama", None)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"colour": "red"}, "unknown ollama option(s) colour (known: keep_alive, num_ctx, options,"),
        ({"keep_alive": True}, "keep_alive"),
        ({"num_ctx": 0}, "num_ctx"),
        ({"think": "very"}, "think"),
        ({"truncate": "no"}, "truncate"),
        ({"options": [1]}, "options"),
        ({"owned_by": ""}, "owned_by"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        make("http://127.0.0.1:1", options=options)


# --------------------------------------------------------------------------- faults

STATUS_FAULTS = [
    (Fault("status", status=500, message="boom"), UpstreamError, 502, "upstream_error", None),
    (
        Fault("status", status=503, message="busy", retry_after="2"),
        UpstreamUnavailable,
        503,
        "upstream_unavailable",
        2.0,
    ),
    (Fault("status", status=429, message="slow", retry_after="3"), RateLimited, 429, "rate_limit_exceeded", 3.0),
    (Fault("status", status=400, message="bad thing"), UpstreamRejected, 400, "upstream_rejected", None),
    (Fault("context_length"), ContextLengthExceeded, 400, "context_length_exceeded", None),
    (Fault("content_policy"), ContentPolicy, 400, "content_policy_violation", None),
]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("fault", "cls", "status", "code", "retry"), STATUS_FAULTS)
async def test_status_faults(
    backend: OllamaBackend,
    server: RunningServer,
    stream: bool,
    fault: Fault,
    cls: type[BridgeError],
    status: int,
    code: str,
    retry: float | None,
) -> None:
    server.plan.add(fault)
    if stream:
        chunks, err = await collect(backend, req(stream=True))
        assert chunks == []
    else:
        with pytest.raises(BridgeError) as info:
            await backend.chat(req())
        err = info.value
    assert type(err) is cls
    assert (err.status, err.code) == (status, code)
    if retry is not None:
        assert err.retry_after == retry
    if fault.kind == "status":
        assert fault.message in err.message


@pytest.mark.parametrize("stream", [True, False])
async def test_reset(backend: OllamaBackend, server: RunningServer, stream: bool) -> None:
    server.plan.add(Fault("reset"), times=2)  # the HTTP layer retries a dropped connection once
    if stream:
        chunks, err = await collect(backend, req(stream=True))
        assert chunks == []
    else:
        with pytest.raises(BridgeError) as info:
            await backend.chat(req())
        err = info.value
    assert isinstance(err, UpstreamUnavailable) and err.code == "server_disconnected"
    server.plan.add(Fault("reset"))  # once: the retry is answered
    assert (await backend.chat(req()))["choices"][0]["message"]["content"] == REPLY


@pytest.mark.parametrize(
    ("fault", "stream"),
    [
        (Fault("silent", delay=5.0), True),
        (Fault("silent", delay=5.0), False),
        (Fault("slow_first", delay=5.0), True),
        (Fault("slow_first", delay=5.0), False),
        (Fault("stall", delay=5.0), False),  # non-stream: no head at all (a stalled stream: idle timeout)
    ],
)
async def test_nothing_in_time_is_first_token_timeout(server: RunningServer, fault: Fault, stream: bool) -> None:
    b = make(server.url, first_token_timeout=0.3, request_timeout=0.3)
    server.plan.add(fault)
    try:
        if stream:
            chunks, err = await collect(b, req(stream=True))
            assert chunks == []
        else:
            with pytest.raises(BridgeError) as info:
                await b.chat(req())
            err = info.value
    finally:
        await b.aclose()
    assert isinstance(err, UpstreamTimeout) and (err.status, err.code) == (504, "first_token_timeout")


async def test_slow_first_within_the_limit_answers(backend: OllamaBackend, server: RunningServer) -> None:
    server.plan.add(Fault("slow_first", delay=0.2))
    chunks, err = await collect(backend, req(stream=True))
    assert err is None and text_of(chunks) == REPLY


MID_STREAM = [
    (Fault("cut", after=2), UpstreamError, 502, "stream_cut", "Simulated reply"),
    (Fault("stall", after=2, delay=5.0), UpstreamTimeout, 504, "idle_timeout", "Simulated reply"),
    (Fault("garbage", after=1), UpstreamError, 502, "malformed_event", "Simulated"),
    (Fault("no_finish", after=2), UpstreamError, 502, "stream_incomplete", "Simulated reply"),
    (Fault("no_finish", after=99), UpstreamError, 502, "stream_incomplete", REPLY),
    (
        Fault("status", after=2, message="an error was encountered"),
        UpstreamError,
        502,
        "upstream_error",
        "Simulated reply",
    ),
]


@pytest.mark.parametrize(("fault", "cls", "status", "code", "text"), MID_STREAM)
async def test_mid_stream_faults(
    server: RunningServer, fault: Fault, cls: type[BridgeError], status: int, code: str, text: str
) -> None:
    b = make(server.url, idle_timeout=0.3)
    server.plan.add(fault)
    try:
        chunks, err = await collect(b, req(stream=True, stream_options={"include_usage": True}))
    finally:
        await b.aclose()
    assert type(err) is cls and err is not None
    assert (err.status, err.code) == (status, code)
    assert text_of(chunks) == text
    assert all(c["choices"] and c["choices"][0]["finish_reason"] is None for c in chunks)
    if fault.kind == "status":
        assert "an error was encountered" in err.message


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault("cut"), "stream_cut"),
        (Fault("garbage"), "malformed_event"),
        (Fault("no_finish"), "stream_incomplete"),
        (Fault("status", after=2, message="boom"), "upstream_error"),
    ],
)
async def test_non_stream_body_faults(backend: OllamaBackend, server: RunningServer, fault: Fault, code: str) -> None:
    server.plan.add(fault)
    with pytest.raises(UpstreamError) as info:
        await backend.chat(req())
    assert (info.value.status, info.value.code) == (502, code)


async def test_disconnect_stops_ollama(server: RunningServer) -> None:
    state = sim.state(server)
    state.token_delay = 0.05
    b = make(server.url)
    words = " ".join(f"w{i}" for i in range(40))
    try:
        stream = b.stream(req(stream=True, messages=[{"role": "user", "content": words}]))
        got = [await anext(stream) for _ in range(3)]
        assert text_of(got) == "Simulated reply"  # type: ignore[arg-type]
        assert state.active_streams == 1
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(100):
            if state.disconnects:
                break
            await asyncio.sleep(0.02)
        assert state.disconnects == 1 and state.active_streams == 0
    finally:
        await b.aclose()
