"""Newline-delimited JSON framing (Ollama's streams), sans-IO: bytes in, complete lines out.

A line may arrive split across reads; ``feed`` returns only complete, non-blank lines (``\\r\\n``
tolerated) and keeps the rest; ``flush`` returns a last line the body ended without a newline.
"""

from __future__ import annotations

__all__ = ["NDJSONDecoder"]


class NDJSONDecoder:
    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\n" not in buf:
            self._buf = buf
            return []
        *complete, self._buf = buf.split(b"\n")
        return [line.rstrip(b"\r") for line in complete if line.strip()]

    def flush(self) -> bytes:
        tail, self._buf = self._buf.strip(), b""
        return tail
