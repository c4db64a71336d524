"""Livepeer /llm answers → strict OpenAI completions and chunks (both generations, reference
``livepeer-gateway.md`` §3). Every chunk and completion produced is also run through the openai
SDK's pydantic types."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
import pytest
from translate_helpers import (
    MODEL,
    NEW_ID,
    ROLE,
    UPSTREAM_ID,
    check_chunk,
    check_completion,
    expected_completion,
    req,
)

from oai_bridge.backends.livepeer.translate import (
    HeaderStripper,
    StreamParser,
    parse_response,
    parse_stream,
)
from oai_bridge.errors import (
    UpstreamError,
)
from oai_bridge.sse import SSEDecoder

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
