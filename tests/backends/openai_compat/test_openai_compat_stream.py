"""openai_compat stream normalizer, pure: the real OpenAI captures come out unchanged, every
deviation a real server has comes out as the compliant sequence, tool-call repairs, n choices,
endings and in-stream errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai_compat_helpers import (
    CREATED,
    MODEL,
    ROLE,
    USAGE,
    assert_compliant,
    ch,
    chunk,
    fixture_events,
    fold,
    req,
)

from oai_bridge.backends.openai_compat import (
    StreamNormalizer,
    parse_stream,
    stream_error,
)
from oai_bridge.errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    RateLimited,
    UpstreamError,
)

Event = dict[str, Any] | bytes


def normalize(events: list[Event], *, include_usage: bool = False, **fields: Any) -> list[dict[str, Any]]:
    request = req(stream=True, stream_options={"include_usage": True} if include_usage else None, **fields)
    normalizer = StreamNormalizer(request=request, what="backend 'b' (openai_compat)")
    out: list[dict[str, Any]] = []
    for event in events:
        out += normalizer.feed(event if isinstance(event, bytes) else orjson.dumps(event))
        if normalizer.done:
            break
    out += normalizer.end()
    return out  # type: ignore[return-value]


def with_usage(chunks: list[dict[str, Any]], usage: dict[str, Any] = USAGE) -> list[dict[str, Any]]:
    return [{**c, "usage": None} for c in chunks] + [chunk(usage=usage)]


# --------------------------------------------------------------------------- the real captures


@pytest.mark.parametrize(
    "name",
    [
        "text-a.sse",
        "text-b.sse",
        "long-text.sse",
        "finish-length.sse",
        "n3-interleaved.sse",
        "tool-call-single.sse",
        "tool-call-b.sse",
        "tool-call-c.sse",
        "tool-call-parallel.sse",
        "logprobs.sse",
        "logprobs-refusal.sse",
        "refusal.sse",
    ],
)
def test_real_openai_streams_come_out_unchanged(name: str) -> None:
    events = fixture_events(name)
    assert events[-1] == b"[DONE]"
    original = [orjson.loads(e) for e in events[:-1]]
    out = normalize(list(events), include_usage=True)
    assert_compliant(out, include_usage=True)
    assert out == [c if not c["choices"] else {**c, "usage": None} for c in original]
    assert fold(out) == fold(original)
    without = normalize(list(events))  # the client did not ask for usage: no usage chunk at all
    assert_compliant(without, include_usage=False)
    assert without == [c for c in original if c["choices"]]


def test_fixture_contents_survive_the_normalizer() -> None:
    n3 = fold(normalize(fixture_events("n3-interleaved.sse")))
    assert sorted(n3) == [0, 1, 2] and all(c["finish"] == "stop" and c["text"].startswith("{") for c in n3.values())
    parallel = fold(normalize(fixture_events("tool-call-parallel.sse")))[0]
    assert [c["name"] for c in parallel["calls"].values()] == ["GetWeatherArgs", "get_stock_price"]
    assert all(orjson.loads(c["arguments"]) for c in parallel["calls"].values())
    assert parallel["finish"] == "tool_calls"
    logprobs = fold(normalize(fixture_events("logprobs.sse")))[0]
    assert logprobs["tokens"] == ["Foo", "!"] and logprobs["text"] == "Foo!"
    assert fold(normalize(fixture_events("refusal.sse")))[0]["refusal"].startswith("I'm sorry")


# --------------------------------------------------------------------------- deviations

COMPLIANT = [
    chunk(ch(ROLE)),
    chunk(ch({"content": "Hello"})),
    chunk(ch({"content": " world"})),
    chunk(ch({}, "stop")),
]
UPSTREAM_USAGE = chunk(usage=USAGE)


def _cumulative(k: int) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": k, "total_tokens": 5 + k}


DEVIATIONS: dict[str, list[Event]] = {
    "compliant": [*COMPLIANT, UPSTREAM_USAGE, b"[DONE]"],
    "no_finish_chunk": [*COMPLIANT[:3], UPSTREAM_USAGE, b"[DONE]"],
    "empty_finish_reason": [
        chunk(ch(ROLE, "")),
        chunk(ch({"content": "Hello"}, "")),
        chunk(ch({"content": " world"}, "")),
        chunk(ch({}, "stop")),
        UPSTREAM_USAGE,
        b"[DONE]",
    ],
    "role_every_chunk": [
        chunk(ch(ROLE)),
        chunk(ch({"role": "assistant", "content": "Hello"})),
        chunk(ch({"role": "assistant", "content": " world"})),
        chunk(ch({"role": "assistant"}, "stop")),
        UPSTREAM_USAGE,
        b"[DONE]",
    ],
    "finish_with_content": [
        *COMPLIANT[:2],
        chunk(ch({"content": " world"}, "stop")),
        UPSTREAM_USAGE,
        b"[DONE]",
    ],
    "usage_every_chunk": [
        chunk(ch(ROLE), usage=_cumulative(0)),
        chunk(ch({"content": "Hello"}), usage=_cumulative(1)),
        chunk(ch({"content": " world"}), usage=_cumulative(2)),
        chunk(ch({}, "stop"), usage=_cumulative(2)),
        b"[DONE]",
    ],
    "no_done": [*COMPLIANT, UPSTREAM_USAGE],
    "unstable_ids": [
        COMPLIANT[0],
        {**COMPLIANT[1], "id": "chatcmpl-other", "created": CREATED + 1, "model": "other"},
        {**COMPLIANT[2], "id": "chatcmpl-third", "created": CREATED + 2},
        COMPLIANT[3],
        UPSTREAM_USAGE,
        b"[DONE]",
    ],
    "null_content_deltas": [  # llama.cpp style: role with content null, content null on the finish
        chunk(ch({"role": "assistant", "content": None})),
        chunk(ch({"content": "Hello"})),
        chunk(ch({"content": " world"})),
        chunk(ch({"content": None}, "stop"), usage=USAGE, timings={"predicted_n": 2}),
        b"[DONE]",
    ],
}


@pytest.mark.parametrize("deviation", sorted(DEVIATIONS))
def test_every_deviation_is_normalized_to_the_compliant_sequence(deviation: str) -> None:
    expected = COMPLIANT
    if deviation == "null_content_deltas":
        expected = [chunk(ch({"role": "assistant", "content": None})), *COMPLIANT[1:3]]
        expected.append(chunk(ch({}, "stop"), timings={"predicted_n": 2}))
    assert normalize(DEVIATIONS[deviation]) == expected
    assert normalize(DEVIATIONS[deviation], include_usage=True) == with_usage(expected)


def test_missing_id_object_created_are_filled_and_stable() -> None:
    bare = [{"model": "m2", "choices": c["choices"]} for c in COMPLIANT] + [b"[DONE]"]
    out = normalize(bare, include_usage=True)
    assert_compliant(out, include_usage=True)
    assert out[0]["id"].startswith("chatcmpl-") and out[0]["model"] == "m2"
    assert [c["choices"] for c in out[:-1]] == [c["choices"] for c in COMPLIANT]
    assert out[-1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    nameless = normalize([{"choices": COMPLIANT[0]["choices"]}, b"[DONE]"])
    assert nameless[0]["model"] == MODEL  # the request's model when the upstream names none


def test_an_empty_stream_is_an_empty_answer() -> None:
    assert normalize([chunk(ch({}, "stop")), b"[DONE]"]) == [chunk(ch(ROLE)), chunk(ch({}, "stop"))]
    only_done = normalize([b"[DONE]"])
    assert [c["choices"] for c in only_done] == [[ch(ROLE)], [ch({}, "stop")]]


def test_non_openai_finish_reasons_are_mapped() -> None:
    for raw, want in [("eos", "stop"), ("max_tokens", "length"), ("length", "length"), ("weird", "stop")]:
        out = normalize([chunk(ch({"content": "x"}, raw)), b"[DONE]"])
        assert out[-1]["choices"][0]["finish_reason"] == want


def test_n_choices_are_tracked_each_on_their_own() -> None:
    events: list[Event] = []
    for i in range(3):  # role repeated, finish with the content, finish "" elsewhere
        events.append(chunk(ch(ROLE, "", index=i)))
    for i in range(3):
        events.append(chunk(ch({"role": "assistant", "content": f"T{i}"}, "", index=i)))
    events.append(chunk(ch({"content": "!"}, "stop", index=1)))
    events.append(chunk(ch({"content": "!"}, "length", index=0)))
    events.append(b"[DONE]")  # choice 2 never finished
    out = normalize(events, include_usage=True)
    assert_compliant(out, include_usage=True)
    assert [c["choices"] for c in out[6:-1]] == [
        [ch({"content": "!"}, index=1)],
        [ch({}, "stop", index=1)],
        [ch({"content": "!"}, index=0)],
        [ch({}, "length", index=0)],
        [ch({}, "stop", index=2)],
    ]
    assert {i: (c["text"], c["finish"]) for i, c in fold(out).items()} == {
        0: ("T0!", "length"),
        1: ("T1!", "stop"),
        2: ("T2", "stop"),
    }


def test_logprobs_pass_through_and_stay_with_their_content() -> None:
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}], "refusal": None}
    out = normalize(
        [
            chunk(ch(ROLE, logprobs={"content": [], "refusal": None})),
            chunk(ch({"content": "Hi"}, "stop", logprobs=lp)),
            b"[DONE]",
        ]
    )
    assert [c["choices"][0] for c in out] == [
        ch(ROLE, logprobs={"content": [], "refusal": None}),
        ch({"content": "Hi"}, logprobs=lp),
        ch({}, "stop"),
    ]


# --------------------------------------------------------------------------- tool calls


def frag(index: int | None = None, id: str | None = None, name: str | None = None, args: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if index is not None:
        out["index"] = index
    if id is not None:
        out |= {"id": id, "type": "function"}
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    if function:
        out["function"] = function
    return out


def tools_of(out: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [c["choices"][0]["delta"].get("tool_calls") for c in out if c["choices"] and c["choices"][0]["delta"]]


FIRST = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_w", "arguments": ""}}


def test_tool_fragments_repeating_id_and_name_are_repaired() -> None:
    events: list[Event] = [
        chunk(ch({"role": "assistant", "content": None, "tool_calls": [frag(0, "call_1", "get_w", "")]})),
        chunk(ch({"tool_calls": [frag(0, "call_1", "get_w", '{"a":')]})),
        chunk(ch({"tool_calls": [frag(0, "call_1", "get_w", "1}")]})),
        chunk(ch({}, "stop")),  # "stop" after tool calls
        b"[DONE]",
    ]
    out = normalize(events)
    assert_compliant(out, include_usage=False)
    assert tools_of(out) == [
        [FIRST],
        [{"index": 0, "function": {"arguments": '{"a":'}}],
        [{"index": 0, "function": {"arguments": "1}"}}],
    ]
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_fragments_without_index_id_or_function_are_repaired() -> None:
    events: list[Event] = [
        chunk(ch({"role": "assistant", "tool_calls": [frag(None, None, "get_w", {"a": 1})]})),  # object arguments
        chunk(ch({"tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "other"}}]})),
        chunk(ch({"tool_calls": [frag(None, None, None, '{"b":2}')]})),
        chunk(ch({"tool_calls": [{"index": 5}]})),  # a fragment with nothing in it
        b"[DONE]",  # no finish at all
    ]
    out = normalize(events)
    assert_compliant(out, include_usage=False)
    calls = tools_of(out)
    assert calls[0][0]["id"].startswith("call_") and calls[0][0]["index"] == 0
    assert calls[0][0]["function"] == {"name": "get_w", "arguments": '{"a":1}'}
    assert calls[1] == [
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "other", "arguments": ""}}
    ]
    assert calls[2] == [{"index": 1, "function": {"arguments": '{"b":2}'}}]
    assert calls[3][0]["index"] == 2 and calls[3][0]["function"] == {"name": "", "arguments": ""}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_new_call_reusing_an_index_gets_its_own_index() -> None:
    events: list[Event] = [
        chunk(ch({"role": "assistant", "tool_calls": [frag(0, "call_a", "f", "{}")]})),
        chunk(ch({"tool_calls": [frag(0, "call_b", "g", "{}")]})),
        chunk(ch({"tool_calls": [frag(0, None, None, " ")]})),
        chunk(ch({}, "tool_calls")),
        b"[DONE]",
    ]
    calls = fold(normalize(events))[0]["calls"]
    assert calls == {
        0: {"id": "call_a", "name": "f", "arguments": "{}"},
        1: {"id": "call_b", "name": "g", "arguments": "{} "},
    }


def test_a_name_sent_after_the_first_fragment_is_kept_once() -> None:
    events: list[Event] = [
        chunk(ch({"role": "assistant", "tool_calls": [frag(0, "call_a", None, "")]})),
        chunk(ch({"tool_calls": [frag(0, None, "late", "{}")]})),
        chunk(ch({"tool_calls": [frag(0, None, "late", "")]})),
        b"[DONE]",
    ]
    out = normalize(events)
    assert_compliant(out, include_usage=False)
    assert fold(out)[0]["calls"] == {0: {"id": "call_a", "name": "late", "arguments": "{}"}}


# --------------------------------------------------------------------------- endings and errors


def test_a_body_that_ends_after_the_finish_is_complete() -> None:
    assert normalize(COMPLIANT) == COMPLIANT


def test_a_body_that_ends_without_finish_or_done_is_incomplete() -> None:
    with pytest.raises(UpstreamError) as info:
        normalize(COMPLIANT[:3])
    assert info.value.code == "stream_incomplete" and info.value.status == 502
    with pytest.raises(UpstreamError, match="stream_incomplete|before the answer"):
        normalize([])


@pytest.mark.parametrize(
    "data", [b'{"choices":[{"delta":', b"[1,2]", b'{"choices":{"a":1}}', b'{"choices":[{"delta":"x"}]}']
)
def test_malformed_events(data: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        normalize([COMPLIANT[0], data])
    assert info.value.code == "malformed_event"


@pytest.mark.parametrize(
    ("event", "error", "code"),
    [
        (
            {"error": {"message": "backend crashed", "type": "server_error", "param": None, "code": None}},
            UpstreamError,
            "upstream_error",
        ),
        (
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size",
                    "type": "exceed_context_size_error",
                }
            },
            ContextLengthExceeded,
            "context_length_exceeded",
        ),
        (
            {
                "object": "error",
                "message": "CUDA out of memory",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            },
            UpstreamError,
            "upstream_error",
        ),
        ({"error": {"message": "slow down", "type": "requests", "code": 429}}, RateLimited, "rate_limit_exceeded"),
        (
            {"error": {"message": "flagged by our content policy", "type": "invalid_request_error"}},
            ContentPolicy,
            "content_policy_violation",
        ),
        ({"error": "plain string error"}, UpstreamError, "upstream_error"),
    ],
)
def test_an_error_event_mid_stream_raises_the_matching_error(
    event: dict[str, Any], error: type[BridgeError], code: str
) -> None:
    with pytest.raises(error) as info:
        normalize([COMPLIANT[0], COMPLIANT[1], event])
    assert type(info.value) is error and info.value.code == code
    assert info.value.message.startswith("backend 'b' (openai_compat) reported an error mid-stream")
    assert stream_error(event).code == code


async def test_parse_stream_is_the_async_wrapper() -> None:
    async def events() -> Any:
        for e in DEVIATIONS["finish_with_content"]:
            yield e if isinstance(e, bytes) else orjson.dumps(e)

    out = [c async for c in parse_stream(events(), request=req(stream=True))]
    assert out == COMPLIANT
