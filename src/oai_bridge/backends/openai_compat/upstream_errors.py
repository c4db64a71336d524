"""Upstream error answers → the bridge's errors (pure). Every body shape an OpenAI-compatible
server uses (``wire``): OpenAI's ``{"error": {...}}``, FastAPI's ``{"detail": ...}``, old vLLM's flat
``{"object": "error", ...}``, plain text; context-length and content-policy refusals are recognized
by code, type or wording, the rest is mapped by status (``errors.status_error``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ...errors import BridgeError, ContentPolicy, ContextLengthExceeded, retry_after, status_error
from .wire import CONTENT_POLICY_CODES, CONTENT_POLICY_PHRASES, CONTEXT_LENGTH_CODES, CONTEXT_LENGTH_PHRASES

__all__ = ["cap", "error_details", "error_from_response", "is_error", "stream_error"]

MESSAGE_CAP = 300
#: The HTTP status an in-stream error event stands for (it has none), by its ``code`` or ``type``.
STREAM_ERROR_STATUS = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "requests": 429,
    "tokens": 429,
    "rate_limit_error": 429,
    "invalid_request_error": 400,
    "service_unavailable_error": 503,
    "overloaded_error": 503,
    "timeout_error": 504,
}


def cap(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CAP else text[: MESSAGE_CAP - 1] + "…"


def _detail_text(detail: Any) -> str | None:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict):
        return str(detail.get("msg") or detail.get("message") or orjson.dumps(detail).decode())
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc") or () if x != "body")
                msg = str(item.get("msg") or item.get("message") or "")
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return None


def error_details(body: bytes | Any) -> tuple[str | None, str | None, str | None, str | None, int | None]:
    """``(message, code, type, param, status)`` of any error body shape (``status`` when the body
    carries an HTTP status as its ``code``, as llama.cpp and old vLLM do)."""
    data: Any = body
    if isinstance(body, bytes | bytearray):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            text = bytes(body).decode("utf-8", "replace").strip()
            return (text or None), None, None, None, None
    if not isinstance(data, dict):
        return (str(data) if data not in (None, "") else None), None, None, None, None
    inner: Any = data.get("error")
    if isinstance(inner, str):
        return inner, None, None, None, None
    if not isinstance(inner, dict):
        inner = data if ("message" in data or data.get("object") == "error") else None
    if inner is None:
        return _detail_text(data.get("detail")), None, None, None, None
    message = inner.get("message") or inner.get("msg")
    raw_code, etype, param = inner.get("code"), inner.get("type"), inner.get("param")
    status = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    code = raw_code if isinstance(raw_code, str) and raw_code else None
    return (
        str(message) if message is not None else None,
        code,
        str(etype) if isinstance(etype, str) and etype else None,
        str(param) if isinstance(param, str) and param else None,
        status,
    )


def _classify(
    status: int,
    message: str | None,
    code: str | None,
    etype: str | None,
    param: str | None,
    *,
    text: str,
    retry: float | None,
) -> BridgeError:
    low = (message or "").lower()
    if status != 429:
        if {code, etype} & CONTEXT_LENGTH_CODES or any(p in low for p in CONTEXT_LENGTH_PHRASES):
            return ContextLengthExceeded(text)
        if {code, etype} & CONTENT_POLICY_CODES or any(p in low for p in CONTENT_POLICY_PHRASES):
            return ContentPolicy(text, param=param)
    return status_error(status, text, retry=retry, code=code if status < 500 else None, param=param)


def error_from_response(
    status: int, body: bytes | Any, headers: Mapping[str, str] | None = None, *, what: str = "the upstream"
) -> BridgeError:
    """The ``BridgeError`` for an upstream's error answer (any body shape in ``wire``): context
    length → ``ContextLengthExceeded``, content policy → ``ContentPolicy``, the rest per
    ``errors.status_error`` (429 with ``Retry-After``, 5xx, other 4xx with the upstream's code)."""
    message, code, etype, param, _ = error_details(body)
    text = cap(f"{what} answered HTTP {status}: {message or 'no details'}")
    retry = retry_after(headers) if headers is not None else None
    return _classify(status, message, code, etype, param, text=text, retry=retry)


def stream_error(event: dict[str, Any], *, what: str = "the upstream") -> BridgeError:
    """The ``BridgeError`` for an error event in a stream (``data: {"error": {...}}``)."""
    message, code, etype, param, status = error_details(event)
    if status is None or not 400 <= status <= 599:
        status = STREAM_ERROR_STATUS.get(code or "") or STREAM_ERROR_STATUS.get(etype or "") or 500
    text = cap(f"{what} reported an error mid-stream: {message or 'no details'}")
    return _classify(status, message, code, etype, param, text=text, retry=None)


def is_error(event: dict[str, Any]) -> bool:
    return bool(event.get("error")) or event.get("object") == "error"
