"""Server-sent events framing, sans-IO.

The decoder follows the WHATWG event-stream rules that the OpenAI SDKs follow: lines end in LF,
CR or CRLF (also split across reads); ``:`` lines are comments; ``data``/``event``/``id``/``retry``
fields; one space after the colon is dropped; several ``data`` lines join with ``\\n``; an event is
dispatched by a blank line, and one still open at end of input is dropped. Data stays ``bytes`` so
that ``orjson.loads`` reads it without a copy.

The encoder writes what OpenAI writes: ``data: <compact json>\\n\\n``, no ``event:`` lines.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["DONE", "KEEPALIVE", "SSEDecoder", "ServerSentEvent", "encode_data", "encode_json"]

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


class ServerSentEvent:
    __slots__ = ("data", "event", "id", "retry")

    def __init__(self, data: bytes, event: str = "message", id: str | None = None, retry: int | None = None) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry) == (
            other.data,
            other.event,
            other.id,
            other.retry,
        )

    def __repr__(self) -> str:
        return f"ServerSentEvent(event={self.event!r}, data={self.data!r}, id={self.id!r})"


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events completed by them."""

    __slots__ = ("_buf", "_data", "_event", "_last_id", "_retry", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._skip_lf = False

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished event are buffered (a stream that ends now is cut)."""
        return bool(self._buf.strip(b"\n") or self._data)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf and chunk:
            # The previous read ended in CR: an LF now is the second half of that CRLF.
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            self._skip_lf = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        events: list[ServerSentEvent] = []
        for block in blocks:
            if block[:5] == b"data:" and b"\n" not in block:
                # The usual event, one `data:` line: no field state to consult.
                value = block[5:]
                events.append(
                    ServerSentEvent(value[1:] if value[:1] == b" " else value, "message", self._last_id, self._retry)
                )
                continue
            for line in block.split(b"\n"):
                event = self._line(line)
                if event is not None:
                    events.append(event)
            event = self._line(b"")  # the blank line that ended the block
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            event = ServerSentEvent(data, self._event or "message", self._last_id, self._retry)
            self._data = []
            self._event = ""
            return event
        if line[0] == 0x3A:  # ":" comment
            return None
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None


def encode_data(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def encode_json(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
