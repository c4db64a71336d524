"""Byte- and shape-level tests of the Ollama simulator with a raw aiohttp client: routes, NDJSON
framing and fields, tool calls, length/stop, continuation, errors, embeddings, every fault."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from oai_bridge.simulators import ollama
from oai_bridge.simulators.common import Fault, RunningServer, embed, reply_pieces

REPLY = "".join(reply_pieces("hello world"))
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
LINE_KEYS = {"model", "created_at", "message", "done"}
FINAL_KEYS = LINE_KEYS | {"done_reason", "total_duration", "load_duration", "prompt_eval_count"}
FINAL_KEYS |= {"prompt_eval_duration", "eval_count", "eval_duration"}
JSON_CT = "application/json; charset=utf-8"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture
async def osim() -> AsyncIterator[RunningServer]:
    s = await ollama.start()
    yield s
    await s.aclose()


def chat(content: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": content}], **extra}


async def post(session: aiohttp.ClientSession, s: RunningServer, path: str, body: Any) -> tuple[int, str, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(s.url + path, data=data) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def ndjson(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\n")
    return [orjson.loads(x) for x in raw.split(b"\n")[:-1]]


# --------------------------------------------------------------------------- routes


async def test_root_version_tags_and_unknown_paths(session: aiohttp.ClientSession) -> None:
    s = await ollama.start(models=["phi3", "llama3.2:latest"])
    try:
        async with session.get(s.url + "/") as resp:
            assert (resp.status, await resp.text()) == (200, "Ollama is running")
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        async with session.head(s.url + "/") as resp:
            assert resp.status == 200
        async with session.get(s.url + "/api/version") as resp:
            assert (resp.headers["Content-Type"], await resp.read()) == (JSON_CT, b'{"version":"0.12.6"}')
        async with session.get(s.url + "/api/tags") as resp:
            tags = await resp.json()
        assert [m["name"] for m in tags["models"]] == ["phi3:latest", "llama3.2:latest"]
        for m in tags["models"]:
            assert set(m) == {"name", "model", "modified_at", "size", "digest", "details"}
            assert m["model"] == m["name"] and re.fullmatch(r"[0-9a-f]{64}", m["digest"])
            assert set(m["details"]) == {
                "parent_model",
                "format",
                "family",
                "families",
                "parameter_size",
                "quantization_level",
            }
        async with session.get(s.url + "/api/nope") as resp:
            assert (resp.status, await resp.read()) == (404, b"404 page not found")
    finally:
        await s.aclose()


# --------------------------------------------------------------------------- /api/chat


@pytest.mark.parametrize("stream", [None, True, "omitted"])
async def test_chat_streams_ndjson_by_default(session: aiohttp.ClientSession, osim: RunningServer, stream: Any) -> None:
    body = chat() if stream == "omitted" else chat(stream=stream)
    status, ctype, raw = await post(session, osim, "/api/chat", body)
    assert (status, ctype) == (200, "application/x-ndjson")
    lines = ndjson(raw)
    assert [set(x) for x in lines[:-1]] == [LINE_KEYS] * 5
    assert all(x["done"] is False and x["model"] == "llama3.2" for x in lines[:-1])
    assert "".join(x["message"]["content"] for x in lines) == REPLY
    assert all(x["message"]["role"] == "assistant" and CREATED_AT.match(x["created_at"]) for x in lines)
    final = lines[-1]
    assert set(final) == FINAL_KEYS
    assert (final["done"], final["done_reason"], final["message"]) == (
        True,
        "stop",
        {"role": "assistant", "content": ""},
    )
    assert (final["prompt_eval_count"], final["eval_count"]) == (2, 5)
    assert all(isinstance(final[k], int) and final[k] > 0 for k in FINAL_KEYS - LINE_KEYS - {"done_reason"})
    assert osim.requests[-1]["path"] == "/api/chat" and osim.requests[-1]["body"] == body


async def test_chat_non_stream(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    status, ctype, raw = await post(session, osim, "/api/chat", chat(stream=False))
    assert (status, ctype) == (200, JSON_CT) and not raw.endswith(b"\n")
    body = orjson.loads(raw)
    assert set(body) == FINAL_KEYS
    assert body["message"] == {"role": "assistant", "content": REPLY} and body["done"] is True


async def test_go_escapes_html(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    _, _, raw = await post(session, osim, "/api/chat", chat("<b> & c", stream=False))
    assert b"\\u003cb\\u003e" in raw and b"\\u0026" in raw and b"<" not in raw


async def test_tool_call_arrives_whole(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    _, _, raw = await post(session, osim, "/api/chat", chat(tools=[TOOL]))
    lines = ndjson(raw)
    assert len(lines) == 2
    message = lines[0]["message"]
    assert message["content"] == "" and len(message["tool_calls"]) == 1
    call = message["tool_calls"][0]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"name": "get_weather", "arguments": {"text": "hello world"}}
    assert (lines[1]["done_reason"], lines[1]["eval_count"]) == ("stop", 1)


async def test_tool_result_reply(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    call = {"function": {"name": "get_weather", "arguments": {"text": "x"}}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "22C", "tool_name": "get_weather"},
    ]
    _, _, raw = await post(session, osim, "/api/chat", {"model": "llama3.2", "messages": messages, "tools": [TOOL]})
    assert "".join(x["message"]["content"] for x in ndjson(raw)) == "Tool result: 22C"


@pytest.mark.parametrize(
    ("options", "text", "reason"),
    [
        ({"num_predict": 2}, "Simulated reply", "length"),
        ({"num_predict": 5}, REPLY, "stop"),
        ({"num_predict": -1}, REPLY, "stop"),
        ({"stop": [" to:"]}, "Simulated reply", "stop"),
        ({"stop": ["ply t"]}, "Simulated re", "stop"),
        ({"stop": ["zzz"], "num_predict": 3}, "Simulated reply to:", "length"),
    ],
)
async def test_num_predict_and_stop(
    session: aiohttp.ClientSession, osim: RunningServer, options: dict[str, Any], text: str, reason: str
) -> None:
    _, _, raw = await post(session, osim, "/api/chat", chat(options=options))
    lines = ndjson(raw)
    assert "".join(x["message"]["content"] for x in lines) == text
    assert lines[-1]["done_reason"] == reason


async def test_final_assistant_message_is_continued(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    body = chat(stream=False)
    body["messages"].append({"role": "assistant", "content": "Simulated reply"})
    _, _, raw = await post(session, osim, "/api/chat", body)
    assert orjson.loads(raw)["message"]["content"] == " to: hello world"


async def test_no_messages_loads_the_model(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    status, ctype, raw = await post(session, osim, "/api/chat", {"model": "llama3.2", "messages": []})
    body = orjson.loads(raw)
    assert (status, ctype, body["done_reason"], body["done"]) == (200, JSON_CT, "load", True)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "missing request body"),
        ({"messages": []}, 400, "model is required"),
        (chat() | {"model": "nope"}, 404, "model 'nope' not found"),
        (chat() | {"model": "all-minilm"}, 400, '"all-minilm" does not support chat'),
        (chat(options={"num_predict": "5"}), 500, 'option "num_predict" must be of type integer'),
        (chat(options={"temperature": "hot"}), 500, 'option "temperature" must be of type float32'),
        (
            {"model": "llama3.2", "messages": [{"role": "user", "content": "x", "images": ["@@"]}]},
            400,
            "illegal base64 data at input byte 0",
        ),
        (
            {
                "model": "llama3.2",
                "messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            },
            400,
            "json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function.arguments"
            " of type api.ToolCallFunctionArguments",
        ),
        (chat(truncate=False, messages=[{"role": "user", "content": "a b c d"}]), 400, ollama.CONTEXT_ERROR),
    ],
)
async def test_errors_are_ollama_strings(session: aiohttp.ClientSession, body: Any, status: int, message: str) -> None:
    s = await ollama.start(context_length=3)
    try:
        got = await post(session, s, "/api/chat", body)
    finally:
        await s.aclose()
    assert got == (status, JSON_CT, orjson.dumps({"error": message}))


async def test_invalid_json(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    status, _, raw = await post(session, osim, "/api/chat", b"{nope")
    assert status == 400 and orjson.loads(raw)["error"].startswith("invalid JSON")


async def test_token_delay(session: aiohttp.ClientSession) -> None:
    s = await ollama.start(token_delay=0.05)
    try:
        started = time.perf_counter()
        _, _, raw = await post(session, s, "/api/chat", chat())
        assert time.perf_counter() - started >= 0.2  # 5 lines, 4 gaps
        assert len(ndjson(raw)) == 6
    finally:
        await s.aclose()


# --------------------------------------------------------------------------- /api/embed


async def test_embed(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    status, ctype, raw = await post(session, osim, "/api/embed", {"model": "all-minilm", "input": ["a b", "c"]})
    body = orjson.loads(raw)
    assert (status, ctype) == (200, JSON_CT)
    assert set(body) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert body["embeddings"] == [embed("a b", 8), embed("c", 8)] and body["prompt_eval_count"] == 3
    _, _, raw = await post(session, osim, "/api/embed", {"model": "all-minilm", "input": "x", "dimensions": 4})
    assert orjson.loads(raw)["embeddings"] == [embed("x", 4)]
    _, _, raw = await post(session, osim, "/api/embed", {"model": "all-minilm", "input": ""})
    assert orjson.loads(raw) == {"model": "all-minilm", "embeddings": []}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "all-minilm", "input": [1, 2]}, 400, "invalid input type"),
        ({"model": "nope", "input": "x"}, 404, "model 'nope' not found"),
        ({"model": "all-minilm", "input": "a b c d", "truncate": False}, 400, ollama.CONTEXT_ERROR),
    ],
)
async def test_embed_errors(session: aiohttp.ClientSession, body: Any, status: int, message: str) -> None:
    s = await ollama.start(context_length=3)
    try:
        got = await post(session, s, "/api/embed", body)
    finally:
        await s.aclose()
    assert got == (status, JSON_CT, orjson.dumps({"error": message}))


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("path", ["/api/chat", "/api/embed"])
@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        (Fault("status", status=503, message="busy", retry_after="7"), 503, "busy"),
        (Fault("status", status=429, message="slow down"), 429, "slow down"),
        (Fault("context_length"), 400, ollama.CONTEXT_ERROR),
        (Fault("content_policy"), 400, ollama.POLICY_ERROR),
        (Fault("content_policy", message="blocked: content policy"), 400, "blocked: content policy"),
    ],
)
async def test_status_faults(
    session: aiohttp.ClientSession, osim: RunningServer, path: str, fault: Fault, status: int, message: str
) -> None:
    osim.plan.add(fault)
    body = chat() if path == "/api/chat" else {"model": "all-minilm", "input": "x"}
    async with session.post(osim.url + path, json=body) as resp:
        assert (resp.status, resp.headers["Content-Type"]) == (status, JSON_CT)
        assert resp.headers.get("Retry-After") == fault.retry_after
        assert await resp.read() == orjson.dumps({"error": message})
    assert (await post(session, osim, path, body))[0] == 200  # one request only


async def test_reset_and_silent(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("reset"))
    with pytest.raises(aiohttp.ClientError):
        await post(session, osim, "/api/chat", chat())
    osim.plan.add(Fault("silent", delay=5.0))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await post(session, osim, "/api/chat", chat())


async def test_slow_first_delays_the_head(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("slow_first", delay=0.3))
    started = time.perf_counter()
    async with session.post(osim.url + "/api/chat", json=chat()) as resp:
        assert time.perf_counter() - started >= 0.3
        assert "".join(x["message"]["content"] for x in ndjson(await resp.read())) == REPLY


async def read_lines(resp: aiohttp.ClientResponse) -> list[bytes]:
    return [raw async for raw in resp.content]


async def test_cut_stall_garbage_no_finish(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("cut", after=2))
    got: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(osim.url + "/api/chat", json=chat()) as resp:
            async for raw in resp.content:
                got.append(raw)
    assert [orjson.loads(x)["message"]["content"] for x in got] == ["Simulated", " reply"]

    osim.plan.add(Fault("stall", after=2, delay=5.0))
    async with session.post(osim.url + "/api/chat", json=chat()) as resp:
        assert len([await resp.content.readline() for _ in range(2)]) == 2
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await resp.content.readline()

    osim.plan.add(Fault("garbage", after=1))
    async with session.post(osim.url + "/api/chat", json=chat()) as resp:
        lines = await read_lines(resp)
    assert len(lines) == 2 and orjson.loads(lines[0])["message"]["content"] == "Simulated"
    assert lines[1] == b'{"model":"llama3.2","created_at":"\n'

    osim.plan.add(Fault("no_finish", after=2))
    async with session.post(osim.url + "/api/chat", json=chat()) as resp:
        lines = await read_lines(resp)
    assert [orjson.loads(x)["done"] for x in lines] == [False, False]


async def test_error_line_after_content(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("status", status=500, after=2, message="an error was encountered while running the model"))
    status, ctype, raw = await post(session, osim, "/api/chat", chat())
    assert (status, ctype) == (200, "application/x-ndjson")
    lines = ndjson(raw)
    assert len(lines) == 3 and lines[-1] == {"error": "an error was encountered while running the model"}


async def test_non_stream_body_faults(session: aiohttp.ClientSession, osim: RunningServer) -> None:
    osim.plan.add(Fault("cut"))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(session, osim, "/api/chat", chat(stream=False))
    osim.plan.add(Fault("garbage"))
    status, _, raw = await post(session, osim, "/api/chat", chat(stream=False))
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    osim.plan.add(Fault("no_finish"))
    _, _, raw = await post(session, osim, "/api/chat", chat(stream=False))
    body = orjson.loads(raw)
    assert body["done"] is False and "done_reason" not in body


async def test_client_disconnect_stops_the_stream(session: aiohttp.ClientSession) -> None:
    s = await ollama.start(token_delay=0.05)
    state = ollama.state(s)
    try:
        words = " ".join(f"w{i}" for i in range(40))
        async with session.post(s.url + "/api/chat", json=chat(words)) as resp:
            await resp.content.readline()
            await resp.content.readline()
            assert state.active_streams == 1
            resp.close()
        for _ in range(100):
            if state.disconnects:
                break
            await asyncio.sleep(0.02)
        assert (state.disconnects, state.active_streams) == (1, 0)
    finally:
        await s.aclose()
