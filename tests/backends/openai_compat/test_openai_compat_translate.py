"""openai_compat translation, pure: request pass-through, error bodies of every server shape,
non-stream repair, embeddings and model lists."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai_compat_helpers import (
    CREATED,
    ID,
    MODEL,
    USAGE,
    check_completion,
    req,
)

from oai_bridge.backends.openai_compat import (
    build_embeddings_request,
    build_request,
    error_from_response,
    parse_embeddings,
    parse_models,
    parse_response,
)
from oai_bridge.embeddings import EmbeddingRequest, decode_base64, encode_base64
from oai_bridge.errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# --------------------------------------------------------------------------- requests


def test_request_is_forwarded_as_sent_with_the_routed_model() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
    ]
    request = req(
        messages=[{"role": "user", "content": parts}],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_object"},
        n=3,
        logprobs=True,
        top_logprobs=2,
        seed=7,
        stop=["\n\n"],
        temperature=0.2,
        repetition_penalty=1.1,  # an extra the upstream (vLLM) understands
    ).model_copy(update={"model": "routed/model"})
    assert build_request(request) == {
        "model": "routed/model",
        "messages": [{"role": "user", "content": parts}],
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_object"},
        "n": 3,
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 7,
        "stop": ["\n\n"],
        "temperature": 0.2,
        "repetition_penalty": 1.1,
        "stream": False,
    }


def test_a_stream_always_asks_for_usage_keeping_the_clients_stream_options() -> None:
    asked = req(stream=True, stream_options={"include_usage": False, "include_obfuscation": False})
    assert build_request(asked)["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    assert build_request(req(stream=True))["stream_options"] == {"include_usage": True}
    assert "stream_options" not in build_request(req(stream=True), send_stream_options=False)
    assert "stream_options" not in build_request(asked, send_stream_options=False)


def test_non_stream_never_sends_stream_options() -> None:
    body = build_request(req(stream=True, stream_options={"include_usage": True}), stream=False)
    assert body["stream"] is False and "stream_options" not in body


def test_continuation_in_vllm_style_and_as_a_plain_prefill() -> None:
    request = req(stream=True).continued("Simulated reply")
    vllm = build_request(request)
    assert vllm["messages"][-1] == {"role": "assistant", "content": "Simulated reply"}
    assert vllm["continue_final_message"] is True and vllm["add_generation_prompt"] is False
    prefill = build_request(request, continue_style="prefill")
    assert prefill["messages"] == vllm["messages"]
    assert "continue_final_message" not in prefill and "add_generation_prompt" not in prefill
    assert "continue_final_message" not in build_request(req(stream=True))


def test_embeddings_request_keeps_encoding_and_dimensions() -> None:
    request = EmbeddingRequest.model_validate(
        {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 4}
    )
    assert build_embeddings_request(request) == {
        "model": "e",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 4,
    }


# --------------------------------------------------------------------------- error bodies

WHAT = "backend 'b' (openai_compat)"
CTX = "This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens."


@pytest.mark.parametrize(
    ("status", "body", "error", "code", "http"),
    [
        (
            400,
            {
                "error": {
                    "message": CTX,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            ContextLengthExceeded,
            "context_length_exceeded",
            400,
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5000,
                    "n_ctx": 4096,
                }
            },
            ContextLengthExceeded,
            "context_length_exceeded",
            400,
        ),
        (
            400,
            {"object": "error", "message": CTX, "type": "BadRequestError", "param": None, "code": 400},
            ContextLengthExceeded,
            "context_length_exceeded",
            400,
        ),
        (
            400,
            {"detail": "Input has too many tokens for this model"},
            ContextLengthExceeded,
            "context_length_exceeded",
            400,
        ),
        (413, b"prompt is too long", ContextLengthExceeded, "context_length_exceeded", 400),
        (
            400,
            {
                "error": {
                    "message": "Your request was rejected as a result of our safety system.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "content_policy_violation",
                }
            },
            ContentPolicy,
            "content_policy_violation",
            400,
        ),
        (
            400,
            {
                "error": {
                    "code": "content_filter",
                    "message": "Filtered: the prompt triggered Azure OpenAI's content management policy.",
                    "param": "prompt",
                    "status": 400,
                }
            },
            ContentPolicy,
            "content_policy_violation",
            400,
        ),
        (
            400,
            {"detail": [{"loc": ["body", "messages", 0, "role"], "msg": "field required", "type": "missing"}]},
            UpstreamRejected,
            "upstream_rejected",
            400,
        ),
        (
            404,
            {
                "error": {
                    "message": "The model `x` does not exist",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                }
            },
            UpstreamRejected,
            "model_not_found",
            404,
        ),
        (
            401,
            {
                "error": {
                    "message": "Incorrect API key provided: sk-abc***xyz.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
            UpstreamRejected,
            "invalid_api_key",
            401,
        ),
        (422, {"detail": "Unprocessable"}, UpstreamRejected, "upstream_rejected", 422),
        (
            429,
            {
                "error": {
                    "message": "Rate limit reached: too many tokens per min",
                    "type": "tokens",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            RateLimited,
            "rate_limit_exceeded",
            429,
        ),
        (
            429,
            {
                "error": {
                    "message": "You exceeded your current quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            RateLimited,
            "insufficient_quota",
            429,
        ),
        (500, b"Internal Server Error", UpstreamError, "upstream_error", 502),
        (502, b"<html><body>Bad gateway</body></html>", UpstreamError, "upstream_error", 502),
        (
            503,
            {"error": {"message": "Model is loading", "type": "unavailable_error", "code": 503}},
            UpstreamUnavailable,
            "upstream_unavailable",
            503,
        ),
        (529, b"", UpstreamUnavailable, "upstream_unavailable", 503),
        (504, b"Gateway Timeout", UpstreamTimeout, "upstream_timeout", 504),
    ],
)
def test_error_bodies_map_to_the_bridge_errors(
    status: int, body: Any, error: type[BridgeError], code: str, http: int
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    err = error_from_response(status, raw, {"Retry-After": "7"}, what=WHAT)
    assert type(err) is error and err.code == code and err.status == http
    assert err.message.startswith(f"{WHAT} answered HTTP {status}: ")
    assert len(err.message) <= 300
    if status == 429:
        assert err.retry_after == 7.0


def test_error_messages_are_extracted_and_capped() -> None:
    err = error_from_response(400, orjson.dumps({"detail": [{"loc": ["body", "n"], "msg": "must be >= 1"}]}), what=WHAT)
    assert err.message == f"{WHAT} answered HTTP 400: n: must be >= 1"
    long = error_from_response(500, b"x" * 5000, what=WHAT)
    assert len(long.message) == 300 and long.message.endswith("…")
    assert error_from_response(400, b"", what=WHAT).message == f"{WHAT} answered HTTP 400: no details"
    ctx = error_from_response(400, orjson.dumps({"error": {"message": CTX}}), what=WHAT)
    assert ctx.param == "messages"


# --------------------------------------------------------------------------- non-stream


def test_a_compliant_completion_is_unchanged() -> None:
    body = {
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {**USAGE, "completion_tokens_details": {"reasoning_tokens": 0}},
    }
    assert parse_response(orjson.loads(orjson.dumps(body)), request=req()) == body


def test_a_sloppy_completion_is_repaired() -> None:
    body = {
        "model": "served",
        "created": 1.5e9,
        "choices": [
            {"message": {"content": "a"}, "finish_reason": ""},
            {
                "index": 1,
                "message": {"content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
                "finish_reason": "stop",
            },
            {"index": 2, "message": {"content": "c", "reasoning_content": "hmm"}, "finish_reason": "eos"},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    out = parse_response(body, request=req())
    check_completion(dict(out))
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion" and out["created"] == 1500000000
    assert out["model"] == "served"
    a, b, c = out["choices"]
    assert a == {
        "index": 0,
        "message": {"role": "assistant", "content": "a", "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    call = b["message"]["tool_calls"][0]  # type: ignore[typeddict-item]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "f", "arguments": '{"x":1}'} and b["finish_reason"] == "tool_calls"
    assert c["message"]["reasoning_content"] == "hmm" and c["finish_reason"] == "stop"  # type: ignore[typeddict-item]
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    ("body", "error", "code"),
    [
        (
            {"error": {"message": CTX, "code": "context_length_exceeded"}},
            ContextLengthExceeded,
            "context_length_exceeded",
        ),
        ({"object": "error", "message": "bad", "code": 400}, UpstreamRejected, "upstream_rejected"),
        ({"id": "x", "choices": []}, UpstreamError, "malformed_event"),
        ([1, 2], UpstreamError, "malformed_event"),
    ],
)
def test_a_completion_that_is_an_error_or_empty(body: Any, error: type[BridgeError], code: str) -> None:
    with pytest.raises(error) as info:
        parse_response(body, request=req())
    assert info.value.code == code


# --------------------------------------------------------------------------- embeddings, models

VECTOR = [0.5, -0.25, 0.125]


@pytest.mark.parametrize(
    ("asked", "sent"),
    [(None, VECTOR), ("float", encode_base64(VECTOR)), ("base64", VECTOR), ("base64", encode_base64(VECTOR))],
)
def test_embeddings_come_back_in_the_asked_encoding(asked: str | None, sent: Any) -> None:
    fields: dict[str, Any] = {"model": "e", "input": "hi"}
    if asked:
        fields["encoding_format"] = asked
    request = EmbeddingRequest.model_validate(fields)
    out = parse_embeddings({"data": [{"embedding": sent}], "usage": {"prompt_tokens": 1}}, request=request)
    vector = out["data"][0]["embedding"]
    if asked == "base64":
        assert isinstance(vector, str) and decode_base64(vector) == VECTOR
    else:
        assert vector == VECTOR
    assert out == {**out, "object": "list", "model": "e", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    assert out["data"][0]["object"] == "embedding" and out["data"][0]["index"] == 0


def test_embeddings_without_data_are_malformed() -> None:
    request = EmbeddingRequest.model_validate({"model": "e", "input": "hi"})
    for body in ({"object": "list"}, {"data": [{"embedding": 3}]}):
        with pytest.raises(UpstreamError) as info:
            parse_embeddings(body, request=request)
        assert info.value.code == "malformed_event"


def test_models_list_of_any_server() -> None:
    body = {
        "object": "list",
        "data": [
            {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"},
            {"id": "local.gguf", "object": "model", "meta": {"n_ctx_train": 4096}},  # llama.cpp
            {"object": "model"},
        ],
    }
    assert parse_models(body, owned_by="mine", created=9) == [
        {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"},
        {"id": "local.gguf", "object": "model", "created": 9, "owned_by": "mine"},
    ]
    assert parse_models({"detail": "x"}, owned_by="mine", created=9) == []
