"""Limits on what a request may hold, each refused with a clear OpenAI error.

- body size: ``handlers.read_body`` (413 ``request_too_large``);
- JSON: ``parse_json`` — invalid UTF-8 and invalid JSON say where, nesting deeper than
  ``max_json_depth`` is refused (400 ``invalid_json``) before any code walks it recursively
  (orjson itself stops at 1024 levels, and encodes at most 255 when a body is forwarded);
- ``messages``: ``check_messages`` (400 ``array_above_max_length``, OpenAI's own code), before
  pydantic validates a single message;
- ``max_tokens``: a cap in ``types.ChatCompletionRequest`` (``MAX_TOKENS_CAP``);
- the request head: ``protocol.CoalescingHttpToolsProtocol`` (431, connection closed).

On the hot path each costs a ``bytes.count`` or a ``len``: the nesting walk runs only for a body
with more brackets than the depth limit.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequest

__all__ = ["check_messages", "deeper_than", "parse_json"]


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels (``{}`` is 1 level).
    Iterative: no recursion, whatever the depth."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _not_json(body: bytes, exc: orjson.JSONDecodeError, max_depth: int) -> InvalidRequest:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return InvalidRequest(
            f"The request body is not valid UTF-8 (byte 0x{body[bad.start]:02x} at offset {bad.start}): "
            "JSON bodies must be UTF-8.",
            code="invalid_json",
        )
    if exc.msg.startswith("depth limit exceeded"):
        return too_deep(max_depth)
    where = f"line {exc.lineno} column {exc.colno}" if exc.lineno else f"offset {exc.pos}"
    return InvalidRequest(
        f"The request body is not valid JSON ({exc.msg} at {where}); it must be a UTF-8 JSON object.",
        code="invalid_json",
    )


def too_deep(limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"The request body nests arrays and objects more than {limit} levels deep.", code="invalid_json"
    )


def parse_json(body: bytes, max_depth: int) -> Any:
    """The JSON value of ``body``, or the OpenAI 400 saying what is wrong with it."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _not_json(body, exc, max_depth) from None
    # Deeper than ``max_depth`` needs more than ``max_depth`` brackets (a cheap C-level count).
    if body.count(b"[") + body.count(b"{") > max_depth and deeper_than(value, max_depth):
        raise too_deep(max_depth)
    return value


def check_messages(payload: Any, limit: int) -> None:
    """Refuse a chat request with more than ``limit`` messages (before validating them)."""
    if isinstance(payload, dict):
        messages = payload.get("messages")
        if isinstance(messages, list) and len(messages) > limit:
            raise InvalidRequest(
                f"Invalid 'messages': array too long. Expected an array with maximum length {limit}, "
                f"but got an array with length {len(messages)} instead.",
                param="messages",
                code="array_above_max_length",
            )
