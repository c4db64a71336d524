"""Pure translation tests: OpenAI request → /api/chat body, Ollama errors, NDJSON lines → chunks,
non-stream answers, embeddings and /api/tags (payloads from the reference and real captures)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from ollama_helpers import (
    MODEL,
    REAL_NON_STREAM,
    REF_FINAL,
    REF_FIRST,
    check_completion,
    check_stream,
    done_line,
    line,
    req,
    text_of,
)

from oai_bridge.backends.ollama import (
    ChatSettings,
    StreamParser,
    build_embed_request,
    build_request,
    error_from_response,
    models_from_tags,
    parse_embed_response,
    parse_response,
    parse_stream,
)
from oai_bridge.embeddings import EmbeddingRequest, decode_base64
from oai_bridge.errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}

# --------------------------------------------------------------------------- requests


def test_minimal_request_sends_stream_explicitly() -> None:
    assert build_request(req()) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello world"}],
        "stream": False,
    }
    assert build_request(req(stream=True))["stream"] is True
    assert build_request(req(), stream=True)["stream"] is True


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({"max_tokens": 7}, {"num_predict": 7}),
        ({"max_tokens": 7, "max_completion_tokens": 3}, {"num_predict": 3}),
        ({"temperature": 0.2, "top_p": 0.9, "top_k": 40}, {"temperature": 0.2, "top_p": 0.9, "top_k": 40}),
        ({"seed": 42}, {"seed": 42}),
        ({"presence_penalty": 0.5, "frequency_penalty": -0.5}, {"presence_penalty": 0.5, "frequency_penalty": -0.5}),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"temperature": 0}, {"temperature": 0}),
    ],
)
def test_sampling_parameters_become_options(fields: dict[str, Any], options: dict[str, Any]) -> None:
    assert build_request(req(**fields))["options"] == options


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
    ],
)
def test_response_format_becomes_format(response_format: dict[str, Any], expected: Any) -> None:
    body = build_request(req(response_format=response_format))
    assert body.get("format") == expected


def test_roles_content_parts_and_images() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                {"type": "text", "text": "in this picture?"},
                {"type": "image_url", "image_url": f"data:;base64,{PNG}"},  # Ollama docs' bare-string form
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}, {"type": "refusal", "refusal": "No."}]},
        {"role": "user", "content": None},
    ]
    assert build_request(req(messages=messages))["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is\n\nin this picture?", "images": [PNG, PNG]},
        {"role": "assistant", "content": "A cat.\n\nNo."},
        {"role": "user", "content": ""},
    ]


def test_tool_calls_get_object_arguments_and_tool_results_their_name() -> None:
    messages = [
        {"role": "user", "content": "Weather in Tokyo and Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "name": "explicit_name", "content": "20C"},
    ]
    body = build_request(req(messages=messages, tools=[TOOL]))
    assert body["tools"] == [TOOL]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}, "id": "call_1"},
                {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}, "id": "call_2"},
            ],
        },
        {"role": "tool", "content": "22C", "tool_name": "get_weather"},
        {"role": "tool", "content": "18C"},
        {"role": "tool", "content": "20C", "tool_name": "explicit_name"},
    ]


def test_empty_tool_arguments_are_an_empty_object() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "now", "arguments": ""}}
    body = build_request(req(messages=[{"role": "assistant", "content": "", "tool_calls": [call]}]))
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == {}


def test_tool_choice_none_drops_tools_auto_keeps_them() -> None:
    assert "tools" not in build_request(req(tools=[TOOL], tool_choice="none"))
    assert build_request(req(tools=[TOOL], tool_choice="auto"))["tools"] == [TOOL]


def test_settings_give_defaults_and_requests_override_them() -> None:
    settings = ChatSettings(keep_alive="10m", think=False, truncate=False, options={"num_ctx": 8192, "top_k": 20})
    body = build_request(req(top_k=5), settings)
    assert body["keep_alive"] == "10m" and body["think"] is False and body["truncate"] is False
    assert body["options"] == {"num_ctx": 8192, "top_k": 5}
    extra = req(keep_alive=0, think="high", options={"num_ctx": 2048, "repeat_penalty": 1.1})
    body = build_request(extra, settings)
    assert body["keep_alive"] == 0 and body["think"] == "high"
    assert build_request(req(keep_alive=None), settings)["keep_alive"] == "10m"
    assert body["options"] == {"num_ctx": 2048, "top_k": 20, "repeat_penalty": 1.1}


@pytest.mark.parametrize(("effort", "think"), [("none", False), ("minimal", "low"), ("high", "high"), ("max", "max")])
def test_reasoning_effort_becomes_think(effort: str, think: Any) -> None:
    assert build_request(req(reasoning_effort=effort))["think"] == think


def test_harmless_parameters_are_ignored() -> None:
    body = build_request(
        req(metadata={"a": "b"}, store=False, parallel_tool_calls=True, logit_bias={}, user="u", modalities=["text"])
    )
    assert set(body) == {"model", "messages", "stream"}


def test_unknown_parameters_are_refused_unless_not_strict() -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(frobnicate=1))
    assert (info.value.status, info.value.param, info.value.code) == (400, "frobnicate", "unknown_parameter")
    assert "frobnicate" not in build_request(req(frobnicate=1), ChatSettings(strict_parameters=False))


def test_continuation_sends_the_assistant_prefix_last() -> None:
    continued = req(stream=True).continued("Simulated reply")
    assert continued.is_continuation
    assert build_request(continued)["messages"][-1] == {"role": "assistant", "content": "Simulated reply"}


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_parameter"),
        ({"logprobs": True}, "logprobs", "unsupported_parameter"),
        ({"top_logprobs": 3}, "top_logprobs", "unsupported_parameter"),
        ({"logit_bias": {"50256": -100}}, "logit_bias", "unsupported_parameter"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"tool_choice": "required", "tools": [TOOL]}, "tool_choice", "unsupported_parameter"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
            "tool_choice",
            "unsupported_parameter",
        ),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "unsupported_parameter"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction", "unsupported_parameter"),
        ({"response_format": {"type": "grammar"}}, "response_format", "unsupported_parameter"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format", None),
        ({"stream_options": {"include_usage": True}}, "stream_options", None),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]", "unsupported_tool"),
        ({"keep_alive": True}, "keep_alive", None),
        ({"think": "extreme"}, "think", None),
        ({"reasoning_effort": "huge"}, "reasoning_effort", None),
        ({"options": [1]}, "options", None),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role", "unsupported_role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
            "unsupported_content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}
                ]
            },
            "messages[0].content[0].image_url",
            "unsupported_image_url",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,abc"}}]}]},
            "messages[0].content[0].image_url",
            "invalid_image",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:;base64,@@@"}]}]},
            "messages[0].content[0].image_url",
            "invalid_image",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{x"}}]}
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "invalid_tool_arguments",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}]}
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
            "invalid_tool_arguments",
        ),
    ],
)
def test_refusals_name_the_parameter(fields: dict[str, Any], param: str, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(**fields))
    assert info.value.status == 400
    assert (info.value.param, info.value.code) == (param, code)


def test_http_image_message_says_what_to_do() -> None:
    url = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(InvalidRequest, match="base64 only.*data: URL"):
        build_request(req(messages=[{"role": "user", "content": [url]}]))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "cls", "out_status", "code"),
    [
        (404, b'{"error":"model \'llama9\' not found"}', UpstreamRejected, 404, "model_not_found"),
        (404, b'{"error":"model \\"x\\" not found, try pulling it first"}', UpstreamRejected, 404, "model_not_found"),
        (400, b'{"error":"the input length exceeds the context length"}', ContextLengthExceeded, 400, None),
        (500, b'{"error":"the input length exceeds the context length"}', ContextLengthExceeded, 400, None),
        (
            400,
            b'{"error":"input exceeds maximum context length and cannot be truncated further"}',
            ContextLengthExceeded,
            400,
            None,
        ),
        (400, b'{"error":"request blocked by content policy"}', ContentPolicy, 400, "content_policy_violation"),
        (400, b'{"error":"\\"all-minilm\\" does not support chat"}', UpstreamRejected, 400, "upstream_rejected"),
        (401, b'{"error":"unauthorized"}', UpstreamRejected, 401, "upstream_rejected"),
        (429, b'{"error":"too many requests"}', RateLimited, 429, "rate_limit_exceeded"),
        (500, b'{"error":"llama runner process has terminated: exit status 2"}', UpstreamError, 502, "upstream_error"),
        (502, b'{"error":"remote model is unavailable"}', UpstreamError, 502, "upstream_error"),
        (
            503,
            b'{"error":"server busy, please try again.  maximum pending requests exceeded"}',
            UpstreamUnavailable,
            503,
            "upstream_unavailable",
        ),
        (504, b"gateway timeout", UpstreamTimeout, 504, "upstream_timeout"),
    ],
)
def test_error_statuses_map_to_bridge_errors(
    status: int, body: bytes, cls: type[BridgeError], out_status: int, code: str | None
) -> None:
    err = error_from_response(status, body, {}, what="backend 'o' (ollama)")
    assert type(err) is cls
    assert err.status == out_status
    if code is not None:
        assert err.code == code
    else:
        assert err.code == "context_length_exceeded" and err.param == "messages"
    assert "backend 'o' (ollama)" in err.message


def test_llama_cpp_context_error_inside_the_string_is_unwrapped() -> None:
    inner = {
        "error": {
            "code": 400,
            "message": "request (8889 tokens) exceeds the available context size (4096 tokens), try increasing it",
            "type": "exceed_context_size_error",
        }
    }
    err = error_from_response(400, orjson.dumps({"error": orjson.dumps(inner).decode()}))
    assert isinstance(err, ContextLengthExceeded)
    assert err.message == "Ollama: " + inner["error"]["message"]  # type: ignore[index]


def test_retry_after_and_message_cap() -> None:
    err = error_from_response(429, b'{"error":"slow down"}', {"Retry-After": "3"})
    assert isinstance(err, RateLimited) and err.retry_after == 3.0
    err = error_from_response(503, b'{"error":"busy"}', {"retry-after-ms": "1500"})
    assert err.retry_after == 1.5
    long = error_from_response(400, orjson.dumps({"error": "x" * 5000}))
    assert len(long.message) < 400


# --------------------------------------------------------------------------- streams


def feed(parser: StreamParser, *lines: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for raw in lines:
        out += parser.feed(raw)  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("include_usage", [True, False])
def test_reference_stream(include_usage: bool) -> None:
    so = {"include_usage": True} if include_usage else None
    parser = StreamParser(request=req(stream=True, stream_options=so))
    chunks = feed(parser, REF_FIRST, line(" sky", model="llama3.2"), REF_FINAL)
    assert parser.done and parser.end() == []
    check_stream(chunks, include_usage=include_usage)
    assert text_of(chunks) == "The sky"
    assert chunks[0]["created"] == 1691164339  # 2023-08-04T08:52:19-07:00, pinned from the first line
    assert chunks[0]["model"] == "llama3.2"
    finish = [c for c in chunks if c["choices"]][-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    if include_usage:
        assert chunks[-1]["usage"] == {"prompt_tokens": 26, "completion_tokens": 282, "total_tokens": 308}


def test_tool_calls_arrive_whole() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "c"}}}
    second = {"id": "call_ab12cd34", "function": {"index": 1, "name": "get_time", "arguments": {}}}
    parser = StreamParser(request=req(stream=True, stream_options={"include_usage": True}))
    chunks = feed(parser, line(message={"tool_calls": [call, second]}), done_line())
    check_stream(chunks, include_usage=True)
    first = chunks[0]["choices"][0]["delta"]  # the call opens the answer: it shares the role chunk
    assert (first["role"], first["content"], len(first["tool_calls"])) == ("assistant", None, 1)
    fragments = [f for c in chunks if c["choices"] for f in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert [f["index"] for f in fragments] == [0, 1]
    assert fragments[0]["id"].startswith("call_") and len(fragments[0]["id"]) > 8
    assert fragments[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Tokyo","unit":"c"}'}
    assert fragments[1]["id"] == "call_ab12cd34" and fragments[1]["function"]["arguments"] == "{}"
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_length_and_thinking_lines() -> None:
    parser = StreamParser(request=req(stream=True))
    chunks = feed(parser, line(message={"thinking": "hmm"}), line("Hi"), done_line("length"))
    check_stream(chunks, include_usage=False)
    assert text_of(chunks) == "Hi"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_stop_sequence_cut_waits_for_the_done_line() -> None:
    parser = StreamParser(request=req(stream=True, stop=["END"], stream_options={"include_usage": True}))
    chunks = feed(parser, line("Hello EN"), line("D more"), line("ignored"))
    assert not parser.done
    chunks += feed(parser, done_line("stop", 2, 4), line("after done"))
    check_stream(chunks, include_usage=True)
    assert text_of(chunks) == "Hello "
    assert chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize(
    ("raw", "cls", "code"),
    [
        (b'{"error":"an error was encountered while running the model"}', UpstreamError, "upstream_error"),
        (b'{"error":"the input length exceeds the context length"}', ContextLengthExceeded, "context_length_exceeded"),
        (b'{"model":"llama3.2","created_at":', UpstreamError, "malformed_event"),
        (b"[1,2]", UpstreamError, "malformed_event"),
        (b'{"model":"llama3.2","done":false}', UpstreamError, "malformed_event"),
        (line(message={"tool_calls": [{"function": {"arguments": {}}}]}), UpstreamError, "malformed_event"),
    ],
)
def test_bad_lines_mid_stream(raw: bytes, cls: type[BridgeError], code: str) -> None:
    parser = StreamParser(request=req(stream=True))
    chunks = feed(parser, line("Yes"))
    assert text_of(chunks) == "Yes"
    with pytest.raises(cls) as info:
        parser.feed(raw)
    assert info.value.code == code


def test_error_line_keeps_the_message() -> None:
    parser = StreamParser(request=req(stream=True), what="backend 'o' (ollama)")
    with pytest.raises(UpstreamError, match="an error was encountered while running the model"):
        parser.feed(b'{"error":"an error was encountered while running the model"}')


def test_body_without_done_line_is_incomplete() -> None:
    parser = StreamParser(request=req(stream=True))
    feed(parser, line("Half"))
    with pytest.raises(UpstreamError) as info:
        parser.end()
    assert info.value.code == "stream_incomplete"


async def test_parse_stream_stops_at_done() -> None:
    async def lines() -> Any:
        for raw in (line("A"), line(" B"), done_line(), b"not even json"):
            yield raw

    chunks = [c async for c in parse_stream(lines(), request=req(stream=True))]
    check_stream(chunks, include_usage=False)  # type: ignore[arg-type]
    assert text_of(chunks) == "A B"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- non-stream


def test_real_non_stream_answer() -> None:
    body = parse_response(orjson.loads(REAL_NON_STREAM), request=req())
    check_completion(body)  # type: ignore[arg-type]
    assert body["model"] == "llama3.1:8b-instruct-q8_0"
    assert body["created"] == 1721774828
    assert body["choices"][0]["message"]["content"] == "100% digital, so I don't have feelings like humans do."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 34, "completion_tokens": 45, "total_tokens": 79}


def test_non_stream_tool_calls_length_and_stop() -> None:
    calls = {"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    body = parse_response(orjson.loads(line(message=calls, done=True, done_reason="stop")), request=req())
    check_completion(body)  # type: ignore[arg-type]
    message = body["choices"][0]["message"]
    assert message["content"] is None and body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert message["tool_calls"][0]["id"].startswith("call_")
    body = parse_response(orjson.loads(line("Hi there", done=True, done_reason="length")), request=req())
    assert body["choices"][0]["finish_reason"] == "length"
    body = parse_response(
        orjson.loads(line("Hi STOP there", done=True, done_reason="length")), request=req(stop="STOP")
    )
    assert (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == ("Hi ", "stop")


@pytest.mark.parametrize(
    ("body", "cls", "code"),
    [
        ({"error": "model 'x' not found"}, UpstreamError, "upstream_error"),
        (
            {"model": MODEL, "message": {"role": "assistant", "content": "x"}, "done": False},
            UpstreamError,
            "stream_incomplete",
        ),
        ({"model": MODEL, "done": True}, UpstreamError, "malformed_event"),
        ([1], UpstreamError, "malformed_event"),
    ],
)
def test_bad_non_stream_answers(body: Any, cls: type[BridgeError], code: str) -> None:
    with pytest.raises(cls) as info:
        parse_response(body, request=req())
    assert info.value.code == code


# --------------------------------------------------------------------------- embeddings and models


def test_embed_request() -> None:
    request = EmbeddingRequest(model="all-minilm", input="hi", dimensions=4)
    settings = ChatSettings(truncate=False, keep_alive="1m")
    assert build_embed_request(request, settings) == {
        "model": "all-minilm",
        "input": ["hi"],
        "dimensions": 4,
        "truncate": False,
        "keep_alive": "1m",
    }
    assert build_embed_request(EmbeddingRequest(model="m", input=["a", "b"]))["input"] == ["a", "b"]
    with pytest.raises(InvalidRequest) as info:
        build_embed_request(EmbeddingRequest(model="m", input=[[1, 2, 3]]))
    assert (info.value.param, info.value.code) == ("input", "unsupported_input")


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_embed_response_in_the_asked_encoding(encoding: str | None) -> None:
    vectors = [[0.5, -0.25, 0.125], [1.0, 0.0, -1.0]]
    answer = {"model": "all-minilm", "embeddings": vectors, "total_duration": 1, "prompt_eval_count": 8}
    request = EmbeddingRequest(model="all-minilm", input=["a", "b"], encoding_format=encoding)
    out = parse_embed_response(answer, request=request)
    assert out["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    got = [d["embedding"] for d in out["data"]]
    if encoding == "base64":
        assert all(isinstance(g, str) for g in got)
        got = [decode_base64(g) for g in got]  # type: ignore[arg-type]
    assert got == vectors and [d["index"] for d in out["data"]] == [0, 1]


def test_embed_response_must_match_the_inputs() -> None:
    with pytest.raises(UpstreamError) as info:
        parse_embed_response({"embeddings": [[0.1]]}, request=EmbeddingRequest(model="m", input=["a", "b"]))
    assert info.value.code == "malformed_event"


def test_models_from_reference_tags() -> None:
    tags = {
        "models": [
            {
                "name": "llama3.2:latest",
                "model": "llama3.2:latest",
                "modified_at": "2024-10-01T12:00:00.123456789-07:00",
                "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"]},
            },
            {"bogus": True},
        ]
    }
    assert models_from_tags(tags, owned_by="me") == [
        {"id": "llama3.2:latest", "object": "model", "created": 1727809200, "owned_by": "me"}
    ]
    assert models_from_tags({"nope": 1}) == []
