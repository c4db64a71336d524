"""AnthropicBackend against the Anthropic simulator on loopback: text, streams, usage, tools, every
fault kind → the exact error, continuation (prefill), disconnects, models, health, options."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from oai_bridge.backends.anthropic import AnthropicBackend
from oai_bridge.backends.base import BackendConfig
from oai_bridge.chunks import fold_chunks
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
from oai_bridge.simulators import anthropic
from oai_bridge.simulators.common import Fault, RunningServer, continuation_pieces
from oai_bridge.types import ChatCompletionRequest

API_KEY = "sk-ant-test-0123456789"  # as in conftest.py
MakeBackend = Callable[..., AnthropicBackend]
QUESTION = "Say hello world"
ANSWER = "Simulated reply to: Say hello world"
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def req(content: str = QUESTION, **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "claude-sonnet-4-20250514", "messages": [{"role": "user", "content": content}], **extra}
    )


def stream_req(**extra: Any) -> ChatCompletionRequest:
    return req(stream=True, **extra)


async def collect(backend: AnthropicBackend, request: ChatCompletionRequest) -> tuple[list[Any], BridgeError | None]:
    chunks: list[Any] = []
    try:
        async for chunk in backend.stream(request):
            chunks.append(chunk)
    except BridgeError as exc:
        return chunks, exc
    return chunks, None


def text_of(chunks: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def hdrs(record: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in record["headers"].items()}


def messages_posts(sim: RunningServer) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["path"] == "/v1/messages"]


# --------------------------------------------------------------------------- answers


async def test_chat(backend: AnthropicBackend, sim: RunningServer) -> None:
    out = await backend.chat(
        req(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}])
    )
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ANSWER, "refusal": None}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["model"] == "claude-sonnet-4-20250514" and out["id"].startswith("chatcmpl-")
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    [posted] = messages_posts(sim)
    assert posted["body"] == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": False,
        "system": "Be brief.",
    }
    headers = hdrs(posted)
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json" and "anthropic-beta" not in headers


async def test_stream_with_usage(backend: AnthropicBackend) -> None:
    chunks, error = await collect(backend, stream_req(stream_options={"include_usage": True}))
    assert error is None
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert text_of(chunks) == ANSWER
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]] == continuation_pieces(
        [{"role": "user", "content": QUESTION}]
    )
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 6,
        "total_tokens": 9,
    }
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1


async def test_stream_without_usage(backend: AnthropicBackend) -> None:
    chunks, error = await collect(backend, stream_req())
    assert error is None and text_of(chunks) == ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and all("usage" not in c for c in chunks)


async def test_tools_round_trip(backend: AnthropicBackend, sim: RunningServer) -> None:
    chunks, error = await collect(backend, stream_req(tools=TOOLS))
    assert error is None
    folded = await fold_chunks(_aiter(chunks))
    [call] = folded["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "lookup", "arguments": '{"text":"Say hello world"}'}
    assert call["id"].startswith("toolu_01") and folded["choices"][0]["finish_reason"] == "tool_calls"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]) == 4

    history = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "42 degrees"},
    ]
    out = await backend.chat(req(messages=history, tools=TOOLS))
    assert out["choices"][0]["message"]["content"] == "Tool result: 42 degrees"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert messages_posts(sim)[-1]["body"]["messages"][-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "42 degrees"}],
    }


async def test_chat_tool_call(backend: AnthropicBackend) -> None:
    out = await backend.chat(req(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "lookup"}}))
    message = out["choices"][0]["message"]
    assert message["content"] is None and out["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"]["arguments"] == '{"text":"Say hello world"}'


async def test_tool_choice_none_answers_with_text(backend: AnthropicBackend) -> None:
    out = await backend.chat(req(tools=TOOLS, tool_choice="none"))
    assert out["choices"][0]["message"]["content"] == ANSWER


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequence(backend: AnthropicBackend, stream: bool) -> None:
    request = req(stop=["hello"], stream=stream)
    out = await (fold_chunks(backend.stream(request)) if stream else backend.chat(request))
    assert out["choices"][0]["message"]["content"] == "Simulated reply to: Say "
    assert out["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_is_length(backend: AnthropicBackend, stream: bool) -> None:
    request = req(max_tokens=3, stream=stream)
    out = await (fold_chunks(backend.stream(request)) if stream else backend.chat(request))
    assert out["choices"][0]["message"]["content"] == "Simulated reply to:"
    assert out["choices"][0]["finish_reason"] == "length"


async def test_options_reach_the_wire(make_backend: MakeBackend, sim: RunningServer) -> None:
    backend = make_backend(options={"version": "2024-10-22", "beta": ["a-1", "b-2"], "default_max_tokens": 77})
    await backend.chat(req(temperature=0.3, user="u1", stop="zzz"))
    posted = messages_posts(sim)[-1]
    assert hdrs(posted)["anthropic-version"] == "2024-10-22" and hdrs(posted)["anthropic-beta"] == "a-1,b-2"
    assert posted["body"]["max_tokens"] == 77 and posted["body"]["temperature"] == 0.3
    assert posted["body"]["metadata"] == {"user_id": "u1"} and posted["body"]["stop_sequences"] == ["zzz"]


async def test_invalid_requests_never_reach_the_upstream(backend: AnthropicBackend, sim: RunningServer) -> None:
    with pytest.raises(InvalidRequest) as info:
        await backend.chat(req(temperature=1.5))
    assert info.value.param == "temperature"
    _, error = await collect(backend, stream_req(n=2))
    assert isinstance(error, InvalidRequest) and error.param == "n"
    assert messages_posts(sim) == []


@pytest.mark.parametrize("prefix", ["Simulated reply", "Simulated reply ", "Simulated reply to:\n"])
async def test_continuation_streams_only_the_rest(backend: AnthropicBackend, sim: RunningServer, prefix: str) -> None:
    chunks, error = await collect(backend, stream_req().continued(prefix))
    assert error is None
    rest = text_of(chunks)
    assert prefix.rstrip() + rest == ANSWER
    assert messages_posts(sim)[-1]["body"]["messages"][-1] == {"role": "assistant", "content": prefix.rstrip()}


async def test_models(make_backend: MakeBackend, sim: RunningServer) -> None:
    backend = make_backend(models=["claude-custom", "claude-3-5-haiku-20241022"])
    models = await backend.models()
    assert [m["id"] for m in models] == [
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-20241022",
        "claude-custom",
    ]
    assert models[0] == {
        "id": "claude-sonnet-4-20250514",
        "object": "model",
        "created": 1747872000,
        "owned_by": "anthropic",
    }
    assert hdrs(sim.requests[-1])["x-api-key"] == API_KEY


@pytest.mark.parametrize(("pages", "count", "requests"), [(5, 2500, 3), (2, 2000, 2)])
async def test_models_are_paged(make_backend: MakeBackend, pages: int, count: int, requests: int) -> None:
    server = await anthropic.start(models=[f"claude-m{i:04d}" for i in range(2500)])
    try:
        backend = make_backend(server.url, options={"model_pages": pages})
        models = await backend.models()
        assert len(models) == count and models[-1]["id"] == f"claude-m{count - 1:04d}"
        assert len(server.requests) == requests
    finally:
        await server.aclose()


async def test_models_failure_falls_back_to_configured(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(api_key="wrong", models=["claude-custom"])
    with caplog.at_level(logging.WARNING, logger="oai_bridge.anthropic"):
        assert [m["id"] for m in await backend.models()] == ["claude-custom"]
    assert "listing the models of backend 'claude' (anthropic) failed" in caplog.text
    assert "wrong" not in caplog.text


async def test_health(backend: AnthropicBackend, sim: RunningServer) -> None:
    health = await backend.health()
    assert health["status"] == "connected" and health["kind"] == "anthropic" and health["error"] is None
    assert sim.requests[-1]["path"] == "/v1/models" and hdrs(sim.requests[-1])["x-api-key"] == API_KEY


def test_options_are_validated() -> None:
    def make(**options: Any) -> AnthropicBackend:
        return AnthropicBackend.from_config(BackendConfig(name="c", kind="anthropic", base_url="x", options=options))

    with pytest.raises(ValueError, match=r"unknown anthropic option\(s\) verison \(known: beta, default_max_tokens"):
        make(verison="2023-06-01")
    for bad in ({"default_max_tokens": 0}, {"model_pages": "2"}, {"beta": 5}, {"version": ""}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make(**bad)
    assert make(beta="x,y").beta == "x,y" and make().default_max_tokens == 4096


# --------------------------------------------------------------------------- refusals before the first chunk


@pytest.mark.parametrize(
    ("fault", "cls", "status", "code", "retry"),
    [
        (Fault("status", status=429, retry_after="3"), RateLimited, 429, "rate_limit_exceeded", 3.0),
        (Fault("status", status=529, message="Overloaded"), UpstreamUnavailable, 503, "upstream_unavailable", 1.0),
        (Fault("status", status=529, retry_after="5"), UpstreamUnavailable, 503, "upstream_unavailable", 5.0),
        (Fault("status", status=500), UpstreamError, 502, "upstream_error", None),
        (Fault("status", status=401), UpstreamRejected, 401, "upstream_rejected", None),
        (Fault("status", status=403), UpstreamRejected, 403, "upstream_rejected", None),
        (Fault("status", status=404), UpstreamRejected, 404, "upstream_rejected", None),
        (Fault("status", status=413), UpstreamRejected, 413, "upstream_rejected", None),
        (Fault("status", status=400), UpstreamRejected, 400, "upstream_rejected", None),
        (Fault("context_length"), ContextLengthExceeded, 400, "context_length_exceeded", None),
        (Fault("content_policy"), ContentPolicy, 400, "content_policy_violation", None),
        (Fault("silent", delay=5), UpstreamTimeout, 504, "first_token_timeout", None),
        (Fault("slow_first", delay=5), UpstreamTimeout, 504, "first_token_timeout", None),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
async def test_refusals(
    make_backend: MakeBackend,
    sim: RunningServer,
    fault: Fault,
    cls: type[BridgeError],
    status: int,
    code: str,
    retry: float | None,
    stream: bool,
) -> None:
    backend = make_backend(first_token_timeout=0.3, request_timeout=0.3)
    sim.plan.add(fault)
    if stream:
        chunks, error = await collect(backend, stream_req())
        assert chunks == []
    else:
        try:
            await backend.chat(req())
            error = None
        except BridgeError as exc:
            error = exc
    assert type(error) is cls and error.status == status and error.code == code
    if fault.kind == "status":
        assert error.retry_after == retry
    if fault.kind not in ("silent", "slow_first"):
        assert error.message.startswith("backend 'claude' (anthropic) refused the request")
    assert API_KEY not in error.message


async def test_slow_first_within_the_limit_answers(backend: AnthropicBackend, sim: RunningServer) -> None:
    sim.plan.add(Fault("slow_first", delay=0.2))
    chunks, error = await collect(backend, stream_req())
    assert error is None and text_of(chunks) == ANSWER


@pytest.mark.parametrize("stream", [True, False])
async def test_a_reset_is_retried_once_then_reported(
    backend: AnthropicBackend, sim: RunningServer, stream: bool
) -> None:
    sim.plan.add(Fault("reset"), times=1)
    out = await (fold_chunks(backend.stream(req(stream=True))) if stream else backend.chat(req()))
    assert out["choices"][0]["message"]["content"] == ANSWER
    sim.plan.add(Fault("reset"), times=2)
    with pytest.raises(UpstreamUnavailable) as info:
        await (fold_chunks(backend.stream(req(stream=True))) if stream else backend.chat(req()))
    assert info.value.code == "server_disconnected" and info.value.status == 503


async def test_wrong_key_is_rejected_without_leaking_it(make_backend: MakeBackend) -> None:
    backend = make_backend(api_key="sk-ant-wrong-key")
    with pytest.raises(UpstreamRejected) as info:
        await backend.chat(req())
    assert info.value.status == 401 and "invalid x-api-key" in info.value.message
    assert "sk-ant-wrong-key" not in info.value.message


async def test_unreachable(make_backend: MakeBackend) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = make_backend(f"http://127.0.0.1:{port}")
    _, error = await collect(backend, stream_req())
    assert isinstance(error, UpstreamUnavailable) and error.code == "upstream_unreachable"


# --------------------------------------------------------------------------- failures mid-stream


@pytest.mark.parametrize(
    ("fault", "cls", "status", "code"),
    [
        (Fault("cut", after=2), UpstreamError, 502, "stream_cut"),
        (Fault("stall", after=2, delay=5), UpstreamTimeout, 504, "idle_timeout"),
        (Fault("garbage", after=2), UpstreamError, 502, "malformed_event"),
        (Fault("no_finish", after=2), UpstreamError, 502, "stream_incomplete"),
        (Fault("status", status=529, message="Overloaded", after=2), UpstreamUnavailable, 503, "upstream_unavailable"),
        (Fault("status", status=500, message="Internal server error", after=2), UpstreamError, 502, "upstream_error"),
        (Fault("status", status=429, after=2), RateLimited, 429, "rate_limit_exceeded"),
    ],
)
async def test_mid_stream_failures(
    make_backend: MakeBackend, sim: RunningServer, fault: Fault, cls: type[BridgeError], status: int, code: str
) -> None:
    backend = make_backend(idle_timeout=0.3)
    sim.plan.add(fault)
    chunks, error = await collect(backend, stream_req())
    assert text_of(chunks) == "Simulated reply" and len(chunks) == 3
    assert type(error) is cls and error.status == status and error.code == code
    if fault.kind == "status":
        assert fault.message in error.message and "failed mid-stream" in error.message


async def test_mid_stream_failure_of_a_tool_call(backend: AnthropicBackend, sim: RunningServer) -> None:
    sim.plan.add(Fault("cut", after=2))
    chunks, error = await collect(backend, stream_req(tools=TOOLS))
    assert isinstance(error, UpstreamError) and error.code == "stream_cut"
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": ""}


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        (Fault("cut"), UpstreamError, "stream_cut"),
        (Fault("garbage"), UpstreamError, "upstream_error"),
        (Fault("no_finish", after=2), UpstreamError, "stream_incomplete"),
        (Fault("stall", delay=5), UpstreamTimeout, "upstream_timeout"),
    ],
)
async def test_non_stream_body_failures(
    make_backend: MakeBackend, sim: RunningServer, fault: Fault, cls: type[BridgeError], code: str
) -> None:
    backend = make_backend(request_timeout=0.5)
    sim.plan.add(fault)
    with pytest.raises(cls) as info:
        await backend.chat(req())
    assert type(info.value) is cls and info.value.code == code


async def test_closing_the_stream_early_closes_the_upstream_request() -> None:
    server = await anthropic.start(token_delay=0.2)
    backend = AnthropicBackend.from_config(BackendConfig(name="c", kind="anthropic", base_url=server.url))
    sim_state = anthropic.state(server)
    try:
        stream = backend.stream(stream_req())
        first = [await anext(stream), await anext(stream)]
        assert text_of(first) == "Simulated" and sim_state.active_streams == 1
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(100):
            if sim_state.disconnects == 1 and sim_state.active_streams == 0:
                break
            await asyncio.sleep(0.01)
        assert sim_state.disconnects == 1 and sim_state.active_streams == 0
    finally:
        await backend.aclose()
        await server.aclose()


async def test_complete_streams_reuse_the_connection(backend: AnthropicBackend, sim: RunningServer) -> None:
    for _ in range(3):
        chunks, error = await collect(backend, stream_req())
        assert error is None and text_of(chunks) == ANSWER
    assert backend.session().connections() == (1, 1)  # one pooled keep-alive connection, idle


async def _aiter(items: list[Any]) -> Any:
    for item in items:
        yield item
