"""Images and audio with the real openai SDK (strict validation) through the bridge to the simulator."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from livestack import Stack, sdk_client, start_stack

from oai_bridge.simulators.livepeer_media import make_png, make_wav, png_size, transcript

pytestmark = pytest.mark.sdk


@pytest.fixture
def oai(json_stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk_client(json_stack) as client:
        yield client


def media_requests(stack: Stack, path: str) -> list[dict[str, object]]:
    return [r for r in stack.llm_requests() if r.get("path") == path]


def test_images_generate_urls(oai: openai.OpenAI, json_stack: Stack) -> None:
    result = oai.images.generate(prompt="a red fox", n=2, size="512x768")
    assert len(result.data) == 2
    sent = media_requests(json_stack, "/text-to-image")[-1]["json"]
    assert sent == {
        "prompt": "a red fox",
        "model_id": "stabilityai/sdxl-turbo",
        "width": 512,
        "height": 768,
        "num_images_per_prompt": 2,
    }
    for image in result.data:
        assert image.url is not None and image.url.startswith(json_stack.simulator.url + "/stream/")
        assert png_size(httpx.get(image.url, timeout=10).content) == (512, 768)


def test_images_generate_b64_json_with_livepeer_knobs(oai: openai.OpenAI, json_stack: Stack) -> None:
    result = oai.images.generate(
        prompt="a blue whale",
        model="dall-e-3",
        size="256x256",
        response_format="b64_json",
        extra_body={"seed": 42, "num_inference_steps": 4},
    )
    assert len(result.data) == 1
    image = result.data[0]
    assert image.b64_json is not None and image.url is None
    assert png_size(base64.b64decode(image.b64_json)) == (256, 256)
    assert image.model_extra == {"nsfw": False, "seed": 42}
    sent = media_requests(json_stack, "/text-to-image")[-1]["json"]
    assert sent["seed"] == 42 and sent["num_inference_steps"] == 4 and sent["model_id"] == "stabilityai/sdxl-turbo"


def test_images_bad_size_never_reaches_the_gateway(oai: openai.OpenAI, json_stack: Stack) -> None:
    before = len(media_requests(json_stack, "/text-to-image"))
    with pytest.raises(openai.BadRequestError) as info:
        oai.images.generate(prompt="x", size="1000x1001")  # type: ignore[arg-type]
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "message": "Invalid size '1000x1001': use 'WIDTHxHEIGHT' with each side from 64 to 2048 pixels and a "
        "multiple of 8 (e.g. '1024x1024'), or 'auto'.",
        "type": "invalid_request_error",
        "param": "size",
        "code": "invalid_value",
    }
    assert len(media_requests(json_stack, "/text-to-image")) == before


def test_image_faults_keep_their_status(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.images.generate(prompt="x [[sim fault=refuse]]")
    assert info.value.status_code == 503
    with pytest.raises(openai.InternalServerError) as info:
        oai.images.generate(prompt="x [[sim fault=masked500]]")
    assert info.value.status_code == 502


WAV = make_wav(7.0)


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcriptions_in_every_format(oai: openai.OpenAI, json_stack: Stack, fmt: str) -> None:
    expected = transcript(7.0)
    text = expected["text"].strip()
    result = oai.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", WAV, "audio/wav"),
        response_format=fmt,  # type: ignore[arg-type]
    )
    sent = media_requests(json_stack, "/audio-to-text")[-1]
    assert sent["form"] == {"model_id": "openai/whisper-large-v3", "return_timestamps": "true"}
    if fmt == "json":
        assert result.text == text  # type: ignore[union-attr]
    elif fmt == "text":
        assert result == text + "\n"
    elif fmt == "srt":
        assert isinstance(result, str)
        assert result.startswith("1\n00:00:00,000 --> 00:00:03,500\nSimulated transcript of a 7.00 second recording.\n")
        assert "2\n00:00:03,500 --> 00:00:07,000\nThis is simulated sentence 2.\n" in result
    elif fmt == "vtt":
        assert isinstance(result, str)
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:03.500\nSimulated transcript")
    else:
        assert result.text == text  # type: ignore[union-attr]
        assert result.duration == 7.0  # type: ignore[union-attr]
        assert [s.end for s in result.segments or []] == [3.5, 7.0]  # type: ignore[union-attr]


def test_transcription_word_timestamps(oai: openai.OpenAI, json_stack: Stack) -> None:
    result = oai.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", WAV, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert media_requests(json_stack, "/audio-to-text")[-1]["form"]["return_timestamps"] == "word"  # type: ignore[index]
    assert result.words is not None
    assert [w.word for w in result.words] == transcript(7.0)["text"].split()


def test_speech_streamed_to_a_wav_file(oai: openai.OpenAI, json_stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "speech.wav"
    with oai.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello from the Livepeer network", response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        response.stream_to_file(out)
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() > 0
    sent = media_requests(json_stack, "/text-to-speech")[-1]["json"]
    assert sent == {"model_id": "parler-tts/parler-tts-large-v1", "text": "Hello from the Livepeer network"}


def test_speech_pcm_is_24khz_raw_samples(oai: openai.OpenAI) -> None:
    wav_bytes = oai.audio.speech.create(
        model="tts-1", voice="A calm voice.", input="Hi there", response_format="wav"
    ).read()
    response = oai.audio.speech.with_raw_response.create(
        model="tts-1", voice="A calm voice.", input="Hi there", response_format="pcm"
    )
    assert response.headers["content-type"] == "audio/pcm;rate=24000"
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        rate, frames = wav.getframerate(), wav.getnframes()
        first = wav.readframes(1)
    pcm = response.content
    assert len(pcm) == 2 * round(frames * 24000 / rate)  # OpenAI's pcm: 16-bit mono at 24 kHz
    assert pcm[:2] == first


def test_speech_aac_is_400(oai: openai.OpenAI, json_stack: Stack) -> None:
    before = len(media_requests(json_stack, "/text-to-speech"))
    with pytest.raises(openai.BadRequestError) as info:
        oai.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="aac")
    assert info.value.body["param"] == "response_format"  # type: ignore[index]
    assert info.value.body["code"] == "unsupported_value"  # type: ignore[index]
    assert len(media_requests(json_stack, "/text-to-speech")) == before


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("mp3", "audio/mpeg"), ("flac", "audio/flac"), ("opus", "audio/ogg")]
)
def test_speech_encoded_formats(oai: openai.OpenAI, fmt: str, content_type: str) -> None:
    soundfile = pytest.importorskip("soundfile", reason="the optional 'audio' extra is not installed here")
    response = oai.audio.speech.with_raw_response.create(
        model="tts-1",
        voice="alloy",
        input="Encoded speech",
        response_format=fmt,  # type: ignore[arg-type]
    )
    assert response.headers["content-type"] == content_type
    data, rate = soundfile.read(io.BytesIO(response.content))
    assert rate == 16000 and len(data) > 0


@pytest.fixture(scope="module")
def small_upload_stack() -> Iterator[Stack]:
    stack = start_stack("json", max_upload_bytes=50_000)
    yield stack
    stack.stop()


def test_oversized_and_malformed_uploads(small_upload_stack: Stack) -> None:
    url = small_upload_stack.base_url + "/audio/transcriptions"
    big = make_wav(5.0)  # 160 kB > 50 kB
    response = httpx.post(url, files={"file": ("a.wav", big, "audio/wav")}, data={"model": "whisper-1"}, timeout=10)
    assert response.status_code == 413
    assert orjson.loads(response.content) == {
        "error": {
            "message": "The request body is larger than 50000 bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    response = httpx.post(url, json={"model": "whisper-1"}, timeout=10)
    assert response.status_code == 415
    assert orjson.loads(response.content) == {
        "error": {
            "message": "This endpoint takes multipart/form-data.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_content_type",
        }
    }
    response = httpx.post(url, files={"other": ("a.wav", b"x", "audio/wav")}, data={"model": "whisper-1"}, timeout=10)
    assert response.status_code == 400
    assert orjson.loads(response.content)["error"] == {
        "message": "Missing required parameter: 'file'.",
        "type": "invalid_request_error",
        "param": "file",
        "code": "missing_required_parameter",
    }
    assert not [r for r in small_upload_stack.llm_requests() if r.get("path") == "/audio-to-text"]


def test_images_edit_and_upscale(oai: openai.OpenAI, json_stack: Stack) -> None:
    source = make_png(320, 240, (10, 20, 30))
    edited = oai.images.edit(image=("in.png", source, "image/png"), prompt="make it blue", extra_body={"strength": 0.5})
    assert edited.data[0].url is not None
    assert png_size(httpx.get(edited.data[0].url, timeout=10).content) == (320, 240)
    sent = media_requests(json_stack, "/image-to-image")[-1]
    assert sent["form"] == {
        "prompt": "make it blue",
        "model_id": "stabilityai/sdxl-turbo",
        "num_images_per_prompt": "1",
        "strength": "0.5",
    }
    assert sent["files"]["image"]["size"] == len(source)  # type: ignore[index]
    upscaled = oai.images.edit(
        image=[("in.png", source, "image/png")],  # sent as image[]
        prompt="sharper",
        model="stabilityai/stable-diffusion-x4-upscaler",
        response_format="b64_json",
    )
    assert upscaled.data[0].b64_json is not None
    assert png_size(base64.b64decode(upscaled.data[0].b64_json)) == (1280, 960)
    assert media_requests(json_stack, "/upscale")[-1]["form"]["model_id"] == "stabilityai/stable-diffusion-x4-upscaler"  # type: ignore[index]


def test_images_edit_refuses_several_images(oai: openai.OpenAI) -> None:
    png = make_png(64, 64)
    with pytest.raises(openai.BadRequestError) as info:
        oai.images.edit(image=[("a.png", png, "image/png"), ("b.png", png, "image/png")], prompt="merge")
    assert info.value.body["param"] == "image"  # type: ignore[index]


def test_passthrough_route_for_pipelines_without_an_openai_twin(json_stack: Stack) -> None:
    url = json_stack.base_url + "/livepeer/segment-anything-2"
    response = httpx.post(
        url,
        files={"image": ("in.png", make_png(64, 64), "image/png")},
        data={"model_id": "facebook/sam2-hiera-large", "point_coords": "[[10,10]]", "point_labels": "[1]"},
        timeout=10,
    )
    assert response.status_code == 200
    assert set(response.json()) == {"logits", "masks", "scores"}
    assert media_requests(json_stack, "/segment-anything-2")[-1]["form"]["point_coords"] == "[[10,10]]"  # type: ignore[index]
    # media URLs in a pass-through answer come back absolute
    answer = httpx.post(
        json_stack.base_url + "/livepeer/text-to-image",
        json={"prompt": "x", "model_id": "stabilityai/sdxl-turbo"},
        timeout=10,
    ).json()
    assert answer["images"][0]["url"].startswith(json_stack.simulator.url + "/stream/")
    # unknown pipelines and gateway refusals keep OpenAI error bodies
    response = httpx.post(json_stack.base_url + "/livepeer/llm", json={}, timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_pipeline"
    response = httpx.post(
        json_stack.base_url + "/livepeer/text-to-image", json={"prompt": "x [[sim fault=refuse]]"}, timeout=10
    )
    assert response.status_code == 503 and response.json()["error"]["type"] == "service_unavailable_error"


def _error(message: str, type_: str, code: str) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("fault", "status", "body"),
    [
        (
            "refuse",
            503,
            _error(
                "The Livepeer gateway has no orchestrator available for this model right now "
                "(Service Unavailable Error).",
                "service_unavailable_error",
                "upstream_unavailable",
            ),
        ),
        (
            "masked500",
            502,
            _error(
                "The Livepeer gateway failed (HTTP 500: Internal Server Error); the gateway masks the cause, "
                "which is often an orchestrator or runner error.",
                "server_error",
                "upstream_error",
            ),
        ),
        (
            'bad400 msg="unknown lora"',
            400,
            _error(
                "The Livepeer gateway rejected the request: unknown lora", "invalid_request_error", "upstream_rejected"
            ),
        ),
        (
            "close",
            503,
            _error(
                "The Livepeer gateway closed the connection without answering (this is how gateways since "
                "v0.8.7 report that no orchestrator serves the model).",
                "service_unavailable_error",
                "no_orchestrator",
            ),
        ),
        (
            "empty200",
            502,
            _error("The Livepeer gateway answered 200 with an empty body.", "server_error", "upstream_error"),
        ),
    ],
)
def test_media_faults_exact_status_and_body(json_stack: Stack, fault: str, status: int, body: object) -> None:
    response = httpx.post(
        json_stack.base_url + "/images/generations", json={"prompt": f"x [[sim fault={fault}]]"}, timeout=10
    )
    assert response.status_code == status
    assert response.json() == body


@pytest.fixture(scope="module")
def impatient_stack() -> Iterator[Stack]:
    stack = start_stack("json", request_timeout=0.5)
    yield stack
    stack.stop()


def test_slow_pipeline_is_504(impatient_stack: Stack) -> None:
    response = httpx.post(
        impatient_stack.base_url + "/images/generations", json={"prompt": "x [[sim delay=5]]"}, timeout=10
    )
    assert response.status_code == 504
    assert response.json() == _error(
        "The Livepeer gateway did not answer /text-to-image within 0.5 s.", "timeout_error", "upstream_timeout"
    )


def test_images_edit_without_an_image_is_400(json_stack: Stack) -> None:
    response = httpx.post(
        json_stack.base_url + "/images/edits", data={"prompt": "nothing to edit"}, files={}, timeout=10
    )
    assert response.status_code == 415  # no file: httpx sends a form, not multipart
    assert response.json() == {
        "error": {
            "message": "This endpoint takes multipart/form-data.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_content_type",
        }
    }
    response = httpx.post(
        json_stack.base_url + "/images/edits",
        data={"prompt": "nothing to edit"},
        files={"mask": ("m.png", make_png(8, 8), "image/png")},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Missing required parameter: 'image'.",
            "type": "invalid_request_error",
            "param": "image",
            "code": "missing_required_parameter",
        }
    }
