"""``oai-bridge serve | simulate``: the command line. Every ``serve`` option is also an env var and
a config-file key (see ``oai_bridge.config.OPTIONS``); precedence is flag > env > file > default."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from . import __version__
from .backends.base import Health
from .config import CONFIG_ENV, OPTIONS, ConfigError, Settings, load_settings
from .logs import log_config
from .redact import redact, register_env_secrets, register_secret

log = logging.getLogger("oai_bridge")

SERVE_EPILOG = """\
With no gateway configured, the built-in Livepeer gateway simulator runs in-process and every
reply is simulated (said loudly in the log). Examples:
  oai-bridge serve                                   # simulator, http://127.0.0.1:8080/v1
  oai-bridge serve --gateway http://127.0.0.1:8935   # a real gateway, API generation auto-detected
  LIVEPEER_GATEWAY_URL=https://gw.example oai-bridge serve --port 9000 --workers 2
Config file (TOML): [server] host/port/workers/...; [livepeer] gateway_url/gateway_api/...;
the key names are the option names below with '-' → '_' (see docs/configuration.md).
"""


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the OpenAI-compatible server",
        description="Run the OpenAI-compatible API server (POST /v1/chat/completions, GET /v1/models, "
        "GET /health) in front of a Livepeer AI gateway.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help=f"TOML config file (env {CONFIG_ENV})")
    for option in OPTIONS:
        default = "unset" if option.default in (None, [], {}) else option.default
        if isinstance(default, list):
            default = ",".join(default)
        if option.secret:
            default = "unset"
        p.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.metavar,
            default=None,
            help=f"{option.help} (env {option.env}; default {default})",
        )


def _simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="run the built-in Livepeer gateway simulator alone",
        description="Run the Livepeer gateway simulator: POST /llm (both generations), GET /healthz, "
        "GET /getNetworkCapabilities. Fault modes are chosen per request with a [[sim ...]] "
        "directive in the last user message or an X-Sim header (see `pydoc "
        "oai_bridge.simulators.livepeer`).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8935, help="port (default 8935, the usual gateway port)")
    p.add_argument(
        "--api",
        choices=("json", "form"),
        default="json",
        help="/llm generation: json (gateway >= v0.8.3) or form (legacy multipart); default json",
    )
    p.add_argument(
        "--token-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay between streamed tokens (default 0)",
    )


def _models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="print every backend's health and the merged model list",
        description="Build the configured backends (the same config file, env vars and flags as "
        "`serve`), probe each one, and print its health and the models the bridge would list at "
        "GET /v1/models with the backends serving each. Exit status 1 when no backend is reachable.",
    )
    p.add_argument("--config", metavar="FILE", help=f"TOML config file (env {CONFIG_ENV})")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


class _Parser(argparse.ArgumentParser):
    """argparse whose error messages (which quote what was typed) hold no secret."""

    def error(self, message: str) -> NoReturn:
        super().error(redact(message))


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="oai-bridge",
        description="An OpenAI-compatible API in front of a Livepeer AI gateway.",
    )
    parser.add_argument("--version", action="version", version=f"oai-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _serve_parser(sub)
    _models_parser(sub)
    _simulate_parser(sub)
    return parser


def _configure_logging(level: str) -> None:
    """One stderr handler for every logger (uvicorn's too): each line names its request and holds
    no secret (``oai_bridge.logs``). ``serve`` hands the same config to uvicorn's workers."""
    logging.config.dictConfig(log_config(level))


def _register_secrets(argv: Sequence[str]) -> None:
    """Before anything can print them: the values of secret flags and env vars (``redact``)."""
    secret_flags = {o.flag for o in OPTIONS if o.secret}
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in secret_flags:
            register_secret(value if eq else (argv[i + 1] if i + 1 < len(argv) else None))
    register_env_secrets(os.environ, [o.env for o in OPTIONS if o.secret])


def _register_file_secrets(path: str | None) -> None:
    """The keys a config file's backends name (``api_key_env``), for a config error that may quote
    one: the file could not be loaded, so they were not registered the usual way."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    tables = data.get("backends")
    for table in tables.values() if isinstance(tables, dict) else ():
        name = table.get("api_key_env") if isinstance(table, dict) else None
        if isinstance(name, str):
            register_secret(os.environ.get(name))


def serve(settings: Settings) -> None:
    import uvicorn

    from .server import shutdown
    from .server.app import SETTINGS_ENV, create_app
    from .server.protocol import CoalescingHttpToolsProtocol

    upstream = settings.gateway_url or "the built-in simulator"
    log.info(
        "oai-bridge %s: OpenAI API at http://%s:%s/v1 → Livepeer %s (api %s), %d worker(s)",
        __version__,
        settings.host,
        settings.port,
        upstream,
        settings.gateway_api,
        settings.workers,
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "log_config": log_config(settings.log_level),
        "timeout_graceful_shutdown": shutdown.last_resort(settings.shutdown_grace),
        "proxy_headers": False,
        "server_header": False,
        "http": CoalescingHttpToolsProtocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,  # the request head limit (431)
    }
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = orjson.dumps(settings.to_dict()).decode()
        app = "oai_bridge.server.app:app_from_env"
        shutdown.run_workers(uvicorn.Config(app, factory=True, workers=settings.workers, **common))
    else:
        shutdown.run_server(uvicorn.Config(create_app(settings, tune_gc=True), **common))


def main(argv: Sequence[str] | None = None) -> int:
    _register_secrets(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "simulate":
        _configure_logging("info")
        from .simulators.livepeer import run

        run(args.host, args.port, api=args.api, token_delay=args.token_delay)
        return 0
    values = {o.name: getattr(args, o.name, None) for o in OPTIONS}
    try:
        settings = load_settings(values, config_file=args.config)
        from .assemble import build_backends

        build_backends(settings, gateway_url=settings.gateway_url or "http://127.0.0.1:1")  # checks options
    except ConfigError as exc:
        _register_file_secrets(args.config or os.environ.get(CONFIG_ENV))
        print(f"oai-bridge: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    if args.command == "models":
        _configure_logging("warning")
        try:
            return asyncio.run(list_models(settings, as_json=args.json))
        except BrokenPipeError:  # e.g. piped into head
            return 0
    _configure_logging(settings.log_level)
    serve(settings)
    return 0


async def list_models(settings: Settings, *, as_json: bool = False) -> int:
    """``oai-bridge models``: each backend's health, then the merged model list."""
    from .assemble import build_backends, build_router

    simulator = None
    gateway_url = None
    if settings.simulated:
        from .simulators import livepeer as sim

        simulator = await sim.start_simulator()
        gateway_url = simulator.url
    router = build_router(settings, build_backends(settings, gateway_url=gateway_url))
    try:
        health, models = await asyncio.gather(router.health(), router.models())
    finally:
        await router.aclose()
        if simulator is not None:
            await simulator.aclose()
    if as_json:
        print(orjson.dumps({"backends": health, "models": models}, option=orjson.OPT_INDENT_2).decode())
    else:
        sim_url = simulator.url if simulator is not None else None
        rows = [_health_row(h, sim_url) for h in health]
        print(_table(["BACKEND", "KIND", "STATUS", "URL", "DETAIL"], rows))
        if simulator is not None:
            print("(no backend configured: the built-in Livepeer simulator stands in)")
        print()
        rows = [[m["id"], ", ".join(m.get("backends", [])), ", ".join(m.get("pipelines", []))] for m in models]
        print(_table(["MODEL", "BACKENDS", "PIPELINES"], rows))
    return 0 if any(h["status"] == "connected" for h in health) else 1


def _health_row(h: Health, simulator_url: str | None) -> list[str]:
    detail = f"{h['latency_ms']:g} ms" if h["latency_ms"] is not None else ""
    if h["error"]:
        detail = h["error"]
    url = "(built-in simulator)" if h["url"] == simulator_url else h["url"]
    return [h["name"], h["kind"], h["status"], url, detail]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)
