"""Byte-level tests of the Livepeer gateway simulator (both /llm generations and every fault)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from oai_bridge.simulators import livepeer
from oai_bridge.simulators.livepeer import (
    DEFAULT_MODELS,
    GENERATIONS,
    LEAK_HEADER,
    RunningSimulator,
    parse_directives,
    prompt_tokens,
    reply_tokens,
    start_simulator,
    strip_directives,
)

MODEL = DEFAULT_MODELS[0]
ID_RE = re.compile(rb'"id":"(chatcmpl-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})"')
CREATED_RE = re.compile(rb'"created":\d+')
PANIC = (
    b'data: {"choices":null,"created":0,"id":"","model":"",'
    b'"usage":{"completion_tokens":0,"prompt_tokens":0,"total_tokens":0}}\n\n'
)


# ----------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture
async def form_sim() -> AsyncIterator[RunningSimulator]:
    s = await start_simulator(port=0, api="form")
    yield s
    await s.aclose()


def chat(content: str, *, stream: bool = False, max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
        "max_tokens": max_tokens,
        **extra,
    }


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    parts = [f'--xYzB\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + "--xYzB--\r\n").encode(), "multipart/form-data; boundary=xYzB"


def form(prompt: str, *, stream: bool = False, **extra: str) -> dict[str, str]:
    return {"prompt": prompt, "model_id": MODEL, "stream": "true" if stream else "false", **extra}


class Raw:
    """A raw HTTP/1.1 exchange over a socket, to observe exact bytes and their timing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def post(cls, sim: RunningSimulator, body: bytes, ctype: str = "application/json", **headers: str) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        head = f"POST /llm HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "Connection: close\r\n\r\n").encode() + body)
        await writer.drain()
        return cls(reader, writer)

    async def read_some(self, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return b""

    async def read_all(self, timeout: float = 3.0) -> bytes:
        """Everything up to EOF; closes our side afterwards."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout)
        finally:
            await self.close()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def parse_http(raw: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, complete); a chunked body is de-chunked, complete = terminator seen."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") != "chunked":
        return int(lines[0].split()[1]), headers, rest, True
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return int(lines[0].split()[1]), headers, body, rest == b"\r\n"
        body, rest = body + rest[:size], rest[size + 2 :]
    return int(lines[0].split()[1]), headers, body, False


def normalize(body: bytes) -> bytes:
    """Replace the per-request id and the clock so bodies can be compared byte for byte."""
    ids = set(ID_RE.findall(body))
    assert len(ids) <= 1, ids
    return CREATED_RE.sub(b'"created":0', ID_RE.sub(b'"id":"ID"', body))


def b_event(piece: str, k: int, p: int, finish: str = "") -> bytes:
    content = json.dumps(piece, ensure_ascii=False)
    return (
        f'data: {{"choices":[{{"delta":{{"content":{content},"role":"assistant"}},"finish_reason":"{finish}",'
        f'"index":0}}],"created":0,"id":"ID","model":"{MODEL}","usage":{{"completion_tokens":{k},'
        f'"prompt_tokens":{p},"total_tokens":{p + k}}}}}\n\n'
    ).encode()


def b_stream(pieces: list[str], p: int) -> bytes:
    events = [b_event(x, i + 1, p) for i, x in enumerate(pieces)]
    return b"".join(events) + b_event("", len(pieces), p, "stop")


def a_stream(pieces: list[str], p: int) -> bytes:
    used = p + len(pieces)
    events = [b'data: {"chunk":' + json.dumps(x).encode() + b"}\n\n" for x in pieces]
    tail = f'data: {{"tokens_used":{used}}}\n\ndata: {{"chunk":"[DONE]","tokens_used":{used},"done":true}}\n\n'
    return b"".join(events) + tail.encode()


def err(message: str) -> bytes:
    return json.dumps({"error": {"message": message}}, separators=(",", ":")).encode() + b"\n"


async def post_json(session: aiohttp.ClientSession, sim: RunningSimulator, body: Any) -> tuple[int, bytes]:
    async with session.post(sim.url + "/llm", json=body) as r:
        return r.status, await r.read()


# ----------------------------------------------------------------------------- reply model


def test_directives_parse_and_strip() -> None:
    text = 'hi [[sim fault=bad400 msg="two words"]] there [[sim after=3 fault=cut]]'
    assert parse_directives(text) == {"fault": "cut", "msg": "two words", "after": "3"}
    assert strip_directives(text) == "hi  there "
    assert parse_directives("no directives") == {}


def test_reply_tokens_deterministic_and_truncated() -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "  hello\n big   world [[sim leak=1]] "},
        {"role": "assistant", "content": "ignored"},
    ]
    full = ["Simulated", " reply", " to:", " hello", " big", " world"]
    assert reply_tokens(msgs, 100) == full == reply_tokens(msgs, 100)
    assert "".join(full) == "Simulated reply to: hello big world"
    assert reply_tokens(msgs, 2) == ["Simulated", " reply"]
    assert reply_tokens([{"role": "user", "content": "[[sim x=1]]"}], 9) == ["Simulated", " reply."]
    cycled = reply_tokens([{"role": "user", "content": "hi [[sim tokens=6]]"}], 100)
    assert cycled == ["Simulated", " reply", " to:", " hi", " Simulated", " reply"]
    assert len(reply_tokens([{"role": "user", "content": "hi [[sim tokens=6]]"}], 4)) == 4
    assert reply_tokens([{"role": "user", "content": "hi"}], 100, {"tokens": "1"}) == ["Simulated"]
    # words of every message (directives removed) + 4 per message
    assert prompt_tokens(msgs) == (2 + 4) + (3 + 4) + (1 + 4)


# ----------------------------------------------------------------------------- generation B (json)


async def test_json_nonstream_exact_bytes(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    body = chat("Tom & <Jerry> \u00e9")
    async with session.post(sim.url + "/llm", json=body) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/json"
        raw = await r.read()
    text = "Simulated reply to: Tom \\u0026 \\u003cJerry\\u003e \u00e9"
    p = 4 + 4
    expected = (
        f'{{"choices":[{{"finish_reason":"stop","index":0,"message":{{"content":"{text}","role":"assistant"}}}}],'
        f'"created":0,"id":"ID","model":"{MODEL}","usage":{{"completion_tokens":7,"prompt_tokens":{p},'
        f'"total_tokens":{p + 7}}}}}\n'
    ).encode()
    assert normalize(raw) == expected
    assert abs(json.loads(raw)["created"] - time.time()) < 5
    assert sim.requests[-1]["json"] == body
    assert sim.requests[-1]["content_type"] == "application/json"


async def test_json_stream_exact_bytes(sim: RunningSimulator) -> None:
    raw = await (await Raw.post(sim, json.dumps(chat("hello world", stream=True)).encode())).read_all()
    status, headers, body, complete = parse_http(raw)
    assert (status, complete) == (200, True)
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["connection"] == "keep-alive"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    msgs = [{"role": "user", "content": "hello world"}]
    assert normalize(body) == b_stream(reply_tokens(msgs, 64), prompt_tokens(msgs))
    assert b"[DONE]" not in body


async def test_json_max_tokens_and_leak(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    msg = "one two three [[sim leak=1]]"
    status, raw = await post_json(session, sim, chat(msg, max_tokens=2))
    doc = json.loads(raw)
    assert status == 200
    assert doc["choices"][0]["message"]["content"] == LEAK_HEADER + "Simulated reply"
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"] == {"completion_tokens": 2, "prompt_tokens": 7, "total_tokens": 9}
    raw = await (await Raw.post(sim, json.dumps(chat(msg, stream=True, max_tokens=2)).encode())).read_all()
    expected = b_event(LEAK_HEADER + "Simulated", 1, 7) + b_event(" reply", 2, 7) + b_event("", 2, 7, "stop")
    assert normalize(parse_http(raw)[2]) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF"),
        (b'{"model":', "unexpected EOF"),
        (b'{"model": x}', "invalid character 'x' looking for beginning of value"),
        (b'{"model" 1}', "invalid character '1' after object key"),
        (b"--xYzB\r\n", "invalid character '-' in numeric literal"),
        (b"[1]", "json: cannot unmarshal array into Go value of type worker.LLMRequest"),
        (b'{"stream":"yes"}', "json: cannot unmarshal string into Go struct field LLMRequest.stream of type bool"),
        (
            b'{"max_tokens":1.5}',
            "json: cannot unmarshal number 1.5 into Go struct field LLMRequest.max_tokens of type int",
        ),
        (
            json.dumps(
                chat("x") | {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}
            ).encode(),
            "json: cannot unmarshal array into Go struct field LLMMessage.messages.content of type string",
        ),
        (json.dumps({k: v for k, v in chat("x").items() if k != "stream"}).encode(), "missing required fields"),
        (json.dumps(chat("x") | {"messages": []}).encode(), "missing required fields"),
        (json.dumps(chat("x") | {"max_tokens": None}).encode(), "missing required fields"),
    ],
)
async def test_json_bad_requests(sim: RunningSimulator, body: bytes, message: str) -> None:
    raw = await (await Raw.post(sim, body)).read_all()
    status, headers, payload, _ = parse_http(raw)
    assert (status, headers["content-type"], payload) == (400, "application/json", err(message))


async def test_json_go_decoder_leniency(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    # trailing garbage after the first value, case-insensitive keys, unknown keys, null content
    body = f'{{"MODEL": "{MODEL}", "Messages": [{{"role": "user", "content": null}}], "stream": false,'
    raw = await (await Raw.post(sim, (body + '"max_tokens": 5} trailing').encode())).read_all()
    status, _, payload, _ = parse_http(raw)
    assert status == 200
    assert json.loads(payload)["choices"][0]["message"]["content"] == "Simulated reply."
    status, _ = await post_json(session, sim, chat("x", tools=[{"type": "function"}], n=2))
    assert status == 200


async def test_json_unknown_model_503(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    assert await post_json(session, sim, chat("x", model="nope")) == (503, err("Service Unavailable Error"))


@pytest.mark.parametrize(
    "extra",
    [
        {"messages": [{"role": "tool", "content": "x"}]},
        {"temperature": 2.5},
        {"top_p": 0},
        {"top_k": 0},
        {"max_tokens": 0},
    ],
)
async def test_json_lazy_runner_errors(sim: RunningSimulator, session: aiohttp.ClientSession, extra: Any) -> None:
    assert await post_json(session, sim, chat("x") | extra) == (500, err("Internal Server Error"))
    raw = await (await Raw.post(sim, json.dumps(chat("x", stream=True) | extra).encode())).read_all()
    status, headers, body, complete = parse_http(raw)
    assert (status, headers["content-type"], body, complete) == (200, "text/event-stream", PANIC, False)


# ----------------------------------------------------------------------------- generation A (form)


async def test_form_nonstream_and_stream_exact(form_sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    history = json.dumps([{"role": "user", "content": "earlier q"}, {"role": "assistant", "content": "a"}])
    fields = form("new <q>", system_msg="be nice", history=history)
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "earlier q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "new <q>"},
    ]
    pieces, p = reply_tokens(msgs, 256), prompt_tokens(msgs)
    body, ctype = multipart(fields)
    async with session.post(form_sim.url + "/llm", data=body, headers={"Content-Type": ctype}) as r:
        assert (r.status, r.headers["Content-Type"]) == (200, "application/json")
        expected = f'{{"response":"Simulated reply to: new \\u003cq\\u003e","tokens_used":{p + len(pieces)}}}\n'
        assert await r.read() == expected.encode()
    assert form_sim.requests[-1]["form"] == fields
    body, ctype = multipart(form("new <q>", stream=True, system_msg="be nice", history=history, max_tokens="4"))
    status, headers, payload, complete = parse_http(await (await Raw.post(form_sim, body, ctype)).read_all())
    assert (status, headers["content-type"], complete) == (200, "text/event-stream", True)
    assert payload == a_stream(pieces[:4], p).replace(b"\\u003c", b"<").replace(b"\\u003e", b">")


@pytest.mark.parametrize(
    ("fields", "status", "payload"),
    [
        ({"model_id": MODEL, "stream": "false"}, 400, err("missing required field: prompt")),
        (form("x", history="[nope"), 400, b'{"detail":"Invalid JSON format for history"}\n'),
        (form("x", history='["user: hi"]'), 500, err("Internal Server Error")),
        (form("x", model_id="nope"), 503, err("Service Unavailable Error")),
        (form("x") | {"stream": "maybe"}, 400, err('strconv.ParseBool: parsing "maybe": invalid syntax')),
    ],
)
async def test_form_errors(form_sim: RunningSimulator, fields: dict[str, str], status: int, payload: bytes) -> None:
    raw = await (await Raw.post(form_sim, *multipart(fields))).read_all()
    assert parse_http(raw)[0::2] == (status, payload)


async def test_form_requires_multipart(form_sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    async with session.post(form_sim.url + "/llm", data={"prompt": "x"}) as r:
        assert r.status == 400
        assert await r.read() == err("request Content-Type isn't multipart/form-data")


@pytest.mark.parametrize("missing", ["model_id", "stream"])
async def test_form_missing_pointer_field_drops_connection(form_sim: RunningSimulator, missing: str) -> None:
    fields = form("x")
    del fields[missing]
    assert await (await Raw.post(form_sim, *multipart(fields))).read_all() == b""


async def test_form_midstream_error(form_sim: RunningSimulator) -> None:
    body, ctype = multipart(form("a b c [[sim fault=midstream_error after=1]]", stream=True))
    status, _, payload, complete = parse_http(await (await Raw.post(form_sim, body, ctype)).read_all())
    assert (status, payload, complete) == (200, b'data: {"chunk":"Simulated"}\n\ndata: {}\n\n', True)


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize("api", GENERATIONS)
@pytest.mark.parametrize(
    ("directive", "status", "payload"),
    [
        ("fault=refuse", 503, err("Service Unavailable Error")),
        ("fault=masked500", 500, err("Internal Server Error")),
        ("fault=bad400", 400, err("simulated bad request")),
        ('fault=bad400 msg="model is not < ready"', 400, err("model is not < ready").replace(b"<", b"\\u003c")),
        ("fault=empty200", 200, b""),
        ("fault=typo", 400, err("unknown simulator fault: typo")),
    ],
)
async def test_simple_faults(api: str, directive: str, status: int, payload: bytes) -> None:
    sim = await start_simulator(port=0, api=api)
    try:
        text = f"hi [[sim {directive}]]"
        body, ctype = multipart(form(text)) if api == "form" else (json.dumps(chat(text)).encode(), "application/json")
        assert parse_http(await (await Raw.post(sim, body, ctype)).read_all())[0::2] == (status, payload)
    finally:
        await sim.aclose()


async def test_header_directives_win(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    async with session.post(
        sim.url + "/llm", json=chat("[[sim fault=refuse]]"), headers={"X-Sim": "fault=masked500"}
    ) as r:
        assert r.status == 500
    assert sim.requests[-1]["headers"]["X-Sim"] == "fault=masked500"


@pytest.mark.parametrize("stream", [False, True])
async def test_fault_close_sends_nothing(sim: RunningSimulator, stream: bool) -> None:
    raw = await Raw.post(sim, json.dumps(chat("x [[sim fault=close]]", stream=stream)).encode())
    assert await raw.read_all(timeout=2) == b""  # EOF, zero bytes
    assert sim.disconnects == 0


async def test_fault_stall_then_answers(sim: RunningSimulator) -> None:
    raw = await Raw.post(sim, json.dumps(chat("x [[sim fault=stall stall=0.4]]", stream=True)).encode())
    assert await raw.read_some(0.25) == b""  # not even headers
    status, _, body, complete = parse_http(await raw.read_all())
    assert (status, complete) == (200, True)
    msgs = [{"role": "user", "content": "x"}]
    assert normalize(body) == b_stream(reply_tokens(msgs, 64), prompt_tokens(msgs))


async def test_first_delay_withholds_headers(sim: RunningSimulator) -> None:
    t0 = time.monotonic()
    raw = await Raw.post(sim, json.dumps(chat("x [[sim first_delay=0.4]]", stream=True)).encode())
    assert await raw.read_some(0.25) == b""
    first = await raw.read_some(2)
    assert time.monotonic() - t0 >= 0.38
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"data: " in first
    assert parse_http(first + await raw.read_all())[3]


async def test_delay_between_tokens(sim: RunningSimulator) -> None:
    t0 = time.monotonic()
    raw = await Raw.post(sim, json.dumps(chat("a b c [[sim delay=0.1 tokens=4]]", stream=True)).encode())
    first = await raw.read_some(2)
    assert b"data: " in first and time.monotonic() - t0 < 0.09
    status, _, body, complete = parse_http(first + await raw.read_all())
    assert time.monotonic() - t0 >= 0.29
    assert (status, complete, body.count(b"data: ")) == (200, True, 5)


async def test_stall_mid(sim: RunningSimulator) -> None:
    raw = await Raw.post(sim, json.dumps(chat("a b c [[sim fault=stall_mid stall=0.4]]", stream=True)).encode())
    first = await raw.read_some(2)
    assert first.count(b"data: ") == 2
    assert await raw.read_some(0.25) == b""
    status, _, body, complete = parse_http(first + await raw.read_all())
    msgs = [{"role": "user", "content": "a b c"}]
    assert (status, complete) == (200, True)
    assert normalize(body) == b_stream(reply_tokens(msgs, 64), 7)


async def test_cut_reset_malformed_midstream(sim: RunningSimulator) -> None:
    msgs = [{"role": "user", "content": "a b c"}]
    ev = [b_event(x, i + 1, 7) for i, x in enumerate(reply_tokens(msgs, 64))]

    async def run(directive: str) -> tuple[bytes, bool]:
        raw = await Raw.post(sim, json.dumps(chat(f"a b c [[sim {directive}]]", stream=True)).encode())
        status, _, body, complete = parse_http(await raw.read_all())
        assert status == 200
        return normalize(body), complete

    assert await run("fault=cut") == (ev[0] + ev[1], True)
    assert await run("fault=cut after=0") == (b"", True)
    assert await run("fault=reset after=3") == (b"".join(ev[:3]), False)
    malformed = b'data: {"choices":[{"delta":\n\n'
    assert await run("fault=malformed") == (ev[0] + malformed + b"".join(ev[1:]) + b_event("", 6, 7, "stop"), True)
    assert await run("fault=midstream_error after=1") == (ev[0] + PANIC, False)
    assert sim.disconnects == 0


async def test_reset_surfaces_as_payload_error(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    for stream in (True, False):
        async with session.post(sim.url + "/llm", json=chat("a [[sim fault=reset]]", stream=stream)) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()


async def test_nonstream_cut_truncates_json(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    status, raw = await post_json(session, sim, chat("a b [[sim fault=cut]]"))
    assert status == 200 and raw.startswith(b'{"choices":[')
    with pytest.raises(ValueError):
        json.loads(raw)
    assert await post_json(session, sim, chat("a [[sim fault=midstream_error]]")) == (500, err("Internal Server Error"))


async def test_client_disconnect_cancels_stream(sim: RunningSimulator) -> None:
    raw = await Raw.post(sim, json.dumps(chat("x [[sim fault=stall stall=30]]", stream=True)).encode())
    await _wait_for(lambda: sim.active_streams == 1)
    await raw.close()
    await _wait_for(lambda: sim.disconnects == 1 and sim.active_streams == 0)
    raw = await Raw.post(sim, json.dumps(chat("a b c [[sim delay=0.3]]", stream=True)).encode())
    assert b"data: " in await raw.read_some(2)
    await raw.close()
    await _wait_for(lambda: sim.disconnects == 2 and sim.active_streams == 0)


async def _wait_for(cond: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- other routes / lifecycle


async def test_other_routes(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/llm"):
        async with session.get(sim.url + path) as r:
            assert (r.status, await r.read()) == (200, b"")
    async with session.get(sim.url + "/nope") as r:
        assert (r.status, await r.read()) == (404, b"404 page not found\n")
    async with session.get(sim.url + "/getNetworkCapabilities") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["capabilities_names"]["33"] == "Llm"
    models = {
        m: v
        for o in doc["orchestrators"]
        for m, v in o["capabilities"]["constraints"]["PerCapability"]["33"]["models"].items()
    }
    assert sorted(models) == sorted(DEFAULT_MODELS)
    assert all(v["warm"] is True for v in models.values())


async def test_capabilities_offchain_and_custom_models(session: aiohttp.ClientSession) -> None:
    sim = await start_simulator(port=0, capabilities="offchain", models=["m1"])
    try:
        async with session.get(sim.url + "/getNetworkCapabilities") as r:
            assert r.status == 500
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert (await r.read()).startswith(b"network capabilities not available\n")
        assert (await post_json(session, sim, chat("x") | {"model": "m1"}))[0] == 200
        assert (await post_json(session, sim, chat("x")))[0] == 503
    finally:
        await sim.aclose()


async def test_request_log_is_bounded(
    sim: RunningSimulator, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(livepeer, "REQUEST_LOG_SIZE", 3)
    for i in range(5):
        await post_json(session, sim, chat(f"n{i}"))
    assert [r["json"]["messages"][0]["content"] for r in sim.requests] == ["n2", "n3", "n4"]


def test_create_app_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        livepeer.create_app(api="grpc")
    with pytest.raises(ValueError):
        livepeer.create_app(capabilities="maybe")


def test_run_prints_and_exits_on_ctrl_c() -> None:
    code = "from oai_bridge.simulators.livepeer import run; run(port=0, api='form')"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(r"Livepeer gateway simulator \(api=form\) listening on http://127\.0\.0\.1:\d+\n", line)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
