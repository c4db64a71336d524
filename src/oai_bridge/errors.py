"""One exception family. Every failure the bridge reports is a ``BridgeError``: it knows its HTTP
status, its OpenAI error body ``{"error": {"message", "type", "param", "code"}}`` and the extra
headers (``Retry-After``) it needs. The server turns it into a response before the first byte and
into a ``data: {"error": ...}`` frame after it. Its message is redacted when it is made
(``redact.redact``): upstream error texts that echo a key never reach a client or a log."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import orjson

from .redact import redact


class BridgeError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = redact(message)  # an upstream's words may echo a key: scrubbed once, here
        super().__init__(message)
        self.message = message
        self.param = redact(param) if param else param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after)))
            headers["retry-after-ms"] = str(int(self.retry_after * 1000))
        if self.status >= 500 and self.retry_after is None:
            # Nothing the SDK's automatic retry would change right away (the upstream already
            # failed and the bridge reported it); tell the SDKs not to triple the work.
            headers["x-should-retry"] = "false"
        return headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class InvalidRequest(BridgeError):
    """The client's request is wrong: never forwarded."""

    status = 400
    type = "invalid_request_error"


class NotFound(BridgeError):
    status = 404
    type = "invalid_request_error"


class UpstreamRejected(BridgeError):
    """The upstream answered 4xx with a message worth passing on (e.g. gateway 400)."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"


class RateLimited(BridgeError):
    """The upstream said 429 (retried per ``Retry-After`` by the router before it is reported)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ContextLengthExceeded(BridgeError):
    """The upstream said the prompt does not fit its context window (another upstream may fit it)."""

    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("param", "messages")
        super().__init__(message, **kwargs)


class ContentPolicy(BridgeError):
    """The upstream refused the request under its content policy (final: no retry, no failover)."""

    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"


class UpstreamError(BridgeError):
    """The upstream failed (masked 500, garbage, cut stream)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamUnavailable(BridgeError):
    """No capacity upstream (503, no orchestrator, connection refused)."""

    status = 503
    type = "service_unavailable_error"
    code = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = 1.0, **kwargs: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kwargs)


class UpstreamTimeout(BridgeError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = _header(headers, "retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def status_error(
    status: int,
    message: str,
    *,
    retry: float | None = None,
    code: str | None = None,
    param: str | None = None,
) -> BridgeError:
    """The ``BridgeError`` for an upstream's error status (its message already extracted)."""
    if status == 429:
        return RateLimited(message, retry_after=retry, code=code or "rate_limit_exceeded", param=param)
    if status in (503, 529):
        return UpstreamUnavailable(message, retry_after=retry if retry is not None else 1.0, param=param)
    if status == 504:
        return UpstreamTimeout(message, code="upstream_timeout")
    if status >= 500:
        return UpstreamError(message, param=param)
    return UpstreamRejected(message, status=status, code=code or "upstream_rejected", param=param)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header from any mapping (aiohttp's is case-insensitive, a plain dict is not)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    if value is None and not hasattr(headers, "getall"):
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
