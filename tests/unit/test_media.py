"""OpenAI media helpers: sizes, transcript formats, WAV → PCM."""

from __future__ import annotations

import io
import wave

import orjson
import pytest
from openai.types.audio import TranscriptionVerbose

from oai_bridge.errors import InvalidRequest
from oai_bridge.media import Transcript, format_transcript, parse_size, wav_to_pcm

TRANSCRIPT: Transcript = {
    "text": "Hello there. General Kenobi.",
    "segments": [
        {"start": 0.0, "end": 1.5, "text": " Hello there."},
        {"start": 1.5, "end": 3725.25, "text": " General Kenobi."},
    ],
    "words": [],
    "duration": 3725.25,
    "language": None,
}


@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, (1024, 1024)), ("auto", (1024, 1024)), ("512x768", (512, 768)), ("64x2048", (64, 2048))],
)
def test_sizes(size: str | None, expected: tuple[int, int]) -> None:
    assert parse_size(size, (1024, 1024)) == expected


@pytest.mark.parametrize("size", ["1024", "1024x", "x1024", "1000x1001", "32x32", "4096x4096", "1024X1024", "-8x8"])
def test_bad_sizes_are_400_naming_size(size: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_size(size, (1024, 1024))
    assert info.value.status == 400 and info.value.param == "size"


def test_text_srt_vtt_json() -> None:
    body, ctype = format_transcript(TRANSCRIPT, "text")
    assert (body, ctype) == (b"Hello there. General Kenobi.\n", "text/plain; charset=utf-8")
    body, _ = format_transcript(TRANSCRIPT, "srt")
    assert body.decode() == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 01:02:05,250\nGeneral Kenobi.\n"
    )
    body, _ = format_transcript(TRANSCRIPT, "vtt")
    assert body.decode() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n00:00:01.500 --> 01:02:05.250\nGeneral Kenobi.\n"
    )
    body, ctype = format_transcript(TRANSCRIPT, "json")
    assert orjson.loads(body) == {"text": "Hello there. General Kenobi."} and ctype == "application/json"


def test_verbose_json_validates_with_the_sdk_type() -> None:
    words: Transcript = {**TRANSCRIPT, "words": [{"start": 0.0, "end": 0.5, "text": " Hello"}]}
    body, _ = format_transcript(words, "verbose_json", granularities=["word", "segment"])
    parsed = TranscriptionVerbose.model_validate(orjson.loads(body), strict=False)
    assert parsed.duration == 3725.25 and parsed.language == "english"
    assert parsed.segments is not None and [s.text for s in parsed.segments] == [" Hello there.", " General Kenobi."]
    assert parsed.words is not None and parsed.words[0].word == "Hello"


def test_wav_to_pcm() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x01\x00\xff\x7f")
    assert wav_to_pcm(buf.getvalue()) == (b"\x01\x00\xff\x7f", 16000)
    with pytest.raises(ValueError):
        wav_to_pcm(b"RIFFnope")


@pytest.mark.parametrize("with_numpy", [True, False])
def test_resample_pcm16_to_24k(monkeypatch: pytest.MonkeyPatch, with_numpy: bool) -> None:
    import array

    from oai_bridge.media import resample_pcm16

    if not with_numpy:
        monkeypatch.setitem(__import__("sys").modules, "numpy", None)  # import numpy → ImportError
    ramp = array.array("h", range(0, 1600, 100)).tobytes()  # 16 samples at 16 kHz: 0, 100, ..., 1500
    out = array.array("h")
    out.frombytes(resample_pcm16(ramp, 16000))
    assert len(out) == 24
    assert list(out[:7]) == [0, 67, 133, 200, 267, 333, 400]  # every 2/3 of a sample, linear
    assert out[-1] == 1500  # clamped at the last sample
    assert resample_pcm16(ramp, 24000) == ramp
