"""OpenAI media wire types (images so far): requests validated with pydantic, responses as
TypedDicts, and the pure helpers every media backend shares (``size`` parsing)."""

from __future__ import annotations

import re
from typing import Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidRequest

__all__ = ["ImageData", "ImageGenerationRequest", "ImagesResponse", "parse_size"]

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
MIN_SIDE, MAX_SIDE = 64, 2048


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations``. Backend-specific knobs (Livepeer's ``negative_prompt``,
    ``guidance_scale``, ``num_inference_steps``, ``seed``, ``loras``, ``safety_check``) arrive as
    extra keys (the SDK's ``extra_body``)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: str | None = None
    style: str | None = None
    user: str | None = None

    @property
    def count(self) -> int:
        return self.n or 1

    @property
    def wants_b64(self) -> bool:
        return self.response_format == "b64_json"


class ImageData(TypedDict):
    url: NotRequired[str]
    b64_json: NotRequired[str]
    revised_prompt: NotRequired[str]
    nsfw: NotRequired[bool]  # extension: the gateway's safety-checker flag (the SDK keeps extra keys)
    seed: NotRequired[int]  # extension: the seed the image was generated with


class ImagesResponse(TypedDict):
    created: int
    data: list[ImageData]


def parse_size(size: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """``"WxH"`` → ``(W, H)``; ``None``/``"auto"`` → ``default``. Sides 64–2048, multiples of 8
    (what diffusion pipelines accept)."""
    if size is None or size == "auto":
        return default
    match = _SIZE.match(size)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
        if MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE and width % 8 == 0 and height % 8 == 0:
            return width, height
    raise InvalidRequest(
        f"Invalid size {size!r}: use 'WIDTHxHEIGHT' with each side from {MIN_SIDE} to {MAX_SIDE} pixels "
        "and a multiple of 8 (e.g. '1024x1024'), or 'auto'.",
        param="size",
        code="invalid_value",
    )
