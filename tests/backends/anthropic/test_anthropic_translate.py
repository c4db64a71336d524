"""Pure translation tests: OpenAI chat → Messages request, Message → chat.completion, model pages
(the stream parser and error mapping are in ``test_translate_stream.py``)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from oai_bridge.backends.anthropic import (
    HARMLESS_PARAMS,
    build_request,
    parse_models_page,
    parse_response,
)
from oai_bridge.errors import InvalidRequest, UpstreamError, UpstreamUnavailable
from oai_bridge.types import ChatCompletionRequest

PNG = "iVBORw0KGgo="


def req(messages: list[dict[str, Any]] | None = None, **extra: Any) -> ChatCompletionRequest:
    body = {"model": "claude-x", "messages": messages or [{"role": "user", "content": "hi"}], **extra}
    return ChatCompletionRequest.model_validate(body)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(ident: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}


# --------------------------------------------------------------------------- request


def test_minimal_request() -> None:
    assert build_request(req()) == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }


def test_system_and_developer_messages_are_joined_into_system_wherever_they_are() -> None:
    body = build_request(
        req(
            [
                {"role": "system", "content": "Be brief."},
                user("hi"),
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "Use "}, {"type": "text", "text": "French."}],
                },
            ]
        )
    )
    assert body["system"] == "Be brief.\n\nUse French."
    assert body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("part", "block"),
    [
        ({"type": "text", "text": "look"}, {"type": "text", "text": "look"}),
        (
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ),
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ),
        (  # Ollama-style bare string
            {"type": "image_url", "image_url": "data:image/JPEG;base64,AAAA"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
        ),
        (
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        ),
    ],
)
def test_user_parts(part: dict[str, Any], block: dict[str, Any]) -> None:
    body = build_request(req([user([{"type": "text", "text": "what is it?"}, part])]))
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, block]}]


@pytest.mark.parametrize(
    ("part", "param", "code"),
    [
        ({"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}, "messages[0].content[0]", None),
        ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}, "messages[0].content[0]", None),
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "messages[0].content[0]", "invalid_image_url"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[0]", None),
    ],
)
def test_unsupported_user_parts_are_refused(part: dict[str, Any], param: str, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req([user([part])]))
    assert info.value.param == param and info.value.status == 400
    if code:
        assert info.value.code == code


def test_tool_round_trip_turns() -> None:
    messages = [
        user("weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [call("toolu_1", "get", '{"city":"Paris"}'), call("toolu_2", "get", '{"city": "Rome"}')],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
        user("and tomorrow?"),
    ]
    assert build_request(req(messages))["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]


def test_tool_results_go_first_in_a_merged_user_turn_and_empty_results_have_no_content() -> None:
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [call("t1", "f", "")]},
        user("extra"),
        {"role": "tool", "tool_call_id": "t1", "content": ""},
    ]
    assert build_request(req(messages))["messages"] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}, {"type": "text", "text": "extra"}]},
    ]


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ("{not json", "messages[0].tool_calls[0].function.arguments"),
        ("[1, 2]", "messages[0].tool_calls[0].function.arguments"),
    ],
)
def test_tool_call_arguments_must_be_a_json_object(arguments: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(
            req([{"role": "assistant", "content": None, "tool_calls": [call("t", "f", arguments)]}, user("x")])
        )
    assert info.value.param == param


def test_tool_message_needs_its_call_id() -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req([user("x"), {"role": "tool", "content": "r"}]))
    assert info.value.param == "messages[1].tool_call_id"


def test_consecutive_same_role_messages_are_merged_and_empty_assistants_dropped() -> None:
    messages = [
        user("one"),
        user([{"type": "text", "text": "two"}, {"type": "text", "text": "   "}]),
        {"role": "assistant", "content": ""},
        user("three"),
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        user("four"),
    ]
    assert build_request(req(messages))["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
                {"type": "text", "text": "three"},
            ],
        },
        {"role": "assistant", "content": "I can't."},
        {"role": "user", "content": "four"},
    ]


@pytest.mark.parametrize("content", ["", "   ", [{"type": "text", "text": ""}]])
def test_a_user_turn_without_content_is_refused(content: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req([user(content)]))
    assert info.value.param == "messages[0].content"


@pytest.mark.parametrize("role", ["function"])
def test_unsupported_roles(role: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req([{"role": role, "content": "x", "name": "f"}]))
    assert info.value.param == "messages[0].role"


@pytest.mark.parametrize(
    ("prefix", "sent"),
    [
        ("Simulated reply", "Simulated reply"),
        ("Simulated reply ", "Simulated reply"),
        ("Line one\n\n", "Line one"),
        ("   ", None),
        ("", None),
    ],
)
def test_continuation_prefix_is_a_prefill_without_trailing_whitespace(prefix: str, sent: str | None) -> None:
    request = req([user("Say hi")], stream=True).continued(prefix)
    assert request.is_continuation
    messages = build_request(request)["messages"]
    if sent is None:
        assert messages == [{"role": "user", "content": "Say hi"}]
    else:
        assert messages == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": sent}]


def test_a_final_assistant_turn_is_stripped_even_without_continuation() -> None:
    messages = [
        user("q"),
        {"role": "assistant", "content": [{"type": "text", "text": "A "}, {"type": "text", "text": " \n"}]},
    ]
    assert build_request(req(messages))["messages"][-1] == {"role": "assistant", "content": "A"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, {"max_tokens": 4096}),
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_tokens": 50, "max_completion_tokens": 70}, {"max_tokens": 70}),
        ({"temperature": 0.2, "top_p": 0.9, "top_k": 40}, {"temperature": 0.2, "top_p": 0.9, "top_k": 40}),
        ({"temperature": 1}, {"temperature": 1}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"user": "u-42"}, {"metadata": {"user_id": "u-42"}}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"seed": 7, "store": False, "metadata": {"a": "b"}, "service_tier": "auto"}, {}),
        ({"n": 1, "logprobs": False, "presence_penalty": 0, "logit_bias": {}, "modalities": ["text"]}, {}),
        ({"response_format": {"type": "text"}, "reasoning_effort": None}, {}),
    ],
)
def test_parameters(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    body = build_request(req(**extra))
    for key, value in expected.items():
        assert body[key] == value  # type: ignore[literal-required]
    known = {"model", "max_tokens", "messages", "stream"}
    assert set(body) - known == set(expected) - known


def test_default_max_tokens_and_stream_override() -> None:
    body = build_request(req(stream=True), default_max_tokens=123, stream=False)
    assert body["max_tokens"] == 123 and body["stream"] is False


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"temperature": 1.5}, "temperature", "unsupported_value"),
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"top_logprobs": 3}, "top_logprobs", "unsupported_parameter"),
        ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
            "response_format",
            "unsupported_parameter",
        ),
        ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_parameter"),
        ({"frequency_penalty": -1}, "frequency_penalty", "unsupported_parameter"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"logit_bias": {"42": 5}}, "logit_bias", "unsupported_parameter"),
        ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
        ({"reasoning_effort": "high"}, "reasoning_effort", "unsupported_parameter"),
        ({"frobnicate": 1}, "frobnicate", "unknown_parameter"),
        ({"stream_options": {"include_usage": True}}, "stream_options", None),
    ],
)
def test_refused_parameters(extra: dict[str, Any], param: str, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(**extra))
    assert info.value.param == param and info.value.status == 400 and info.value.code == code
    assert param in info.value.message or param == "stream_options"


def test_harmless_params_are_documented() -> None:
    assert {"store", "metadata", "service_tier", "verbosity"} <= HARMLESS_PARAMS
    build_request(req(**dict.fromkeys(HARMLESS_PARAMS, "x")))


TOOL = {"type": "function", "function": {"name": "get", "description": "Get it.", "parameters": {"type": "object"}}}
BARE_TOOL = {"type": "function", "function": {"name": "ping"}}


def test_tools() -> None:
    assert build_request(req(tools=[TOOL, BARE_TOOL]))["tools"] == [
        {"name": "get", "description": "Get it.", "input_schema": {"type": "object"}},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("extra", "choice"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": {"type": "function", "function": {"name": "get"}}}, {"type": "tool", "name": "get"}),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"tool_choice": "required", "parallel_tool_calls": False}, {"type": "any", "disable_parallel_tool_use": True}),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
        ({"parallel_tool_calls": True}, None),
    ],
)
def test_tool_choice(extra: dict[str, Any], choice: dict[str, Any] | None) -> None:
    assert build_request(req(tools=[TOOL], **extra)).get("tool_choice") == choice


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    ],
)
def test_refused_tool_settings(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(**extra))
    assert info.value.param == param


def test_tool_choice_auto_or_none_without_tools_is_dropped() -> None:
    assert "tool_choice" not in build_request(req(tool_choice="none"))


# --------------------------------------------------------------------------- non-stream response


def message(content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def test_text_response() -> None:
    out = parse_response(
        message([{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]), request=req(model="alias")
    )
    assert out["id"] == "chatcmpl-013Zva2CMHLNnXjNJJKqJ2EF"
    assert out["object"] == "chat.completion" and isinstance(out["created"], int)
    assert out["model"] == "claude-sonnet-4-20250514"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_tool_use_response_and_skipped_blocks() -> None:
    body = message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris", "n": [1, 2]}},
            {"type": "redacted_thinking", "data": "xx"},
        ],
        "tool_use",
        cache_read_input_tokens=100,
        cache_creation_input_tokens=7,
    )
    out = parse_response(body, request=req())
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Let me check."
    assert msg["tool_calls"] == [
        {
            "id": "toolu_01A",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Paris","n":[1,2]}'},
        }
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == {"prompt_tokens": 117, "completion_tokens": 5, "total_tokens": 122}


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    out = parse_response(message([{"type": "text", "text": "x"}], stop_reason), request=req())
    assert out["choices"][0]["finish_reason"] == finish


def test_tool_only_answer_has_null_content() -> None:
    out = parse_response(
        message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "tool_use"), request=req()
    )
    assert out["choices"][0]["message"]["content"] is None
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "message"}, "upstream_error"),
        ([1, 2], "upstream_error"),
        (message([{"type": "text", "text": "par"}], None), "stream_incomplete"),
        (message([{"type": "tool_use", "name": "f", "input": {}}], "tool_use"), "upstream_error"),
    ],
)
def test_bad_responses(body: Any, code: str) -> None:
    with pytest.raises(UpstreamError) as info:
        parse_response(body, request=req())
    assert info.value.code == code and info.value.status == 502


# --------------------------------------------------------------------------- models


def test_models_page() -> None:
    page = {
        "data": [
            {"type": "model", "id": "claude-a", "display_name": "A", "created_at": "2025-02-19T00:00:00Z"},
            {"type": "model", "id": "claude-b", "display_name": "B", "created_at": "not a date"},
            {"type": "model"},
        ],
        "has_more": True,
        "first_id": "claude-a",
        "last_id": "claude-b",
    }
    assert parse_models_page(page) == ([("claude-a", 1739923200), ("claude-b", 0)], True, "claude-b")
    with pytest.raises(ValueError):
        parse_models_page({"error": "x"})


def test_pure_modules_import_no_io() -> None:
    root = Path(__file__).resolve().parents[3] / "src" / "oai_bridge" / "backends" / "anthropic"
    for name in ("wire.py", "request.py", "translate.py"):
        tree = ast.parse((root / name).read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {n.split(".")[0] for n in names} & {"aiohttp", "starlette", "socket", "asyncio"}, name
        relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
        assert "http" not in relative and "backend" not in relative, name


def test_an_error_body_with_status_200_is_its_error() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamUnavailable) as info:
        parse_response(body, request=req())
    assert info.value.status == 503 and "Overloaded" in info.value.message
