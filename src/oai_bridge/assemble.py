"""Settings → the backends and the router (no I/O: sessions open on first use).

The ``[livepeer]`` options make a backend named ``livepeer`` (first, so the default) when a
gateway URL is set or nothing else is configured; every ``[backends.NAME]`` entry (or backend
registered by env vars) follows in declaration order, built by its kind's ``from_config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .backends import BACKENDS, Backend
from .backends.base import BackendConfig
from .backends.livepeer import LivepeerBackend
from .config import ConfigError, Settings
from .router import Router

__all__ = ["FALLBACK_MODELS", "build_backends", "build_router"]

#: Listed when nothing is configured: the model the Livepeer docs call the most available.
FALLBACK_MODELS = ["meta-llama/Meta-Llama-3.1-8B-Instruct"]


def build_backends(
    settings: Settings,
    *,
    gateway_url: str | None = None,
    default_models: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Backend]:
    """``gateway_url`` overrides the configured one (the built-in simulator's URL); a bad backend
    option raises ``ConfigError`` naming the backend."""
    env = os.environ if environ is None else environ
    backends: list[Backend] = []
    url = gateway_url or settings.gateway_url
    if settings.livepeer_backend and url is not None:
        options = settings.livepeer_options(url)
        if not options.models:
            fallback = [] if settings.cli_url else FALLBACK_MODELS
            options.models = list(default_models if default_models is not None else fallback)
        backends.append(LivepeerBackend(options))
    for spec in settings.backends:
        config = BackendConfig(
            name=spec.name,
            kind=spec.kind,
            base_url=spec.base_url,
            api_key=spec.api_key(env),
            connect_timeout=spec.connect_timeout,
            first_token_timeout=spec.first_token_timeout,
            idle_timeout=spec.idle_timeout,
            request_timeout=spec.request_timeout,
            models=list(spec.models),
            options=dict(spec.options),
        )
        try:
            backends.append(BACKENDS[spec.kind].from_config(config))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"backend {spec.name!r} ({spec.kind}): {exc}") from None
    return backends


def build_router(settings: Settings, backends: list[Backend]) -> Router:
    return Router(backends, settings.routes, policy=settings.policy())
