"""The OpenAI-compatible backend: OpenAI itself, vLLM, llama.cpp's ``llama-server``, LM Studio, ...

``base_url`` includes ``/v1`` (as the OpenAI SDK's ``base_url``): the backend posts to
``{base_url}/chat/completions`` and ``{base_url}/embeddings``, lists ``{base_url}/models`` (also its
health probe) and sends ``Authorization: Bearer <api_key>`` when a key is configured. Requests go
out as the client sent them; ``translate.StreamNormalizer`` repairs what such servers get wrong in
their streams (see ``translate``).

Options (``[backends.NAME.options]``):

``send_stream_options`` (bool, default ``true``)
    Ask a stream for usage with ``stream_options: {"include_usage": true}`` (the client still gets
    a usage chunk only when it asked). Turn off for servers that reject ``stream_options``.
``continue_style`` (``"vllm"`` | ``"prefill"``, default ``"vllm"``)
    How a continuation (the last message is an assistant prefix to continue) is asked for:
    ``vllm`` adds ``continue_final_message: true, add_generation_prompt: false`` (vLLM; llama.cpp
    ignores unknown keys and prefills anyway); ``prefill`` sends just the messages (llama.cpp, LM
    Studio, servers that reject unknown keys).
``headers`` (table of strings, default none)
    Extra request headers, e.g. ``OpenAI-Organization`` / ``OpenAI-Project``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self, get_args

import orjson

from ...embeddings import EmbeddingRequest, EmbeddingResponse
from ...errors import BridgeError, UpstreamError
from ...sse import ServerSentEvent
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model
from ..base import BackendConfig
from ..http import HttpBackendBase, drain, open_response, read_body, settle, sse_events
from ..httpclient import Response
from .translate import (
    StreamNormalizer,
    build_embeddings_request,
    build_request,
    error_from_response,
    parse_embeddings,
    parse_models,
    parse_response,
)
from .wire import CHAT_PATH, CONTINUE_STYLES, DONE, EMBEDDINGS_PATH, MODELS_PATH, ContinueStyle

__all__ = ["OpenAICompatBackend", "OpenAICompatOptions"]

log = logging.getLogger("oai_bridge.openai_compat")

#: How long a finished stream may take to deliver the rest of its body (its terminator) so the
#: connection can go back to the pool; past it the connection is closed instead.


@dataclass(frozen=True, kw_only=True)
class OpenAICompatOptions:
    """The ``options`` of an ``openai_compat`` backend (documented in the module docstring)."""

    send_stream_options: bool = True
    continue_style: ContinueStyle = "vllm"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> OpenAICompatOptions:
        """Validated options; an unknown name or a wrong type raises ``ValueError``."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"unknown openai_compat option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        send = options.get("send_stream_options", True)
        if not isinstance(send, bool):
            raise ValueError(f"openai_compat option send_stream_options must be true or false, not {send!r}")
        style = options.get("continue_style", "vllm")
        if style not in CONTINUE_STYLES:
            raise ValueError(
                f"openai_compat option continue_style must be one of {', '.join(get_args(ContinueStyle))}, "
                f"not {style!r}"
            )
        headers = options.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("openai_compat option headers must be a table of strings")
        return cls(send_stream_options=send, continue_style=style, headers=dict(headers))


class OpenAICompatBackend(HttpBackendBase):
    """``Backend`` (and ``Embeddings``) for any server speaking OpenAI's chat completions API."""

    kind = "openai_compat"
    can_continue = True  # vLLM (continue_final_message) and llama.cpp (assistant prefill)
    health_path = MODELS_PATH

    def __init__(self, config: BackendConfig, options: OpenAICompatOptions | None = None) -> None:
        super().__init__(config)
        self.options = options if options is not None else OpenAICompatOptions.parse(config.options)
        self._auth = dict(self.options.headers)
        if config.api_key:
            self._auth["Authorization"] = f"Bearer {config.api_key}"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        self._headers.update(self._auth)

    @classmethod
    def from_config(cls, config: BackendConfig) -> Self:
        return cls(config)

    def health_headers(self) -> dict[str, str]:
        return dict(self._auth)

    # ------------------------------------------------------------------ plumbing

    def error_from_response(self, status: int, body: bytes, headers: Mapping[str, str]) -> BridgeError:
        return error_from_response(status, body, headers, what=self.what)

    async def _post(self, path: str, body: dict[str, Any], timeout: float) -> Response:
        return await self.post_json(path, body, timeout=timeout, headers=self._headers)

    def _json(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"{self.what} answered with invalid JSON ({len(raw)} bytes).", code="malformed_event"
            ) from None

    # ------------------------------------------------------------------ chat

    def _build(self, request: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        return build_request(
            request,
            stream=stream,
            send_stream_options=self.options.send_stream_options,
            continue_style=self.options.continue_style,
        )

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout
        resp = await self._post(CHAT_PATH, self._build(request, stream=False), self.config.request_timeout)
        raw = await read_body(resp, what=self.what, timeout=max(deadline - loop.time(), 0.001))
        return parse_response(self._json(raw), request=request, what=self.what)

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        resp = await self._post(CHAT_PATH, self._build(request, stream=True), self.config.first_token_timeout)
        normalizer = StreamNormalizer(request=request, what=self.what)
        complete = False
        events = self._events(resp)
        try:
            if resp.content_type == "application/json":
                # A server that ignored ``stream: true`` and answered one completion (or an error).
                raw = await read_body(resp, what=self.what, timeout=self.config.first_token_timeout)
                completion = parse_response(self._json(raw), request=request, what=self.what)
                event = {**completion, "choices": [_as_delta(c) for c in completion["choices"]]}
                for chunk in [*normalizer.feed_event(event), *normalizer.end()]:
                    yield chunk
                complete = True
                return
            async for sse in events:
                for chunk in normalizer.feed(sse.data):
                    yield chunk
                if normalizer.done:
                    break
            for chunk in normalizer.end():
                yield chunk
            complete = True
            await drain(resp)
        finally:
            await events.aclose()
            settle(resp, complete=complete)

    def _events(self, resp: Response) -> AsyncGenerator[ServerSentEvent, None]:
        """The SSE events of ``resp`` (timeouts per ``http.sse_events``); a last event left without
        its blank line at the end of the body (llama-server's bare ``data: [DONE]``) is still
        delivered when it is ``[DONE]`` or complete JSON (else it was cut: dropped)."""
        events = sse_events(
            resp,
            what=self.what,
            idle=self.config.idle_timeout,
            first=self.config.first_token_timeout,
            tail=_whole_event,
        )
        return events

    # ------------------------------------------------------------------ models, embeddings

    async def models(self) -> list[Model]:
        """The upstream's ``GET /models``, then the configured models it did not list."""
        found: list[Model] = []
        timeout = min(self.config.request_timeout, 30.0)
        try:
            resp = await open_response(
                self.session(), "GET", self.base_url + MODELS_PATH, what=self.what, timeout=timeout, headers=self._auth
            )
            raw = await read_body(resp, what=self.what, timeout=timeout)
            if resp.status != 200:
                raise error_from_response(resp.status, raw, resp.headers, what=self.what)
            found = parse_models(self._json(raw), owned_by=self.name, created=self._created)
        except BridgeError as exc:
            log.warning("listing the models of %s failed: %s", self.what, exc.message)
        seen = {m["id"] for m in found}
        for name in self.config.models:
            if name not in seen:
                seen.add(name)
                found.append({"id": name, "object": "model", "created": self._created, "owned_by": self.name})
        return found

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout
        body = build_embeddings_request(request)
        resp = await self._post(EMBEDDINGS_PATH, body, self.config.request_timeout)
        raw = await read_body(resp, what=self.what, timeout=max(deadline - loop.time(), 0.001))
        return parse_embeddings(self._json(raw), request=request, what=self.what)


def _as_delta(choice: Any) -> dict[str, Any]:
    """A non-stream choice as one stream choice (its message as the delta)."""
    return {
        "index": choice["index"],
        "delta": dict(choice["message"]),
        "logprobs": choice["logprobs"],
        "finish_reason": choice["finish_reason"],
    }


def _whole_event(event: ServerSentEvent) -> bool:
    if event.data.strip() == DONE:
        return True
    try:
        orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return False
    return True
