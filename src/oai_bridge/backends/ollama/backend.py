"""The Ollama backend: Ollama's native API (``/api/chat``, ``/api/embed``, ``/api/tags``) over one
pooled aiohttp session. Not the ``/v1`` shim: the native API continues an assistant prefix (stream
resumption), takes ``keep_alive``/``num_ctx``/``think``, and reports exact token counts.

``[backends.NAME]`` with ``kind = "ollama"``: ``base_url`` is the Ollama server
(``http://localhost:11434``), ``api_key`` (optional) is sent as ``Authorization: Bearer`` (Ollama
cloud, or a proxy in front of Ollama). ``options``:

``keep_alive``         how long Ollama keeps the model loaded after a request (``"5m"``, seconds,
                       ``-1`` forever, ``0`` unload at once); default: Ollama's own (5 minutes)
``num_ctx``            context window to load the model with (Ollama's ``options.num_ctx``);
                       keep it constant: a change reloads the model
``options``            a table of Ollama model options sent with every chat request (``num_ctx``,
                       ``repeat_penalty``, ...); request parameters override them
``think``              ``true``/``false``/``"low"``/``"medium"``/``"high"``/``"max"``: Ollama's
                       ``think`` for thinking models (thinking text is not passed on)
``truncate``           ``false`` makes Ollama refuse an over-long prompt (→ 400
                       ``context_length_exceeded``, so the router can fail over) instead of
                       silently dropping its start; default: Ollama's own (``true``)
``strict_parameters``  ``true`` (default): an unknown request parameter is a 400
                       ``unknown_parameter``; ``false``: ignored
``owned_by``           ``owned_by`` of the models listed from ``/api/tags`` (default ``"ollama"``)

Health: ``GET /api/version`` (``{"version": "..."}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from ...embeddings import EmbeddingRequest, EmbeddingResponse
from ...errors import BridgeError, UpstreamError
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model
from ..base import BackendConfig
from ..http import HttpBackendBase, drain, lines, read_body, settle
from ..httpclient import Response
from .translate import (
    THINK_LEVELS,
    ChatSettings,
    StreamParser,
    build_embed_request,
    build_request,
    error_from_response,
    models_from_tags,
    parse_embed_response,
    parse_response,
)
from .wire import CHAT_PATH, EMBED_PATH, TAGS_PATH, VERSION_PATH

__all__ = ["OPTIONS", "OllamaBackend"]

log = logging.getLogger("oai_bridge.ollama")

OPTIONS = ("keep_alive", "num_ctx", "options", "think", "truncate", "strict_parameters", "owned_by")
MODELS_TIMEOUT = 10.0


def _settings(options: dict[str, Any]) -> tuple[ChatSettings, str]:
    """Validate a backend's ``options`` (``ValueError`` naming the bad one)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown ollama option(s) {', '.join(unknown)} (known: {', '.join(sorted(OPTIONS))})")
    keep_alive = options.get("keep_alive")
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float)):
        raise ValueError('ollama option keep_alive must be a duration string ("5m") or a number of seconds')
    model_options = options.get("options", {})
    if not isinstance(model_options, dict):
        raise ValueError("ollama option options must be a table of Ollama model options")
    model_options = dict(model_options)
    num_ctx = options.get("num_ctx")
    if num_ctx is not None:
        if isinstance(num_ctx, bool) or not isinstance(num_ctx, int) or num_ctx < 1:
            raise ValueError("ollama option num_ctx must be a positive integer")
        model_options["num_ctx"] = num_ctx
    think = options.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise ValueError('ollama option think must be true, false, "low", "medium", "high" or "max"')
    for flag in ("truncate", "strict_parameters"):
        if options.get(flag) is not None and not isinstance(options[flag], bool):
            raise ValueError(f"ollama option {flag} must be true or false")
    owned_by = options.get("owned_by", "ollama")
    if not isinstance(owned_by, str) or not owned_by:
        raise ValueError("ollama option owned_by must be a non-empty string")
    settings = ChatSettings(
        keep_alive=keep_alive,
        think=think,
        truncate=options.get("truncate"),
        options=model_options,
        strict_parameters=options.get("strict_parameters", True),
    )
    return settings, owned_by


class OllamaBackend(HttpBackendBase):
    """``Backend`` (and ``Embeddings``) for an Ollama server's native API."""

    kind = "ollama"
    can_continue = True  # /api/chat continues a final assistant message (ollama/ollama#6778)
    health_path = VERSION_PATH

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.settings, self.owned_by = _settings(config.options)
        self._headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson, application/json"}
        self._headers.update(self.health_headers())

    @classmethod
    def from_config(cls, config: BackendConfig) -> OllamaBackend:
        return cls(config)

    def health_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def error_from_response(self, status: int, body: bytes, headers: Mapping[str, str]) -> BridgeError:
        return error_from_response(status, body, headers, what=self.what)

    async def _post(self, path: str, body: Any, *, timeout: float) -> Response:
        return await self.post_json(path, body, timeout=timeout, headers=self._headers)

    async def _json(self, resp: Response) -> Any:
        raw = await read_body(resp, what=self.what, timeout=self.config.request_timeout)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{self.what} answered with invalid JSON.", code="malformed_event") from None

    # ------------------------------------------------------------------ chat

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        body = build_request(request, self.settings, stream=False)
        resp = await self._post(CHAT_PATH, body, timeout=self.config.request_timeout)
        return parse_response(await self._json(resp), request=request, what=self.what)

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        body = build_request(request, self.settings, stream=True)
        first = self.config.first_token_timeout
        resp = await self._post(CHAT_PATH, body, timeout=first)
        parser = StreamParser(request=request, what=self.what)
        events = lines(resp, what=self.what, idle=self.config.idle_timeout, first=first)
        complete = False
        try:
            async with contextlib.aclosing(events):
                async for line in events:
                    for chunk in parser.feed(line):
                        yield chunk
                    if parser.done:
                        break
            for chunk in parser.end():
                yield chunk
            complete = True
            await drain(resp)
        finally:
            settle(resp, complete=complete)

    # ------------------------------------------------------------------ embeddings

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        body = build_embed_request(request, self.settings)
        resp = await self._post(EMBED_PATH, body, timeout=self.config.request_timeout)
        return parse_embed_response(await self._json(resp), request=request, what=self.what)

    # ------------------------------------------------------------------ models

    async def models(self) -> list[Model]:
        """The configured models, then what ``/api/tags`` lists (configured ones only if it fails)."""
        configured: list[Model] = [
            {"id": m, "object": "model", "created": self._created, "owned_by": self.owned_by}
            for m in self.config.models
        ]
        try:
            async with asyncio.timeout(min(MODELS_TIMEOUT, self.config.request_timeout)):
                resp = await self.session().request("GET", self.base_url + TAGS_PATH, headers=self.health_headers())
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("listing the models of %s failed: %s", self.what, type(exc).__name__)
            return configured
        if status != 200:
            log.warning("listing the models of %s answered HTTP %s", self.what, status)
            return configured
        try:
            listed = models_from_tags(orjson.loads(raw), owned_by=self.owned_by, created=self._created)
        except orjson.JSONDecodeError:
            log.warning("listing the models of %s gave invalid JSON", self.what)
            return configured
        seen = {m["id"] for m in configured}
        return configured + [m for m in listed if m["id"] not in seen]
