"""The Anthropic backend: OpenAI chat completions served by the Anthropic Messages API.

``POST {base_url}/v1/messages`` (``base_url`` like ``https://api.anthropic.com``, no ``/v1``) with
``x-api-key`` (``config.api_key``) and ``anthropic-version``; models from ``GET /v1/models``
(paged); health is ``GET /v1/models`` with the same headers. Translation rules are in
``translate.py``; errors follow the table in ``backends/http.py`` (529 ``overloaded_error`` →
503 with ``Retry-After``, "prompt is too long" → ``ContextLengthExceeded``, content filtering →
``ContentPolicy``).

Options (``[backends.NAME.options]``):

======================  ============  ==========================================================
option                  default       meaning
======================  ============  ==========================================================
``version``             2023-06-01    the ``anthropic-version`` header
``beta``                (none)        ``anthropic-beta`` flags: a string ``"a,b"`` or a list
``default_max_tokens``  4096          ``max_tokens`` when the request sets no token limit (the
                                      Messages API requires one)
``model_pages``         5             at most this many ``/v1/models`` pages (1000 models each)
======================  ============  ==========================================================

Continuation (``request.is_continuation``): the trailing assistant message is sent as an
Anthropic *prefill* (the final assistant turn), which the API continues, streaming only the new
text. The API rejects a final assistant turn ending in whitespace, so that whitespace is stripped
before sending; the continuation then starts with whatever whitespace the model puts there (the
router accounts for the stripped whitespace).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from ...errors import BridgeError, UpstreamError
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model
from ..base import BackendConfig
from ..http import HttpBackendBase, drain, open_response, read_body, settle, sse_events
from ..httpclient import Response
from .translate import StreamParser, build_request, error_from_response, parse_models_page, parse_response
from .wire import DEFAULT_MAX_TOKENS, DEFAULT_VERSION, MESSAGES_PATH, MODELS_PAGE_LIMIT, MODELS_PATH

__all__ = ["OPTIONS", "AnthropicBackend"]

log = logging.getLogger("oai_bridge.anthropic")

OPTIONS = ("beta", "default_max_tokens", "model_pages", "version")


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"anthropic option {name} must be a positive integer, not {value!r}")
    return value


class AnthropicBackend(HttpBackendBase):
    """``Backend`` for the Anthropic Messages API (and compatible endpoints)."""

    kind = "anthropic"
    can_continue = True  # a final assistant turn is a prefill
    health_path = MODELS_PATH

    def __init__(
        self,
        config: BackendConfig,
        *,
        version: str = DEFAULT_VERSION,
        beta: str | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        model_pages: int = 5,
    ) -> None:
        super().__init__(config)
        self.version = version
        self.beta = beta
        self.default_max_tokens = default_max_tokens
        self.model_pages = model_pages
        self._headers = self._auth_headers()
        self._post_headers = {**self._headers, "content-type": "application/json"}

    @classmethod
    def from_config(cls, config: BackendConfig) -> AnthropicBackend:
        """A ``[backends.NAME]`` entry of kind ``anthropic`` (options: see the module doc)."""
        options = dict(config.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown anthropic option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        version = options.get("version", DEFAULT_VERSION)
        if not isinstance(version, str) or not version:
            raise ValueError(f"anthropic option version must be a non-empty string, not {version!r}")
        beta = options.get("beta")
        if isinstance(beta, list) and all(isinstance(b, str) for b in beta):
            beta = ",".join(beta)
        if beta is not None and not isinstance(beta, str):
            raise ValueError(f"anthropic option beta must be a string or a list of strings, not {beta!r}")
        return cls(
            config,
            version=version,
            beta=beta or None,
            default_max_tokens=_positive_int(
                "default_max_tokens", options.get("default_max_tokens", DEFAULT_MAX_TOKENS)
            ),
            model_pages=_positive_int("model_pages", options.get("model_pages", 5)),
        )

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.version, "accept": "application/json"}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        if self.beta:
            headers["anthropic-beta"] = self.beta
        return headers

    def health_headers(self) -> dict[str, str]:
        return dict(self._headers)

    # ------------------------------------------------------------------ chat

    def error_from_response(self, status: int, body: bytes, headers: Mapping[str, str]) -> BridgeError:
        return error_from_response(status, body, headers, what=self.what)

    async def _open(self, body: Any, timeout: float) -> Response:
        """POST the Messages request; a non-200 answer is raised as its ``BridgeError``."""
        return await self.post_json(MESSAGES_PATH, body, timeout=timeout, headers=self._post_headers)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        body = build_request(request, default_max_tokens=self.default_max_tokens, stream=False)
        timeout = self.config.request_timeout
        resp = await self._open(body, timeout)
        raw = await read_body(resp, what=self.what, timeout=timeout)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.what} answered with invalid JSON ({len(raw)} bytes).") from None
        return parse_response(data, request=request, what=self.what)

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        body = build_request(request, default_max_tokens=self.default_max_tokens, stream=True)
        first = self.config.first_token_timeout
        resp = await self._open(body, first)
        complete = False
        events = sse_events(resp, what=self.what, idle=self.config.idle_timeout, first=first)
        try:
            ctype = resp.headers.get("Content-Type", "")
            if not ctype.startswith("text/event-stream"):
                raw = await read_body(resp, what=self.what, timeout=first)
                raise UpstreamError(
                    f"{self.what} answered a stream request with {ctype or 'no content type'} ({len(raw)} bytes)."
                )
            parser = StreamParser(request=request, what=self.what)
            async for event in events:
                for chunk in parser.feed(event.event, event.data):
                    yield chunk
                if parser.done:
                    break
            for chunk in parser.end():
                yield chunk
            complete = True
            await drain(resp)
        finally:
            await events.aclose()
            settle(resp, complete=complete)

    # ------------------------------------------------------------------ models

    async def models(self) -> list[Model]:
        """The upstream's models (newest first, up to ``model_pages`` pages), then ``config.models``."""
        found: list[tuple[str, int]] = []
        try:
            found = await self._list_models()
        except Exception as exc:  # any failure: the configured list still serves
            log.warning("listing the models of %s failed: %s", self.what, exc)
        out: list[Model] = []
        seen: set[str] = set()
        for ident, created in [*found, *((m, self._created) for m in self.config.models)]:
            if ident not in seen:
                seen.add(ident)
                created = created or self._created
                out.append({"id": ident, "object": "model", "created": created, "owned_by": "anthropic"})
        return out

    async def _list_models(self) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        after: str | None = None
        timeout = min(self.config.request_timeout, 30.0)
        for _ in range(self.model_pages):
            params = {"limit": str(MODELS_PAGE_LIMIT)}
            if after:
                params["after_id"] = after
            resp = await open_response(
                self.session(),
                "GET",
                self.base_url + MODELS_PATH,
                what=self.what,
                timeout=timeout,
                params=params,
                headers=self._headers,
            )
            raw = await read_body(resp, what=self.what, timeout=timeout)
            if resp.status != 200:
                raise error_from_response(resp.status, raw, resp.headers, what=self.what)
            page, more, after = parse_models_page(orjson.loads(raw))
            found.extend(page)
            if not more or not after:
                break
        return found
