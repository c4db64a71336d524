"""Vision in chat (an image-to-text model captions the image) and models used on the wrong endpoint."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import openai
import pytest
from livestack import Stack, sdk_client, start_stack

from oai_bridge.simulators.livepeer_media import make_png, make_wav

pytestmark = pytest.mark.sdk

BLIP = "Salesforce/blip-image-captioning-large"
PNG_URL = "data:image/png;base64," + base64.b64encode(make_png(320, 200)).decode()
VISION = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "a photo of"}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
    }
]


@pytest.fixture
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk_client(stack) as client:
        yield client


def test_vision_chat_non_stream(oai: openai.OpenAI, stack: Stack) -> None:
    result = oai.chat.completions.create(model=BLIP, messages=VISION)  # type: ignore[arg-type]
    assert result.choices[0].message.content == "a photo of a simulated caption of a 320x200 image"
    assert result.choices[0].finish_reason == "stop"
    sent = [r for r in stack.llm_requests() if r.get("path") == "/image-to-text"][-1]
    assert sent["form"] == {"model_id": BLIP, "prompt": "a photo of"}


def test_vision_chat_stream(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model=BLIP, messages=VISION) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "a photo of a simulated caption of a 320x200 image"
    assert final.choices[0].message.role == "assistant"


def test_vision_needs_one_image(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=BLIP, messages=[{"role": "user", "content": "no image here"}])
    assert info.value.body["param"] == "messages[0].content"  # type: ignore[index]


def test_models_on_the_wrong_endpoint_are_400(oai: openai.OpenAI, stack: Stack) -> None:
    before = len(stack.llm_requests())
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="stabilityai/sdxl-turbo", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "message": "The model 'stabilityai/sdxl-turbo' serves image-to-image / text-to-image on the Livepeer "
        "network; chat needs a model for image-to-text / llm.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "wrong_model_kind",
    }
    with pytest.raises(openai.BadRequestError) as info:
        oai.images.generate(prompt="x", model="openai/whisper-large-v3")
    assert info.value.body["code"] == "wrong_model_kind"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        oai.audio.transcriptions.create(model=BLIP, file=("a.wav", make_wav(2.0), "audio/wav"))
    assert info.value.body["code"] == "wrong_model_kind"  # type: ignore[index]
    assert len(stack.llm_requests()) == before


@pytest.fixture(scope="module")
def caption_stack() -> Iterator[Stack]:
    stack = start_stack("json", vision="caption")
    yield stack
    stack.stop()


def test_caption_mode_inlines_image_captions_for_an_llm(caption_stack: Stack) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PNG_URL}},
            ],
        }
    ]
    with openai.OpenAI(
        base_url=caption_stack.base_url, api_key="x", _strict_response_validation=True, max_retries=0
    ) as client:
        result = client.chat.completions.create(model="meta-llama/Meta-Llama-3.1-8B-Instruct", messages=messages)  # type: ignore[arg-type]
    sent = [r for r in caption_stack.llm_requests() if r.get("json") and "messages" in r["json"]][-1]["json"]
    inlined = "What is in this picture?\n[Image: a simulated caption of a 320x200 image]"
    assert sent["messages"] == [{"role": "user", "content": inlined}]
    assert result.choices[0].message.content == "Simulated reply to: " + " ".join(inlined.split())
    captioned = [r for r in caption_stack.llm_requests() if r.get("path") == "/image-to-text"][-1]
    assert captioned["form"] == {"model_id": BLIP}


def test_wrong_kind_on_a_stream_is_a_real_400(stack: Stack) -> None:
    import httpx

    response = httpx.post(
        stack.base_url + "/chat/completions",
        json={"model": "openai/whisper-large-v3", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "wrong_model_kind"
