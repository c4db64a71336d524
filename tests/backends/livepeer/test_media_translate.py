"""OpenAI media requests ⇄ Livepeer batch pipelines (pure translation)."""

from __future__ import annotations

from typing import Any

import pytest

from oai_bridge.backends.livepeer.media import (
    audio_to_text_fields,
    parse_audio_url,
    parse_images,
    parse_transcript,
    resolve_url,
    text_to_image_body,
    text_to_speech_body,
)
from oai_bridge.errors import InvalidRequest, UpstreamError
from oai_bridge.media import ImageGenerationRequest, SpeechRequest, TranscriptionRequest

GW = "http://gw.example:8935"


def image_request(**fields: Any) -> ImageGenerationRequest:
    return ImageGenerationRequest.model_validate({"prompt": "a red fox", **fields}, strict=True)


def test_text_to_image_always_sends_size_and_model() -> None:
    assert text_to_image_body(image_request()) == {
        "prompt": "a red fox",
        "model_id": "stabilityai/sdxl-turbo",
        "width": 1024,
        "height": 1024,
        "num_images_per_prompt": 1,
    }
    body = text_to_image_body(image_request(model="ByteDance/SDXL-Lightning", n=2, size="512x768"))
    assert (body["model_id"], body["width"], body["height"], body["num_images_per_prompt"]) == (
        "ByteDance/SDXL-Lightning",
        512,
        768,
        2,
    )
    assert text_to_image_body(image_request(model="dall-e-3"))["model_id"] == "stabilityai/sdxl-turbo"


def test_livepeer_knobs_from_extra_body() -> None:
    body = text_to_image_body(
        image_request(
            negative_prompt="blurry",
            guidance_scale=2,
            num_inference_steps=4,
            seed=7,
            loras={"nerijs/pixel-art-xl": 1.2},
            safety_check=False,
            unknown_thing="ignored",
        )
    )
    assert body["negative_prompt"] == "blurry" and body["guidance_scale"] == 2 and body["seed"] == 7
    assert body["loras"] == '{"nerijs/pixel-art-xl":1.2}' and body["safety_check"] is False
    assert "unknown_thing" not in body


@pytest.mark.parametrize(("key", "value"), [("seed", "7"), ("guidance_scale", True), ("safety_check", 1)])
def test_knobs_of_the_wrong_type_are_400(key: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        text_to_image_body(image_request(**{key: value}))
    assert info.value.param == key


def test_image_urls_are_resolved() -> None:
    body = {
        "images": [
            {"nsfw": False, "seed": 11, "url": "/stream/abc/1.png"},
            {"nsfw": True, "seed": 12, "url": "https://bucket.example/2.png"},
        ]
    }
    assert parse_images(body, gateway_url=GW + "/") == [
        {"url": GW + "/stream/abc/1.png", "nsfw": False, "seed": 11},
        {"url": "https://bucket.example/2.png", "nsfw": True, "seed": 12},
    ]
    assert resolve_url("data:image/png;base64,AA", GW) == "data:image/png;base64,AA"


@pytest.mark.parametrize("body", [{}, {"images": []}, {"images": [{"nsfw": False}]}, [], None])
def test_malformed_image_answers_are_upstream_errors(body: Any) -> None:
    with pytest.raises(UpstreamError):
        parse_images(body, gateway_url=GW)


def transcription(**fields: Any) -> TranscriptionRequest:
    return TranscriptionRequest.model_validate(
        {"file": b"RIFF", "filename": "a.wav", "content_type": "audio/wav", **fields}
    )


def test_audio_to_text_fields() -> None:
    assert audio_to_text_fields(transcription(model="whisper-1")) == {
        "model_id": "openai/whisper-large-v3",
        "return_timestamps": "true",
    }
    assert audio_to_text_fields(transcription(model="distil-whisper/x", timestamp_granularities=["word"])) == {
        "model_id": "distil-whisper/x",
        "return_timestamps": "word",
    }


def test_parse_transcript_segments_and_words() -> None:
    body = {
        "chunks": [{"text": " Hi.", "timestamp": [0.0, 1.0]}, {"text": " Bye.", "timestamp": [1.0, None]}],
        "text": " Hi. Bye.",
    }
    transcript = parse_transcript(body, request=transcription())
    assert transcript["text"] == "Hi. Bye."
    assert transcript["segments"] == [
        {"start": 0.0, "end": 1.0, "text": " Hi."},
        {"start": 1.0, "end": 1.0, "text": " Bye."},
    ]
    assert transcript["words"] == [] and transcript["duration"] == 1.0
    words = parse_transcript(body, request=transcription(timestamp_granularities=["word"]))
    assert words["segments"] == [{"start": 0.0, "end": 1.0, "text": "Hi. Bye."}] and len(words["words"]) == 2
    with pytest.raises(UpstreamError):
        parse_transcript({"chunks": []}, request=transcription())


def test_text_to_speech_description() -> None:
    def speech(**fields: Any) -> SpeechRequest:
        return SpeechRequest.model_validate({"input": "Hello", **fields}, strict=True)

    assert text_to_speech_body(speech(model="tts-1", voice="alloy")) == {
        "model_id": "parler-tts/parler-tts-large-v1",
        "text": "Hello",
    }
    assert text_to_speech_body(speech(voice="A calm female voice."))["description"] == "A calm female voice."
    assert text_to_speech_body(speech(voice="alloy", instructions="Whisper."))["description"] == "Whisper."
    assert parse_audio_url({"audio": {"url": "/stream/x/a.wav"}}, gateway_url=GW) == GW + "/stream/x/a.wav"
    with pytest.raises(UpstreamError):
        parse_audio_url({"audio": {}}, gateway_url=GW)


def test_video_results() -> None:
    from oai_bridge.backends.livepeer.media import parse_video_result

    assert parse_video_result({"status": "processing"}, gateway_url=GW) == ("processing", None)
    done = {"result": {"images": [{"nsfw": False, "seed": 1, "url": "/stream/v/1.mp4"}]}, "status": "complete"}
    assert parse_video_result(done, gateway_url=GW) == ("complete", GW + "/stream/v/1.mp4")
    failed = {"result": {"error": {"message": "Internal Server Error"}}, "status": "complete"}
    assert parse_video_result(failed, gateway_url=GW) == ("failed", "Internal Server Error")
    assert parse_video_result({"status": "complete", "result": {}}, gateway_url=GW) == (
        "failed",
        "the gateway finished the job without a video",
    )
