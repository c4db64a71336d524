"""Pure tests of the Anthropic stream parser on the real streams in ``fixtures/anthropic-streams``
and on hand-made event sequences, and of the error mapping (statuses and ``event: error``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from oai_bridge.backends.anthropic import StreamParser, error_from_event, error_from_response
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
from oai_bridge.sse import SSEDecoder
from oai_bridge.types import ChatCompletionRequest

FIXTURES = Path("/work/shared/fixtures/anthropic-streams")
if not FIXTURES.is_dir():  # the shared fixtures, wherever the repository is checked out
    FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "anthropic-streams"


def req(**extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


# --------------------------------------------------------------------------- stream parser on the fixtures


def fixture_bytes(name: str, *, as_stored: bool = False) -> bytes:
    """A fixture's body. The stored files lost the blank line that ends their last event (the SDK's
    test helper never needed it); the wire has it, so it is restored unless ``as_stored``."""
    raw = (FIXTURES / f"{name}.sse").read_bytes()
    return raw if as_stored or raw.endswith(b"\n\n") else raw.rstrip(b"\n") + b"\n\n"


def run_parser(raw: bytes, request: ChatCompletionRequest, *, split: int | None = None) -> list[dict[str, Any]]:
    decoder, parser = SSEDecoder(), StreamParser(request=request)
    out: list[dict[str, Any]] = []
    pieces = [raw] if split is None else [raw[i : i + split] for i in range(0, len(raw), split)]
    for piece in pieces:
        for event in decoder.feed(piece):
            out.extend(parser.feed(event.event, event.data))
    out.extend(parser.end())
    return out


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each chunk as (delta, finish_reason) or ("usage", usage)."""
    return [
        ("usage", c["usage"]) if not c["choices"] else (c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
        for c in chunks
    ]


ROLE = ({"role": "assistant", "content": "", "refusal": None}, None)


def tool_delta(index: int, arguments: str, **first: str) -> tuple[dict[str, Any], None]:
    fragment: dict[str, Any] = {"index": index}
    if first:
        fragment.update(id=first["id"], type="function", function={"name": first["name"], "arguments": arguments})
    else:
        fragment["function"] = {"arguments": arguments}
    return {"tool_calls": [fragment]}, None


EXPECTED: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
    "basic-response": (
        "claude-3-opus-latest",
        [
            ROLE,
            ({"content": "Hello"}, None),
            ({"content": " there"}, None),
            ({"content": "!"}, None),
            ({}, "stop"),
            ("usage", {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}),
        ],
    ),
    "tool-use-response": (
        "claude-sonnet-4-20250514",
        [
            ROLE,
            ({"content": "I"}, None),
            ({"content": "'ll check the current weather in Paris for you."}, None),
            tool_delta(0, "", id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather"),
            tool_delta(0, '{"locati'),
            tool_delta(0, 'on": "P'),
            tool_delta(0, "ar"),
            tool_delta(0, 'is"}'),
            ({}, "tool_calls"),
            ("usage", {"prompt_tokens": 377, "completion_tokens": 65, "total_tokens": 442}),
        ],
    ),
    "refusal-response": (
        "claude-opus-4-7",
        [ROLE, ({}, "content_filter"), ("usage", {"prompt_tokens": 20, "completion_tokens": 0, "total_tokens": 20})],
    ),
    # The tool input is cut by max_tokens: the partial arguments are passed on as they came and the
    # answer finishes with "length", as OpenAI does when a tool call hits the token limit.
    "incomplete-partial-json-response": (
        "claude-3-7-sonnet-20250219",
        [
            ROLE,
            ({"content": "I"}, None),
            ({"content": "'ll create a comprehensive tax guide for"}, None),
            ({"content": " someone with multiple W2s an"}, None),
            ({"content": "d save it in a file called taxes.txt. Let"}, None),
            ({"content": " me do that for you now."}, None),
            tool_delta(0, "", id="toolu_01EKqbqmZrGRXy18eN7m9kvY", name="make_file"),
            tool_delta(0, '{"filename": "taxes.txt'),
            tool_delta(
                0,
                '", "lines_of_text": [\n"# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s",\n"",\n'
                '"## INTRODUCTION",\n"",',
            ),
            tool_delta(0, '\n"Filing taxes'),
            ({}, "length"),
            ("usage", {"prompt_tokens": 450, "completion_tokens": 124, "total_tokens": 574}),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("split", [None, 1, 7])
def test_fixture_streams(name: str, split: int | None) -> None:
    model, expected = EXPECTED[name]
    chunks = run_parser(fixture_bytes(name), req(stream=True, stream_options={"include_usage": True}), split=split)
    assert deltas(chunks) == expected
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {model}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_streams_without_include_usage(name: str) -> None:
    chunks = run_parser(fixture_bytes(name), req(stream=True))
    assert deltas(chunks) == EXPECTED[name][1][:-1]
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("name", ["basic-response", "incomplete-partial-json-response"])
def test_fixtures_as_stored_lack_the_final_blank_line_so_the_stream_is_incomplete(name: str) -> None:
    with pytest.raises(UpstreamError) as info:
        run_parser(fixture_bytes(name, as_stored=True), req(stream=True))
    assert info.value.code == "stream_incomplete"


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


START = {
    "type": "message_start",
    "message": {"id": "msg_1", "model": "m", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}},
}
STOP = {"type": "message_stop"}


def block(index: int, content_block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": content_block}


def delta(index: int, d: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": d}


def test_parallel_tool_calls_use_tool_ordinals_and_thinking_is_skipped() -> None:
    raw = sse(
        START,
        block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "Let me think"}),
        delta(0, {"type": "signature_delta", "signature": "EqQB"}),
        block(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Two calls."}),
        block(2, {"type": "tool_use", "id": "t_a", "name": "a", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"x":1}'}),
        block(3, {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}),
        delta(3, {"type": "input_json_delta", "partial_json": '{"q":"x"}'}),
        block(4, {"type": "tool_use", "id": "t_b", "name": "b", "input": {}}),
        delta(4, {"type": "input_json_delta", "partial_json": "{}"}),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        STOP,
    )
    assert deltas(run_parser(raw, req(stream=True))) == [
        ROLE,
        ({"content": "Two calls."}, None),
        tool_delta(0, "", id="t_a", name="a"),
        tool_delta(0, '{"x":1}'),
        tool_delta(1, "", id="t_b", name="b"),
        tool_delta(1, "{}"),
        ({}, "tool_calls"),
    ]


def test_message_delta_input_tokens_override_and_ping_and_unknown_events_are_ignored() -> None:
    raw = sse(
        START,
        {"type": "ping"},
        {"type": "something_new", "x": 1},
        block(0, {"type": "text", "text": "Pre"}),
        delta(0, {"type": "citations_delta", "citation": {}}),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 12, "output_tokens": 4},
        },
        STOP,
        {"type": "ping"},
    )
    chunks = run_parser(raw, req(stream=True, stream_options={"include_usage": True}))
    assert deltas(chunks) == [
        ROLE,
        ({"content": "Pre"}, None),
        ({}, "stop"),
        ("usage", {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}),
    ]


@pytest.mark.parametrize(
    ("event", "cls", "status", "code"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, UpstreamUnavailable, 503, "upstream_unavailable"),
        ({"type": "api_error", "message": "Internal server error"}, UpstreamError, 502, "upstream_error"),
        ({"type": "rate_limit_error", "message": "slow down"}, RateLimited, 429, "rate_limit_exceeded"),
        (
            {"type": "invalid_request_error", "message": "prompt is too long: 9 tokens > 5 maximum"},
            ContextLengthExceeded,
            400,
            "context_length_exceeded",
        ),
        (
            {"type": "invalid_request_error", "message": "Output blocked by content filtering policy"},
            ContentPolicy,
            400,
            "content_policy_violation",
        ),
        ({"type": "timeout_error", "message": "late"}, UpstreamTimeout, 504, "upstream_timeout"),
        ({"type": "brand_new_error", "message": "?"}, UpstreamError, 502, "upstream_error"),
    ],
)
def test_error_events(event: dict[str, Any], cls: type[BridgeError], status: int, code: str) -> None:
    raw = sse(START, delta(0, {"type": "text_delta", "text": "Hel"}), {"type": "error", "error": event})
    parser, out = StreamParser(request=req(stream=True), what="backend 'c' (anthropic)"), []
    with pytest.raises(cls) as info:
        for ev in SSEDecoder().feed(raw):
            out.extend(parser.feed(ev.event, ev.data))
    assert deltas(out) == [ROLE, ({"content": "Hel"}, None)]
    assert type(info.value) is cls and info.value.status == status and info.value.code == code
    assert (
        info.value.message.startswith("backend 'c' (anthropic) failed mid-stream")
        and event["message"] in info.value.message
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"event: message_start\ndata: {not json\n\n",
        b"event: message_start\ndata: [1]\n\n",
        b'event: message_start\ndata: {"type":"message_start"}\n\n',
        sse(delta(0, {"type": "text_delta", "text": "x"})),
        sse(START, START),
        sse(START, delta(0, {"type": "text_delta"})),
        sse(START, delta(0, {"type": "input_json_delta", "partial_json": 5})),
        sse(START, {"type": "content_block_delta", "index": 0}),
        sse(START, block(0, {"type": "tool_use", "input": {}})),
    ],
)
def test_malformed_events(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        run_parser(raw, req(stream=True))
    assert info.value.code == "malformed_event"


def test_end_without_message_stop_is_incomplete_and_nothing_is_synthesized() -> None:
    raw = sse(
        START,
        delta(0, {"type": "text_delta", "text": "x"}),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
    )
    with pytest.raises(UpstreamError) as info:
        run_parser(raw, req(stream=True))
    assert info.value.code == "stream_incomplete" and info.value.status == 502


def test_events_after_message_stop_are_ignored() -> None:
    parser = StreamParser(request=req(stream=True))
    for ev in SSEDecoder().feed(sse(START, STOP)):
        parser.feed(ev.event, ev.data)
    assert parser.done and parser.feed("error", b"{}") == [] and parser.end() == []


# --------------------------------------------------------------------------- errors


def err_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011C"})


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "out_status", "code", "retry"),
    [
        (
            400,
            err_body("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
            {},
            ContextLengthExceeded,
            400,
            "context_length_exceeded",
            None,
        ),
        (
            400,
            err_body("invalid_request_error", "input length and `max_tokens` exceed context limit: 1 + 2 > 2"),
            {},
            ContextLengthExceeded,
            400,
            "context_length_exceeded",
            None,
        ),
        (
            400,
            err_body("invalid_request_error", "Output blocked by content filtering policy"),
            {},
            ContentPolicy,
            400,
            "content_policy_violation",
            None,
        ),
        (
            400,
            err_body("invalid_request_error", "max_tokens: Field required"),
            {},
            UpstreamRejected,
            400,
            "upstream_rejected",
            None,
        ),
        (
            401,
            err_body("authentication_error", "invalid x-api-key"),
            {},
            UpstreamRejected,
            401,
            "upstream_rejected",
            None,
        ),
        (403, err_body("permission_error", "no"), {}, UpstreamRejected, 403, "upstream_rejected", None),
        (404, err_body("not_found_error", "model: claude-nope"), {}, UpstreamRejected, 404, "upstream_rejected", None),
        (
            413,
            err_body("request_too_large", "Request exceeds the maximum size"),
            {},
            UpstreamRejected,
            413,
            "upstream_rejected",
            None,
        ),
        (
            429,
            err_body("rate_limit_error", "Number of request tokens has exceeded your rate limit"),
            {"retry-after": "7"},
            RateLimited,
            429,
            "rate_limit_exceeded",
            7.0,
        ),
        (
            429,
            err_body("rate_limit_error", "x"),
            {"retry-after-ms": "1500", "retry-after": "9"},
            RateLimited,
            429,
            "rate_limit_exceeded",
            1.5,
        ),
        (500, err_body("api_error", "Internal server error"), {}, UpstreamError, 502, "upstream_error", None),
        (529, err_body("overloaded_error", "Overloaded"), {}, UpstreamUnavailable, 503, "upstream_unavailable", 1.0),
        (
            529,
            err_body("overloaded_error", "Overloaded"),
            {"retry-after": "4"},
            UpstreamUnavailable,
            503,
            "upstream_unavailable",
            4.0,
        ),
        (503, b"<html>upstream connect error</html>", {}, UpstreamUnavailable, 503, "upstream_unavailable", 1.0),
        (502, b"", {}, UpstreamError, 502, "upstream_error", None),
        (504, err_body("timeout_error", "Request timed out"), {}, UpstreamTimeout, 504, "upstream_timeout", None),
    ],
)
def test_error_from_response(
    status: int,
    body: bytes,
    headers: dict[str, str],
    cls: type[BridgeError],
    out_status: int,
    code: str,
    retry: float | None,
) -> None:
    err = error_from_response(status, body, headers, what="backend 'claude' (anthropic)")
    assert type(err) is cls and err.status == out_status and err.code == code and err.retry_after == retry
    assert err.message.startswith(f"backend 'claude' (anthropic) refused the request (HTTP {status}")
    assert b"req_011C" not in err.message.encode()  # the message only, never the whole body


def test_error_messages_are_capped() -> None:
    err = error_from_response(400, err_body("invalid_request_error", "x" * 5000))
    assert len(err.message) < 400


def test_error_event_helper_maps_types() -> None:
    assert (
        error_from_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).status
        == 503
    )
