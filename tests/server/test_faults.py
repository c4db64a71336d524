"""Every fault mode of the simulator, through the bridge: the exact status and error body before
the first byte, the exact error frame after it, never a truncated stream reported as success."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from livestack import MODEL, Stack, start_stack

from oai_bridge.simulators.livepeer import reply_tokens

TIMEOUTS = {"first_token_timeout": 1.0, "idle_timeout": 1.0, "request_timeout": 1.5}


@pytest.fixture(scope="module", params=["json", "form"])
def fault_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Short timeouts, keep-alive comments off: early failures keep their real status."""
    stack = start_stack(request.param, keepalive_interval=0, **TIMEOUTS)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def keepalive_stack() -> Iterator[Stack]:
    stack = start_stack("json", keepalive_interval=0.2, **TIMEOUTS)
    yield stack
    stack.stop()


def chat(stack: Stack, content: str, *, stream: bool, **extra: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream, **extra}
    return httpx.post(stack.base_url + "/chat/completions", json=payload, timeout=20)


def events(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n"), body[-200:]
    parts = body[:-2].split(b"\n\n")
    return parts


def error(message: str, *, type: str = "server_error", code: str | None = "upstream_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


REFUSED = error(
    "The Livepeer gateway has no orchestrator available for this model right now (Service Unavailable Error).",
    type="service_unavailable_error",
    code="upstream_unavailable",
)
MASKED = error(
    "The Livepeer gateway failed (HTTP 500: Internal Server Error); the gateway masks the cause, which is "
    "often an orchestrator or runner error."
)
CLOSED = error(
    "The Livepeer gateway closed the connection without answering (this is how gateways since v0.8.7 "
    "report that no orchestrator serves the model).",
    type="service_unavailable_error",
    code="no_orchestrator",
)
CUT = error("The Livepeer gateway stream ended before the answer was complete (no finishing chunk).")
BROKEN = error("The connection to the Livepeer gateway broke in the middle of the answer.")
IDLE = error(
    "The Livepeer gateway went silent for 1 s in the middle of the answer.", type="timeout_error", code="idle_timeout"
)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("fault", "status", "body", "retry_after"),
    [
        ("refuse", 503, REFUSED, "1"),
        ("masked500", 502, MASKED, None),
        ("close", 503, CLOSED, "1"),
        (
            "bad400 msg=\"model 'x' not served\"",
            400,
            error(
                "The Livepeer gateway rejected the request: model 'x' not served",
                type="invalid_request_error",
                code="upstream_rejected",
            ),
            None,
        ),
    ],
)
def test_refusals_before_the_first_byte_keep_a_real_status(
    fault_stack: Stack, stream: bool, fault: str, status: int, body: dict[str, Any], retry_after: str | None
) -> None:
    response = chat(fault_stack, f"hi [[sim fault={fault}]]", stream=stream)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert orjson.loads(response.content) == body
    assert response.headers.get("retry-after") == retry_after
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("stream", [False, True])
def test_empty_200_is_a_bad_gateway(fault_stack: Stack, stream: bool) -> None:
    response = chat(fault_stack, "hi [[sim fault=empty200]]", stream=stream)
    assert response.status_code == 502
    err = orjson.loads(response.content)["error"]
    assert err["code"] == "upstream_error"
    assert err["message"] == (
        "The Livepeer gateway answered 200 with an empty body (its request validator dropped the request)."
    )


def test_silent_gateway_is_504_before_the_first_byte(fault_stack: Stack) -> None:
    response = chat(fault_stack, "hi [[sim fault=stall stall=30]]", stream=True)
    assert response.status_code == 504
    assert orjson.loads(response.content) == error(
        "The Livepeer gateway sent nothing within 1 s.", type="timeout_error", code="first_token_timeout"
    )


def test_silent_gateway_non_stream_is_504(fault_stack: Stack) -> None:
    response = chat(fault_stack, "hi [[sim fault=stall stall=30]]", stream=False)
    assert response.status_code == 504
    assert orjson.loads(response.content)["error"]["type"] == "timeout_error"
    assert orjson.loads(response.content)["error"]["code"] == "first_token_timeout"


def test_keepalive_comments_then_error_frame_when_silent(keepalive_stack: Stack) -> None:
    response = chat(keepalive_stack, "hi [[sim fault=stall stall=30]]", stream=True)
    assert response.status_code == 200
    parts = events(response.content)
    assert len(parts) >= 3
    assert set(parts[:-1]) == {b": keep-alive"}
    assert orjson.loads(parts[-1].removeprefix(b"data: ")) == error(
        "The Livepeer gateway sent nothing within 1 s.", type="timeout_error", code="first_token_timeout"
    )


def _stream_parts(stack: Stack, content: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    response = chat(stack, content, stream=True)
    assert response.status_code == 200
    chunks: list[dict[str, Any]] = []
    err = None
    done = False
    for part in events(response.content):
        assert part.startswith(b"data: "), part
        data = part.removeprefix(b"data: ")
        if data == b"[DONE]":
            done = True
            continue
        obj = orjson.loads(data)
        if "error" in obj:
            err = obj
        else:
            chunks.append(obj)
    return chunks, err, done


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("cut after=2", CUT), ("reset after=2", BROKEN), ("stall_mid after=2 stall=30", IDLE)],
)
def test_mid_stream_failures_end_in_an_error_frame(fault_stack: Stack, fault: str, expected: dict[str, Any]) -> None:
    content = f"tell me more [[sim fault={fault} tokens=6]]"
    chunks, err, done = _stream_parts(fault_stack, content)
    assert err == expected
    assert not done, "a failed stream must not end with [DONE]"
    assert _text(chunks) == "".join(reply_tokens([{"role": "user", "content": content}], 256)[:2])
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_mid_stream_runner_error(fault_stack: Stack) -> None:
    chunks, err, done = _stream_parts(fault_stack, "x [[sim fault=midstream_error after=1]]")
    if fault_stack.api == "json":
        assert err == error(
            "The Livepeer gateway stream failed mid-way (a chunk without choices: the runner rejected the "
            "request or crashed)."
        )
    else:
        assert err == error("The Livepeer gateway stream failed mid-way (the runner reported an error).")
    assert not done
    assert _text(chunks) == "Simulated"


def test_malformed_event_is_skipped(fault_stack: Stack) -> None:
    content = "skip the junk [[sim fault=malformed after=1]]"
    chunks, err, done = _stream_parts(fault_stack, content)
    assert err is None and done
    assert _text(chunks) == "".join(reply_tokens([{"role": "user", "content": content}], 256))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_slow_tokens_complete(fault_stack: Stack) -> None:
    content = "slowly [[sim delay=0.05 tokens=6]]"
    chunks, err, done = _stream_parts(fault_stack, content)
    assert err is None and done
    assert _text(chunks) == "".join(reply_tokens([{"role": "user", "content": content}], 256))


@pytest.mark.parametrize("fault", ["cut", "reset", "midstream_error"])
def test_non_stream_failures_are_502(fault_stack: Stack, fault: str) -> None:
    response = chat(fault_stack, f"x [[sim fault={fault} tokens=6]]", stream=False)
    assert response.status_code == 502
    body = orjson.loads(response.content)
    assert body["error"]["type"] == "server_error"
    assert body["error"]["code"] == "upstream_error"
    assert "Livepeer gateway" in body["error"]["message"]


@pytest.mark.sdk
def test_sdk_raises_on_the_error_frame(fault_stack: Stack) -> None:
    with openai.OpenAI(
        base_url=fault_stack.base_url, api_key="x", _strict_response_validation=True, max_retries=0
    ) as client:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x [[sim fault=cut after=2]]"}], stream=True
        )
        with pytest.raises(openai.APIError, match="ended before the answer was complete"):
            for _ in stream:
                pass


@pytest.mark.sdk
def test_sdk_gets_typed_errors_before_the_first_byte(fault_stack: Stack) -> None:
    with openai.OpenAI(
        base_url=fault_stack.base_url, api_key="x", _strict_response_validation=True, max_retries=0
    ) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "[[sim fault=refuse]]"}])
        assert info.value.status_code == 503
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "[[sim fault=bad400]]"}], stream=True
            )


def test_unknown_model_is_refused_by_the_gateway(fault_stack: Stack) -> None:
    response = chat(fault_stack, "hi", stream=False, model="no-such/model")
    assert response.status_code == 503
    assert orjson.loads(response.content) == REFUSED
