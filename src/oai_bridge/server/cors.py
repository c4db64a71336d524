"""CORS as a small ASGI layer, so browsers may call the API (off by default).

``create_app`` installs it only when ``cors_origins`` is set: with CORS off there is no layer at
all. It sits in front of everything — the raw chat route and every Starlette route alike — so:

- a **preflight** (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  here: ``204`` with ``Access-Control-Allow-Origin``/``-Methods``/``-Headers``/``-Max-Age`` when
  the origin is allowed (the requested headers that ``cors_allow_headers`` allows are echoed),
  ``403`` with an OpenAI error body and no CORS header when it is not;
- every **actual response** to an allowed origin — JSON, streams, errors, 404s — gets
  ``Access-Control-Allow-Origin`` (``*`` or the origin itself, then with ``Vary: Origin``) and
  ``Access-Control-Expose-Headers`` (``x-request-id`` and the retry headers the SDKs read);
- requests without ``Origin`` (not from a browser) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InvalidRequest
from .context import new_request_id

__all__ = ["EXPOSE_HEADERS", "METHODS", "CORSMiddleware", "CORSPolicy"]

Headers = list[tuple[bytes, bytes]]

METHODS = b"GET, POST, HEAD, OPTIONS"
#: Response headers a browser script may read: the request id and what the SDKs' retry logic reads.
EXPOSE_HEADERS = b"x-request-id, retry-after, retry-after-ms, x-should-retry, openai-poll-after-ms"


class CORSPolicy:
    """Which origins and request headers are allowed (``origins``: ``*`` or exact origins;
    ``allow_headers``: names, ``prefix-*`` patterns, or ``*``), and for how long a browser may cache
    a preflight."""

    def __init__(self, origins: Iterable[str], allow_headers: Iterable[str], max_age: int = 600) -> None:
        listed = [o.lower().rstrip("/") for o in origins]
        self.any_origin = "*" in listed
        self.origins = frozenset(o.encode("latin-1") for o in listed if o != "*")
        names = [h.lower() for h in allow_headers]
        self.any_header = "*" in names
        self.header_names = frozenset(h for h in names if not h.endswith("*"))
        self.header_prefixes = tuple(h[:-1] for h in names if h.endswith("*") and h != "*")
        self.max_age = str(max_age).encode()

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin.lower() in self.origins

    def allow_origin(self, origin: bytes) -> Headers:
        """The headers naming the allowed origin (``*`` needs no ``Vary``)."""
        if self.any_origin:
            return [(b"access-control-allow-origin", b"*")]
        return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]

    def allowed_headers(self, requested: bytes) -> bytes:
        """The headers of an ``Access-Control-Request-Headers`` value this policy allows."""
        names = [n.strip().lower() for n in requested.decode("latin-1").split(",")]
        kept = [
            n for n in names if n and (self.any_header or n in self.header_names or n.startswith(self.header_prefixes))
        ]
        return ", ".join(kept).encode("latin-1")

    def preflight(self, origin: bytes, requested_headers: bytes, request_id: str) -> tuple[Headers, int, bytes]:
        """(headers, status, body) of the answer to a preflight from ``origin``."""
        rid = (b"x-request-id", request_id.encode())
        if not self.allows(origin):
            error = InvalidRequest(
                f"CORS: the origin {origin.decode('latin-1')!r} is not allowed (see cors_origins).",
                status=403,
                code="cors_origin_not_allowed",
            )
            body = error.to_json()
            return (
                [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), rid],
                403,
                body,
            )
        headers = [
            *self.allow_origin(origin),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-max-age", self.max_age),
            (b"content-length", b"0"),
            rid,
        ]
        allowed = self.allowed_headers(requested_headers) if requested_headers else b""
        if allowed:
            headers.append((b"access-control-allow-headers", allowed))
        return headers, 204, b""


class CORSMiddleware:
    """``policy`` in front of ``app`` (any ASGI app). ``request_id(scope)`` names a preflight's
    answer (``x-request-id``)."""

    def __init__(
        self,
        app: Callable[..., Any],
        policy: CORSPolicy,
        *,
        request_id: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.request_id = request_id or (lambda scope: new_request_id())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = preflight_method = requested = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                preflight_method = value
            elif key == b"access-control-request-headers":
                requested = value if requested is None else requested + b"," + value
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and preflight_method is not None:
            headers, status, body = self.policy.preflight(origin, requested or b"", self.request_id(scope))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if not self.policy.allows(origin):
            await self.app(scope, receive, send)  # no CORS headers: the browser keeps the answer from the page
            return
        extra = [*self.policy.allow_origin(origin), (b"access-control-expose-headers", EXPOSE_HEADERS)]

        async def cors_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, cors_send)
