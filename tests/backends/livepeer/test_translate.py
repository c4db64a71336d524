"""OpenAI chat ⇄ Livepeer /llm translation (both generations), on the wire shapes of reference
``livepeer-gateway.md`` §3 and the error bodies of §4. Every chunk and completion produced is also
run through the openai SDK's pydantic types."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk
from pydantic import ValidationError

from oai_bridge.backends.livepeer.translate import (
    HeaderStripper,
    StreamParser,
    build_request,
    error_from_response,
    parse_response,
    parse_stream,
)
from oai_bridge.backends.livepeer.wire import LivepeerRequest
from oai_bridge.errors import (
    BridgeError,
    InvalidRequest,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from oai_bridge.sse import SSEDecoder
from oai_bridge.types import ChatCompletionRequest

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
UPSTREAM_ID = "chatcmpl-1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
NEW_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")
ROLE = {"role": "assistant", "content": "", "refusal": None}


def req(**fields: Any) -> ChatCompletionRequest:
    payload: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    payload.update(fields)
    return ChatCompletionRequest.model_validate(payload, strict=True)


def check_chunk(chunk: dict[str, Any], *, include_usage: bool) -> None:
    assert set(chunk) == {"id", "object", "created", "model", "choices"} | ({"usage"} if include_usage else set())
    for choice in chunk["choices"]:
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
    SDKChunk.model_validate(orjson.loads(orjson.dumps(chunk)), strict=False)


def check_completion(body: dict[str, Any], *, with_usage: bool = True) -> None:
    assert set(body) == {"id", "object", "created", "model", "choices"} | ({"usage"} if with_usage else set())
    SDKCompletion.model_validate(orjson.loads(orjson.dumps(body)), strict=False)


def expected_completion(
    content: str,
    finish: str,
    usage: dict[str, int] | None,
    *,
    id: str = UPSTREAM_ID,
    created: int = 1700000000,
    model: str = MODEL,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


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


# ============================================================================= parse_response

# Reference §3.3 non-stream body, byte for byte (with a concrete uuid4).
BODY_B = (
    b'{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello world","role":"assistant"}}],'
    b'"created":1700000000,"id":"chatcmpl-1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d",'
    b'"model":"meta-llama/Meta-Llama-3.1-8B-Instruct",'
    b'"usage":{"completion_tokens":12,"prompt_tokens":30,"total_tokens":42}}\n'
)
USAGE_B = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


def body_b(content: str | None = "Hello world", *, usage: bool = True) -> dict[str, Any]:
    body = orjson.loads(BODY_B)
    body["choices"][0]["message"]["content"] = content
    if not usage:
        del body["usage"]
    return body


@pytest.mark.parametrize(
    ("fields", "kwargs", "content", "finish"),
    [
        ({}, {}, "Hello world", "stop"),
        ({"max_tokens": 13}, {}, "Hello world", "stop"),
        ({"max_tokens": 12}, {}, "Hello world", "length"),
        ({"max_tokens": 5}, {}, "Hello world", "length"),
        ({"max_completion_tokens": 12, "max_tokens": 100}, {}, "Hello world", "length"),
        ({"max_tokens": 100}, {"max_tokens": 12}, "Hello world", "length"),
        ({}, {"max_tokens": 13}, "Hello world", "stop"),
        ({"stop": "world"}, {}, "Hello ", "stop"),
        ({"stop": ["xyz", "o w"], "max_tokens": 12}, {}, "Hell", "stop"),
        ({"stop": "absent"}, {}, "Hello world", "stop"),
    ],
)
def test_parse_response_json(fields: dict[str, Any], kwargs: dict[str, Any], content: str, finish: str) -> None:
    out = parse_response(orjson.loads(BODY_B), request=req(**fields), generation="json", **kwargs)
    assert out == expected_completion(content, finish, USAGE_B)
    check_completion(out)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("upstream", "strip", "content"),
    [
        ("assistant\n\nHello world", True, "Hello world"),
        ("assistant\n\nHello world", False, "assistant\n\nHello world"),
        ("assistant\n\n", True, ""),
        ("assistant is here", True, "assistant is here"),
        (None, True, ""),
    ],
)
def test_parse_response_header(upstream: str | None, strip: bool, content: str) -> None:
    out = parse_response(body_b(upstream), request=req(), strip_header=strip)
    assert out == expected_completion(content, "stop", USAGE_B)
    check_completion(out)  # type: ignore[arg-type]


def test_parse_response_header_then_stop() -> None:
    out = parse_response(body_b("assistant\n\nOne. Two."), request=req(stop=". "))
    assert out["choices"][0]["message"]["content"] == "One"


def test_parse_response_without_usage() -> None:
    out = parse_response(body_b(usage=False), request=req(max_tokens=1))
    assert out == expected_completion("Hello world", "stop", None)
    check_completion(out, with_usage=False)  # type: ignore[arg-type]


def test_parse_response_missing_id_created_model() -> None:
    body = body_b()
    del body["id"], body["created"], body["model"]
    before = int(time.time())
    out = parse_response(body, request=req(model="other/model"))
    assert NEW_ID.fullmatch(out["id"])
    assert before <= out["created"] <= int(time.time())
    assert out["model"] == "other/model"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"choices": []},
        {"choices": None},
        {"choices": ["x"]},
        {"choices": [{"message": {"content": ["a"]}}], "usage": USAGE_B},
        {"choices": [{"message": {"content": 3}}]},
    ],
)
def test_parse_response_json_garbage(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError) as info:
        parse_response(body, request=req())
    assert info.value.status == 502


@pytest.mark.parametrize(
    ("body", "fields", "content", "tokens"),
    [
        ({"response": "Hello world", "tokens_used": 42}, {}, "Hello world", 42),
        ({"response": "assistant\n\nHello world", "tokens_used": 42}, {}, "Hello world", 42),
        ({"response": "Hello world", "tokens_used": 42}, {"stop": " w", "max_tokens": 1}, "Hello", 42),
        ({"response": ""}, {}, "", 0),
    ],
)
def test_parse_response_form(body: dict[str, Any], fields: dict[str, Any], content: str, tokens: int) -> None:
    before = int(time.time())
    out = parse_response(body, request=req(**fields), generation="form")
    after = int(time.time())
    assert NEW_ID.fullmatch(out["id"])
    assert before <= out["created"] <= after
    usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
    assert out == expected_completion(content, "stop", usage, id=out["id"], created=out["created"])
    check_completion(out)  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [{}, {"response": None}, {"response": 3, "tokens_used": 1}, {"tokens_used": 5}])
def test_parse_response_form_garbage(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError):
        parse_response(body, request=req(), generation="form")


# ============================================================================= StreamParser, generation B


def b_event(content: str, finish: str, created: int, completion_tokens: int, prompt_tokens: int = 12) -> bytes:
    """One gen-B SSE event in the gateway's exact field order (reference §3.3)."""
    return (
        b'data: {"choices":[{"delta":{"content":'
        + orjson.dumps(content)
        + b',"role":"assistant"},"finish_reason":'
        + orjson.dumps(finish)
        + b',"index":0}],"created":'
        + str(created).encode()
        + b',"id":"'
        + UPSTREAM_ID.encode()
        + b'","model":"meta-llama/Meta-Llama-3.1-8B-Instruct","usage":{"completion_tokens":'
        + str(completion_tokens).encode()
        + b',"prompt_tokens":'
        + str(prompt_tokens).encode()
        + b',"total_tokens":'
        + str(prompt_tokens + completion_tokens).encode()
        + b"}}\n\n"
    )


# The two events of reference §3.3, verbatim (id made concrete), plus one between them.
FIRST_B = (
    b'data: {"choices":[{"delta":{"content":"Hello","role":"assistant"},"finish_reason":"","index":0}],'
    b'"created":1700000000,"id":"chatcmpl-1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d",'
    b'"model":"meta-llama/Meta-Llama-3.1-8B-Instruct","usage":{"completion_tokens":1,"prompt_tokens":12,"total_tokens":13}}\n\n'
)
LAST_B = (
    b'data: {"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":"stop","index":0}],'
    b'"created":1700000003,"id":"chatcmpl-1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d",'
    b'"model":"meta-llama/Meta-Llama-3.1-8B-Instruct","usage":{"completion_tokens":57,"prompt_tokens":12,"total_tokens":69}}\n\n'
)
STREAM_B = FIRST_B + b_event(" world", "", 1700000001, 2) + LAST_B
PANIC_B = (
    b'data: {"choices":null,"created":0,"id":"","model":"",'
    b'"usage":{"completion_tokens":0,"prompt_tokens":0,"total_tokens":0}}\n\n'
)


def events(stream: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    out = [e.data for e in decoder.feed(stream)]
    assert decoder.pending is False
    return out


def b_chunk(delta: dict[str, Any], finish: str | None = None, *, usage_key: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": UPSTREAM_ID,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_key:
        out["usage"] = None
    return out


def b_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": UPSTREAM_ID,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def test_event_helper_matches_reference_bytes() -> None:
    assert b_event("Hello", "", 1700000000, 1) == FIRST_B
    assert b_event("", "stop", 1700000003, 57) == LAST_B


@pytest.mark.parametrize(
    ("fields", "finish"),
    [({}, "stop"), ({"max_tokens": 58}, "stop"), ({"max_tokens": 57}, "length"), ({"max_tokens": 10}, "length")],
)
@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_b(fields: dict[str, Any], finish: str, include_usage: bool) -> None:
    extra = {"stream": True, "stream_options": {"include_usage": True}} if include_usage else {"stream": True}
    parser = StreamParser(request=req(**fields, **extra), generation="json")
    per_event = []
    for data in events(STREAM_B):
        assert parser.done is False
        per_event.append(parser.feed(data))
    assert parser.done is True
    u = include_usage
    expected = [
        [b_chunk(ROLE, usage_key=u), b_chunk({"content": "Hello"}, usage_key=u)],
        [b_chunk({"content": " world"}, usage_key=u)],
        [b_chunk({}, finish, usage_key=u)] + ([b_usage(12, 57)] if u else []),
    ]
    assert per_event == expected
    assert parser.end() == []
    assert parser.feed(events(FIRST_B)[0]) == []  # nothing after the end
    for group in per_event:
        for c in group:
            check_chunk(c, include_usage=u)
    # finish_reason "" became null; role only once; the first id/created kept although created changed.
    flat = [c for group in per_event for c in group]
    assert [ch["finish_reason"] for c in flat for ch in c["choices"]] == [None, None, None, finish]
    assert sum("role" in ch["delta"] for c in flat for ch in c["choices"]) == 1
    assert {(c["id"], c["created"]) for c in flat} == {(UPSTREAM_ID, 1700000000)}


def test_stream_b_include_usage_override() -> None:
    parser = StreamParser(request=req(stream=True), include_usage=True)
    out = [c for data in events(STREAM_B) for c in parser.feed(data)]
    assert out[-1] == b_usage(12, 57)
    parser = StreamParser(request=req(stream=True, stream_options={"include_usage": True}), include_usage=False)
    out = [c for data in events(STREAM_B) for c in parser.feed(data)]
    assert all("usage" not in c for c in out)


def test_stream_b_leaked_header_stripped() -> None:
    stream = (
        b_event("assistant", "", 1700000000, 1)
        + b_event("\n\n", "", 1700000000, 2)
        + b_event("Hi", "", 1700000000, 3)
        + b_event("", "stop", 1700000000, 3)
    )
    parser = StreamParser(request=req(stream=True))
    out = [c for data in events(stream) for c in parser.feed(data)]
    assert out == [b_chunk(ROLE), b_chunk({"content": "Hi"}), b_chunk({}, "stop")]
    parser = StreamParser(request=req(stream=True), strip_header=False)
    out = [c for data in events(stream) for c in parser.feed(data)]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in out) == "assistant\n\nHi"


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_b_stop_split_across_events(include_usage: bool) -> None:
    stream = (
        b_event("Hello ST", "", 1700000000, 3)
        + b_event("OP world", "", 1700000001, 5)
        + b_event(" more", "", 1700000002, 6)
        + LAST_B
    )
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    parser = StreamParser(request=req(stream=True, stop=["STOP"], max_tokens=5, **extra))
    data = events(stream)
    u = include_usage
    assert parser.feed(data[0]) == [b_chunk(ROLE, usage_key=u), b_chunk({"content": "Hello "}, usage_key=u)]
    assert parser.done is False
    # completion_tokens reached max_tokens, but the stop sequence is what ended it.
    assert parser.feed(data[1]) == [b_chunk({}, "stop", usage_key=u)] + ([b_usage(12, 5)] if u else [])
    assert parser.done is True
    assert parser.feed(data[2]) == []
    assert parser.feed(data[3]) == []
    assert parser.end() == []


def test_stream_b_choices_null_is_upstream_error() -> None:
    parser = StreamParser(request=req(stream=True))
    assert len(parser.feed(events(FIRST_B)[0])) == 2
    with pytest.raises(UpstreamError) as info:
        parser.feed(events(PANIC_B)[0])
    assert info.value.status == 502
    assert info.value.code == "upstream_error"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"error": "temperature must be between 0 and 2"}', "temperature must be between 0 and 2"),
        (b'{"error": {"message": "CUDA out of memory"}}', "CUDA out of memory"),
    ],
)
def test_stream_b_error_event(data: bytes, message: str) -> None:
    parser = StreamParser(request=req(stream=True))
    with pytest.raises(UpstreamError) as info:
        parser.feed(data)
    assert message in info.value.message


@pytest.mark.parametrize("data", [b'{"choices":[{"delta":', b"not json", b"[1, 2]", b'"text"', b""])
def test_stream_b_undecodable_event_skipped(data: bytes) -> None:
    parser = StreamParser(request=req(stream=True))
    first, middle, last = events(STREAM_B)
    out = parser.feed(first)
    assert parser.feed(data) == []
    out += parser.feed(middle) + parser.feed(last)
    assert out == [b_chunk(ROLE), b_chunk({"content": "Hello"}), b_chunk({"content": " world"}), b_chunk({}, "stop")]


@pytest.mark.parametrize("generation", ["json", "form"])
@pytest.mark.parametrize("fed", [0, 1, 2])
def test_stream_end_without_finish(generation: str, fed: int) -> None:
    stream = STREAM_B if generation == "json" else STREAM_A
    parser = StreamParser(request=req(stream=True), generation=generation)  # type: ignore[arg-type]
    for data in events(stream)[:fed]:
        parser.feed(data)
    with pytest.raises(UpstreamError) as info:
        parser.end()
    assert info.value.status == 502


# ============================================================================= StreamParser, generation A

# Reference §3.2, verbatim.
STREAM_A = (
    b'data: {"chunk":"Hello"}\n\n'
    b'data: {"chunk":" world"}\n\n'
    b'data: {"tokens_used":42}\n\n'
    b'data: {"chunk":"[DONE]","tokens_used":42,"done":true}\n\n'
)


@pytest.mark.parametrize(
    ("fields", "finish"), [({}, "stop"), ({"max_tokens": 3}, "stop"), ({"max_tokens": 2}, "length")]
)
@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_a(fields: dict[str, Any], finish: str, include_usage: bool) -> None:
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    parser = StreamParser(request=req(stream=True, **fields, **extra), generation="form")
    per_event = [parser.feed(data) for data in events(STREAM_A)]
    assert parser.done is True
    assert parser.end() == []
    flat = [c for group in per_event for c in group]
    ident, created = flat[0]["id"], flat[0]["created"]
    assert NEW_ID.fullmatch(ident)
    assert abs(created - time.time()) < 5

    def a_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        c = b_chunk(delta, finish, usage_key=include_usage)
        c["id"], c["created"] = ident, created
        return c

    usage = b_usage(40, 2) | {"id": ident, "created": created}
    assert per_event == [
        [a_chunk(ROLE), a_chunk({"content": "Hello"})],
        [a_chunk({"content": " world"})],
        [],
        [a_chunk({}, finish)] + ([usage] if include_usage else []),
    ]
    assert "[DONE]" not in orjson.dumps(flat).decode()
    for c in flat:
        check_chunk(c, include_usage=include_usage)


def test_stream_a_done_chunk_without_done_flag() -> None:
    parser = StreamParser(request=req(stream=True), generation="form")
    out = parser.feed(b'{"chunk":"Hi"}') + parser.feed(b'{"chunk":"[DONE]"}')
    assert [c["choices"][0]["delta"] for c in out] == [ROLE, {"content": "Hi"}, {}]
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
    assert parser.done is True


def test_stream_a_empty_event_is_upstream_error() -> None:
    parser = StreamParser(request=req(stream=True), generation="form")
    assert len(parser.feed(b'{"chunk":"Hello"}')) == 2
    with pytest.raises(UpstreamError) as info:
        parser.feed(events(b"data: {}\n\n")[0])
    assert info.value.status == 502


def test_stream_a_stop_split_across_events() -> None:
    stream = b'data: {"chunk":"one\\n"}\n\ndata: {"chunk":"\\ntwo"}\n\ndata: {"chunk":" three"}\n\n'
    parser = StreamParser(request=req(stream=True, stop="\n\n", max_tokens=1), generation="form")
    data = events(stream)
    first = parser.feed(data[0])
    assert [c["choices"][0]["delta"] for c in first] == [ROLE, {"content": "one"}]
    second = parser.feed(data[1])
    assert [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in second] == [({}, "stop")]
    assert parser.done is True
    assert parser.feed(data[2]) == []


# ============================================================================= parse_stream


async def agen(items: Iterable[bytes], pulled: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        pulled.append(item)
        yield item


async def test_parse_stream_stops_reading_after_finish() -> None:
    pulled: list[bytes] = []
    data = [*events(STREAM_B), b"this would be skipped", events(PANIC_B)[0]]
    out = [c async for c in parse_stream(agen(data, pulled), request=req(stream=True))]
    assert out == [b_chunk(ROLE), b_chunk({"content": "Hello"}), b_chunk({"content": " world"}), b_chunk({}, "stop")]
    assert len(pulled) == 3


async def test_parse_stream_cut_raises_after_yielding() -> None:
    out: list[Any] = []
    with pytest.raises(UpstreamError):
        async for c in parse_stream(agen(events(STREAM_A)[:2], []), request=req(stream=True), generation="form"):
            out.append(c)
    assert [c["choices"][0]["delta"] for c in out] == [ROLE, {"content": "Hello"}, {"content": " world"}]


# ============================================================================= HeaderStripper


HEADER_CASES = [
    (["assistant\n\nHi"], "Hi"),
    (["assistant\n\nHi there"], "Hi there"),
    (["assistant", "\n\n", "Hi"], "Hi"),
    (["assistant\n"], ""),
    (["assistant\n\n"], ""),
    (["assistant is here"], "assistant is here"),
    (["assist", "ance"], "assistance"),
    (["assistants"], "assistants"),
    (["assistant:\n\nHi"], "assistant:\n\nHi"),
    (["Assistant\n\nHi"], "Assistant\n\nHi"),
    (["Hello"], "Hello"),
    (["assistant"], "assistant"),
    (["ass"], "ass"),
    ([""], ""),
    (["assistant\n\nHi assistant\n\nagain"], "Hi assistant\n\nagain"),
    (["Hi", "assistant\n\n"], "Hiassistant\n\n"),
]


@pytest.mark.parametrize(("pieces", "expected"), HEADER_CASES)
def test_header_stripper(pieces: list[str], expected: str) -> None:
    s = HeaderStripper()
    assert "".join(s.feed(p) for p in pieces) + s.flush() == expected
    # The same text fed one character at a time.
    s = HeaderStripper()
    assert "".join(s.feed(ch) for ch in "".join(pieces)) + s.flush() == expected
    # Disabled: untouched.
    s = HeaderStripper(enabled=False)
    assert "".join(s.feed(p) for p in pieces) + s.flush() == "".join(pieces)


def test_header_stripper_releases_as_soon_as_it_cannot_be_the_header() -> None:
    s = HeaderStripper()
    assert s.feed("ass") == ""
    assert s.feed("et") == "asset"
    assert s.feed(" more") == " more"
    s = HeaderStripper()
    assert s.feed("assistant") == ""
    assert s.feed("\n\n") == ""
    assert s.feed("Hi") == "Hi"
    assert s.feed("assistant\n\n") == "assistant\n\n"


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
    from oai_bridge.backends.livepeer.translate import HeaderStripper

    stripper = HeaderStripper()
    assert stripper.feed("assistant\n\n    def f():") + stripper.flush() == "    def f():"
