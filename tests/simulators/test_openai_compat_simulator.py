"""The OpenAI-compatible simulator seen by a raw aiohttp client: byte framing and chunk shapes as in
the real OpenAI captures, answers, validation, auth, every deviation and fault in wire form,
embeddings, models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from oai_bridge.embeddings import decode_base64
from oai_bridge.simulators.common import Fault, RunningServer, embed
from oai_bridge.simulators.openai_compat import DEVIATIONS, set_deviations, start, state
from oai_bridge.sse import SSEDecoder

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "openai-real-streams"
ROLE = {"role": "assistant", "content": "", "refusal": None}
WORDS = ["Simulated", " reply", " to:", " hello", " there"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture
async def osim() -> AsyncIterator[RunningServer]:
    server = await start()
    yield server
    await server.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    body.update(fields)
    return body


async def post(
    http: aiohttp.ClientSession, sim: RunningServer, body: Any, path: str = "/v1/chat/completions", **kw: Any
) -> tuple[int, Any, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(sim.url + path, data=data, **kw) as resp:
        return resp.status, resp.headers, await resp.read()


def events(raw: bytes) -> list[Any]:
    """Decoded event data: JSON objects, and ``"[DONE]"``."""
    out = []
    for e in SSEDecoder().feed(raw):
        out.append("[DONE]" if e.data == b"[DONE]" else orjson.loads(e.data))
    return out


def choices(evs: list[Any]) -> list[dict[str, Any]]:
    return [c for e in evs if isinstance(e, dict) for c in e.get("choices", ())]


# --------------------------------------------------------------------------- framing and shapes


async def test_stream_bytes_look_like_openais(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    status, headers, raw = await post(http, osim, chat(stream=True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]" and raw.endswith(b"data: [DONE]\n\n")
    assert all(b.startswith(b"data: {") and b"\n" not in b for b in blocks[:-2])
    evs = events(raw)
    real = events((FIXTURES / "text-a.sse").read_bytes())
    assert [list(e) for e in evs[:-1]] == [list(real[0])] * (len(evs) - 1)  # same keys, same order
    assert [list(c) for c in choices(evs)] == [list(real[0]["choices"][0])] * 7
    assert [c["delta"] for c in choices(evs)] == [ROLE, *({"content": w} for w in WORDS), {}]
    assert [c["finish_reason"] for c in choices(evs)] == [None] * 6 + ["stop"]
    assert len({(e["id"], e["created"], e["model"]) for e in evs[:-1]}) == 1
    assert evs[0]["model"] == "gpt-4o-mini" and evs[0]["id"].startswith("chatcmpl-")


async def test_usage_chunk_only_when_asked(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    _, _, raw = await post(http, osim, chat(stream=True, stream_options={"include_usage": True}))
    evs = events(raw)
    real = events((FIXTURES / "text-a.sse").read_bytes())
    assert list(evs[-2]) == list(real[-2]) and evs[-2]["choices"] == []
    assert evs[-2]["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    assert all("usage" not in e for e in evs[:-2])
    _, _, plain = await post(http, osim, chat(stream=True))
    assert all(e == "[DONE]" or e["choices"] for e in events(plain))


async def test_non_stream_completion(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    status, headers, raw = await post(http, osim, chat())
    body = orjson.loads(raw)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert list(body) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert body["object"] == "chat.completion" and isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(WORDS), "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]


async def test_n_choices_are_interleaved(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    _, _, raw = await post(http, osim, chat(stream=True, n=3))
    cs = choices(events(raw))
    assert [c["index"] for c in cs] == [0, 1, 2] * 7
    for i in range(3):
        mine = [c for c in cs if c["index"] == i]
        assert "".join(c["delta"].get("content") or "" for c in mine) == "".join(WORDS)
        assert mine[0]["delta"] == ROLE and mine[-1] == {
            "index": i,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop",
        }
    body = orjson.loads((await post(http, osim, chat(n=2)))[2])
    assert [c["index"] for c in body["choices"]] == [0, 1] and body["usage"]["completion_tokens"] == 10


async def test_tool_call_is_streamed_like_openais(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    _, _, raw = await post(http, osim, chat(stream=True, tools=TOOLS))
    cs = choices(events(raw))
    real = choices(events((FIXTURES / "tool-call-single.sse").read_bytes()))
    first, rest = cs[0]["delta"], cs[1:-1]
    assert list(first) == list(real[0]["delta"]) and first["content"] is None
    frag = first["tool_calls"][0]
    assert list(frag) == ["index", "id", "type", "function"] and frag["id"].startswith("call_")
    assert frag["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) == 3 and all(list(c["delta"]["tool_calls"][0]) == ["index", "function"] for c in rest)
    assert "".join(c["delta"]["tool_calls"][0]["function"]["arguments"] for c in rest) == '{"text":"hello there"}'
    assert cs[-1]["finish_reason"] == "tool_calls" and cs[-1]["delta"] == {}
    body = orjson.loads((await post(http, osim, chat(tools=TOOLS)))[2])
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_tool_choice_and_tool_results(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    tools = [*TOOLS, {"type": "function", "function": {"name": "other"}}]
    named = {"type": "function", "function": {"name": "other"}}
    body = orjson.loads((await post(http, osim, chat(tools=tools, tool_choice=named)))[2])
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "other"
    body = orjson.loads((await post(http, osim, chat(tools=tools, tool_choice="none")))[2])
    assert body["choices"][0]["message"]["content"] == "".join(WORDS)
    history = [
        {"role": "user", "content": "hello there"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    body = orjson.loads((await post(http, osim, chat(tools=TOOLS, messages=history)))[2])
    assert body["choices"][0]["message"]["content"] == "Tool result: sunny"


async def test_limits_stop_and_continuation(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = orjson.loads((await post(http, osim, chat(**{field: 2})))[2])
        assert (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == (
            "Simulated reply",
            "length",
        )
    body = orjson.loads((await post(http, osim, chat(stop=[" to"])))[2])
    assert (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == (
        "Simulated reply",
        "stop",
    )
    prefix = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "Simulated reply to:"}]
    _, _, raw = await post(http, osim, chat(stream=True, messages=prefix))
    cs = choices(events(raw))
    assert [c["delta"].get("content") for c in cs[1:-1]] == [" hello", " there"]
    vllm = chat(messages=prefix, continue_final_message=True, add_generation_prompt=False)
    assert orjson.loads((await post(http, osim, vllm))[2])["choices"][0]["message"]["content"] == " hello there"


async def test_logprobs(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    _, _, raw = await post(http, osim, chat(stream=True, logprobs=True, top_logprobs=2))
    cs = choices(events(raw))
    real = choices(events((FIXTURES / "logprobs.sse").read_bytes()))
    assert cs[0]["logprobs"] == real[0]["logprobs"] == {"content": [], "refusal": None}
    token = cs[1]["logprobs"]["content"][0]
    assert list(token) == list(real[1]["logprobs"]["content"][0])
    assert token["token"] == "Simulated" and token["bytes"] == list(b"Simulated") and len(token["top_logprobs"]) == 2
    assert cs[-1]["logprobs"] is None
    body = orjson.loads((await post(http, osim, chat(logprobs=True)))[2])
    assert [t["token"] for t in body["choices"][0]["logprobs"]["content"]] == WORDS


# --------------------------------------------------------------------------- validation, auth


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, None),
        ({"model": "m", "messages": []}, 400, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "n"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
            400,
            "stream_options",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "continue_final_message": True}, 400, None),
    ],
)
async def test_requests_are_validated(
    http: aiohttp.ClientSession, osim: RunningServer, body: Any, status: int, param: str | None
) -> None:
    got, headers, raw = await post(http, osim, body)
    error = orjson.loads(raw)["error"]
    assert got == status and headers["Content-Type"].startswith("application/json")
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_unknown_models_and_paths(http: aiohttp.ClientSession) -> None:
    sim = await start(check_model=True)
    try:
        status, _, raw = await post(http, sim, chat(model="nope"))
        assert status == 404 and orjson.loads(raw)["error"]["code"] == "model_not_found"
        async with http.get(sim.url + "/v1/models/nope") as resp:
            assert resp.status == 404
        async with http.get(sim.url + "/v1/models/gpt-4o-mini") as resp:
            assert await resp.json() == {
                "id": "gpt-4o-mini",
                "object": "model",
                "created": 1700000000,
                "owned_by": "system",
            }
        async with http.get(sim.url + "/v1/models") as resp:
            listed = await resp.json()
        assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [
            "gpt-4o-mini",
            "text-embedding-3-small",
        ]
        status, _, raw = await post(http, sim, {}, path="/v1/responses")
        assert status == 404 and orjson.loads(raw)["error"]["message"] == "Invalid URL (POST /v1/responses)"
    finally:
        await sim.aclose()


async def test_api_key(http: aiohttp.ClientSession) -> None:
    sim = await start(api_key="sk-1")
    try:
        status, _, raw = await post(http, sim, chat())
        assert status == 401 and orjson.loads(raw)["error"]["message"].startswith("You didn't provide an API key")
        status, _, raw = await post(http, sim, chat(), headers={"Authorization": "Bearer sk-2"})
        assert status == 401 and orjson.loads(raw)["error"]["code"] == "invalid_api_key"
        status, _, _ = await post(http, sim, chat(), headers={"Authorization": "Bearer sk-1"})
        assert status == 200
        async with http.get(sim.url + "/v1/models") as resp:
            assert resp.status == 401
        assert [r["path"] for r in sim.requests] == ["/v1/chat/completions"] * 3 + ["/v1/models"]
    finally:
        await sim.aclose()


# --------------------------------------------------------------------------- deviations


async def test_every_deviation_on_the_wire(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    wanted = chat(stream=True, stream_options={"include_usage": True})
    seen: set[str] = set()

    async def raw_with(deviation: str, body: dict[str, Any] = wanted, path: str = "/v1/chat/completions") -> bytes:
        set_deviations(osim, {deviation})
        seen.add(deviation)
        return (await post(http, osim, body, path))[2]

    cs = choices(events(await raw_with("no_finish_chunk")))
    assert all(c["finish_reason"] is None for c in cs) and len(cs) == 6
    cs = choices(events(await raw_with("empty_finish_reason")))
    assert [c["finish_reason"] for c in cs] == [""] * 6 + ["stop"]
    assert all(c["delta"]["role"] == "assistant" for c in choices(events(await raw_with("role_every_chunk"))))
    raw = await raw_with("done_no_blank_line")
    assert raw.endswith(b"}\n\ndata: [DONE]\n") and events(raw)[-1] != "[DONE]"  # the decoder never sees it
    evs = events(await raw_with("usage_every_chunk"))
    assert all(e["choices"] for e in evs[:-1]) and [e["usage"]["completion_tokens"] for e in evs[:-1]] == [
        0,
        1,
        2,
        3,
        4,
        5,
        5,
    ]
    cs = choices(events(await raw_with("finish_with_content")))
    assert cs[-1] == {"index": 0, "delta": {"content": " there"}, "logprobs": None, "finish_reason": "stop"}
    assert events(await raw_with("no_done"))[-1] != "[DONE]"
    evs = events(await raw_with("unstable_ids"))
    assert len({e["id"] for e in evs[:-1]}) == len(evs) - 1
    evs = events(await raw_with("bare_chunks"))
    assert all(list(e)[:2] == ["model", "system_fingerprint"] for e in evs[:-1])
    raw = await raw_with("detail_errors", chat(n=0))
    assert orjson.loads(raw) == {"detail": "Invalid 'n': expected an integer between 1 and 128, got 0."}
    raw = await raw_with(
        "float_embeddings", {"model": "e", "input": "x", "encoding_format": "base64"}, "/v1/embeddings"
    )
    assert isinstance(orjson.loads(raw)["data"][0]["embedding"], list)  # base64 was asked, floats came
    assert seen == DEVIATIONS
    body = orjson.loads(await raw_with("empty_finish_reason", chat()))
    assert body["choices"][0]["finish_reason"] == ""
    state(osim).deviations = set()
    assert events((await post(http, osim, wanted))[2])[-1] == "[DONE]"


async def test_deviations_at_start() -> None:
    with pytest.raises(ValueError, match="unknown deviation"):
        await start(deviations={"bogus"})
    sim = await start(deviations={"no_done"})
    try:
        async with aiohttp.ClientSession() as http:
            assert b"[DONE]" not in (await post(http, sim, chat(stream=True)))[2]
    finally:
        await sim.aclose()


# --------------------------------------------------------------------------- faults


async def test_status_faults_in_openais_error_form(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("status", status=429, message="Rate limit reached", retry_after="2"))
    status, headers, raw = await post(http, osim, chat())
    assert (status, headers["Retry-After"]) == (429, "2")
    assert orjson.loads(raw) == {
        "error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    osim.plan.add(Fault("status", status=500))
    status, _, raw = await post(http, osim, chat(stream=True))
    assert status == 500
    assert orjson.loads(raw) == {
        "error": {"message": "simulated failure", "type": "server_error", "param": None, "code": None}
    }
    osim.plan.add(Fault("context_length"))
    status, _, raw = await post(http, osim, chat())
    error = orjson.loads(raw)["error"]
    assert status == 400 and (error["code"], error["param"], error["type"]) == (
        "context_length_exceeded",
        "messages",
        "invalid_request_error",
    )
    assert error["message"].startswith("This model's maximum context length is 4096 tokens.")
    osim.plan.add(Fault("content_policy"))
    status, _, raw = await post(http, osim, chat())
    assert status == 400 and orjson.loads(raw)["error"]["code"] == "content_policy_violation"


async def test_a_status_fault_mid_stream_is_an_error_event(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("status", status=500, message="backend crashed", after=2))
    status, _, raw = await post(http, osim, chat(stream=True))
    evs = events(raw)
    assert status == 200 and [c["delta"] for c in choices(evs)] == [
        ROLE,
        {"content": "Simulated"},
        {"content": " reply"},
    ]
    assert evs[-1] == {"error": {"message": "backend crashed", "type": "server_error", "param": None, "code": None}}


async def test_connection_faults(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("reset"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, osim, chat())
    osim.plan.add(Fault("cut", after=2))
    async with http.post(osim.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        got = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                got += data
    assert [c["delta"].get("content") for c in choices(events(got))] == ["", "Simulated", " reply"]
    osim.plan.add(Fault("garbage", after=1))
    async with http.post(osim.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    osim.plan.add(Fault("cut"))
    async with http.post(osim.url + "/v1/chat/completions", json=chat()) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_body_faults(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("no_finish", after=2))
    _, _, raw = await post(http, osim, chat(stream=True))
    assert raw.endswith(b"\n\n") and b'finish_reason":"stop' not in raw and b"[DONE]" not in raw
    assert len(events(raw)) == 3
    osim.plan.add(Fault("garbage"))
    status, _, raw = await post(http, osim, chat())
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


async def test_timing_faults(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("slow_first", delay=0.2))
    started = time.monotonic()
    status, _, _ = await post(http, osim, chat(stream=True))
    assert status == 200 and time.monotonic() - started >= 0.2
    osim.plan.add(Fault("silent", delay=5))
    with pytest.raises(TimeoutError):
        await post(http, osim, chat(), timeout=aiohttp.ClientTimeout(total=0.3))
    osim.plan.add(Fault("stall", after=1, delay=5))
    async with http.post(osim.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        first = await resp.content.readuntil(b"\n\n")
        assert b'"role":"assistant"' in first
        await resp.content.readuntil(b"\n\n")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await resp.content.readuntil(b"\n\n")


async def test_client_disconnect_stops_the_stream(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    state(osim).token_delay = 0.1
    async with http.post(osim.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        await resp.content.readuntil(b"\n\n")
        assert state(osim).active_streams == 1
        resp.close()
    for _ in range(100):
        if state(osim).active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert (state(osim).active_streams, state(osim).disconnects) == (0, 1)


# --------------------------------------------------------------------------- embeddings


async def test_embeddings(http: aiohttp.ClientSession, osim: RunningServer) -> None:
    base = {"model": "text-embedding-3-small", "input": ["one", "two words"]}
    floats = orjson.loads((await post(http, osim, base, "/v1/embeddings"))[2])
    assert floats["object"] == "list" and floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert floats["data"][1] == {"object": "embedding", "index": 1, "embedding": embed("two words", 8)}
    packed = orjson.loads((await post(http, osim, {**base, "encoding_format": "base64"}, "/v1/embeddings"))[2])
    assert [decode_base64(d["embedding"]) for d in packed["data"]] == [d["embedding"] for d in floats["data"]]
    small = orjson.loads((await post(http, osim, {**base, "dimensions": 3}, "/v1/embeddings"))[2])
    assert small["data"][0]["embedding"] == embed("one", 3)
    tokens = orjson.loads((await post(http, osim, {"model": "e", "input": [[1, 2], [3]]}, "/v1/embeddings"))[2])
    assert len(tokens["data"]) == 2
    for bad, param in [
        ({**base, "encoding_format": "hex"}, "encoding_format"),
        ({**base, "input": []}, "input"),
        ({**base, "dimensions": 0}, "dimensions"),
    ]:
        status, _, raw = await post(http, osim, bad, "/v1/embeddings")
        assert status == 400 and orjson.loads(raw)["error"]["param"] == param
    osim.plan.add(Fault("status", status=503))
    assert (await post(http, osim, base, "/v1/embeddings"))[0] == 503
