"""OpenAICompatBackend against the OpenAI-compatible simulator on loopback: text, streams, usage,
tools, n, logprobs, every deviation and every fault kind (exact errors), continuation, disconnect,
models, health, embeddings, options."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest
from aiohttp import web
from openai_compat_helpers import KEY, MakeBackend, assert_compliant, check_completion, config, fold

from oai_bridge.backends.base import Embeddings
from oai_bridge.backends.openai_compat import OpenAICompatBackend, build_request
from oai_bridge.embeddings import EmbeddingRequest, decode_base64
from oai_bridge.errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from oai_bridge.simulators.common import Fault, FaultPlan, RunningServer, embed, serve
from oai_bridge.simulators.openai_compat import DEVIATIONS, set_deviations, state
from oai_bridge.types import ChatCompletionRequest

TEXT = "Simulated reply to: hello there"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def req(**fields: Any) -> ChatCompletionRequest:
    payload: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    payload.update(fields)
    return ChatCompletionRequest.model_validate(payload, strict=True)


def sreq(include_usage: bool = False, **fields: Any) -> ChatCompletionRequest:
    return req(stream=True, stream_options={"include_usage": True} if include_usage else None, **fields)


async def collect(backend: OpenAICompatBackend, request: ChatCompletionRequest) -> list[dict[str, Any]]:
    return [dict(c) async for c in backend.stream(request)]


# --------------------------------------------------------------------------- answers


async def test_chat_text(backend: OpenAICompatBackend, osim: RunningServer) -> None:
    out = await backend.chat(req())
    check_completion(dict(out))
    assert out["choices"][0]["message"]["content"] == TEXT and out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    sent = osim.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["body"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": False,
    }


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_text_with_usage_only_when_asked(
    backend: OpenAICompatBackend, osim: RunningServer, include_usage: bool
) -> None:
    out = await collect(backend, sreq(include_usage))
    assert_compliant(out, include_usage=include_usage)
    assert fold(out)[0]["text"] == TEXT
    assert osim.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    if include_usage:
        assert out[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


async def test_stream_options_can_be_left_out(make_backend: MakeBackend, osim: RunningServer) -> None:
    backend = make_backend(options={"send_stream_options": False})
    out = await collect(backend, sreq(include_usage=True))
    assert "stream_options" not in osim.requests[-1]["body"]
    assert_compliant(out, include_usage=True)  # asked, but the upstream had nothing to report
    assert out[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def test_everything_the_client_sent_is_forwarded(backend: OpenAICompatBackend, osim: RunningServer) -> None:
    parts = [
        {"type": "text", "text": "hello there"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    request = sreq(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        seed=3,
        stop=["zzz"],
        top_k=20,
        min_p=0.05,  # unknown to OpenAI, known to vLLM/llama.cpp
    )
    out = await collect(backend, request)
    assert fold(out)[0]["text"] == TEXT
    assert osim.requests[-1]["body"] == build_request(request)
    assert osim.requests[-1]["body"]["min_p"] == 0.05


@pytest.mark.parametrize("stream", [True, False])
async def test_tool_call_then_tool_result(backend: OpenAICompatBackend, stream: bool) -> None:
    request = req(tools=TOOLS, stream=stream)
    if stream:
        out = await collect(backend, request)
        assert_compliant(out, include_usage=False)
        got = fold(out)[0]
        assert len(out) == 5  # role + first fragment, three argument slices, finish
        call = got["calls"][0]
        assert (call["name"], call["arguments"], got["finish"]) == (
            "get_weather",
            '{"text":"hello there"}',
            "tool_calls",
        )
        call_id = call["id"]
    else:
        body = await backend.chat(request)
        check_completion(dict(body))
        message = body["choices"][0]["message"]
        assert message["content"] is None and body["choices"][0]["finish_reason"] == "tool_calls"
        tool_call = message["tool_calls"][0]
        assert tool_call["function"] == {"name": "get_weather", "arguments": '{"text":"hello there"}'}
        call_id = tool_call["id"]
    assert call_id.startswith("call_")
    history = [
        {"role": "user", "content": "hello there"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny 20C"},
    ]
    answer = await backend.chat(req(tools=TOOLS, messages=history))
    assert answer["choices"][0]["message"]["content"] == "Tool result: sunny 20C"


async def test_n_choices_with_logprobs(backend: OpenAICompatBackend) -> None:
    out = await collect(backend, sreq(True, n=3, logprobs=True, top_logprobs=2))
    assert_compliant(out, include_usage=True)
    choices = fold(out)
    assert sorted(choices) == [0, 1, 2]
    for got in choices.values():
        assert got["text"] == TEXT and got["finish"] == "stop"
        assert got["tokens"] == ["Simulated", " reply", " to:", " hello", " there"]
    lp = next(c for c in out if c["choices"] and c["choices"][0]["delta"].get("content") == " reply")["choices"][0]
    assert [t["token"] for t in lp["logprobs"]["content"][0]["top_logprobs"]] == [" reply", " reply~1"]
    assert out[-1]["usage"]["completion_tokens"] == 15


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_finishes_with_length(backend: OpenAICompatBackend, field: str) -> None:
    out = await collect(backend, sreq(**{field: 2}))
    assert (fold(out)[0]["text"], fold(out)[0]["finish"]) == ("Simulated reply", "length")
    body = await backend.chat(req(**{field: 2}))
    assert body["choices"][0]["finish_reason"] == "length"


# --------------------------------------------------------------------------- deviations


@pytest.mark.parametrize("deviation", sorted(DEVIATIONS - {"float_embeddings"}))
@pytest.mark.parametrize("include_usage", [False, True])
async def test_every_deviation_comes_out_compliant(
    backend: OpenAICompatBackend, osim: RunningServer, deviation: str, include_usage: bool
) -> None:
    set_deviations(osim, {deviation})
    for request in (sreq(include_usage), sreq(include_usage, n=2), sreq(include_usage, tools=TOOLS)):
        out = await collect(backend, request)
        assert_compliant(out, include_usage=include_usage)
        got = fold(out)
        assert len(got) == (request.n or 1)
        for choice in got.values():
            if request.tools:
                assert choice["calls"][0]["arguments"] == '{"text":"hello there"}'
                assert choice["finish"] == "tool_calls"
            else:
                assert (choice["text"], choice["finish"]) == (TEXT, "stop")
        if include_usage:
            assert out[-1]["usage"]["completion_tokens"] == (request.n or 1) * (3 if request.tools else 5)
    body = await backend.chat(req())
    check_completion(dict(body))
    assert body["choices"][0]["message"]["content"] == TEXT and body["choices"][0]["finish_reason"] == "stop"


async def test_a_done_without_its_blank_line_still_ends_the_stream(
    backend: OpenAICompatBackend, osim: RunningServer
) -> None:
    # No finish chunk either: only the bare `data: [DONE]` at the very end tells a complete answer
    # from a cut one (http.sse_events would drop it: an event needs its blank line).
    set_deviations(osim, {"done_no_blank_line", "no_finish_chunk"})
    for request, finish in ((sreq(True), "stop"), (sreq(True, tools=TOOLS), "tool_calls")):
        out = await collect(backend, request)
        assert_compliant(out, include_usage=True)
        assert fold(out)[0]["finish"] == finish


async def test_deviations_switch_at_run_time(backend: OpenAICompatBackend, osim: RunningServer) -> None:
    set_deviations(osim, {"no_done", "no_finish_chunk"})  # nothing to tell the end by
    with pytest.raises(UpstreamError) as info:
        await collect(backend, sreq())
    assert info.value.code == "stream_incomplete"
    set_deviations(osim, set())
    assert fold(await collect(backend, sreq()))[0]["text"] == TEXT
    with pytest.raises(ValueError, match="unknown deviation"):
        set_deviations(osim, {"nope"})


# --------------------------------------------------------------------------- faults

SILENT = 3.0
FAULTS: list[tuple[Fault, int, type[BridgeError], str, int]] = [
    (Fault("status", status=500), 1, UpstreamError, "upstream_error", 502),
    (Fault("status", status=502), 1, UpstreamError, "upstream_error", 502),
    (Fault("status", status=503), 1, UpstreamUnavailable, "upstream_unavailable", 503),
    (Fault("status", status=504), 1, UpstreamTimeout, "upstream_timeout", 504),
    (Fault("status", status=429, retry_after="3"), 1, RateLimited, "rate_limit_exceeded", 429),
    (Fault("status", status=400, message="bad thing"), 1, UpstreamRejected, "upstream_rejected", 400),
    (Fault("status", status=404), 1, UpstreamRejected, "upstream_rejected", 404),
    (Fault("context_length"), 1, ContextLengthExceeded, "context_length_exceeded", 400),
    (Fault("content_policy"), 1, ContentPolicy, "content_policy_violation", 400),
    (Fault("reset"), 2, UpstreamUnavailable, "server_disconnected", 503),
    (Fault("silent", delay=SILENT), 1, UpstreamTimeout, "first_token_timeout", 504),
]


@pytest.mark.parametrize("detail_errors", [False, True])
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("fault", "times", "error", "code", "status"), FAULTS)
async def test_refusals_before_the_first_chunk(
    make_backend: MakeBackend,
    osim: RunningServer,
    fault: Fault,
    times: int,
    error: type[BridgeError],
    code: str,
    status: int,
    stream: bool,
    detail_errors: bool,
) -> None:
    if detail_errors:
        set_deviations(osim, {"detail_errors"})
        if fault.status in (400, 404):
            code = "upstream_rejected"
    backend = make_backend(first_token_timeout=0.3, request_timeout=0.3)
    osim.plan.add(fault, times=times)
    with pytest.raises(BridgeError) as info:
        if stream:
            await collect(backend, sreq())
        else:
            await backend.chat(req())
    err = info.value
    assert (type(err), err.code, err.status) == (error, code, status)
    assert KEY not in err.message
    if fault.kind == "status" and fault.status == 429:
        assert err.retry_after == 3.0


async def test_slow_first_token_is_waited_for(make_backend: MakeBackend, osim: RunningServer) -> None:
    backend = make_backend(first_token_timeout=2.0)
    osim.plan.add(Fault("slow_first", delay=0.2), times=2)
    assert fold(await collect(backend, sreq()))[0]["text"] == TEXT
    assert (await backend.chat(req()))["choices"][0]["message"]["content"] == TEXT


MIDSTREAM: list[tuple[Fault, type[BridgeError], str, int]] = [
    (Fault("cut", after=2), UpstreamError, "stream_cut", 3),
    (Fault("cut", after=0), UpstreamError, "stream_cut", 0),
    (Fault("stall", after=1, delay=SILENT), UpstreamTimeout, "idle_timeout", 2),
    (Fault("garbage", after=1), UpstreamError, "malformed_event", 2),
    (Fault("no_finish", after=2), UpstreamError, "stream_incomplete", 3),
    (Fault("status", status=500, after=2), UpstreamError, "upstream_error", 3),
    (Fault("status", status=429, after=1), RateLimited, "rate_limit_exceeded", 2),
]


@pytest.mark.parametrize(("fault", "error", "code", "chunks"), MIDSTREAM)
async def test_failures_mid_stream(
    make_backend: MakeBackend, osim: RunningServer, fault: Fault, error: type[BridgeError], code: str, chunks: int
) -> None:
    backend = make_backend(idle_timeout=0.3)
    osim.plan.add(fault)
    got: list[dict[str, Any]] = []
    with pytest.raises(BridgeError) as info:
        async for chunk in backend.stream(sreq()):
            got.append(dict(chunk))
    assert (type(info.value), info.value.code) == (error, code)
    assert len(got) == chunks
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in got) == "".join(
        ["Simulated", " reply", " to:"][: max(chunks - 1, 0)]
    )


@pytest.mark.parametrize(
    ("fault", "code"),
    [(Fault("cut"), "stream_cut"), (Fault("garbage"), "malformed_event"), (Fault("no_finish"), "malformed_event")],
)
async def test_broken_non_stream_bodies(
    backend: OpenAICompatBackend, osim: RunningServer, fault: Fault, code: str
) -> None:
    osim.plan.add(fault)
    with pytest.raises(UpstreamError) as info:
        await backend.chat(req())
    assert info.value.code == code


async def test_a_non_stream_answer_that_stalls_times_out(make_backend: MakeBackend, osim: RunningServer) -> None:
    backend = make_backend(request_timeout=0.3)
    osim.plan.add(Fault("stall", delay=SILENT))
    with pytest.raises(UpstreamTimeout):
        await backend.chat(req())


async def test_wrong_key_is_rejected_without_echoing_it(make_backend: MakeBackend) -> None:
    backend = make_backend(api_key="sk-wrong-key")
    with pytest.raises(UpstreamRejected) as info:
        await backend.chat(req())
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")
    assert "sk-wrong-key" not in info.value.message and "'compat'" in info.value.message


# --------------------------------------------------------------------------- continuation, disconnect


@pytest.mark.parametrize("style", ["vllm", "prefill"])
async def test_continuation_streams_only_the_rest(make_backend: MakeBackend, osim: RunningServer, style: str) -> None:
    backend = make_backend(options={"continue_style": style})
    request = sreq(True).continued("Simulated reply")
    out = await collect(backend, request)
    assert_compliant(out, include_usage=True)
    assert fold(out)[0]["text"] == " to: hello there"
    sent = osim.requests[-1]["body"]
    assert sent["messages"][-1] == {"role": "assistant", "content": "Simulated reply"}
    assert ("continue_final_message" in sent) == (style == "vllm")
    if style == "vllm":
        assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False


async def test_closing_the_stream_closes_the_upstream_request(make_backend: MakeBackend, osim: RunningServer) -> None:
    state(osim).token_delay = 0.1
    backend = make_backend()
    stream = backend.stream(sreq())
    first = [await anext(stream), await anext(stream)]  # type: ignore[arg-type]
    assert fold(first)[0]["text"] == "Simulated"
    assert state(osim).active_streams == 1
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if state(osim).active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert state(osim).active_streams == 0 and state(osim).disconnects == 1


async def test_a_finished_stream_leaves_the_connection_reusable(
    backend: OpenAICompatBackend, osim: RunningServer
) -> None:
    for _ in range(3):
        assert fold(await collect(backend, sreq()))[0]["text"] == TEXT
    assert state(osim).disconnects == 0
    assert backend.session().connections() == (1, 1)  # one pooled keep-alive connection, idle


async def test_a_json_answer_to_a_stream_request_is_streamed() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await serve(app, FaultPlan())
    backend = OpenAICompatBackend.from_config(config(server.url))
    try:
        out = await collect(backend, sreq(True))
        assert_compliant(out, include_usage=True)
        assert fold(out)[0]["text"] == "whole"
    finally:
        await backend.aclose()
        await server.aclose()


# --------------------------------------------------------------------------- models, health, embeddings, options


async def test_models_are_the_upstreams_and_the_configured(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(models=["extra/model", "gpt-4o-mini"])
    assert [m["id"] for m in await backend.models()] == ["gpt-4o-mini", "text-embedding-3-small", "extra/model"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in await backend.models())
    refused = make_backend(api_key="wrong", models=["extra/model"])
    with caplog.at_level(logging.WARNING, logger="oai_bridge.openai_compat"):
        assert [m["id"] for m in await refused.models()] == ["extra/model"]
    assert "listing the models" in caplog.text and "wrong" not in caplog.text


async def test_health(backend: OpenAICompatBackend, osim: RunningServer) -> None:
    health = await backend.health()
    assert health["status"] == "connected" and health["kind"] == "openai_compat"
    assert (
        osim.requests[-1]["path"] == "/v1/models" and osim.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = OpenAICompatBackend.from_config(config(f"http://127.0.0.1:{port}"))
    try:
        assert (await down.health())["status"] == "unreachable"
        with pytest.raises(UpstreamUnavailable) as info:
            await collect(down, sreq())
        assert info.value.code == "upstream_unreachable"
    finally:
        await down.aclose()


@pytest.mark.parametrize("float_only", [False, True])
async def test_embeddings_float_and_base64_decode_equal(
    backend: OpenAICompatBackend, osim: RunningServer, float_only: bool
) -> None:
    assert isinstance(backend, Embeddings)
    if float_only:
        set_deviations(osim, {"float_embeddings"})
    ask = {"model": "text-embedding-3-small", "input": ["one", "two words"], "dimensions": 4}
    floats = await backend.embeddings(EmbeddingRequest.model_validate({**ask, "encoding_format": "float"}))
    packed = await backend.embeddings(EmbeddingRequest.model_validate({**ask, "encoding_format": "base64"}))
    assert osim.requests[-1]["body"]["encoding_format"] == "base64"
    assert [d["embedding"] for d in floats["data"]] == [embed("one", 4), embed("two words", 4)]
    assert all(isinstance(d["embedding"], str) for d in packed["data"])
    assert [decode_base64(d["embedding"]) for d in packed["data"]] == [d["embedding"] for d in floats["data"]]  # type: ignore[arg-type]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_embeddings_errors(backend: OpenAICompatBackend, osim: RunningServer) -> None:
    osim.plan.add(Fault("context_length"))
    with pytest.raises(ContextLengthExceeded):
        await backend.embeddings(EmbeddingRequest.model_validate({"model": "e", "input": "x"}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"stream_usage": True},
            "unknown openai_compat option(s) stream_usage (known: continue_style, headers, send_stream_options)",
        ),
        ({"continue_style": "anthropic"}, "continue_style must be one of vllm, prefill"),
        ({"send_stream_options": "yes"}, "send_stream_options must be true or false"),
        ({"headers": {"X": 1}}, "headers must be a table of strings"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        OpenAICompatBackend.from_config(config("http://x", options=options))
    assert message in str(info.value)


async def test_extra_headers_are_sent(make_backend: MakeBackend, osim: RunningServer) -> None:
    backend = make_backend(options={"headers": {"OpenAI-Project": "proj_1"}})
    await backend.chat(req())
    assert osim.requests[-1]["headers"]["OpenAI-Project"] == "proj_1"
