"""Bad requests get a clear OpenAI error from the bridge itself and never reach the gateway."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from livestack import MODEL, Stack

USER = [{"role": "user", "content": "hi"}]


def ok(**extra: Any) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": USER, **extra})


CASES: list[tuple[str, bytes, int, str | None, str]] = [
    ("not json", b'{"model": ', 400, None, "invalid_json"),
    ("invalid utf-8", b'{"model": "\xff\xfe"}', 400, None, "invalid_json"),
    ("array body", b"[]", 400, None, "invalid_json"),
    ("missing model", orjson.dumps({"messages": USER}), 400, "model", "missing_required_parameter"),
    ("missing messages", orjson.dumps({"model": MODEL}), 400, "messages", "missing_required_parameter"),
    ("empty messages", orjson.dumps({"model": MODEL, "messages": []}), 400, "messages", "invalid_value"),
    ("empty model", orjson.dumps({"model": "", "messages": USER}), 400, "model", "invalid_value"),
    ("model not a string", orjson.dumps({"model": 7, "messages": USER}), 400, "model", "invalid_value"),
    ("temperature too high", ok(temperature=2.5), 400, "temperature", "invalid_value"),
    ("temperature negative", ok(temperature=-0.1), 400, "temperature", "invalid_value"),
    ("temperature a string", ok(temperature="hot"), 400, "temperature", "invalid_value"),
    ("top_p zero", ok(top_p=0), 400, "top_p", "invalid_value"),
    ("top_p above one", ok(top_p=1.5), 400, "top_p", "invalid_value"),
    ("max_tokens zero", ok(max_tokens=0), 400, "max_tokens", "invalid_value"),
    ("max_tokens a float", ok(max_tokens=1.5), 400, "max_tokens", "invalid_value"),
    ("max_completion_tokens zero", ok(max_completion_tokens=0), 400, "max_completion_tokens", "invalid_value"),
    ("stream a string", ok(stream="yes"), 400, "stream", "invalid_value"),
    ("unknown role", ok(messages=[{"role": "robot", "content": "x"}]), 400, "messages[0].role", "invalid_value"),
    ("message not an object", ok(messages=["hi"]), 400, "messages[0]", "invalid_value"),
    (
        "tool role",
        ok(messages=[{"role": "tool", "content": "x", "tool_call_id": "c"}]),
        400,
        "messages[0].role",
        "unsupported_role",
    ),
    (
        "image part",
        ok(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                }
            ]
        ),
        400,
        "messages[0].content[1]",
        "unsupported_content",
    ),
    ("tools", ok(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools", "unsupported_parameter"),
    ("tool_choice", ok(tool_choice="required"), 400, "tool_choice", "unsupported_parameter"),
    ("n > 1", ok(n=2), 400, "n", "unsupported_parameter"),
    ("logprobs", ok(logprobs=True), 400, "logprobs", "unsupported_parameter"),
    ("json mode", ok(response_format={"type": "json_object"}), 400, "response_format", "unsupported_parameter"),
    ("stream_options without stream", ok(stream_options={"include_usage": True}), 400, "stream_options", None),
    ("top_k zero", ok(top_k=0), 400, "top_k", None),
    ("five stops", ok(stop=["a", "b", "c", "d", "e"]), 400, "stop", "invalid_value"),
]


@pytest.mark.parametrize(("name", "body", "status", "param", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_before_the_gateway(
    json_stack: Stack, name: str, body: bytes, status: int, param: str | None, code: str | None
) -> None:
    before = len(json_stack.llm_requests())
    response = httpx.post(
        json_stack.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    err = orjson.loads(response.content)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] == code
    assert err["message"] and "Traceback" not in err["message"]
    assert len(json_stack.llm_requests()) == before, "an invalid request reached the gateway"


def test_oversized_body_is_413(json_stack: Stack) -> None:
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * (9 << 20) + b'"}]}'
    response = httpx.post(json_stack.base_url + "/chat/completions", content=big, timeout=30)
    assert response.status_code == 413
    assert orjson.loads(response.content)["error"]["code"] == "request_too_large"


def test_unknown_parameters_are_ignored(json_stack: Stack) -> None:
    response = httpx.post(
        json_stack.base_url + "/chat/completions",
        content=ok(metadata={"k": "v"}, user="u1", seed=3, frequency_penalty=0.5, some_future_param={"x": 1}),
        timeout=10,
    )
    assert response.status_code == 200
    sent = json_stack.llm_requests()[-1]["json"]
    assert set(sent) == {"model", "messages", "max_tokens", "stream"}
    assert sent["max_tokens"] == 256 and sent["stream"] is False


def test_unknown_path_and_method_are_openai_errors(json_stack: Stack) -> None:
    response = httpx.get(json_stack.base_url + "/nope", timeout=10)
    assert response.status_code == 404
    assert orjson.loads(response.content)["error"]["code"] == "unknown_url"
    response = httpx.get(json_stack.base_url + "/chat/completions", timeout=10)
    assert response.status_code == 405
    assert orjson.loads(response.content)["error"]["type"] == "invalid_request_error"


def test_health(json_stack: Stack) -> None:
    response = httpx.get(json_stack.url + "/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
