"""OpenAI request → Livepeer /llm request (both generations, validation first) and gateway error
bodies → OpenAI errors (reference ``livepeer-gateway.md`` §3, §4)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from translate_helpers import (
    MODEL,
    req,
)

from oai_bridge.backends.livepeer.translate import (
    HeaderStripper,
    build_request,
    error_from_response,
)
from oai_bridge.backends.livepeer.wire import LivepeerRequest
from oai_bridge.errors import (
    BridgeError,
    InvalidRequest,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from oai_bridge.types import ChatCompletionRequest

# ============================================================================= build_request

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
    {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "text", "text": "what is 2+2?"}]},
    {"role": "assistant", "content": "4"},
    {"role": "assistant", "content": None},
    {"role": "user", "content": "And 3+3?", "name": "bob"},
]
CONVERSATION_LLM = [
    {"role": "system", "content": "You are terse."},
    {"role": "system", "content": "Answer in English."},
    {"role": "user", "content": "Look:\nwhat is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "And 3+3?"},
]
HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("fields", "kwargs", "expected"),
    [
        ({}, {}, {"model": MODEL, "messages": HI, "max_tokens": 256, "stream": False}),
        (
            {"messages": CONVERSATION},
            {},
            {"model": MODEL, "messages": CONVERSATION_LLM, "max_tokens": 256, "stream": False},
        ),
        ({"stream": True}, {}, {"model": MODEL, "messages": HI, "max_tokens": 256, "stream": True}),
        ({"stream": True}, {"stream": False}, {"model": MODEL, "messages": HI, "max_tokens": 256, "stream": False}),
        ({}, {"stream": True}, {"model": MODEL, "messages": HI, "max_tokens": 256, "stream": True}),
        ({}, {"default_max_tokens": 512}, {"model": MODEL, "messages": HI, "max_tokens": 512, "stream": False}),
        ({"max_tokens": 100}, {}, {"model": MODEL, "messages": HI, "max_tokens": 100, "stream": False}),
        (
            {"max_tokens": 100, "max_completion_tokens": 50},
            {"default_max_tokens": 512},
            {"model": MODEL, "messages": HI, "max_tokens": 50, "stream": False},
        ),
        ({"max_completion_tokens": 7}, {}, {"model": MODEL, "messages": HI, "max_tokens": 7, "stream": False}),
        (
            {"temperature": 0.2, "top_p": 0.9, "top_k": -1},
            {},
            {
                "model": MODEL,
                "messages": HI,
                "max_tokens": 256,
                "stream": False,
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": -1,
            },
        ),
        (
            {"temperature": 0, "top_k": 40},
            {},
            {"model": MODEL, "messages": HI, "max_tokens": 256, "stream": False, "temperature": 0.0, "top_k": 40},
        ),
        (  # dropped by the gateway anyway; harmless and not forwarded
            {
                "stop": ["\n"],
                "seed": 7,
                "user": "u1",
                "presence_penalty": 0.5,
                "frequency_penalty": 0.5,
                "n": 1,
                "tool_choice": "none",
                "response_format": {"type": "text"},
                "logprobs": False,
                "stream_options": {"include_usage": True},
                "stream": True,
                "metadata": {"k": "v"},
            },
            {},
            {"model": MODEL, "messages": HI, "max_tokens": 256, "stream": True},
        ),
    ],
)
def test_build_request_json(fields: dict[str, Any], kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    out = build_request(req(**fields), generation="json", **kwargs)
    assert out.json == expected
    # Required keys first, in the order the gateway's struct has them.
    assert list(out.json)[:4] == ["model", "messages", "max_tokens", "stream"]
    assert out == LivepeerRequest("json", expected["stream"], expected["max_tokens"], MODEL, json=expected, form=None)


def test_build_request_json_bytes() -> None:
    out = build_request(req(temperature=0.5, max_tokens=64), generation="json")
    assert orjson.dumps(out.json) == (
        b'{"model":"meta-llama/Meta-Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"Hi"}],'
        b'"max_tokens":64,"stream":false,"temperature":0.5}'
    )


@pytest.mark.parametrize(
    ("fields", "kwargs", "expected"),
    [
        (
            {},
            {},
            {
                "prompt": "Hi",
                "model_id": MODEL,
                "system_msg": "",
                "history": "[]",
                "max_tokens": "256",
                "stream": "false",
            },
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": [{"type": "text", "text": "Why"}, {"type": "text", "text": "sky?"}]},
                ],
                "temperature": 0.7,
                "max_tokens": 64,
                "stream": True,
            },
            {},
            {
                "prompt": "Why\nsky?",
                "model_id": MODEL,
                "system_msg": "Be brief.",
                "history": '[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}]',
                "max_tokens": "64",
                "stream": "true",
                "temperature": "0.7",
            },
        ),
        (
            {
                "messages": [{"role": "developer", "content": "Dev rules."}, {"role": "user", "content": "Go"}],
                "max_completion_tokens": 9,
                "max_tokens": 99,
                "temperature": 1,
                "top_p": 0.5,
                "top_k": -1,
            },
            {"stream": True},
            {
                "prompt": "Go",
                "model_id": MODEL,
                "system_msg": "Dev rules.",
                "history": "[]",
                "max_tokens": "9",
                "stream": "true",
                "temperature": "1.0",
            },
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, HI[0]]},
            {"default_max_tokens": 1000},
            {
                "prompt": "Hi",
                "model_id": MODEL,
                "system_msg": "",
                "history": '[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]',
                "max_tokens": "1000",
                "stream": "false",
            },
        ),
    ],
)
def test_build_request_form(fields: dict[str, Any], kwargs: dict[str, Any], expected: dict[str, str]) -> None:
    out = build_request(req(**fields), generation="form", **kwargs)
    assert out.form == expected
    assert out.json is None
    assert out.generation == "form"
    assert out.stream is (expected["stream"] == "true")
    assert out.max_tokens == int(expected["max_tokens"])
    assert all(isinstance(v, str) for v in out.form.values())
    history = orjson.loads(out.form["history"])
    assert isinstance(history, list)
    assert all(set(m) == {"role", "content"} for m in history)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "system", "content": "S"}],
    ],
)
def test_form_requires_last_message_user(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(messages=messages), generation="form")
    assert info.value.param == f"messages[{len(messages) - 1}].role"
    assert info.value.status == 400
    # The JSON generation takes it.
    assert build_request(req(messages=messages), generation="json").json["messages"] == messages  # type: ignore[index]


IMAGE_PART = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
AUDIO_PART = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}

REFUSALS = [
    (
        "image_url",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE_PART]}]},
        "messages[0].content[1]",
        "unsupported_content",
    ),
    (
        "input_audio",
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [AUDIO_PART]}]},
        "messages[1].content[0]",
        "unsupported_content",
    ),
    (
        "tool_role",
        {"messages": [HI[0], {"role": "tool", "tool_call_id": "call_1", "content": "22C"}]},
        "messages[1].role",
        "unsupported_role",
    ),
    (
        "function_role",
        {"messages": [HI[0], {"role": "function", "name": "f", "content": "22C"}, HI[0]]},
        "messages[1].role",
        "unsupported_role",
    ),
    (
        "assistant_tool_calls",
        {"messages": [HI[0], {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}, HI[0]]},
        "messages[1].tool_calls",
        "unsupported_parameter",
    ),
    ("tools", {"tools": [TOOL]}, "tools", "unsupported_parameter"),
    ("tool_choice", {"tool_choice": "auto"}, "tool_choice", "unsupported_parameter"),
    (
        "tool_choice_named",
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        "tool_choice",
        "unsupported_parameter",
    ),
    ("functions", {"functions": [TOOL["function"]]}, "functions", "unsupported_parameter"),
    ("function_call", {"function_call": "auto"}, "function_call", "unsupported_parameter"),
    ("n", {"n": 2}, "n", "unsupported_parameter"),
    ("logprobs", {"logprobs": True}, "logprobs", "unsupported_parameter"),
    ("top_logprobs", {"top_logprobs": 3}, "top_logprobs", "unsupported_parameter"),
    ("json_object", {"response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
    (
        "json_schema",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
        "response_format",
        "unsupported_parameter",
    ),
    ("stream_options_no_stream", {"stream_options": {"include_usage": True}}, "stream_options", None),
    (
        "stream_options_stream_false",
        {"stream": False, "stream_options": {"include_usage": False}},
        "stream_options",
        None,
    ),
    ("top_k_zero", {"top_k": 0}, "top_k", None),
    ("top_k_minus_two", {"top_k": -2}, "top_k", None),
]


@pytest.mark.parametrize("generation", ["json", "form"])
@pytest.mark.parametrize(("fields", "param", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals(fields: dict[str, Any], param: str, code: str | None, generation: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(**fields), generation=generation)  # type: ignore[arg-type]
    err = info.value
    assert err.param == param
    assert err.status == 400
    assert err.code == code
    body = orjson.loads(err.to_json())
    assert body == {
        "error": {"message": err.message, "type": "invalid_request_error", "param": param, "code": err.code}
    }
    assert err.message  # a human sentence, not empty


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"temperature": 2.5}, ("temperature",)),
        ({"temperature": -0.1}, ("temperature",)),
        ({"top_p": 0}, ("top_p",)),
        ({"top_p": 1.5}, ("top_p",)),
        ({"max_tokens": 0}, ("max_tokens",)),
        ({"max_completion_tokens": 0}, ("max_completion_tokens",)),
        ({"messages": []}, ("messages",)),
        ({"messages": [{"role": "robot", "content": "beep"}]}, ("messages", 0, "role")),
        ({"messages": [{"content": "no role"}]}, ("messages", 0, "role")),
        ({"model": None}, ("model",)),
        ({"model": ""}, ("model",)),
        ({"stream": "yes"}, ("stream",)),
        ({"stream": 1}, ("stream",)),
        ({"n": 0}, ("n",)),
        ({"stop": ["a", "b", "c", "d", "e"]}, ("stop",)),
        ({"stop": ["a", ""]}, ("stop",)),
        ({"stream_options": {"include_usage": "true"}}, ("stream_options", "include_usage")),
        ({"max_tokens": "100"}, ("max_tokens",)),
    ],
)
def test_pydantic_rejects(fields: dict[str, Any], loc: tuple[Any, ...]) -> None:
    payload: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **fields}
    if fields.get("model", "") is None:
        del payload["model"]
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(payload, strict=True)
    assert loc in [e["loc"] for e in info.value.errors()]


def test_unknown_parameters_kept() -> None:
    r = req(metadata={"a": 1}, store=True)
    assert r.unknown_parameters == ["metadata", "store"]


# ============================================================================= error_from_response


ERRORS = [
    (
        "gateway_400",
        400,
        b'{"error":{"message":"missing required fields"}}',
        None,
        UpstreamRejected,
        400,
        "upstream_rejected",
        "missing required fields",
    ),
    (
        "gateway_400_go_json",
        400,
        b'{"error":{"message":"json: cannot unmarshal array into Go struct field LLMMessage.messages.content '
        b'of type string"}}',
        None,
        UpstreamRejected,
        400,
        "upstream_rejected",
        "json: cannot unmarshal array into Go struct field LLMMessage.messages.content of type string",
    ),
    (
        "gateway_503",
        503,
        b'{"error":{"message":"Service Unavailable Error"}}',
        7.0,
        UpstreamUnavailable,
        503,
        "upstream_unavailable",
        "Service Unavailable Error",
    ),
    (
        "orchestrator_503_text",
        503,
        b"insufficient capacity\n",
        None,
        UpstreamUnavailable,
        503,
        "upstream_unavailable",
        "insufficient capacity",
    ),
    (
        "gateway_500_masked",
        500,
        b'{"error":{"message":"Internal Server Error"}}',
        None,
        UpstreamError,
        502,
        "upstream_error",
        "Internal Server Error",
    ),
    (
        "runner_detail_msg",
        500,
        b'{"detail":{"msg":"Internal server error during LLM processing."}}',
        None,
        UpstreamError,
        502,
        "upstream_error",
        "Internal server error during LLM processing.",
    ),
    (
        "runner_detail_string",
        400,
        b'{"detail":"Invalid JSON format for history"}',
        None,
        UpstreamRejected,
        400,
        "upstream_rejected",
        "Invalid JSON format for history",
    ),
    (
        "runner_422_list",
        422,
        b'{"detail":[{"loc":["body","model_id"],"msg":"field required","type":"value_error.missing"},'
        b'{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}',
        None,
        UpstreamRejected,
        400,
        "upstream_rejected",
        "field required; field required",
    ),
    (
        "studio_422",
        422,
        b'{"errors":["prompt is required","model_id must be a string"]}',
        None,
        UpstreamRejected,
        400,
        "upstream_rejected",
        "prompt is required; model_id must be a string",
    ),
    (
        "studio_500",
        500,
        b'{"errors":["Failed to generate llm"]}',
        None,
        UpstreamError,
        502,
        "upstream_error",
        "Failed to generate llm",
    ),
    (
        "studio_429",
        429,
        b'{"errors":["Too many AI requests"]}',
        30.0,
        UpstreamUnavailable,
        429,
        "rate_limit_exceeded",
        "Too many AI requests",
    ),
    ("plain_429", 429, b"", None, UpstreamUnavailable, 429, "rate_limit_exceeded", "Too Many Requests"),
    (
        "studio_401",
        401,
        b'{"errors":["Unauthorized"]}',
        None,
        UpstreamError,
        502,
        "upstream_auth_failed",
        "Unauthorized",
    ),
    ("plain_text_502", 502, b"Bad Gateway", None, UpstreamError, 502, "upstream_error", "HTTP 502: Bad Gateway"),
    ("empty_500", 500, b"", None, UpstreamError, 502, "upstream_error", "no details"),
    (
        "error_string",
        400,
        b'{"error":"model not found"}',
        None,
        UpstreamRejected,
        400,
        "upstream_rejected",
        "model not found",
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "cls", "out_status", "code", "text"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_error_from_response(
    status: int,
    body: bytes,
    retry_after: float | None,
    cls: type[BridgeError],
    out_status: int,
    code: str,
    text: str,
) -> None:
    err = error_from_response(status, body, retry_after=retry_after)
    assert type(err) is cls
    assert err.status == out_status
    assert err.code == code
    assert text in err.message
    wire = orjson.loads(err.to_json())
    assert set(wire["error"]) == {"message", "type", "param", "code"}
    assert wire["error"]["message"] == err.message
    if out_status in (429, 503):
        expected_after = retry_after or 1.0
        assert err.retry_after == expected_after
        assert err.headers()["retry-after"] == str(max(1, round(expected_after)))
        assert err.headers()["retry-after-ms"] == str(int(expected_after * 1000))
    else:
        assert err.retry_after is None
        assert "retry-after" not in err.headers()


def test_error_400_exact_message() -> None:
    err = error_from_response(400, b'{"error":{"message":"missing required fields"}}')
    assert err.message == "The Livepeer gateway rejected the request: missing required fields"
    assert err.type == "invalid_request_error"
    assert err.headers() == {}


def test_error_500_tells_sdk_not_to_retry() -> None:
    err = error_from_response(500, b'{"error":{"message":"Internal Server Error"}}')
    assert err.headers() == {"x-should-retry": "false"}
    assert err.type == "server_error"


def test_error_long_plain_text_truncated() -> None:
    err = error_from_response(500, b"x" * 5000)
    assert "x" * 500 in err.message
    assert "x" * 501 not in err.message


def test_header_stripper_keeps_indentation_of_the_first_line() -> None:

    stripper = HeaderStripper()
    assert stripper.feed("assistant\n\n    def f():") + stripper.flush() == "    def f():"
