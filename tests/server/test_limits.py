"""Limits on what a request may hold, each refused with a clear OpenAI error (never a 500, a hang
or a crash): body size (413), number of messages, JSON nesting, invalid UTF-8, absurd
``max_tokens`` (400 naming the parameter), and the size of the request head (431, then the
connection closes)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from livestack import MODEL, Stack, start_stack
from routedstack import Up, start_routed

from oai_bridge.config import MAX_JSON_DEPTH
from oai_bridge.server.limits import deeper_than
from oai_bridge.server.protocol import DISCONNECT_CALLBACKS, CoalescingHttpToolsProtocol
from oai_bridge.simulators.livepeer_media import make_wav

USER = [{"role": "user", "content": "hi"}]
SMALL = {"max_body_bytes": 4096, "max_upload_bytes": 64 << 10, "max_messages": 8, "max_json_depth": 16}


@pytest.fixture(scope="module")
def small() -> Iterator[Stack]:
    """A bridge with small limits."""
    stack = start_stack("json", **SMALL)
    yield stack
    stack.stop()


def post(stack: Stack, path: str, body: bytes | Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(stack.url + path, content=content, headers=headers, timeout=30, **kwargs)


def error_of(response: httpx.Response, status: int, code: str, param: str | None = None) -> str:
    """The error's message, after checking the status, the OpenAI error body and the request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param), error
    assert error["type"] == "invalid_request_error"
    message: str = error["message"]
    return message


def nested(depth: int) -> Any:
    """``depth`` levels of arrays and objects (``{}`` alone is 1)."""
    value: Any = {}
    for level in range(depth - 1):
        value = [value] if level % 2 else {"x": value}
    return value


# --------------------------------------------------------------------------- body size


def test_a_declared_body_over_the_limit_is_413(small: Stack) -> None:
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]})
    message = error_of(post(small, "/v1/chat/completions", body), 413, "request_too_large")
    assert "4096 bytes" in message
    assert not any("x" * 5000 in str(r) for r in small.llm_requests())


def test_a_chunked_body_over_the_limit_is_413(small: Stack) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(small.url + "/v1/chat/completions", content=pieces(), timeout=30)
    assert "content-length" not in response.request.headers  # sent chunked: counted as it arrives
    error_of(response, 413, "request_too_large")


def test_a_chunked_upload_over_the_limit_is_413(small: Stack) -> None:
    """A multipart body without a content-length is counted as it arrives, not spooled whole."""
    boundary = b"b0undary"
    head = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )

    def pieces() -> Iterator[bytes]:
        yield head
        for _ in range(100):  # 1.6 MB against a 64 KB limit
            yield b"\0" * 16384
        yield b"\r\n--" + boundary + b"--\r\n"

    response = httpx.post(
        small.url + "/v1/audio/transcriptions",
        content=pieces(),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
        timeout=30,
    )
    error_of(response, 413, "request_too_large")


def test_an_upload_under_the_limit_still_works(small: Stack) -> None:
    files = {"file": ("a.wav", make_wav(1.5), "audio/wav")}
    response = httpx.post(small.url + "/v1/audio/transcriptions", files=files, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["text"]


def test_a_form_endpoint_refuses_json_with_415(small: Stack) -> None:
    response = post(small, "/v1/audio/transcriptions", {"file": "x"})
    error_of(response, 415, "invalid_content_type")


def test_a_malformed_multipart_body_is_a_client_error(small: Stack) -> None:
    response = httpx.post(
        small.url + "/v1/audio/transcriptions",
        content=b"--x\r\nnot a part",
        headers={"content-type": "multipart/form-data"},  # no boundary
        timeout=30,
    )
    assert "boundary" in error_of(response, 400, "invalid_multipart").lower()


# --------------------------------------------------------------------------- messages


def test_more_messages_than_the_limit_are_refused_naming_messages(small: Stack) -> None:
    before = len(small.llm_requests())
    response = post(small, "/v1/chat/completions", {"model": MODEL, "messages": USER * 9})
    message = error_of(response, 400, "array_above_max_length", "messages")
    assert "maximum length 8" in message and "length 9" in message
    assert len(small.llm_requests()) == before


def test_the_limit_itself_is_accepted(small: Stack) -> None:
    response = post(small, "/v1/chat/completions", {"model": MODEL, "messages": USER * 8, "max_tokens": 4})
    assert response.status_code == 200, response.text


def test_the_default_message_limit_is_2048(json_stack: Stack) -> None:
    body = {"model": MODEL, "messages": USER * 2049}
    error_of(post(json_stack, "/v1/chat/completions", body), 400, "array_above_max_length", "messages")


# --------------------------------------------------------------------------- nesting


def test_deeper_than_counts_levels() -> None:
    assert not deeper_than(nested(16), 16)
    assert deeper_than(nested(17), 16)
    assert not deeper_than("text", 0)
    assert deeper_than(nested(100_000), 64)  # iterative: no RecursionError


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/images/generations"])
def test_json_nested_deeper_than_the_limit_is_refused(small: Stack, path: str) -> None:
    body = {"model": MODEL, "messages": USER, "input": "x", "prompt": "x", "extra": nested(16)}  # 17 levels
    message = error_of(post(small, path, body), 400, "invalid_json")
    assert "more than 16 levels" in message


def test_json_at_the_depth_limit_is_accepted(small: Stack) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 4, "extra": nested(15)}  # 16 levels
    assert post(small, "/v1/chat/completions", body).status_code == 200


@pytest.mark.parametrize("depth", [65, 1025, 100_000])
def test_deep_json_gets_the_same_clear_error_at_any_depth(json_stack: Stack, depth: int) -> None:
    """Past the default of 64, and past orjson's own limit (1024), the answer is the same 400."""
    body = b'{"model": "m", "messages": [], "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    message = error_of(post(json_stack, "/v1/chat/completions", body), 400, "invalid_json")
    assert "more than 64 levels" in message


def test_the_deepest_allowed_json_can_be_forwarded_as_is() -> None:
    """An OpenAI-compatible upstream gets the body's extra keys as they came: orjson encodes at most
    255 levels, so a deeper body used to fail in the bridge (500). The cap on ``max_json_depth``
    (200) keeps every accepted body encodable; deeper is a 400 before anything is forwarded."""
    stack = start_routed([Up("oa", "openai_compat")], max_json_depth=MAX_JSON_DEPTH)
    try:
        for depth, status in ((MAX_JSON_DEPTH, 200), (300, 400)):
            body = {"model": "gpt-4o-mini", "messages": USER, "extra_thing": nested(depth - 1)}
            response = httpx.post(stack.url + "/v1/chat/completions", content=json.dumps(body), timeout=30)
            assert response.status_code == status, response.text
        assert stack.requests("oa")[-1]["body"]["extra_thing"] == nested(MAX_JSON_DEPTH - 1)
    finally:
        stack.stop()


def test_many_brackets_that_do_not_nest_are_fine(small: Stack) -> None:
    body = {"model": MODEL, "messages": USER, "max_tokens": 4, "stop": ["[[{{"], "extra": [[1]] * 20}
    assert post(small, "/v1/chat/completions", body).status_code == 200


# --------------------------------------------------------------------------- invalid UTF-8


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/audio/speech"])
def test_invalid_utf8_is_a_clear_400(json_stack: Stack, path: str) -> None:
    body = b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "caf\xe9"}]}'
    message = error_of(post(json_stack, path, body), 400, "invalid_json")
    offset = body.index(b"\xe9")
    assert f"not valid UTF-8 (byte 0xe9 at offset {offset})" in message


def test_a_lone_surrogate_escape_is_a_clear_400(json_stack: Stack) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'
    message = error_of(post(json_stack, "/v1/chat/completions", body), 400, "invalid_json")
    assert "not valid JSON" in message and "surrogate" in message


def test_broken_json_says_where(json_stack: Stack) -> None:
    message = error_of(post(json_stack, "/v1/chat/completions", b'{"model": '), 400, "invalid_json")
    assert "line 1 column" in message


# --------------------------------------------------------------------------- max_tokens


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_an_absurd_max_tokens_is_refused_naming_it(json_stack: Stack, param: str) -> None:
    before = len(json_stack.llm_requests())
    response = post(json_stack, "/v1/chat/completions", {"model": MODEL, "messages": USER, param: 1_000_001})
    assert "1000000" in error_of(response, 400, "invalid_value", param)
    huge = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "%s": 1%s}' % (param.encode(), b"0" * 30)
    response = post(json_stack, "/v1/chat/completions", huge)  # past 64 bits: orjson reads a float
    error_of(response, 400, "invalid_value", param)
    assert len(json_stack.llm_requests()) == before


def test_a_large_but_sane_max_tokens_passes(json_stack: Stack) -> None:
    response = post(json_stack, "/v1/chat/completions", {"model": MODEL, "messages": USER, "max_tokens": 1_000_000})
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- request head


def raw_request(url: str, head: bytes, *, answers: int = 1, timeout: float = 10) -> tuple[bytes, bool, float]:
    """Send ``head`` on a raw socket; (what came back, whether the server closed, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    data = b""
    closed = False
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before it has read everything
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
                if data.count(b'"status":"ok"') == answers:
                    break  # complete keep-alive answers: the server keeps the connection
        except ConnectionResetError:
            closed = True
    return data, closed, time.monotonic() - started


def big_header(size: int) -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * size + b"\r\n\r\n"


@pytest.mark.parametrize("size", [100_000, 10_000_000])
def test_a_huge_request_head_gets_431_and_the_connection_closes(json_stack: Stack, size: int) -> None:
    data, closed, seconds = raw_request(json_stack.url, big_header(size))
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"x-request-id: req_" in head and b"connection: close" in head
    error = orjson.loads(body)["error"]
    assert error["code"] == "request_header_fields_too_large" and "65536 bytes" in error["message"]
    assert closed and seconds < 5


def test_a_head_dribbled_in_small_pieces_is_cut_off_too(json_stack: Stack) -> None:
    host, port = json_stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        data = b""
        try:
            for _ in range(200):  # 200 headers of 1 KB, one at a time: 200 KB against 64 KB
                sock.sendall(b"X-Piece: " + b"p" * 1024 + b"\r\n")
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]


def test_a_large_head_under_the_limit_is_served(json_stack: Stack) -> None:
    data, _, _ = raw_request(json_stack.url, big_header(32_000))
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]


def test_a_keepalive_connection_counts_each_head_anew(json_stack: Stack) -> None:
    """Two requests of 40 KB of headers each on one connection: both are served."""
    data, _, _ = raw_request(json_stack.url, big_header(40_000) * 2, answers=2)
    assert data.count(b"HTTP/1.1 200 ") == 2, data[:300]


def test_a_request_httptools_cannot_parse_gets_a_json_400_with_a_request_id(json_stack: Stack) -> None:
    data, closed, _ = raw_request(json_stack.url, b"GET /health HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"x-request-id: req_" in head, data
    assert orjson.loads(body)["error"]["code"] == "invalid_http_request" and closed


async def test_every_request_still_gets_the_protocols_disconnect_signal() -> None:
    """The head limit wraps ``on_headers_complete``: each request keeps its connection-lost
    callbacks (``DISCONNECT_CALLBACKS``), on a keep-alive connection too."""
    seen: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(isinstance(scope.get(DISCONNECT_CALLBACKS), list))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, port=0, log_level="warning", lifespan="off", http=CoalescingHttpToolsProtocol)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "ok"
    server.should_exit = True
    await task
    assert seen == [True, True, True]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_max_header_bytes_from_the_command_line() -> None:
    port = free_port()
    env = {**os.environ, "OAI_BRIDGE_MAX_HEADER_BYTES": "4096"}
    cmd = [sys.executable, "-m", "oai_bridge", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the bridge did not start"
            time.sleep(0.1)
        assert raw_request(url, big_header(2000))[0].startswith(b"HTTP/1.1 200 ")
        data, closed, _ = raw_request(url, big_header(5000))
        assert data.startswith(b"HTTP/1.1 431 ") and b"4096 bytes" in data and closed
    finally:
        proc.terminate()
        proc.wait(15)
