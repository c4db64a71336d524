"""Many concurrent streams through one worker, and client disconnects closing the upstream."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
from livestack import MODEL, Stack

from oai_bridge.simulators.livepeer import reply_tokens


async def _one_stream(session: aiohttp.ClientSession, url: str, i: int) -> tuple[int, str, bool]:
    content = f"stream number {i} [[sim tokens=20 delay=0.01]]"
    payload = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": content}]}
    async with session.post(url, data=orjson.dumps(payload), headers={"content-type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.read()
    parts = body.split(b"\n\n")
    assert parts[-1] == b"" and parts[-2] == b"data: [DONE]", body[-300:]
    text = ""
    for part in parts[:-2]:
        chunk = orjson.loads(part.removeprefix(b"data: "))
        text += chunk["choices"][0]["delta"].get("content") or ""
    expected = "".join(reply_tokens([{"role": "user", "content": content}], 256))
    return i, text, text == expected


async def test_500_concurrent_streams_complete_exactly(json_stack: Stack) -> None:
    url = json_stack.base_url + "/chat/completions"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        results = await asyncio.gather(*(_one_stream(session, url, i) for i in range(500)))
    assert len(results) == 500
    wrong = [i for i, _, good in results if not good]
    assert wrong == []


async def test_client_disconnect_closes_the_upstream_request(stack: Stack) -> None:
    sim = stack.simulator
    disconnects = sim.disconnects
    payload = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "go on and on [[sim tokens=200 delay=0.2]]"}],
    }
    async with aiohttp.ClientSession() as session:
        resp = await session.post(stack.base_url + "/chat/completions", data=orjson.dumps(payload))
        assert resp.status == 200
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        assert sim.active_streams == 1
        resp.close()  # the client goes away mid-stream
        closed_at = time.monotonic()
        while sim.active_streams and time.monotonic() - closed_at < 1.0:
            await asyncio.sleep(0.01)
        assert sim.active_streams == 0, "the upstream request was still open 1 s after the client left"
        assert sim.disconnects == disconnects + 1


async def test_client_disconnect_cancels_a_non_stream_request(stack: Stack) -> None:
    sim = stack.simulator
    disconnects = sim.disconnects
    payload = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "think long [[sim tokens=100 delay=0.1]]"}],
    }
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(stack.base_url + "/chat/completions", data=orjson.dumps(payload)))
        started = time.monotonic()
        while sim.active_streams == 0 and time.monotonic() - started < 5:
            await asyncio.sleep(0.01)
        assert sim.active_streams == 1
        request.cancel()  # the client gives up and closes its connection
        closed_at = time.monotonic()
        while sim.active_streams and time.monotonic() - closed_at < 1.0:
            await asyncio.sleep(0.01)
        assert sim.active_streams == 0, "the upstream request was still open 1 s after the client left"
        assert sim.disconnects == disconnects + 1
