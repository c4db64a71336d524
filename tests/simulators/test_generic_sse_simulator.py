"""The Dify-like generic_sse simulator, driven with a raw aiohttp client: bytes and shapes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from oai_bridge.simulators import generic_sse
from oai_bridge.simulators.common import Fault, RunningServer, continuation_pieces, tool_result_reply

BODY: dict[str, Any] = {
    "query": "what is SSE",
    "history": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}],
    "system": "Be brief.",
    "model": "dify-app",
    "response_mode": "streaming",
    "inputs": {},
    "conversation_id": "",
    "unknown_field": {"ignored": True},
}
MESSAGES = [{"role": "system", "content": "Be brief."}, *BODY["history"], {"role": "user", "content": "what is SSE"}]


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    s = await generic_sse.start()
    yield s
    await s.aclose()


async def post(
    session: aiohttp.ClientSession, server: RunningServer, body: Any = BODY, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(server.url + "/stream", data=data, headers=headers) as r:
        return r.status, r.headers, await r.read()


def events(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\n\n")
    blocks = raw[:-2].split(b"\n\n")
    assert all(b.startswith(b"data: {") and b"\n" not in b for b in blocks), blocks
    return [orjson.loads(b[6:]) for b in blocks]


async def test_stream_shape(server: RunningServer, session: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(session, server)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert b'"event":"message"' in raw  # compact JSON
    evs = events(raw)
    pieces = continuation_pieces(MESSAGES)
    assert [e["event"] for e in evs] == ["message"] * len(pieces) + ["message_end"]
    assert [e["answer"] for e in evs[:-1]] == pieces
    assert len({(e["task_id"], e["message_id"], e["conversation_id"]) for e in evs}) == 1
    assert all(isinstance(e["created_at"], int) and abs(e["created_at"] - time.time()) < 60 for e in evs[:-1])
    prompt = sum(len(m["content"].split()) for m in MESSAGES)
    assert evs[-1]["metadata"] == {
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)},
        "stop_reason": "end",
    }
    assert server.requests[-1]["body"] == BODY and server.requests[-1]["path"] == "/stream"


async def test_messages_form_and_max_tokens(server: RunningServer, session: aiohttp.ClientSession) -> None:
    _, _, raw = await post(session, server, {"messages": MESSAGES, "max_tokens": 2})
    evs = events(raw)
    assert [e["answer"] for e in evs[:-1]] == continuation_pieces(MESSAGES, 2)
    assert evs[-1]["metadata"]["stop_reason"] == "max_tokens"
    assert evs[-1]["metadata"]["usage"]["completion_tokens"] == 2


async def test_bare_query_and_tool_result(server: RunningServer, session: aiohttp.ClientSession) -> None:
    _, _, raw = await post(session, server, {"query": ""})
    assert [e["answer"] for e in events(raw)[:-1]] == ["Simulated", " reply."]
    tool_conv = [{"role": "user", "content": "weather?"}, {"role": "tool", "content": "sunny 21C"}]
    _, _, raw = await post(session, server, {"messages": tool_conv})
    assert [e["answer"] for e in events(raw)[:-1]] == tool_result_reply(tool_conv)


async def test_cumulative_and_ping() -> None:
    s = await generic_sse.start(cumulative=True, ping=True)
    try:
        async with aiohttp.ClientSession() as session:
            _, _, raw = await post(session, s)
        assert raw.startswith(b"event: ping\n\ndata: ")
        answers = [e["answer"] for e in events(raw[len(b"event: ping\n\n") :])[:-1]]
        pieces = continuation_pieces(MESSAGES)
        assert answers == ["".join(pieces[: i + 1]) for i in range(len(pieces))]
    finally:
        await s.aclose()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "The request body must be a JSON object."),
        ({"history": []}, 400, "query is required and must be a string"),
        ({"query": "x", "history": "nope"}, 400, "history must be a list of messages"),
        (
            {"messages": [{"role": "user", "content": 3}]},
            400,
            "messages must be objects with a string role and content",
        ),
    ],
)
async def test_bad_requests(
    server: RunningServer, session: aiohttp.ClientSession, body: Any, status: int, message: str
) -> None:
    got, headers, raw = await post(session, server, body)
    assert got == status and headers["Content-Type"].startswith("application/json")
    assert orjson.loads(raw) == {"code": "invalid_param", "message": message, "status": status}


async def test_api_key_and_other_methods(session: aiohttp.ClientSession) -> None:
    s = await generic_sse.start(api_key="k1")
    try:
        status, _, raw = await post(session, s)
        assert status == 401 and orjson.loads(raw) == {
            "code": "unauthorized",
            "message": "Access token is invalid",
            "status": 401,
        }
        assert (await post(session, s, headers={"X-Api-Key": "k1"}))[0] == 200
        async with session.get(s.url + "/stream") as r:
            assert r.status == 405
    finally:
        await s.aclose()


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "code", "message"),
    [
        (
            Fault("status", status=503, message="overloaded", retry_after="3"),
            503,
            "internal_server_error",
            "overloaded",
        ),
        (Fault("status", status=429), 429, "too_many_requests", "simulated failure"),
        (Fault("context_length"), 400, "completion_request_error", generic_sse.CONTEXT_MESSAGE),
        (Fault("content_policy"), 400, "content_moderation", generic_sse.CONTENT_MESSAGE),
    ],
)
async def test_status_faults(
    server: RunningServer, session: aiohttp.ClientSession, fault: Fault, status: int, code: str, message: str
) -> None:
    server.plan.add(fault)
    got, headers, raw = await post(session, server)
    assert got == status and orjson.loads(raw) == {"code": code, "message": message, "status": status}
    assert headers.get("Retry-After") == fault.retry_after


async def test_error_event_mid_stream_and_stream_errors(session: aiohttp.ClientSession) -> None:
    s = await generic_sse.start(stream_errors=True)
    try:
        s.plan.add(Fault("status", status=500, message="provider failed", after=2))
        s.plan.add(Fault("context_length"))
        for after in (2, 0):
            status, _, raw = await post(session, s)
            evs = events(raw)
            assert status == 200 and [e["event"] for e in evs] == ["message"] * after + ["error"]
        assert evs[-1]["status"] == 400 and evs[-1]["message"] == generic_sse.CONTEXT_MESSAGE
    finally:
        await s.aclose()


async def test_reset_and_silent(server: RunningServer, session: aiohttp.ClientSession) -> None:
    server.plan.add(Fault("reset"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, server)
    server.plan.add(Fault("silent", delay=0.3))
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, server)
    assert time.monotonic() - started >= 0.25


async def _read_events(resp: aiohttp.ClientResponse, n: int) -> bytes:
    buf = b""
    while buf.count(b"\n\n") < n:
        buf += await resp.content.readany()
    return buf


async def test_slow_first_sends_the_head_at_once(server: RunningServer, session: aiohttp.ClientSession) -> None:
    server.plan.add(Fault("slow_first", delay=0.3))
    started = time.monotonic()
    async with session.post(server.url + "/stream", json=BODY) as resp:
        head = time.monotonic() - started
        await _read_events(resp, 1)
        first = time.monotonic() - started
    assert head < 0.25 <= first


@pytest.mark.parametrize("kind", ["cut", "stall"])
async def test_cut_and_stall_drop_the_connection(
    server: RunningServer, session: aiohttp.ClientSession, kind: str
) -> None:
    server.plan.add(Fault(kind, after=2, delay=0.2))  # type: ignore[arg-type]
    async with session.post(server.url + "/stream", json=BODY) as resp:
        raw = await _read_events(resp, 2)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.content.read()
    assert len(events(raw)) == 2
    assert generic_sse.disconnects(server) == 0  # its own doing, not the client's


async def test_garbage_and_no_finish(server: RunningServer, session: aiohttp.ClientSession) -> None:
    server.plan.add(Fault("garbage", after=1)).add(Fault("no_finish", after=3))
    _, _, raw = await post(session, server)
    good, bad = raw.rsplit(b"\n\n", 2)[0] + b"\n\n", raw.rsplit(b"\n\n", 2)[1] + b"\n\n"
    assert len(events(good)) == 1 and bad == generic_sse.MALFORMED_EVENT
    _, _, raw = await post(session, server)
    assert [e["event"] for e in events(raw)] == ["message"] * 3


async def test_client_disconnect_stops_the_stream(session: aiohttp.ClientSession) -> None:
    s = await generic_sse.start(token_delay=0.05)
    try:
        async with session.post(s.url + "/stream", json=BODY) as resp:
            await _read_events(resp, 1)
            resp.close()
        for _ in range(100):
            if generic_sse.disconnects(s) == 1 and generic_sse.state(s).active == 0:
                break
            await asyncio.sleep(0.02)
        assert generic_sse.disconnects(s) == 1 and generic_sse.state(s).active == 0
    finally:
        await s.aclose()
