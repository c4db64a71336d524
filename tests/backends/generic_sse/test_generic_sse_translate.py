"""generic_sse translate: options validation, request rendering, error mapping, and the stream
parser on event sequences (Dify-like, and real OpenAI and Anthropic captures read as "generic"
services)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from oai_bridge.backends.generic_sse import DIFY_EXAMPLE, StreamParser, build_request, parse_options
from oai_bridge.backends.generic_sse.translate import classify_error, error_from_response, error_message
from oai_bridge.backends.http import status_error
from oai_bridge.chunks import fold_chunks
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
from oai_bridge.sse import SSEDecoder
from oai_bridge.types import ChatCompletionChunk, ChatCompletionRequest

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures"
SPEC = parse_options(DIFY_EXAMPLE, has_api_key=True)


def req(**extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "dify-app", "messages": [{"role": "user", "content": "hi"}], **extra}
    return ChatCompletionRequest.model_validate(body)


def dify(kind: str, **fields: Any) -> tuple[str, bytes]:
    return "message", orjson.dumps({"event": kind, **fields})


def run(parser: StreamParser, events: list[tuple[str, bytes]], *, end: bool = True) -> list[ChatCompletionChunk]:
    out: list[ChatCompletionChunk] = []
    for event, data in events:
        out.extend(parser.feed(event, data))
        if parser.done:
            return out
    if end:
        out.extend(parser.end())
    return out


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def finish_of(chunks: list[ChatCompletionChunk]) -> str | None:
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]


def fixture_events(path: Path) -> list[tuple[str, bytes]]:
    raw = path.read_bytes()
    if not raw.endswith(b"\n\n"):
        raw += b"\n\n"  # the Anthropic capture lost the blank line after its last event
    return [(e.event, e.data) for e in SSEDecoder().feed(raw)]


# --------------------------------------------------------------------------- options


def test_example_options_parse() -> None:
    assert SPEC.path == "/stream" and SPEC.method == "POST" and SPEC.health_path == "/stream"
    assert SPEC.text_path.steps == ("answer",)
    assert [c.text for c in SPEC.done_when] == ["event == message_end"]
    assert SPEC.uses_api_key and SPEC.drop_unset and not SPEC.cumulative
    assert SPEC.finish_map == {"end": "stop", "max_tokens": "length"}


def test_defaults() -> None:
    spec = parse_options({"text_path": "t", "done_on_close": True})
    assert (spec.path, spec.method, spec.health_path, spec.error_path) == ("/", "POST", "/", None)
    out = build_request(req(), spec)
    assert out.body == {"model": "dify-app", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    get = parse_options({"text_path": "t", "done_when": "@data == [DONE]", "method": "get", "path": "/s"})
    assert (get.method, get.health_path, get.body) == ("GET", "/", None)
    assert parse_options({"text_path": "t", "done_when": "e == x", "error_when": "e == err"}).error_path is not None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"txt_path": "a"}, r"unknown generic_sse option\(s\) txt_path \(known: body, cumulative"),
        ({"done_when": "e == x"}, r"^text_path: required"),
        ({"text_path": "a"}, r"^done_when: required unless done_on_close"),
        ({"text_path": "a..b", "done_on_close": True}, r"^text_path: bad path"),
        ({"text_path": "a", "done_when": "e = x"}, r"^done_when: expected a condition"),
        ({"text_path": "a", "done_on_close": True, "text_when": ["e == x", 3]}, r"^text_when\[1\]: "),
        ({"text_path": "a", "done_on_close": True, "error_when": "@nope == x"}, r"^error_when: "),
        ({"text_path": "a", "done_on_close": "yes"}, r"^done_on_close: expected true or false"),
        ({"text_path": "a", "done_on_close": True, "cumulative": 1}, r"^cumulative: expected true or false"),
        ({"text_path": "a", "done_on_close": True, "method": "PUT"}, r"^method: expected POST or GET"),
        ({"text_path": "a", "done_on_close": True, "path": "stream"}, r"^path: expected a path starting with '/'"),
        ({"text_path": "a", "done_on_close": True, "path": "/s?x=1"}, r"^path: put query parameters in the query"),
        ({"text_path": "a", "done_on_close": True, "health_path": 5}, r"^health_path: expected a string"),
        ({"text_path": "a", "done_on_close": True, "headers": "X: y"}, r"^headers: expected a table"),
        ({"text_path": "a", "done_on_close": True, "headers": {"X": 1}}, r"^headers\.X: expected a string"),
        ({"text_path": "a", "done_on_close": True, "headers": {"X": "{{messages}}"}}, r"^headers\.X: unknown"),
        ({"text_path": "a", "done_on_close": True, "body": {"q": "{{query}}"}}, r"^body\.q: unknown placeholder"),
        ({"text_path": "a", "done_on_close": True, "body": []}, r"^body: expected a table"),
        ({"text_path": "a", "done_on_close": True, "method": "GET", "body": {}}, r"^body: a GET request has no"),
        ({"text_path": "a", "done_on_close": True, "query": {"q": {"x": 1}}}, r"^query\.q: expected a string"),
        ({"text_path": "a", "done_on_close": True, "unset": "omit"}, r"^unset: expected 'drop' or 'null'"),
        ({"text_path": "a", "done_on_close": True, "usage_prompt_path": "u["}, r"^usage_prompt_path: bad index"),
        ({"text_path": "a", "done_on_close": True, "error_path": ""}, r"^error_path: expected a path"),
        ({"text_path": "a", "done_on_close": True, "finish_map": {"x": "stop"}}, r"^finish_map: needs finish_reason"),
        (
            {"text_path": "a", "done_on_close": True, "finish_reason_path": "f", "finish_map": {"x": "tool_calls"}},
            r"^finish_map\.x: expected one of stop, length, content_filter",
        ),
        ({"text_path": "a", "done_on_close": True, "headers": {"K": "{{api_key}}"}}, r"no api_key configured"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_options(options)


# --------------------------------------------------------------------------- request


def test_build_request_renders_the_example_body() -> None:
    request = req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "No emoji."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
        ],
        temperature=0.2,
        max_completion_tokens=7,
        user="u-1",
    )
    out = build_request(request, SPEC, api_key="sk-secret")
    assert (out.method, out.path, out.headers, out.query) == ("POST", "/stream", {"X-Api-Key": "sk-secret"}, {})
    assert out.body == {
        "query": "second\npart",
        "history": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "answer"}],
        "system": "Be brief.\n\nNo emoji.",
        "model": "dify-app",
        "temperature": 0.2,
        "max_tokens": 7,
        "user": "u-1",
        "response_mode": "streaming",
        "inputs": {},
    }
    assert "sk-secret" not in repr(out)


def test_unset_parameters_are_dropped_or_null() -> None:
    assert build_request(req(), SPEC, api_key="k").body == {
        "query": "hi",
        "history": [],
        "model": "dify-app",
        "response_mode": "streaming",
        "inputs": {},
    }
    spec = parse_options({**DIFY_EXAMPLE, "unset": "null"}, has_api_key=True)
    body = build_request(req(), spec, api_key="k").body
    assert body["temperature"] is None and body["system"] is None and body["max_tokens"] is None


def test_get_request_query() -> None:
    spec = parse_options(
        {
            "method": "GET",
            "path": "/sse",
            "query": {"q": "{{last_user_message}}", "t": "{{temperature}}", "stop": "{{stop}}", "n": 1, "on": True},
            "text_path": "text",
            "done_when": "@data == [DONE]",
        }
    )
    out = build_request(req(stop=["END", "\n"]), spec)
    assert out.body is None
    assert out.query == {"q": "hi", "stop": '["END","\\n"]', "n": "1", "on": "true"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
                    {"role": "tool", "content": "42", "tool_call_id": "c"},
                ]
            },
            "messages[1]",
        ),
    ],
)
def test_unsupported_requests_are_400(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_request(req(**extra), SPEC, api_key="k")
    assert info.value.status == 400 and info.value.param == param


def test_continuation_is_refused() -> None:
    with pytest.raises(BridgeError) as info:
        build_request(req().continued("Simulated"), SPEC, api_key="k")
    assert info.value.code == "continuation_unsupported" and "cannot continue" in info.value.message


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"code":"invalid_param","message":"query is required","status":400}', "query is required"),
        (b'{"error":{"message":"nested","type":"x"}}', "nested"),
        (b'{"error":"flat"}', "flat"),
        (b'{"detail":"fastapi"}', "fastapi"),
        (b'{"detail":[{"msg":"field required"}]}', "field required"),
        (b"Bad Gateway\n", "Bad Gateway"),
        (b"", None),
        (b'{"other":1}', None),
        (b"x" * 1000, "x" * 299 + "…"),
    ],
)
def test_error_message(body: bytes, message: str | None) -> None:
    assert error_message(body) == message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504, 529])
def test_status_table_agrees_with_the_shared_one(status: int) -> None:
    ours, shared = classify_error(status, "boom", retry_after=3.0), status_error(status, "boom", retry=3.0)
    assert (type(ours), ours.status, ours.code, ours.retry_after) == (
        type(shared),
        shared.status,
        shared.code,
        shared.retry_after,
    )


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (400, b'{"message":"Query or prefix prompt is too long, you can reduce..."}', ContextLengthExceeded, None),
        (413, b'{"detail":"This model\'s maximum context length is 8192 tokens"}', ContextLengthExceeded, None),
        (400, b'{"message":"Rejected by the content moderation policy"}', ContentPolicy, None),
        (403, b'{"error":{"message":"flagged by our safety system"}}', ContentPolicy, None),
        (500, b'{"message":"context length exceeded"}', UpstreamError, "upstream_error"),
        (429, b'{"message":"slow down"}', RateLimited, "rate_limit_exceeded"),
        (401, b'{"message":"Access token is invalid"}', UpstreamRejected, "upstream_rejected"),
        (503, b"overloaded", UpstreamUnavailable, "upstream_unavailable"),
        (504, b"", UpstreamTimeout, "upstream_timeout"),
    ],
)
def test_error_from_response(status: int, body: bytes, cls: type[BridgeError], code: str | None) -> None:
    err = error_from_response(status, body, retry_after=2.0, what="backend 'x' (generic_sse)")
    assert type(err) is cls
    assert err.message.startswith(f"backend 'x' (generic_sse) answered HTTP {status}: ")
    if code:
        assert err.code == code
    if cls is RateLimited:
        assert err.retry_after == 2.0


# --------------------------------------------------------------------------- parser


def test_dify_sequence_text_usage_finish() -> None:
    parser = StreamParser(SPEC, request=req(stream=True, stream_options={"include_usage": True}), created=7)
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    chunks = run(
        parser,
        [
            dify("workflow_started", data={}),
            dify("message", answer="Hel"),
            ("message", b""),  # empty data: a keep-alive
            dify("message", answer="lo"),
            dify("message", answer=""),
            dify("message_end", metadata={"usage": usage, "stop_reason": "max_tokens"}),
            dify("message", answer="after the end"),
        ],
        end=False,
    )
    assert parser.done
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        None,
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {(chunks[0]["id"], 7, "dify-app")}


def test_text_when_filters_events() -> None:
    chunks = run(
        StreamParser(SPEC, request=req()),
        [dify("agent_thought", answer="thinking"), dify("message", answer="ok"), dify("message_end")],
    )
    assert text_of(chunks) == "ok" and finish_of(chunks) == "stop"


def test_stop_sequence_is_emulated_and_ends_the_answer() -> None:
    parser = StreamParser(SPEC, request=req(stop=["STOP"]))
    chunks = run(parser, [dify("message", answer="one ST"), dify("message", answer="OP two")], end=False)
    assert parser.done and text_of(chunks) == "one " and finish_of(chunks) == "stop"


def test_cumulative_text_gives_new_suffixes() -> None:
    spec = parse_options({**DIFY_EXAMPLE, "cumulative": True}, has_api_key=True)
    events = [dify("message", answer=a) for a in ("Sim", "Simulated", "Simulated", "Sim", "Simulated reply")]
    chunks = run(StreamParser(spec, request=req()), [*events, dify("message_end")])
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == ["Sim", "ulated", " reply"]
    with pytest.raises(UpstreamError) as info:
        run(StreamParser(spec, request=req()), [dify("message", answer="abc"), dify("message", answer="abX")])
    assert info.value.code == "malformed_event"


@pytest.mark.parametrize(
    ("events", "code"),
    [
        (
            [dify("message", answer="a"), ("message", b'{"event": "message", "answer": "unterminated')],
            "malformed_event",
        ),
        ([dify("message", answer="a"), ("message", b"[DONE]")], "malformed_event"),
        ([dify("message", answer=3)], "malformed_event"),
        ([dify("message", answer="a")], "stream_incomplete"),
        ([], "stream_incomplete"),
    ],
)
def test_stream_errors(events: list[tuple[str, bytes]], code: str) -> None:
    with pytest.raises(UpstreamError) as info:
        run(StreamParser(SPEC, request=req(), what="backend 'd' (generic_sse)"), events)
    assert info.value.code == code and info.value.status == 502 and "backend 'd'" in info.value.message


def test_done_on_close() -> None:
    spec = parse_options({**DIFY_EXAMPLE, "done_on_close": True}, has_api_key=True)
    chunks = run(StreamParser(spec, request=req()), [dify("message", answer="a")])
    assert text_of(chunks) == "a" and finish_of(chunks) == "stop"
    assert finish_of(run(StreamParser(spec, request=req()), [])) == "stop"  # role and finish only


def test_error_event_before_and_after_the_first_chunk() -> None:
    early = dify("error", status=429, code="too_many_requests", message="slow down")
    with pytest.raises(RateLimited) as rate:
        run(StreamParser(SPEC, request=req(), what="B"), [dify("workflow_started"), early])
    assert rate.value.message == "B reported an error: slow down"
    with pytest.raises(ContextLengthExceeded):
        run(StreamParser(SPEC, request=req()), [dify("error", message="Query or prefix prompt is too long")])
    with pytest.raises(UpstreamError) as plain:
        run(StreamParser(SPEC, request=req()), [dify("error")])
    assert plain.value.code == "upstream_error" and plain.value.message.endswith("no details")
    with pytest.raises(UpstreamError) as mid:
        run(StreamParser(SPEC, request=req()), [dify("message", answer="a"), early])
    assert type(mid.value) is UpstreamError and mid.value.code == "upstream_error" and "slow down" in mid.value.message


def test_usage_missing_gives_zeros_only_when_asked() -> None:
    chunks = run(
        StreamParser(SPEC, request=req(stream=True, stream_options={"include_usage": True})),
        [dify("message", answer="a"), dify("message_end")],
    )
    assert chunks[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert all("usage" not in c for c in run(StreamParser(SPEC, request=req()), [dify("message_end")]))


async def _aiter(chunks: list[ChatCompletionChunk]) -> Any:
    for c in chunks:
        yield c


OPENAI_AS_GENERIC = {
    "text_path": "choices[0].delta.content",
    "done_when": "@data == [DONE]",
    "error_when": "error != null",
    "error_path": "error.message",
    "finish_reason_path": "choices[0].finish_reason",
    "usage_prompt_path": "usage.prompt_tokens",
    "usage_completion_path": "usage.completion_tokens",
}


@pytest.mark.parametrize(("name", "finish"), [("text-a.sse", "stop"), ("finish-length.sse", "length")])
async def test_real_openai_stream_read_as_a_generic_service(name: str, finish: str) -> None:
    events = fixture_events(FIXTURES / "openai-real-streams" / name)
    expected = "".join(
        (orjson.loads(d)["choices"] or [{"delta": {}}])[0]["delta"].get("content") or "" for _, d in events[:-1]
    )
    usage = orjson.loads(events[-2][1])["usage"]
    parser = StreamParser(parse_options(OPENAI_AS_GENERIC), request=req(stream=True), include_usage=True)
    result = await fold_chunks(_aiter(run(parser, events, end=False)))
    assert parser.done and result["choices"][0]["message"]["content"] == expected and expected
    assert result["choices"][0]["finish_reason"] == finish
    assert result["usage"] == {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def test_openai_error_frame_mid_stream() -> None:
    parser = StreamParser(parse_options(OPENAI_AS_GENERIC), request=req())
    content = orjson.dumps({"choices": [{"delta": {"content": "a"}, "finish_reason": None}]})
    with pytest.raises(UpstreamError) as info:
        run(parser, [("message", content), ("message", b'{"error":{"message":"backend crashed"}}')])
    assert "backend crashed" in info.value.message


def test_real_anthropic_stream_read_as_a_generic_service() -> None:
    spec = parse_options(
        {
            "text_path": "delta.text",
            "text_when": "@event == content_block_delta",
            "done_when": "@event == message_stop",
            "error_when": "@event == error",
            "error_path": "error.message",
            "usage_prompt_path": "message.usage.input_tokens",
            "usage_completion_path": "usage.output_tokens",
            "finish_reason_path": "delta.stop_reason",
            "finish_map": {"end_turn": "stop", "max_tokens": "length", "refusal": "content_filter"},
        }
    )
    parser = StreamParser(spec, request=req(stream=True, stream_options={"include_usage": True}))
    chunks = run(parser, fixture_events(FIXTURES / "anthropic-streams" / "basic-response.sse"), end=False)
    assert parser.done and text_of(chunks) == "Hello there!" and finish_of(chunks) == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
    refusal = run(
        StreamParser(spec, request=req()), fixture_events(FIXTURES / "anthropic-streams" / "refusal-response.sse")
    )
    assert finish_of(refusal) == "content_filter"
