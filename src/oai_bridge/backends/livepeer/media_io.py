"""The Livepeer backend's media capabilities (I/O): batch pipeline calls and prompt media fetches.

A mixin of ``LivepeerBackend``: it uses the backend's pooled session, headers, timeouts and error
mapping, and the pure translation in ``media.py``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import orjson

from ...errors import UpstreamError, UpstreamTimeout
from ...media import ImageData, ImageGenerationRequest, ImagesResponse
from .media import parse_images, text_to_image_body
from .translate import error_from_response
from .transport import gateway_errors

MEDIA_FETCH_TIMEOUT = 30.0


class LivepeerMediaMixin:
    """``generate_images`` (more pipelines follow). Expects the attributes of ``LivepeerBackend``."""

    options: Any
    _headers: dict[str, str]

    def _http(self) -> aiohttp.ClientSession:  # provided by LivepeerBackend
        raise NotImplementedError

    def _url(self, path: str) -> str:
        return str(self.options.gateway_url).rstrip("/") + path

    async def _post_pipeline(self, path: str, *, json: dict[str, Any] | None = None) -> Any:
        """POST to a batch pipeline and return its decoded JSON answer, or raise a ``BridgeError``."""
        headers = {**self._headers, "Content-Type": "application/json"}
        try:
            async with asyncio.timeout(self.options.request_timeout):
                with gateway_errors(str(self.options.gateway_url)):
                    async with self._http().post(self._url(path), data=orjson.dumps(json), headers=headers) as resp:
                        raw = await resp.read()
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise UpstreamTimeout(
                f"The Livepeer gateway did not answer {path} within {self.options.request_timeout:g} s."
            ) from None
        if status != 200:
            after = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            raise error_from_response(status, raw, retry_after=after)
        if not raw.strip():
            raise UpstreamError("The Livepeer gateway answered 200 with an empty body.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"The Livepeer gateway answered {path} with invalid JSON.") from None

    async def fetch_media(self, url: str) -> bytes:
        """The bytes behind a media URL the gateway returned (fetch promptly: its store is small)."""
        if url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, ValueError):
                raise UpstreamError("The Livepeer gateway returned an unreadable data URL.") from None
        try:
            async with asyncio.timeout(MEDIA_FETCH_TIMEOUT):
                with gateway_errors(str(self.options.gateway_url)):
                    async with self._http().get(url, headers=self._headers) as resp:
                        if resp.status != 200:
                            raise UpstreamError(
                                f"Fetching generated media from the Livepeer gateway failed (HTTP {resp.status}); "
                                "its in-memory store keeps only a few recent items."
                            )
                        return await resp.read()
        except TimeoutError:
            raise UpstreamTimeout("Fetching generated media from the Livepeer gateway timed out.") from None

    async def generate_images(self, request: ImageGenerationRequest) -> ImagesResponse:
        answer = await self._post_pipeline("/text-to-image", json=text_to_image_body(request))
        images = parse_images(answer, gateway_url=str(self.options.gateway_url))
        data: list[ImageData] = []
        if request.wants_b64:
            blobs = await asyncio.gather(*(self.fetch_media(image["url"]) for image in images))
            for image, blob in zip(images, blobs, strict=True):
                item: ImageData = {"b64_json": base64.b64encode(blob).decode("ascii"), "nsfw": image["nsfw"]}
                if image["seed"] is not None:
                    item["seed"] = image["seed"]
                data.append(item)
        else:
            for image in images:
                item = {"url": image["url"], "nsfw": image["nsfw"]}
                if image["seed"] is not None:
                    item["seed"] = image["seed"]
                data.append(item)
        return {"created": int(time.time()), "data": data}
