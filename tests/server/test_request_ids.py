"""Every answer names its request (``x-request-id``, exactly once), whatever path made it, and
every log line written while handling a request carries the same id."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from livestack import Stack
from routedstack import RoutedStack, Up, start_routed

from oai_bridge.config import Settings
from oai_bridge.logs import NO_REQUEST, REQUEST_ID, RequestIdFilter
from oai_bridge.server.app import create_app
from oai_bridge.simulators.common import Fault

CHAT = {"model": "oa/gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture(scope="module")
def routed() -> Iterator[RoutedStack]:
    stack = start_routed([Up("oa", "openai_compat")], retries=0, max_body_bytes=1 << 16)
    yield stack
    stack.stop()


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("oai_bridge")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def one_id(response: httpx.Response) -> str:
    ids = response.headers.get_list("x-request-id")
    assert len(ids) == 1, (response.status_code, response.headers)
    return ids[0]


def test_every_path_answers_with_one_request_id(routed: RoutedStack) -> None:
    with httpx.Client(base_url=routed.url, timeout=10) as client:
        responses = {
            "chat": client.post("/v1/chat/completions", json=CHAT),
            "stream": client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
            "chat 400": client.post("/v1/chat/completions", content=b"[1"),
            "chat 413": client.post("/v1/chat/completions", content=b"x" * (1 << 17)),
            "models": client.get("/v1/models"),
            "model 404": client.get("/v1/models/none-such"),
            "embeddings": client.post("/v1/embeddings", json={"model": "oa/e", "input": "x"}),
            "embeddings 413": client.post("/v1/embeddings", content=b"x" * (1 << 17)),
            "unknown path": client.get("/v1/nothing"),
            "405": client.delete("/v1/models"),
            "options 405": client.options("/v1/chat/completions"),
            "redirect": client.get("/health/"),
            "head": client.head("/health"),
            "health": client.get("/health"),
            "backends": client.get("/health/backends"),
            "multipart 400": client.post("/v1/audio/transcriptions", content=b"x"),
            "no capability": client.post("/v1/audio/speech", json={"model": "oa/tts", "input": "x", "voice": "a"}),
        }
        routed.plan("oa").add(Fault("status", status=500))
        responses["upstream 502"] = client.post("/v1/chat/completions", json=CHAT)
    expected = {"chat 413": 413, "embeddings 413": 413, "405": 405, "redirect": 307, "upstream 502": 502}
    for name, response in responses.items():
        assert one_id(response).startswith("req_"), name
        if name in expected:
            assert response.status_code == expected[name], (name, response.text)
    assert {m.strip() for m in responses["405"].headers["allow"].split(",")} == {"GET", "HEAD"}
    ids = [one_id(r) for r in responses.values()]
    assert len(set(ids)) == len(ids)


def test_media_endpoints_name_their_request(json_stack: Stack) -> None:
    with httpx.Client(base_url=json_stack.url, timeout=30) as client:
        speech = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi", "voice": "alloy"})
        image = client.post("/v1/images/generations", json={"model": "dall-e-3", "prompt": "a cat", "n": 1})
        files = {"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
        transcript = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files)
    assert speech.status_code == 200 and image.status_code == 200
    for response in (speech, image, transcript):
        one_id(response)


def test_a_client_request_id_is_kept_and_a_bad_one_replaced(routed: RoutedStack) -> None:
    mine = {"x-request-id": "trace-1234"}
    for method, path, body in (("POST", "/v1/chat/completions", CHAT), ("GET", "/v1/models", None)):
        response = httpx.request(method, routed.url + path, json=body, headers=mine)
        assert one_id(response) == "trace-1234"
    long = httpx.get(routed.url + "/v1/models", headers={"x-request-id": "x" * 200})
    assert one_id(long).startswith("req_")


async def test_answers_before_startup_name_their_request() -> None:
    app = create_app(Settings())  # its lifespan has not run: nothing is ready
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        for response in (
            await client.post("/v1/chat/completions", json=CHAT),
            await client.get("/v1/models"),
            await client.post("/v1/embeddings", json={"model": "x", "input": "x"}),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            one_id(response)
    assert REQUEST_ID.get() == NO_REQUEST  # the id does not outlive its request


def test_log_lines_carry_their_request_id(routed: RoutedStack, captured: Capture) -> None:
    routed.plan("oa").add(Fault("status", status=500))
    failed = httpx.post(routed.url + "/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-failing-1"})
    routed.plan("oa").add(Fault("status", status=500, after=1))
    broken = httpx.post(routed.url + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert failed.status_code == 502 and broken.status_code == 200
    by_id: dict[str, list[str]] = {}
    for record in captured.records:
        by_id.setdefault(record.request_id, []).append(record.getMessage())  # type: ignore[attr-defined]
    assert any("failed" in m for m in by_id["req-failing-1"]), by_id
    assert any("stream failed" in m for m in by_id[one_id(broken)]), by_id
    assert len(by_id["req-failing-1"]) >= 2  # the router's attempt line and the handler's warning
