"""SSE framing: the decoder against real captured streams split at every byte, and the encoder
against the byte-exact OpenAI captures."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from oai_bridge.sse import DONE, KEEPALIVE, ServerSentEvent, SSEDecoder, encode_data, encode_json

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures"
OPENAI_FILES = sorted((FIXTURES / "openai-real-streams").glob("*.sse"))
ANTHROPIC_FILES = sorted((FIXTURES / "anthropic-streams").glob("*.sse"))
ALL_FILES = OPENAI_FILES + ANTHROPIC_FILES

# Events each capture holds (counted with grep '^data:'; the Anthropic captures end with an
# unterminated `message_stop` event, which must not be dispatched).
EXPECTED_COUNTS = {
    "finish-length.sse": 5,
    "logprobs-refusal.sse": 15,
    "logprobs.sse": 6,
    "long-text.sse": 181,
    "n3-interleaved.sse": 50,
    "refusal.sse": 14,
    "text-a.sse": 34,
    "text-b.sse": 18,
    "tool-call-b.sse": 14,
    "tool-call-c.sse": 18,
    "tool-call-parallel.sse": 26,
    "tool-call-single.sse": 11,
    "basic-response.sse": 8,
    "incomplete-partial-json-response.sse": 15,
    "refusal-response.sse": 4,
    "tool-use-response.sse": 14,
}

Ev = tuple[str, bytes]


def _ids(files: list[Path]) -> list[str]:
    return [f"{f.parent.name}/{f.name}" for f in files]


def reference_events(raw: bytes) -> list[Ev]:
    """An independent, LF-only reading of a capture: blocks ended by a blank line."""
    blocks = raw.split(b"\n\n")[:-1]  # what follows the last blank line is unterminated
    out: list[Ev] = []
    for block in blocks:
        name, data = "message", []
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[len(b"event: ") :].decode()
            elif line.startswith(b"data: "):
                data.append(line[len(b"data: ") :])
        if data:
            out.append((name, b"\n".join(data)))
    return out


def pairs(events: list[ServerSentEvent]) -> list[Ev]:
    return [(e.event, e.data) for e in events]


def decode_pieces(pieces: list[bytes]) -> tuple[list[Ev], SSEDecoder]:
    decoder = SSEDecoder()
    out: list[ServerSentEvent] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return pairs(out), decoder


def bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


# ----------------------------------------------------------------------------- fixture files


def test_fixture_sets_present() -> None:
    assert len(OPENAI_FILES) == 12
    assert len(ANTHROPIC_FILES) == 4
    assert {f.name for f in ALL_FILES} == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("path", ALL_FILES, ids=_ids(ALL_FILES))
def test_fixture_one_feed(path: Path) -> None:
    raw = path.read_bytes()
    events, decoder = decode_pieces([raw])
    assert events == reference_events(raw)
    assert len(events) == EXPECTED_COUNTS[path.name]
    # The OpenAI captures end with `data: [DONE]\n\n`; the Anthropic ones with an open event.
    if path in OPENAI_FILES:
        assert events[-1] == ("message", b"[DONE]")
        assert all(name == "message" for name, _ in events)
        assert decoder.pending is False
    else:
        assert events[-1][0] == "message_delta"
        assert decoder.pending is True
        # Terminating the open event dispatches exactly the `message_stop` event.
        last_line = raw.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        assert last_line.startswith(b'data: {"type":"message_stop"')
        assert pairs(decoder.feed(b"\n\n" if not raw.endswith(b"\n") else b"\n")) == [
            ("message_stop", last_line[len(b"data: ") :])
        ]
        assert decoder.pending is False


@pytest.mark.parametrize("path", ALL_FILES, ids=_ids(ALL_FILES))
def test_fixture_byte_by_byte(path: Path) -> None:
    raw = path.read_bytes()
    events, decoder = decode_pieces(bytewise(raw))
    assert events == reference_events(raw)
    assert decoder.pending is (path in ANTHROPIC_FILES)


def test_all_fixtures_in_one_feed() -> None:
    # The Anthropic files end mid-event; joining them with a blank line terminates it.
    raws = [p.read_bytes() for p in ALL_FILES]
    joined = b"".join(r if r.endswith(b"\n\n") else r.rstrip(b"\n") + b"\n\n" for r in raws)
    events, decoder = decode_pieces([joined])
    expected: list[Ev] = []
    for r in raws:
        expected += reference_events(r if r.endswith(b"\n\n") else r.rstrip(b"\n") + b"\n\n")
    assert events == expected
    assert len(events) == sum(EXPECTED_COUNTS.values()) + len(ANTHROPIC_FILES)
    assert decoder.pending is False


@pytest.mark.parametrize("name", ["openai-real-streams/finish-length.sse", "anthropic-streams/refusal-response.sse"])
def test_every_two_piece_split(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    expected = reference_events(raw)
    for i in range(len(raw) + 1):
        events, _ = decode_pieces([raw[:i], raw[i:]])
        assert events == expected, f"split at byte {i}"


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("path", OPENAI_FILES[:3], ids=_ids(OPENAI_FILES[:3]))
def test_fixture_other_line_endings(path: Path, eol: bytes) -> None:
    raw = path.read_bytes()
    converted = raw.replace(b"\n", eol)
    expected = reference_events(raw)
    assert decode_pieces([converted])[0] == expected
    events, decoder = decode_pieces(bytewise(converted))
    assert events == expected
    assert decoder.pending is False


# ----------------------------------------------------------------------------- decoder rules


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a\n\n", [("message", b"a")]),
        (b"data: a\r\n\r\n", [("message", b"a")]),
        (b"data: a\r\rdata: b\r\rdata: c", [("message", b"a"), ("message", b"b")]),
        (b"data: a\r\ndata: b\n\r\n", [("message", b"a\nb")]),
        (b"data:a\n\n", [("message", b"a")]),
        (b"data:  a\n\n", [("message", b" a")]),
        (b"data\n\n", [("message", b"")]),
        (b"data: \n\n", [("message", b"")]),
        (b"data: a\ndata: b\ndata: c\n\n", [("message", b"a\nb\nc")]),
        (b"data: a\ndata:\ndata: c\n\n", [("message", b"a\n\nc")]),
        (b": keep-alive\n\ndata: a\n\n", [("message", b"a")]),
        (b":\n:comment\ndata: a\n: inside\n\n", [("message", b"a")]),
        (b"event: ping\ndata: {}\n\ndata: x\n\n", [("ping", b"{}"), ("message", b"x")]),
        (b"event:delta\ndata:1\n\n", [("delta", b"1")]),
        (b"event: lonely\n\ndata: x\n\n", [("message", b"x")]),
        (b"foo: bar\ndata: a\nfoo\n\n", [("message", b"a")]),
        (b"data: [DONE]\n\n", [("message", b"[DONE]")]),
        (b"\n\n\n", []),
        (b'data: {"a": 1}\n\ndata: {"b": 2}\n\n', [("message", b'{"a": 1}'), ("message", b'{"b": 2}')]),
    ],
)
def test_decoder_rules(stream: bytes, expected: list[Ev]) -> None:
    assert decode_pieces([stream])[0] == expected
    assert decode_pieces(bytewise(stream))[0] == expected


def test_id_and_retry_fields() -> None:
    events = SSEDecoder().feed(b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\nid\nretry: x\ndata: c\n\n")
    assert [(e.data, e.id, e.retry) for e in events] == [(b"a", "7", 1500), (b"b", "7", 1500), (b"c", "", 1500)]


@pytest.mark.parametrize("empty_feeds", [0, 1, 2])
def test_cr_at_end_of_feed_then_lf_is_one_line_end(empty_feeds: int) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # An empty read between the CR and the LF changes nothing.
    for _ in range(empty_feeds):
        assert decoder.feed(b"") == []
    # If "\r" + "\n" counted as two line ends, "a" would be dispatched alone here.
    assert decoder.feed(b"\ndata: b\r") == []
    for _ in range(empty_feeds):
        assert decoder.feed(b"") == []
    assert pairs(decoder.feed(b"\n\r\n")) == [("message", b"a\nb")]
    assert decoder.pending is False


def test_cr_at_end_of_feed_then_text() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert pairs(decoder.feed(b"data: b\n\n")) == [("message", b"a\nb")]


def test_lone_cr_terminated_event_dispatched_in_the_same_feed() -> None:
    # "\r\r" ends the event whatever comes next (a following "\n" would only be an empty line).
    decoder = SSEDecoder()
    assert pairs(decoder.feed(b"data: a\r\r")) == [("message", b"a")]
    assert decoder.pending is False


def test_crlf_terminated_event_split_inside_last_crlf() -> None:
    decoder = SSEDecoder()
    got = pairs(decoder.feed(b"data: a\r\n\r"))
    got += pairs(decoder.feed(b"\n"))
    assert got == [("message", b"a")]
    assert decoder.pending is False


@pytest.mark.parametrize(
    "tail",
    [b'data: {"x":1}', b'data: {"x":1}\n', b'data: {"x":1}\r\n', b"data: [DONE]\n", b"dat", b"event: e\ndata: y\n"],
)
def test_unterminated_final_event_not_dispatched(tail: bytes) -> None:
    decoder = SSEDecoder()
    assert pairs(decoder.feed(b"data: first\n\n" + tail)) == [("message", b"first")]
    assert decoder.pending is True


@pytest.mark.parametrize("stream", [b"", b"data: a\n\n", b": keep-alive\n\n", KEEPALIVE, b"\n"])
def test_not_pending(stream: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(stream)
    assert decoder.pending is False


def test_keepalive_is_a_comment() -> None:
    assert KEEPALIVE == b": keep-alive\n\n"
    assert SSEDecoder().feed(KEEPALIVE * 3) == []


def test_event_helpers() -> None:
    (event,) = SSEDecoder().feed('data: {"t":"héllo"}\n\n'.encode())
    assert event.json() == {"t": "héllo"}
    assert event.text == '{"t":"héllo"}'
    assert event == ServerSentEvent(b'{"t":"h\xc3\xa9llo"}')
    assert event != ServerSentEvent(b'{"t":"h\xc3\xa9llo"}', event="other")


# ----------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("path", OPENAI_FILES, ids=_ids(OPENAI_FILES))
def test_encoder_reproduces_openai_capture(path: Path) -> None:
    raw = path.read_bytes()
    events = SSEDecoder().feed(raw)
    *chunks, last = events
    assert last.data == b"[DONE]"
    encoded = []
    for event in chunks:
        obj = orjson.loads(event.data)
        # orjson keeps key order and writes compact JSON exactly as OpenAI does.
        assert orjson.dumps(obj) == event.data
        frame = encode_json(obj)
        assert frame == b"data: " + event.data + b"\n\n"
        assert encode_data(event.data) == frame
        encoded.append(frame)
    assert b"".join(encoded) + DONE == raw
    assert raw.endswith(DONE)


def test_done_constant() -> None:
    assert DONE == b"data: [DONE]\n\n"
    assert encode_data(b"[DONE]") == DONE
    for path in OPENAI_FILES:
        assert path.read_bytes().rsplit(b"\n\n", 2)[-2] + b"\n\n" == DONE


@pytest.mark.parametrize(
    ("obj", "frame"),
    [
        ({"a": 1, "b": None}, b'data: {"a":1,"b":null}\n\n'),
        ({"content": "line\nnext"}, b'data: {"content":"line\\nnext"}\n\n'),
        ({"t": "é"}, 'data: {"t":"é"}\n\n'.encode()),
        ([], b"data: []\n\n"),
    ],
)
def test_encode_json_frames(obj: object, frame: bytes) -> None:
    assert encode_json(obj) == frame
    (event,) = SSEDecoder().feed(frame)
    assert event.json() == obj
