"""OpenAI's video resource with the real SDK (3.x; openai 1.x has no `videos`) over the
Livepeer image-to-video pipeline, asynchronous on the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from livestack import Stack, sdk_client

from oai_bridge.simulators.livepeer_media import is_mp4, make_png

# The SDK warns that OpenAI's own Sora service is being retired; the resource shape is what we serve.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture
def oai(json_stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk_client(json_stack) as client:
        yield client


def test_create_poll_download(oai: openai.OpenAI, json_stack: Stack) -> None:
    video = oai.videos.create(
        prompt="the fox runs",
        input_reference=("fox.png", make_png(128, 72), "image/png"),
        size="1280x720",
        seconds="4",
    )
    assert (video.object, video.status, video.progress, video.size, video.seconds) == (
        "video",
        "queued",
        0,
        "1280x720",
        "4",
    )
    sent = [r for r in json_stack.llm_requests() if r.get("path") == "/image-to-video"][-1]
    assert sent["form"] == {
        "model_id": "stabilityai/stable-video-diffusion-img2vid-xt",
        "width": "1280",
        "height": "720",
    }
    assert sent["headers"]["Prefer"] == "respond-async"  # type: ignore[index]
    statuses = []
    deadline = time.monotonic() + 20
    while video.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        video = oai.videos.retrieve(video.id)
        statuses.append(video.status)
    assert video.status == "completed" and video.progress == 100 and video.completed_at is not None
    assert "in_progress" in statuses
    content = oai.videos.download_content(video.id).read()
    assert is_mp4(content)


def test_video_needs_an_input_image_and_a_known_id(oai: openai.OpenAI, json_stack: Stack) -> None:
    before = len([r for r in json_stack.llm_requests() if r.get("path") == "/image-to-video"])
    with pytest.raises(openai.BadRequestError) as info:
        oai.videos.create(prompt="no image")
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "message": "The Livepeer network only makes videos from an image: send one as 'input_reference'.",
        "type": "invalid_request_error",
        "param": "input_reference",
        "code": "missing_required_parameter",
    }
    assert len([r for r in json_stack.llm_requests() if r.get("path") == "/image-to-video"]) == before
    with pytest.raises(openai.NotFoundError):
        oai.videos.retrieve("video_unknown")
    response = httpx.get(json_stack.base_url + "/videos/video_unknown/content", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "video_not_found"
