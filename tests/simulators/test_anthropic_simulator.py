"""The Anthropic Messages API simulator on the wire (raw aiohttp client): exact SSE bytes and shapes
(checked against the real streams in ``fixtures/anthropic-streams``), headers, validation like the
real API, the deterministic answers, models paging and every fault kind in Anthropic's form."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from oai_bridge.simulators import anthropic
from oai_bridge.simulators.common import Fault, FaultPlan, RunningServer, continuation_pieces, tool_result_reply
from oai_bridge.sse import SSEDecoder

FIXTURES = Path("/work/shared/fixtures/anthropic-streams")
if not FIXTURES.is_dir():
    FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "anthropic-streams"
HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
TOO_LONG = "200002 tokens > 200000 maximum"
MSG_ID = re.compile(rb'"msg_01[A-Za-z0-9]{22}"')


@pytest.fixture
async def asim() -> AsyncIterator[RunningServer]:
    server = await anthropic.start()
    yield server
    await server.aclose()


def body(content: str = "Say hi", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": content}], **extra}


async def post(
    session: aiohttp.ClientSession, server: RunningServer, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    async with session.post(server.url + "/v1/messages", data=data, headers=headers or HEADERS) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, orjson.loads(e.data)) for e in SSEDecoder().feed(raw)]


# --------------------------------------------------------------------------- exact wire


async def test_stream_bytes(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(session, asim, body(stream=True))
    assert status == 200 and headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache" and re.fullmatch(r"req_01[A-Za-z0-9]{22}", headers["request-id"])
    deltas = b"".join(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        b'"text":"' + p.encode() + b'"}}\n\n'
        for p in ["Simulated", " reply", " to:", " Say", " hi"]
    )
    assert MSG_ID.sub(b'"msg_ID"', raw) == (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_ID","type":"message",'
        b'"role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":'
        b'{"input_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,'
        b'"service_tier":"standard"}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"text","text":""}}\n\n'
        b'event: ping\ndata: {"type": "ping"}\n\n'
        + deltas
        + b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
        b'"stop_sequence":null},"usage":{"output_tokens":5}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def fixture_events(name: str) -> list[tuple[str, dict[str, Any]]]:
    return events((FIXTURES / f"{name}.sse").read_bytes().rstrip(b"\n") + b"\n\n")


def collapse(evs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Event names with runs of deltas folded into one, and each event's name equal to its type."""
    out: list[str] = []
    for name, data in evs:
        assert data["type"] == name
        if not (out and name == "content_block_delta" == out[-1]):
            out.append(name)
    return out


NAMES = [
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def kind_of(data: dict[str, Any]) -> tuple[Any, ...]:
    return (data["type"], (data.get("content_block") or {}).get("type"), (data.get("delta") or {}).get("type"))


@pytest.mark.parametrize(("fixture", "tools"), [("basic-response", False), ("tool-use-response", True)])
async def test_stream_shape_matches_the_real_streams(
    asim: RunningServer, session: aiohttp.ClientSession, fixture: str, tools: bool
) -> None:
    extra = {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]} if tools else {}
    _, _, raw = await post(session, asim, body(stream=True, **extra))
    ours, real = events(raw), fixture_events(fixture)
    assert collapse(ours) == NAMES and collapse(fixture_events("basic-response")) == NAMES
    by_kind = {kind_of(data): data for _, data in real}
    for _, mine in ours:
        theirs = by_kind[kind_of(mine)]
        assert set(theirs) <= set(mine), mine["type"]
        for key in ("message", "content_block", "delta", "usage"):
            if isinstance(theirs.get(key), dict):
                extra_keys = {"stop_details", "caller", "service_tier", "usage"} if key != "usage" else set()
                assert set(theirs[key]) - extra_keys <= set(mine[key]), (mine["type"], key)


async def test_tool_use_stream(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    tools = [{"name": "first", "input_schema": {"type": "object"}}, {"name": "second", "input_schema": {}}]
    _, _, raw = await post(session, asim, body("Say hi", stream=True, tools=tools))
    evs = events(raw)
    start = evs[1][1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "first" and start["input"] == {}
    assert re.fullmatch(r"toolu_01[A-Za-z0-9]{22}", start["id"])
    partial = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"]
    assert len(partial) == 4 and partial[0] == "" and "".join(partial) == '{"text":"Say hi"}'
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_non_stream_message(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(session, asim, body(system="Be brief."))
    assert status == 200 and headers["Content-Type"] == "application/json"
    message = orjson.loads(raw)
    assert re.fullmatch(r"msg_01[A-Za-z0-9]{22}", message.pop("id"))
    assert message == {
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Simulated reply to: Say hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 5,
            "service_tier": "standard",
        },
    }


# --------------------------------------------------------------------------- headers and validation


async def test_auth_and_version_headers(session: aiohttp.ClientSession) -> None:
    server = await anthropic.start(api_key="k1")
    try:
        cases = [
            ({"anthropic-version": "2023-06-01"}, 401, "authentication_error", "x-api-key header is required"),
            ({**HEADERS, "x-api-key": "nope"}, 401, "authentication_error", "invalid x-api-key"),
            ({"x-api-key": "k1"}, 400, "invalid_request_error", "anthropic-version: header is required"),
            (
                {"x-api-key": "k1", "anthropic-version": "2023-06-01, 2023-06-01"},
                400,
                "invalid_request_error",
                'anthropic-version: "2023-06-01, 2023-06-01" is not a valid version',
            ),
        ]
        for headers, status, kind, message in cases:
            got, resp_headers, raw = await post(session, server, body(), headers)
            err = orjson.loads(raw)
            assert (got, err["type"], err["error"]) == (status, "error", {"type": kind, "message": message})
            assert err["request_id"].startswith("req_01") and "request-id" in resp_headers
        for auth in ({"x-api-key": "k1"}, {"Authorization": "Bearer k1"}):
            assert (await post(session, server, body(), {**HEADERS, **auth}))[0] == 200
        assert (await post(session, server, body(), {**HEADERS, "x-api-key": "k1", "anthropic-version": "2026-10-21"}))[
            0
        ] == 200
    finally:
        await server.aclose()


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{nope", "There was an issue with the formatting or content of your request: invalid JSON body."),
        ({**body(), "n": 2}, "n: Extra inputs are not permitted"),
        ({k: v for k, v in body().items() if k != "max_tokens"}, "max_tokens: Field required"),
        ({k: v for k, v in body().items() if k != "model"}, "model: Field required"),
        (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
        (body(max_tokens="5"), "max_tokens: Input should be a valid integer"),
        ({**body(), "messages": []}, "messages: at least one message is required"),
        (
            {**body(), "messages": [{"role": "system", "content": "x"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (body("  "), "messages: text content blocks must contain non-whitespace text"),
        (
            {**body(), "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A "}]},
            "messages: final assistant content cannot end with trailing whitespace",
        ),
        (
            {**body(), "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}]},
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_9. Each `tool_result` "
            "block must have a corresponding `tool_use` block in the previous message.",
        ),
        (
            {
                **body(),
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": [TOOL_USE]},
                    {"role": "user", "content": "x"},
                ],
            },
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_1. Each "
            "`tool_use` block must have a corresponding `tool_result` block in the next message.",
        ),
        (body(temperature=1.5), "temperature: range: 0..1"),
        (body(tool_choice={"type": "auto"}), "tool_choice may only be specified while providing tools."),
        (body(tools=[{"name": "f"}]), "tools.0.input_schema: Field required"),
        (body(stop_sequences="END"), "stop_sequences: Input should be a valid list of strings"),
        (body(metadata={"user_id": "u", "x": 1}), "metadata: Extra inputs are not permitted"),
    ],
)
async def test_validation(asim: RunningServer, session: aiohttp.ClientSession, payload: Any, message: str) -> None:
    status, _, raw = await post(session, asim, payload)
    assert status == 400 and orjson.loads(raw)["error"] == {"type": "invalid_request_error", "message": message}


async def test_strict_models_and_context_window(session: aiohttp.ClientSession) -> None:
    server = await anthropic.start(strict_models=True, context_window=5)
    try:
        status, _, raw = await post(session, server, body())
        assert status == 404 and orjson.loads(raw)["error"] == {"type": "not_found_error", "message": "model: claude-x"}
        long = {**body("one two three four five six"), "model": anthropic.DEFAULT_MODELS[0][0]}
        status, _, raw = await post(session, server, long)
        assert (status, orjson.loads(raw)["error"]["message"]) == (400, "prompt is too long: 6 tokens > 5 maximum")
    finally:
        await server.aclose()


# --------------------------------------------------------------------------- answers


async def answer_text(session: aiohttp.ClientSession, server: RunningServer, payload: dict[str, Any]) -> dict[str, Any]:
    status, _, raw = await post(session, server, payload)
    assert status == 200, raw
    message: dict[str, Any] = orjson.loads(raw)
    return message


@pytest.mark.parametrize(
    ("messages", "openai_messages"),
    [
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b c"}],
            [{"role": "user", "content": "a b c"}],
        ),
        ([{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi"}], None),
        (
            [
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
            ],
            [
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": ""},
                {"role": "tool", "content": "sunny"},
            ],
        ),
        (
            [
                {"role": "user", "content": "Say hi"},
                {"role": "assistant", "content": [TOOL_USE]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "rain"}],
                        },
                        {"type": "text", "text": "thanks now go"},
                    ],
                },
            ],
            [{"role": "tool", "content": "rain"}, {"role": "user", "content": "thanks now go"}],
        ),
    ],
)
async def test_answers_equal_the_common_answer(
    asim: RunningServer, session: aiohttp.ClientSession, messages: list[dict[str, Any]], openai_messages: Any
) -> None:
    message = await answer_text(session, asim, {**body(), "messages": messages})
    reference = openai_messages or [m for m in messages if m["role"] == "user"]
    expected = "".join(tool_result_reply(reference) or continuation_pieces(reference))
    assert message["content"] == [{"type": "text", "text": expected}]


@pytest.mark.parametrize("stream", [False, True])
async def test_prefill_is_continued(asim: RunningServer, session: aiohttp.ClientSession, stream: bool) -> None:
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Simulated reply"}]
    payload = {**body(stream=stream), "messages": messages}
    if stream:
        _, _, raw = await post(session, asim, payload)
        text = "".join(d["delta"]["text"] for n, d in events(raw) if n == "content_block_delta")
    else:
        text = (await answer_text(session, asim, payload))["content"][0]["text"]
    assert text == " to: Say hi"


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequences_and_max_tokens(asim: RunningServer, session: aiohttp.ClientSession, stream: bool) -> None:
    async def run(**extra: Any) -> tuple[str, str, str | None, int]:
        payload = body(stream=stream, **extra)
        if not stream:
            m = await answer_text(session, asim, payload)
            text = m["content"][0]["text"] if m["content"] else ""
            return text, m["stop_reason"], m["stop_sequence"], m["usage"]["output_tokens"]
        evs = events((await post(session, asim, payload))[2])
        final = [d for n, d in evs if n == "message_delta"][0]
        text = "".join(d["delta"]["text"] for n, d in evs if n == "content_block_delta")
        return text, final["delta"]["stop_reason"], final["delta"]["stop_sequence"], final["usage"]["output_tokens"]

    assert await run(stop_sequences=["zzz", "Say"]) == ("Simulated reply to: ", "stop_sequence", "Say", 4)
    assert await run(stop_sequences=["ly to"]) == ("Simulated rep", "stop_sequence", "ly to", 2)
    assert await run(max_tokens=2) == ("Simulated reply", "max_tokens", None, 2)
    assert await run(stop_sequences=["Sim"]) == ("", "stop_sequence", "Sim", 0)


async def test_tool_choice(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    tools = [
        {"name": "first", "input_schema": {"type": "object"}},
        {"name": "second", "input_schema": {"type": "object"}},
    ]
    m = await answer_text(session, asim, body(tools=tools))
    assert m["stop_reason"] == "tool_use" and m["content"][0]["name"] == "first"
    assert m["content"][0]["input"] == {"text": "Say hi"}
    m = await answer_text(session, asim, body(tools=tools, tool_choice={"type": "tool", "name": "second"}))
    assert m["content"][0]["name"] == "second"
    m = await answer_text(session, asim, body(tools=tools, tool_choice={"type": "none"}))
    assert m["content"] == [{"type": "text", "text": "Simulated reply to: Say hi"}]


async def test_count_tokens(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    payload = {"model": "claude-x", "system": "be nice", "messages": [{"role": "user", "content": "one two three"}]}
    async with session.post(asim.url + "/v1/messages/count_tokens", json=payload, headers=HEADERS) as resp:
        assert resp.status == 200 and await resp.json() == {"input_tokens": 5}


# --------------------------------------------------------------------------- models


async def test_models_paging(session: aiohttp.ClientSession) -> None:
    server = await anthropic.start(models=["m1", "m2", "m3", "m4", "m5"])

    async def page(query: str) -> tuple[int, Any]:
        async with session.get(server.url + "/v1/models" + query, headers=HEADERS) as resp:
            return resp.status, await resp.json()

    try:
        status, first = await page("?limit=2")
        assert status == 200 and [m["id"] for m in first["data"]] == ["m1", "m2"]
        assert (first["has_more"], first["first_id"], first["last_id"]) == (True, "m1", "m2")
        assert first["data"][0] == {
            "type": "model",
            "id": "m1",
            "display_name": "m1",
            "created_at": "2025-01-01T00:00:00Z",
        }
        _, rest = await page("?limit=10&after_id=m2")
        assert [m["id"] for m in rest["data"]] == ["m3", "m4", "m5"] and rest["has_more"] is False
        _, before = await page("?limit=1&before_id=m3")
        assert [m["id"] for m in before["data"]] == ["m2"] and before["has_more"] is True
        _, empty = await page("?after_id=m5")
        assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}
        assert (await page("?limit=0"))[0] == 400
        async with session.get(server.url + "/v1/models/m4", headers=HEADERS) as resp:
            assert resp.status == 200 and (await resp.json())["id"] == "m4"
        async with session.get(server.url + "/v1/models/nope", headers=HEADERS) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["type"] == "not_found_error"
        async with session.get(server.url + "/v1/models") as resp:
            assert resp.status == 400
    finally:
        await server.aclose()


async def test_default_models(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    async with session.get(asim.url + "/v1/models", headers=HEADERS) as resp:
        data = await resp.json()
    assert [m["id"] for m in data["data"]] == [m[0] for m in anthropic.DEFAULT_MODELS]


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "kind", "message", "retry"),
    [
        (Fault("status", status=529, message="Overloaded"), 529, "overloaded_error", "Overloaded", None),
        (Fault("status", status=503), 503, "overloaded_error", "simulated failure", None),
        (Fault("status", status=429, retry_after="7"), 429, "rate_limit_error", "simulated failure", "7"),
        (Fault("status", status=500), 500, "api_error", "simulated failure", None),
        (Fault("status", status=401), 401, "authentication_error", "simulated failure", None),
        (Fault("status", status=403), 403, "permission_error", "simulated failure", None),
        (Fault("status", status=404), 404, "not_found_error", "simulated failure", None),
        (Fault("status", status=413), 413, "request_too_large", "simulated failure", None),
        (Fault("status", status=400), 400, "invalid_request_error", "simulated failure", None),
        (Fault("content_policy"), 400, "invalid_request_error", "Output blocked by content filtering policy", None),
        (
            Fault("context_length"),
            400,
            "invalid_request_error",
            "prompt is too long: 200002 tokens > 200000 maximum",
            None,
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_status_faults(
    asim: RunningServer,
    session: aiohttp.ClientSession,
    fault: Fault,
    status: int,
    kind: str,
    message: str,
    retry: str | None,
    stream: bool,
) -> None:
    asim.plan.add(fault)
    got, headers, raw = await post(session, asim, body(stream=stream))
    err = orjson.loads(raw)
    assert (got, err["type"], err["error"]) == (status, "error", {"type": kind, "message": message})
    assert headers["Content-Type"].startswith("application/json") and headers.get("retry-after") == retry
    assert (await post(session, asim, body()))[0] == 200  # one request only


async def test_faults_apply_to_messages_only_and_repeat(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    asim.plan.add(Fault("status", status=500), times=None)
    async with session.get(asim.url + "/v1/models", headers=HEADERS) as resp:
        assert resp.status == 200
    assert [(await post(session, asim, body()))[0] for _ in range(3)] == [500, 500, 500]
    assert [r["path"] for r in asim.requests] == ["/v1/models", *["/v1/messages"] * 3]


async def fresh(server: RunningServer, payload: dict[str, Any]) -> tuple[int, bytes, Exception | None, float]:
    """POST on a new connection; (status, the bytes that came, the exception, seconds taken)."""
    started, got, status = time.monotonic(), b"", 0
    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(server.url + "/v1/messages", data=orjson.dumps(payload), headers=HEADERS) as resp:
                status = resp.status
                async for data in resp.content.iter_any():
                    got += data
        except (TimeoutError, aiohttp.ClientError) as exc:
            return status, got, exc, time.monotonic() - started
    return status, got, None, time.monotonic() - started


@pytest.mark.parametrize("stream", [False, True])
async def test_connection_faults(asim: RunningServer, stream: bool) -> None:
    asim.plan.add(Fault("reset"))
    status, _, exc, _ = await fresh(asim, body(stream=stream))
    assert status == 0 and isinstance(exc, aiohttp.ServerDisconnectedError)
    asim.plan.add(Fault("silent", delay=0.3))
    status, _, exc, took = await fresh(asim, body(stream=stream))
    assert status == 0 and isinstance(exc, aiohttp.ServerDisconnectedError) and took >= 0.3
    asim.plan.add(Fault("slow_first", delay=0.3))
    status, raw, exc, took = await fresh(asim, body(stream=stream))
    assert status == 200 and exc is None and took >= 0.3 and b"Simulated" in raw


@pytest.mark.parametrize("stream", [False, True])
async def test_body_faults(asim: RunningServer, stream: bool) -> None:
    asim.plan.add(Fault("cut", after=1))
    status, raw, exc, _ = await fresh(asim, body(stream=stream))
    assert status == 200 and isinstance(exc, aiohttp.ClientPayloadError) and b"message_stop" not in raw
    if stream:
        assert [n for n, _ in events(raw)] == ["message_start", "content_block_start", "ping", "content_block_delta"]
    asim.plan.add(Fault("stall", after=1, delay=0.3))
    status, raw, exc, took = await fresh(asim, body(stream=stream))
    assert status == 200 and isinstance(exc, aiohttp.ClientPayloadError) and took >= 0.3
    asim.plan.add(Fault("garbage", after=1))
    status, raw, exc, _ = await fresh(asim, body(stream=stream))
    assert status == 200 and exc is None
    if stream:
        assert raw.endswith(anthropic.GARBAGE) and raw.count(b"content_block_delta") == 4
    else:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
    asim.plan.add(Fault("no_finish", after=2))
    status, raw, exc, _ = await fresh(asim, body(stream=stream))
    assert status == 200 and exc is None
    if stream:
        assert [n for n, _ in events(raw)][-2:] == ["content_block_delta", "content_block_delta"]
        assert b"message_delta" not in raw and raw.endswith(b"\n\n")
    else:
        message = orjson.loads(raw)
        assert message["stop_reason"] is None and message["content"][0]["text"] == "Simulated reply"


@pytest.mark.parametrize(("status", "kind"), [(529, "overloaded_error"), (500, "api_error"), (429, "rate_limit_error")])
async def test_error_event_mid_stream(asim: RunningServer, status: int, kind: str) -> None:
    asim.plan.add(Fault("status", status=status, message="Overloaded", after=2))
    got, raw, exc, _ = await fresh(asim, body(stream=True))
    assert got == 200 and exc is None
    assert raw.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"' + kind.encode() + b'","message":"Overloaded"}}\n\n'
    )
    assert [n for n, _ in events(raw)].count("content_block_delta") == 2


async def test_token_delay_and_disconnect() -> None:
    server = await anthropic.start(token_delay=0.1)
    st = anthropic.state(server)
    try:
        status, raw, _, took = await fresh(server, body(stream=True))
        assert status == 200 and took >= 0.4 and raw.endswith(b'data: {"type":"message_stop"}\n\n')
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url + "/v1/messages", json=body(stream=True), headers=HEADERS) as resp:
                await resp.content.readany()
                assert st.active_streams == 1
        for _ in range(100):
            if st.disconnects == 1:
                break
            await asyncio.sleep(0.01)
        assert st.disconnects == 1 and st.active_streams == 0
    finally:
        await server.aclose()


def test_unknown_option() -> None:
    with pytest.raises(ValueError, match="unknown anthropic simulator option"):
        anthropic.create_app(FaultPlan(), token_dealy=1)


async def test_faults_come_before_validation(asim: RunningServer, session: aiohttp.ClientSession) -> None:
    asim.plan.add(Fault("context_length"))
    status, _, raw = await post(session, asim, {"model": "claude-x"})
    message = orjson.loads(raw)["error"]["message"]
    assert status == 400 and message == "prompt is too long: 200001 tokens > 200000 maximum"
    status, _, raw = await post(session, asim, {"model": "claude-x"})
    assert status == 400 and orjson.loads(raw)["error"]["message"] == "max_tokens: Field required"
