"""ChunkBuilder / StopCutter / fold_chunks: the streaming contract of reference
``openai-anthropic-ollama.md`` §2.2, checked key by key and with the openai SDK's own types."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from oai_bridge.chunks import ChunkBuilder, StopCutter, completion, fold_chunks, new_id
from oai_bridge.sse import SSEDecoder

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "openai-real-streams"

ID = "chatcmpl-0123456789abcdef0123456789abcdef"
CREATED = 1727346169
MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
ROLE_DELTA = {"role": "assistant", "content": "", "refusal": None}

CHUNK_KEYS = {"id", "object", "created", "model", "choices"}
CHOICE_KEYS = {"index", "delta", "logprobs", "finish_reason"}


def check_chunk(chunk: dict[str, Any], *, include_usage: bool) -> None:
    """Exact keys, then the openai SDK's pydantic model; also survives a JSON round trip."""
    keys = CHUNK_KEYS | ({"usage"} if include_usage else set())
    assert set(chunk) == keys
    assert chunk["object"] == "chat.completion.chunk"
    for choice in chunk["choices"]:
        assert set(choice) == CHOICE_KEYS
    parsed = SDKChunk.model_validate(orjson.loads(orjson.dumps(chunk)), strict=False)
    assert parsed.id == chunk["id"]
    assert parsed.created == chunk["created"]


def check_completion(body: dict[str, Any], *, with_usage: bool) -> None:
    keys = CHUNK_KEYS | ({"usage"} if with_usage else set())
    assert set(body) == keys
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason"}
    assert set(choice["message"]) == {"role", "content", "refusal"}
    parsed = SDKCompletion.model_validate(orjson.loads(orjson.dumps(body)), strict=False)
    assert parsed.choices[0].message.content == choice["message"]["content"]


def chunk(delta: dict[str, Any], finish: str | None = None, *, usage_key: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_key:
        out["usage"] = None
    return out


def usage_chunk(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [],
        "usage": usage,
    }


def builder(**kwargs: Any) -> ChunkBuilder:
    return ChunkBuilder(model=MODEL, id=ID, created=CREATED, **kwargs)


def run_cutter(stops: Iterable[str], pieces: Iterable[str]) -> tuple[str, bool]:
    cutter = StopCutter(stops)
    out = "".join(cutter.feed(p) for p in pieces)
    return out + cutter.flush(), cutter.stopped


async def aiter(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


# ----------------------------------------------------------------------------- StopCutter


def test_stop_split_across_feeds_at_every_position() -> None:
    text = "Hello STOP world"
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            cutter = StopCutter(["STOP"])
            emitted = ""
            for piece in (text[:i], text[i:j], text[j:]):
                emitted += cutter.feed(piece)
                # Never emits text that a later piece could reveal to be the stop sequence.
                assert "Hello ".startswith(emitted), (i, j, emitted)
            assert cutter.stopped is True
            assert emitted + cutter.flush() == "Hello ", (i, j)


def test_stop_fed_char_by_char_with_overlapping_prefix() -> None:
    assert run_cutter(["aab"], "aaab") == ("a", True)
    assert run_cutter(["aab"], ["aaab"]) == ("a", True)


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        (["world", "lo"], ["Hello world"], "Hel"),
        (["lo", "world"], ["Hello world"], "Hel"),
        (["o w", "llo"], ["Hel", "lo", " wo", "rld"], "He"),
        (["rld", "Hello"], ["Hello world"], ""),
        (["\n\n", "User:"], ["Answer.\n", "\nUser: more"], "Answer."),
        (["User:", "\n\n"], ["Answer. Us", "er:\n\n"], "Answer. "),
        (["xyz"], ["xy", "xyz tail"], "xy"),
    ],
)
def test_multiple_stops_earliest_wins(stops: list[str], pieces: list[str], expected: str) -> None:
    assert run_cutter(stops, pieces) == (expected, True)


@pytest.mark.parametrize("stops", [[], [""], ["", ""]])
def test_no_stop_passes_through(stops: list[str]) -> None:
    cutter = StopCutter(stops)
    assert cutter.feed("Hello ") == "Hello "
    assert cutter.feed("STOP") == "STOP"
    assert cutter.flush() == ""
    assert cutter.stopped is False


@pytest.mark.parametrize(
    ("stops", "pieces", "released", "held"),
    [
        (["STOP"], ["Hello ST"], "Hello ", "ST"),
        (["STOP"], ["Hello S", "T", "O"], "Hello ", "STO"),
        (["STOP"], ["Hello STO", ""], "Hello ", "STO"),
        (["END", "ENOUGH"], ["so ENOU"], "so ", "ENOU"),
        (["\n\n"], ["line\n"], "line", "\n"),
    ],
)
def test_held_prefix_released_by_flush(stops: list[str], pieces: list[str], released: str, held: str) -> None:
    cutter = StopCutter(stops)
    assert "".join(cutter.feed(p) for p in pieces) == released
    assert cutter.flush() == held
    assert cutter.flush() == ""
    assert cutter.stopped is False


def test_held_prefix_released_when_it_turns_out_not_to_be_a_stop() -> None:
    cutter = StopCutter(["STOP"])
    assert cutter.feed("Hello ST") == "Hello "
    assert cutter.feed("ART now") == "START now"
    assert cutter.flush() == ""


def test_nothing_after_stop() -> None:
    cutter = StopCutter(["STOP"])
    assert cutter.feed("a STOP b") == "a "
    assert cutter.stopped is True
    assert cutter.feed("more text") == ""
    assert cutter.feed("STOP") == ""
    assert cutter.flush() == ""


# ----------------------------------------------------------------------------- ChunkBuilder


@pytest.mark.parametrize("include_usage", [False, True])
def test_builder_full_stream(include_usage: bool) -> None:
    b = builder(include_usage=include_usage)
    out = b.text("Hello")
    out += b.text(" world")
    out += b.finish("stop", USAGE)  # type: ignore[arg-type]
    u = include_usage
    expected = [
        chunk(ROLE_DELTA, usage_key=u),
        chunk({"content": "Hello"}, usage_key=u),
        chunk({"content": " world"}, usage_key=u),
        chunk({}, "stop", usage_key=u),
    ]
    if include_usage:
        expected.append(usage_chunk(USAGE))
    assert out == expected
    for c in out:
        check_chunk(c, include_usage=include_usage)  # type: ignore[arg-type]
    # Role only in the first delta; same id/created/model everywhere.
    assert sum("role" in ch["delta"] for c in out for ch in c["choices"]) == 1
    assert {(c["id"], c["created"], c["model"]) for c in out} == {(ID, CREATED, MODEL)}


def test_role_chunk_once() -> None:
    b = builder()
    assert b.start() == [chunk(ROLE_DELTA)]
    assert b.start() == []
    assert b.text("x") == [chunk({"content": "x"})]
    assert b.text("") == []


def test_empty_first_text_gives_role_chunk_only() -> None:
    b = builder()
    assert b.text("") == [chunk(ROLE_DELTA)]
    assert b.text("") == []


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_finish_without_text(reason: str) -> None:
    b = builder()
    out = b.finish(reason)  # type: ignore[arg-type]
    assert out == [chunk(ROLE_DELTA), chunk({}, reason)]
    for c in out:
        check_chunk(c, include_usage=False)  # type: ignore[arg-type]


def test_usage_chunk_without_usage_is_zeros() -> None:
    b = builder(include_usage=True)
    b.start()
    out = b.finish("stop")
    assert out == [
        chunk({}, "stop", usage_key=True),
        usage_chunk({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
    ]
    check_chunk(out[-1], include_usage=True)  # type: ignore[arg-type]


def test_usage_never_sent_without_include_usage() -> None:
    b = builder()
    out = b.text("a") + b.finish("stop", USAGE)  # type: ignore[arg-type]
    assert all("usage" not in c for c in out)
    assert len(out) == 3


def test_stop_cuts_and_finish_reason_is_stop() -> None:
    b = builder(stop=["\n\n"], include_usage=True)
    out = b.text("Hi\n")
    assert b.stopped is False
    out += b.text("\nUser: next")
    assert b.stopped is True
    out += b.text("ignored")
    out += b.finish("length", USAGE)  # type: ignore[arg-type]
    assert out == [
        chunk(ROLE_DELTA, usage_key=True),
        chunk({"content": "Hi"}, usage_key=True),
        chunk({}, "stop", usage_key=True),
        usage_chunk(USAGE),
    ]


def test_held_text_is_sent_before_the_finish_chunk() -> None:
    b = builder(stop=["END"])
    out = b.text("abc E")
    assert out == [chunk(ROLE_DELTA), chunk({"content": "abc "})]
    assert b.finish("length") == [chunk({"content": "E"}), chunk({}, "length")]


def test_default_id_and_created() -> None:
    before = int(time.time())
    b = ChunkBuilder(model="m")
    after = int(time.time())
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", b.id)
    assert before <= b.created <= after
    assert ChunkBuilder(model="m").id != b.id
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", new_id())
    float_created = ChunkBuilder(model="m", created=1700000000.9)  # type: ignore[arg-type]
    assert float_created.created == 1700000000
    assert type(float_created.created) is int


# ----------------------------------------------------------------------------- completion / fold


def test_completion_shape() -> None:
    body = completion(id=ID, created=CREATED, model=MODEL, content="Hi", finish_reason="length", usage=USAGE)  # type: ignore[arg-type]
    assert body == {
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi", "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": USAGE,
    }
    check_completion(body, with_usage=True)  # type: ignore[arg-type]
    no_usage = completion(id=ID, created=CREATED, model=MODEL, content="", finish_reason="stop", usage=None)
    assert "usage" not in no_usage
    check_completion(no_usage, with_usage=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_fold_builder_stream(include_usage: bool) -> None:
    b = builder(include_usage=include_usage, stop=["!"])
    chunks = b.text("Hello") + b.text(", world") + b.text("! more") + b.finish("length", USAGE)  # type: ignore[arg-type]
    body = await fold_chunks(aiter(chunks))
    expected = completion(
        id=ID,
        created=CREATED,
        model=MODEL,
        content="Hello, world",
        finish_reason="stop",
        usage=USAGE if include_usage else None,  # type: ignore[arg-type]
    )
    assert body == expected
    check_completion(body, with_usage=include_usage)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "finish"),
    [("text-a.sse", "stop"), ("text-b.sse", "stop"), ("long-text.sse", "stop"), ("finish-length.sse", "length")],
)
async def test_fold_real_openai_stream(name: str, finish: str) -> None:
    events = SSEDecoder().feed((FIXTURES / name).read_bytes())
    chunks = [e.json() for e in events if e.data != b"[DONE]"]
    body = await fold_chunks(aiter(chunks))
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content  # the fixture does hold text
    assert body["choices"][0]["message"]["content"] == content
    assert body["choices"][0]["finish_reason"] == finish
    assert body["id"] == chunks[0]["id"]
    assert body["created"] == chunks[0]["created"]
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["usage"] == chunks[-1]["usage"]
    check_completion(body, with_usage=True)  # type: ignore[arg-type]


async def test_fold_empty_stream() -> None:
    with pytest.raises(ValueError, match="empty chunk stream"):
        await fold_chunks(aiter([]))
