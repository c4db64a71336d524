"""``create_app(settings)``: routes, error handlers, and a lifespan that builds the backends (and
the built-in gateway simulator when no gateway is configured) and closes them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..assemble import build_backends, build_router
from ..config import Settings
from ..errors import BridgeError, InvalidRequest, NotFound
from ..logs import REQUEST_ID
from . import handlers
from .context import AppContext, new_request_id, with_request_id
from .cors import CORSMiddleware, CORSPolicy
from .shutdown import shutting_down

log = logging.getLogger("oai_bridge.server")

SETTINGS_ENV = "OAI_BRIDGE__SETTINGS_JSON"
GC_THRESHOLD = 50_000
STARTUP_DISCOVERY_SECONDS = 5.0


CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})


def _request_id(scope: dict[str, Any]) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            given: str = value.decode("latin-1")
            if 0 < len(given) <= 128 and given.isascii() and given.isprintable():
                return given
            break
    return new_request_id()


class BridgeApp:
    """The ASGI app: chat completions go straight to their raw handler (the hot path); lifespan
    and every other route go through Starlette. Every request gets an ``x-request-id``."""

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette
        self.ctx: AppContext | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            rid = _request_id(scope)
            token = REQUEST_ID.set(rid)  # every log line of this request names it (oai_bridge.logs)
            try:
                if scope["method"] == "POST" and scope["path"] in CHAT_PATHS and self.ctx is not None:
                    await handlers.chat_completions(self.ctx, scope, receive, send, rid)
                    return
                scope.setdefault("state", {})["request_id"] = rid
                await self._http(scope, receive, send, rid)
                return
            finally:
                REQUEST_ID.reset(token)
        await self.starlette(scope, receive, send)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any, rid: str) -> None:
        """A Starlette route; one still running at the end of the shutdown grace gets a 503 if it
        has sent nothing yet."""
        sent = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal sent
            if not sent:
                with_request_id(message, rid)  # Starlette's own answers too (404, 405, redirects)
            sent = True
            await send(message)

        ctx = self.ctx
        try:
            await self.starlette(scope, receive, tracked)
        except asyncio.CancelledError:
            if sent or ctx is None or not ctx.drain.absorb():
                raise
            await handlers.send_error(send, shutting_down(), rid)

    def begin_drain(self, tasks: set[asyncio.Task[None]]) -> None:
        """uvicorn began a graceful shutdown (``server/shutdown.py``)."""
        if self.ctx is not None:
            self.ctx.drain.begin(tasks)


class CORSBridgeApp(BridgeApp):
    """``BridgeApp`` behind the CORS layer (``server/cors.py``), in front of every route, the raw
    chat route too. ``create_app`` uses it only when ``cors_origins`` is set: CORS off costs nothing."""

    def __init__(self, starlette: Starlette, settings: Settings) -> None:
        super().__init__(starlette)
        policy = CORSPolicy(settings.cors_origins, settings.cors_allow_headers, settings.cors_max_age)
        self._cors = CORSMiddleware(super().__call__, policy, request_id=_request_id)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._cors(scope, receive, send)


def _rid(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or new_request_id()


async def _bridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BridgeError)
    if exc.status >= 500:
        log.warning("request %s failed: %s", _rid(request), exc.message)
    return handlers.error_response(exc, _rid(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: BridgeError = NotFound(f"Unknown path {request.url.path}.", code="unknown_url")
    elif exc.status_code == 405:
        error = InvalidRequest(
            f"Method {request.method} is not allowed on {request.url.path}.",
            status=405,
            code="method_not_allowed",
        )
    else:  # a 4xx is the client's (invalid_request_error), not a server_error
        error = (InvalidRequest if exc.status_code < 500 else BridgeError)(str(exc.detail), status=exc.status_code)
    response = handlers.error_response(error, _rid(request))
    if exc.headers:
        response.headers.update(exc.headers)  # a 405's Allow
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in request %s", _rid(request), exc_info=exc)
    return handlers.error_response(BridgeError("The bridge failed unexpectedly.", status=500), _rid(request))


def create_app(settings: Settings | None = None, *, tune_gc: bool = False) -> BridgeApp:
    """The bridge as an ASGI app. ``tune_gc`` (the CLI sets it: it owns the process) freezes the
    startup heap and makes the cyclic garbage collector run less often."""
    settings = settings or Settings()
    bridge: BridgeApp

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        simulator = None
        gateway_url, default_models = None, None
        if settings.simulated:
            from ..simulators import livepeer as sim

            api = settings.gateway_api if settings.gateway_api in ("json", "form") else "json"
            simulator = await sim.start_simulator(api=api)
            log.warning(
                "No backend configured: replies come from the BUILT-IN SIMULATOR (a Livepeer gateway) at %s "
                "(api=%s). They are simulated, not model output. Set --gateway URL for a real gateway.",
                simulator.url,
                api,
            )
            gateway_url, default_models = simulator.url, settings.models or list(sim.DEFAULT_MODELS)
        router = build_router(
            settings, build_backends(settings, gateway_url=gateway_url, default_models=default_models)
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STARTUP_DISCOVERY_SECONDS):
                await router.models()  # learn which backend lists which model
        ctx = AppContext(settings=settings, router=router, simulator=simulator)
        app.state.ctx = bridge.ctx = ctx
        # Startup objects live for the whole run: keep them out of the cyclic GC's way, and let
        # it run less often (most per-request garbage is freed by reference counting).
        if tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, 20, 20)
        try:
            yield
        finally:
            bridge.ctx = None
            await ctx.router.aclose()
            if simulator is not None:
                await simulator.aclose()

    routes = [
        Route("/v1/chat/completions", handlers.not_ready, methods=["POST"]),
        Route("/chat/completions", handlers.not_ready, methods=["POST"]),
        Route("/v1/images/generations", handlers.image_generations, methods=["POST"]),
        Route("/v1/images/edits", handlers.image_edits, methods=["POST"]),
        Route("/v1/livepeer/{pipeline:path}", handlers.livepeer_passthrough, methods=["POST"]),
        Route("/v1/videos", handlers.videos_create, methods=["POST"]),
        Route("/v1/videos/{video_id}", handlers.videos_retrieve, methods=["GET"]),
        Route("/v1/videos/{video_id}/content", handlers.videos_content, methods=["GET"]),
        Route("/v1/audio/transcriptions", handlers.audio_transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", handlers.audio_speech, methods=["POST"]),
        Route("/v1/embeddings", handlers.embeddings, methods=["POST"]),
        Route("/v1/models", handlers.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", handlers.get_model, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/health/backends", handlers.health_backends, methods=["GET"]),
        Route("/openapi.json", handlers.openapi_json, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={BridgeError: _bridge_error, HTTPException: _http_error, Exception: _unexpected},
    )
    bridge = CORSBridgeApp(app, settings) if settings.cors_origins else BridgeApp(app)
    return bridge


def app_from_env() -> BridgeApp:
    """uvicorn factory for ``--workers N``: the parent passes its resolved settings in the env."""
    raw = os.environ.get(SETTINGS_ENV)
    return create_app(Settings.from_dict(orjson.loads(raw)) if raw else Settings(), tune_gc=True)
