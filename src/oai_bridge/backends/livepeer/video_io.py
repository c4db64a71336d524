"""The Livepeer backend's video jobs: OpenAI's async video resource over ``/image-to-video``
submitted with ``Prefer: respond-async`` and polled at ``/image-to-video/result``.

Jobs live in the worker that created them (a bounded in-memory table; with ``--workers`` > 1 a
poll that reaches another worker gets 404). A finished video is fetched from the gateway at once,
since the gateway's media store keeps only a few items, and kept with its job.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass

from ...errors import InvalidRequest, NotFound, UpstreamError
from ...media import Video, VideoCreateRequest
from .media import image_to_video_fields, parse_video_result
from .media_io import LivepeerMediaMixin

MAX_JOBS = 256
#: What an image-to-video job usually takes on the network; progress is estimated against it.
EXPECTED_SECONDS = 60.0


@dataclass
class VideoJob:
    video: Video
    request_id: str
    started: float
    content: bytes | None = None


class LivepeerVideoMixin(LivepeerMediaMixin):
    """``create_video``, ``get_video``, ``video_content`` on top of the media calls."""

    _video_jobs: OrderedDict[str, VideoJob] | None = None

    def _jobs(self) -> OrderedDict[str, VideoJob]:
        if self._video_jobs is None:
            self._video_jobs = OrderedDict()
        return self._video_jobs

    async def create_video(self, request: VideoCreateRequest) -> Video:
        self._check_kind(request.model, "image-to-video", endpoint="/v1/videos")
        answer = await self._post_pipeline(
            "/image-to-video",
            fields=image_to_video_fields(request),
            files={"image": (request.filename, request.file, request.content_type)},
            headers={"Prefer": "respond-async"},
            ok=(200, 202),
        )
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise UpstreamError("The Livepeer gateway accepted the video job without a request id.")
        video: Video = {
            "id": "video_" + os.urandom(12).hex(),
            "object": "video",
            "model": request.model or "stabilityai/stable-video-diffusion-img2vid-xt",
            "status": "queued",
            "progress": 0,
            "created_at": int(time.time()),
            "completed_at": None,
            "expires_at": None,
            "prompt": request.prompt,
            "size": request.size or "1280x720",
            "seconds": request.seconds or "4",
            "remixed_from_video_id": None,
            "error": None,
        }
        jobs = self._jobs()
        jobs[video["id"]] = VideoJob(video, request_id, time.monotonic())
        while len(jobs) > MAX_JOBS:
            jobs.popitem(last=False)
        return video

    def _job(self, video_id: str) -> VideoJob:
        job = self._jobs().get(video_id)
        if job is None:
            raise NotFound(f"No video job with id {video_id!r}.", param="video_id", code="video_not_found")
        return job

    async def get_video(self, video_id: str) -> Video:
        job = self._job(video_id)
        video = job.video
        if video["status"] in ("completed", "failed"):
            return video
        answer = await self._post_pipeline("/image-to-video/result", json={"request_id": job.request_id}, ok=(200, 202))
        state, detail = parse_video_result(answer, gateway_url=str(self.options.gateway_url))
        if state == "processing":
            video["status"] = "in_progress"
            elapsed = time.monotonic() - job.started
            video["progress"] = max(video["progress"], min(95, int(100 * elapsed / EXPECTED_SECONDS)))
        elif state == "failed":
            video["status"] = "failed"
            video["error"] = {"code": "generation_failed", "message": detail or "the video job failed"}
        else:
            assert detail is not None
            job.content = await self.fetch_media(detail)
            video["status"] = "completed"
            video["progress"] = 100
            video["completed_at"] = int(time.time())
        return video

    async def video_content(self, video_id: str) -> bytes:
        job = self._job(video_id)
        if job.content is None:
            raise InvalidRequest(
                f"The video {video_id!r} is not ready (status {job.video['status']}).",
                param="video_id",
                code="video_not_ready",
            )
        return job.content
