"""``POST /v1/embeddings``: the request, the response, and the ``base64`` encoding (pure).

Both official SDKs ask for ``encoding_format: "base64"`` when the caller sets none and decode it
client-side as little-endian float32 (reference ``openai-anthropic-ollama.md`` §4.3); openai-node
decodes unconditionally, so float arrays sent to it become silently wrong vectors. Backends return
float vectors or base64 strings, and ``encode_response`` makes the answer match what was asked.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "decode_base64",
    "embedding_response",
    "encode_base64",
    "encode_response",
]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(isinstance(v, list) and not v for v in value)):
            raise ValueError("input must not be empty")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("at most 2048 inputs are allowed")
        return value

    @property
    def texts(self) -> list[str] | None:
        """The inputs as a list of strings, or ``None`` when they are token arrays."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(v, str) for v in self.input):
            return [str(v) for v in self.input]
        return None

    @property
    def wants_base64(self) -> bool:
        return self.encoding_format == "base64"


class Embedding(TypedDict):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(TypedDict):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


def encode_base64(vector: list[float]) -> str:
    """A float vector as OpenAI's base64: the raw little-endian float32 array."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def embedding_response(
    vectors: list[list[float]], *, model: str, prompt_tokens: int, encoding: str | None
) -> EmbeddingResponse:
    data: list[Embedding] = [
        {"object": "embedding", "index": i, "embedding": encode_base64(v) if encoding == "base64" else v}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def encode_response(response: dict[str, Any], encoding: str | None) -> dict[str, Any]:
    """An upstream's embeddings answer with every vector in the asked encoding (an upstream that
    ignored ``encoding_format`` answers floats; one that honoured it answers base64)."""
    want_base64 = encoding == "base64"
    for item in response.get("data") or []:
        vector = item.get("embedding")
        if want_base64 and isinstance(vector, list):
            item["embedding"] = encode_base64([float(x) for x in vector])
        elif not want_base64 and isinstance(vector, str):
            item["embedding"] = decode_base64(vector)
    return response
