"""The Livepeer backend: talks to a gateway's ``/llm`` over one pooled aiohttp session.

It picks the gateway generation (``auto`` tries JSON and falls back to multipart on the gen-A
answer, then remembers), applies the timeouts (connect, first token, idle between tokens, whole
non-stream request), turns every transport failure into a ``BridgeError`` before the first chunk
and into an exception mid-stream, and closes the upstream response as soon as the consumer stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import aiohttp
import orjson

from ...chunks import ChunkBuilder, fold_chunks
from ...errors import UpstreamError, UpstreamTimeout
from ...redact import register_secret
from ...sse import ServerSentEvent
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model, Usage
from ..base import BackendConfig, Health
from ..http import drain, probe, request_twice, settle, sse_events
from ..httpclient import HttpClient, Response, multipart_form
from .media import KNOWN_MODELS, check_kind, pipelines_of
from .translate import StreamParser, build_request, error_from_response, parse_response
from .transport import GATEWAY_STREAM_ERRORS, gateway_errors
from .video_io import LivepeerVideoMixin
from .wire import (
    CAPABILITIES_PATH,
    LLM_CAPABILITY,
    LLM_PATH,
    NOT_MULTIPART_MESSAGE,
    Generation,
    LivepeerRequest,
)

__all__ = ["LivepeerBackend", "LivepeerOptions", "LivepeerTuning", "chat", "stream_chat"]

log = logging.getLogger("oai_bridge.livepeer")

HEALTH_PATH = "/healthz"

GatewayApi = Literal["auto", "json", "form"]


@dataclass(kw_only=True)
class LivepeerTuning:
    """How to talk to a Livepeer gateway (everything but its URL). Timeouts are seconds; see
    ``docs/configuration.md``. The server's ``Settings`` extends this, so each option is declared
    once."""

    gateway_api: GatewayApi = "auto"
    gateway_token: str | None = field(default=None, repr=False)
    cli_url: str | None = None
    models: list[str] = field(default_factory=list)
    default_max_tokens: int = 256
    strip_assistant_header: bool = True
    connect_timeout: float = 10.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    request_timeout: float = 600.0
    discovery_ttl: float = 60.0
    model_pipelines: dict[str, str] = field(default_factory=dict)
    vision: Literal["off", "caption"] = "off"
    vision_model: str = "Salesforce/blip-image-captioning-large"

    def __post_init__(self) -> None:
        register_secret(self.gateway_token)  # redacted from every log line and error message


@dataclass(kw_only=True)
class LivepeerOptions(LivepeerTuning):
    """Settings of one Livepeer gateway."""

    gateway_url: str


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


class LivepeerBackend(LivepeerVideoMixin):
    """``Backend`` for a Livepeer AI gateway (both ``/llm`` generations)."""

    kind = "livepeer"
    can_continue = False  # the runner's chat template always opens a new assistant turn

    def __init__(self, options: LivepeerOptions, *, name: str = "livepeer") -> None:
        self.name = name
        self.options = options
        base = options.gateway_url.rstrip("/")
        self._llm_url = base + LLM_PATH
        self._generation: Generation | None = None if options.gateway_api == "auto" else options.gateway_api
        self._session: aiohttp.ClientSession | None = None  # media uploads and downloads, discovery
        self._client: HttpClient | None = None  # /llm and the health probe: the hot path
        self._headers = {"Accept": "application/json, text/event-stream"}
        if options.gateway_token:
            self._headers["Authorization"] = f"Bearer {options.gateway_token}"
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=options.connect_timeout, sock_connect=options.connect_timeout
        )
        self._discovered: list[str] = []
        self._discovered_at = 0.0
        self._created = int(time.time())

    @classmethod
    def from_config(cls, config: BackendConfig) -> LivepeerBackend:
        """A ``[backends.NAME]`` entry of kind ``livepeer``: ``base_url`` is the gateway, ``api_key``
        its bearer token, and ``options`` any ``LivepeerTuning`` field (``gateway_api``,
        ``cli_url``, ``default_max_tokens``, ``model_pipelines``, ``vision``, ...)."""
        known = {f.name for f in fields(LivepeerTuning)} - {"gateway_token", "models"}
        unknown = sorted(set(config.options) - known)
        if unknown:
            raise ValueError(f"unknown livepeer option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        options = LivepeerOptions(
            gateway_url=config.base_url,
            gateway_token=config.api_key,
            models=list(config.models),
            connect_timeout=config.connect_timeout,
            first_token_timeout=config.first_token_timeout,
            idle_timeout=config.idle_timeout,
            request_timeout=config.request_timeout,
            **config.options,
        )
        return cls(options, name=config.name)

    async def health(self) -> Health:
        """``GET /healthz`` on the gateway (200, empty body, when it is up)."""
        return await probe(
            self._llm_client(),
            name=self.name,
            kind=self.kind,
            base_url=self.options.gateway_url.rstrip("/"),
            path=HEALTH_PATH,
            timeout=min(self.options.connect_timeout, 5.0),
            ok_below=300,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def generation(self) -> Generation | None:
        """The gateway generation in use (``None`` until ``auto`` has found out)."""
        return self._generation

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # a gateway sets no cookies; skip the jar per request
            )
        return self._session

    def _llm_client(self) -> HttpClient:
        if self._client is None or self._client.closed:
            self._client = HttpClient(connect_timeout=self.options.connect_timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and not self._client.closed:
            await self._client.aclose()
        if self._session is not None and not self._session.closed:
            await self._session.close()

    # ------------------------------------------------------------------ requests

    def _translate(self, request: ChatCompletionRequest, *, stream: bool | None = None) -> LivepeerRequest:
        return build_request(
            request,
            generation=self._generation or "json",
            default_max_tokens=self.options.default_max_tokens,
            stream=stream,
        )

    async def _post(self, lp: LivepeerRequest, timeout: float) -> Response:
        """Send, and wait for the response head (which a gateway sends with the first token)."""
        if lp.json is not None:
            body, headers = orjson.dumps(lp.json), self._json_headers
        else:
            body, content_type = multipart_form(lp.form or {})
            headers = {**self._headers, "Content-Type": content_type}
        try:
            with gateway_errors(self.options.gateway_url):
                return await request_twice(
                    self._llm_client(), "POST", self._llm_url, data=body, headers=headers, timeout=timeout
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"The Livepeer gateway sent nothing within {timeout:g} s.", code="first_token_timeout"
            ) from None

    async def _open(
        self, request: ChatCompletionRequest, *, stream: bool, timeout: float
    ) -> tuple[LivepeerRequest, Response]:
        """Translate, send, handle generation fallback and error statuses; return a 200 response."""
        lp = self._translate(request, stream=stream)
        resp = await self._post(lp, timeout)
        if resp.status == 400 and self.options.gateway_api == "auto" and lp.generation == "json":
            body = await resp.read()
            resp.release()
            if NOT_MULTIPART_MESSAGE.encode() in body:
                log.info("the gateway at %s speaks the legacy multipart /llm; using it", self.options.gateway_url)
                self._generation = "form"
                # The legacy non-stream body lacks a usage split: legacy answers are always streamed.
                lp = self._translate(request, stream=True)
                resp = await self._post(lp, self.options.first_token_timeout)
            else:
                raise error_from_response(400, body)
        elif self._generation is None and resp.status == 200:
            self._generation = lp.generation
        if resp.status != 200:
            try:
                body = await resp.read()
            except aiohttp.ClientError:
                body = b""
            resp.release()
            raise error_from_response(resp.status, body, retry_after=_retry_after(resp.headers.get("Retry-After")))
        return lp, resp

    def _is_captioner(self, request: ChatCompletionRequest) -> bool:
        """Chat with an image-to-text model is captioning; other non-LLM models are refused."""
        known = pipelines_of(request.model, self.options.model_pipelines)
        check_kind(request.model, frozenset({"llm", "image-to-text"}), self.options.model_pipelines, "chat")
        return "image-to-text" in known

    async def _caption_chunks(
        self, request: ChatCompletionRequest, include_usage: bool | None
    ) -> AsyncIterator[ChatCompletionChunk]:
        text = await self.caption(request)
        builder = ChunkBuilder(
            model=request.model,
            include_usage=request.include_usage if include_usage is None else include_usage,
            stop=request.stop_sequences,
        )
        prompt = sum(len(str(m.content or "").split()) for m in request.messages if isinstance(m.content, str))
        usage: Usage = {"prompt_tokens": prompt, "completion_tokens": len(text.split()), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        for chunk in [*builder.text(text), *builder.finish("stop", usage)]:
            yield chunk

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        if self._is_captioner(request):
            return await fold_chunks(self._caption_chunks(request, include_usage=True))
        if self.options.vision == "caption":
            request = await self.with_captions(request)
        if self._generation == "form":
            # The legacy non-stream body only has a total token count; its stream has both.
            return await fold_chunks(self._stream(request, include_usage=True))
        lp, resp = await self._open(request, stream=False, timeout=self.options.request_timeout)
        if lp.generation == "form":  # auto just found a legacy gateway and asked it for a stream
            return await fold_chunks(self._stream(request, include_usage=True, opened=(lp, resp)))
        try:
            if resp.content.is_eof():  # the usual case: the whole body came with the head
                raw = await resp.read()
            else:
                async with asyncio.timeout(self.options.request_timeout):
                    raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout("The Livepeer gateway did not finish its answer in time.") from None
        except aiohttp.ClientError:
            raise UpstreamError("The connection to the Livepeer gateway broke during the answer.") from None
        finally:
            resp.release()
        if not raw.strip():
            raise _empty_body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("The Livepeer gateway answered with invalid JSON.") from None
        if not isinstance(body, dict):
            raise UpstreamError("The Livepeer gateway answered with unexpected JSON.")
        return parse_response(
            body,
            request=request,
            generation=lp.generation,
            max_tokens=lp.max_tokens,
            strip_header=self.options.strip_assistant_header,
        )

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return self._stream(request, include_usage=None)

    async def _stream(
        self,
        request: ChatCompletionRequest,
        *,
        include_usage: bool | None,
        opened: tuple[LivepeerRequest, Response] | None = None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of one streamed answer (``opened``: a response already obtained by ``_open``)."""
        if opened is None and self._is_captioner(request):
            async for chunk in self._caption_chunks(request, include_usage):
                yield chunk
            return
        if opened is None and self.options.vision == "caption":
            request = await self.with_captions(request)
        lp, resp = opened or await self._open(request, stream=True, timeout=self.options.first_token_timeout)
        parser = StreamParser(
            request=request,
            generation=lp.generation,
            max_tokens=lp.max_tokens,
            strip_header=self.options.strip_assistant_header,
            include_usage=include_usage,
        )
        complete = False
        events = self._events(resp)
        try:
            ctype = resp.headers.get("Content-Type", "")
            if not ctype.startswith("text/event-stream"):
                raw = await resp.read()
                if not raw.strip():
                    raise _empty_body()
                raise UpstreamError(
                    "The Livepeer gateway answered a stream request with "
                    f"{ctype or 'no content type'} ({len(raw)} bytes)."
                )
            async for event in events:
                for chunk in parser.feed(event.data):
                    yield chunk
                if parser.done:
                    break
            for chunk in parser.end():
                yield chunk
            complete = True
            await drain(resp)  # the gateway ends the body right after the finishing chunk
        finally:
            await events.aclose()
            settle(resp, complete=complete)

    def _events(self, resp: Response) -> AsyncGenerator[ServerSentEvent, None]:
        """The gateway's events, with its own silence limit (from the head on: a gateway sends the
        head with the first token) and messages."""
        idle = self.options.idle_timeout
        return sse_events(resp, what="the Livepeer gateway", idle=idle, first=idle, errors=GATEWAY_STREAM_ERRORS)

    # ------------------------------------------------------------------ models

    async def models(self) -> list[Model]:
        """Chat models (configured and discovered), then the media models with what they serve."""
        overrides = self.options.model_pipelines
        names = list(dict.fromkeys([*self.options.models, *await self._discover(), *overrides, *KNOWN_MODELS]))
        out: list[Model] = []
        for name in names:
            model: Model = {"id": name, "object": "model", "created": self._created, "owned_by": "livepeer"}
            model["pipelines"] = sorted(pipelines_of(name, overrides) or {"llm"})
            out.append(model)
        return out

    async def _discover(self) -> list[str]:
        """LLM models advertised on the network (``/getNetworkCapabilities``, capability 33)."""
        cli = self.options.cli_url
        if not cli:
            return []
        now = time.monotonic()
        if self._discovered_at and now - self._discovered_at < self.options.discovery_ttl:
            return self._discovered
        self._discovered_at = now
        try:
            async with asyncio.timeout(5):
                async with self._http().get(cli.rstrip("/") + CAPABILITIES_PATH) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("model discovery at %s failed: %s", cli, type(exc).__name__)
            return self._discovered
        if status != 200:
            log.warning("model discovery at %s answered %s: %.100r", cli, status, raw)
            return self._discovered
        self._discovered = _llm_models(raw)
        return self._discovered


def _empty_body() -> UpstreamError:
    return UpstreamError(
        "The Livepeer gateway answered 200 with an empty body (its request validator dropped the request)."
    )


def _llm_models(raw: bytes) -> list[str]:
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    names: list[str] = []
    for orch in data.get("orchestrators") or [] if isinstance(data, dict) else []:
        try:
            per_cap = orch["capabilities"]["constraints"]["PerCapability"][LLM_CAPABILITY]["models"]
        except (KeyError, TypeError):
            continue
        if isinstance(per_cap, dict):
            names.extend(str(k) for k in per_cap)
    return sorted(set(names))


# ---------------------------------------------------------------------- library helpers


def _as_request(request: ChatCompletionRequest | dict[str, Any], *, stream: bool) -> ChatCompletionRequest:
    """Validate ``request`` (a dict is validated like the server does) and set ``stream``."""
    if isinstance(request, ChatCompletionRequest):
        request = request.model_dump(exclude_unset=True)
    update: dict[str, Any] = {"stream": stream}
    if not stream:
        update["stream_options"] = None
    return ChatCompletionRequest.model_validate({**request, **update}, strict=True)


async def stream_chat(
    gateway_url: str, request: ChatCompletionRequest | dict[str, Any], **options: Any
) -> AsyncIterator[ChatCompletionChunk]:
    """Yield OpenAI ``chat.completion.chunk`` dicts for ``request`` from a Livepeer gateway.

    ``options`` are ``LivepeerOptions`` fields (``gateway_api``, ``gateway_token``, timeouts, ...).
    Raises ``BridgeError`` (with ``.status`` and ``.body()``) on failure.
    """
    backend = LivepeerBackend(LivepeerOptions(gateway_url=gateway_url, **options))
    try:
        async for chunk in backend.stream(_as_request(request, stream=True)):
            yield chunk
    finally:
        await backend.aclose()


async def chat(gateway_url: str, request: ChatCompletionRequest | dict[str, Any], **options: Any) -> ChatCompletion:
    """One non-stream ``chat.completion`` for ``request`` from a Livepeer gateway."""
    backend = LivepeerBackend(LivepeerOptions(gateway_url=gateway_url, **options))
    try:
        return await backend.chat(_as_request(request, stream=False))
    finally:
        await backend.aclose()
