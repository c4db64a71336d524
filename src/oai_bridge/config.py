"""Settings: one table of options, read from a TOML file, then env vars, then CLI flags.

Each option is declared once in ``OPTIONS`` (its file section and key, env var, flag, type,
default and help); the CLI's ``--help``, the env lookup, the file reader and
``docs/configuration.md`` all follow that table. A bad value fails at start with a message naming
the file, the line (for TOML syntax errors) and the field.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .backends.livepeer import LivepeerOptions, LivepeerTuning
from .backends.livepeer.media import PIPELINES
from .failover import FailoverPolicy
from .routes import BackendSpec, Route, RouteError, discover, locate, parse_backends, parse_routes

__all__ = ["OPTIONS", "ConfigError", "Option", "Settings", "load_settings"]


#: The deepest ``max_json_depth`` allowed: orjson encodes at most 255 levels.
MAX_JSON_DEPTH = 200


class ConfigError(Exception):
    """A configuration value is wrong; the message says where."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _whole(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


def _positive_int(value: Any) -> int:
    number = _whole(value)
    if number < 1:
        raise ValueError(f"expected a number of at least 1, got {number}")
    return number


def _whole_min0(value: Any) -> int:
    number = _whole(value)
    if number < 0:
        raise ValueError(f"expected a number of at least 0, got {number}")
    return number


def _port(value: Any) -> int:
    number = _whole(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"expected a port number 0-65535, got {number}")
    return number


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected seconds, got {value!r}")
    number = float(value)
    if math.isnan(number) or number < 0:
        raise ValueError(f"expected seconds >= 0, got {number}")
    return number


def _api(value: Any) -> str:
    text = str(value)
    if text not in ("auto", "json", "form"):
        raise ValueError(f"expected auto, json or form, got {text!r}")
    return text


def _url(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    if not text.startswith(("http://", "https://")) or not urlsplit(text).hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _models(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if str(v).strip()]
    return [m.strip() for m in str(value).split(",") if m.strip()]


def _pipelines(value: Any) -> dict[str, str]:
    """``{"model": "pipeline"}`` (TOML table) or ``"model=pipeline,..."`` (env, flag)."""
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in str(value).split(","):
            if item.strip():
                model, sep, pipeline = item.partition("=")
                if not sep:
                    raise ValueError(f"expected model=pipeline, got {item.strip()!r}")
                pairs.append((model.strip(), pipeline.strip()))
    out: dict[str, str] = {}
    for model, pipeline in pairs:
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r} for {model!r} (known: {', '.join(PIPELINES)})")
        out[str(model)] = str(pipeline)
    return out


def _vision(value: Any) -> str:
    text = str(value)
    if text not in ("off", "caption"):
        raise ValueError(f"expected off or caption, got {text!r}")
    return text


def _json_depth(value: Any) -> int:
    number = _whole(value)
    if not 1 <= number <= MAX_JSON_DEPTH:  # orjson refuses to encode deeper (forwarded bodies)
        raise ValueError(f"expected a depth from 1 to {MAX_JSON_DEPTH}, got {number}")
    return number


def _header_bytes(value: Any) -> int:
    number = _whole(value)
    if number < 1024:
        raise ValueError(f"expected at least 1024 bytes, got {number}")
    return number


def _log_level(value: Any) -> str:
    text = str(value).lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"expected debug, info, warning or error, got {text!r}")
    return text


def _items(value: Any) -> list[str]:
    raw = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in raw if str(v).strip()]


def _origins(value: Any) -> list[str]:
    """Browser origins allowed by CORS: ``*`` or ``scheme://host[:port]`` each (a list or ``A,B``)."""
    out: list[str] = []
    for item in _items(value):
        origin = item.rstrip("/").lower()
        parts = urlsplit(origin)
        if origin != "*" and not (parts.scheme and parts.netloc and not parts.path and not parts.query):
            raise ValueError(f"expected '*' or origins like https://app.example.com, got {item!r}")
        out.append(origin)
    return out


_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'+.^_`|~-]+\*?|\*")


def _header_names(value: Any) -> list[str]:
    """Request header names (``x-stainless-*``: every name with that prefix; ``*``: any)."""
    out = [name.lower() for name in _items(value)]
    for name in out:
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"expected header names (a trailing * matches a prefix), got {name!r}")
    return out


#: What browser SDKs send (openai-node with dangerouslyAllowBrowser, anthropic-ts with
#: anthropic-dangerous-direct-browser-access), so a preflight must allow them.
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "x-stainless-*",
    "openai-*",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-request-id",
]


@dataclass(frozen=True)
class Option:
    name: str  # attribute of Settings
    section: str  # TOML table
    env: str
    flag: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("host", "server", "OAI_BRIDGE_HOST", "--host", str, "127.0.0.1", "address to listen on", "ADDR"),
    Option("port", "server", "OAI_BRIDGE_PORT", "--port", _port, 8080, "port to listen on", "PORT"),
    Option("workers", "server", "OAI_BRIDGE_WORKERS", "--workers", _positive_int, 1, "worker processes", "N"),
    Option(
        "log_level",
        "server",
        "OAI_BRIDGE_LOG_LEVEL",
        "--log-level",
        _log_level,
        "info",
        "debug, info, warning or error",
        "LEVEL",
    ),
    Option(
        "keepalive_interval",
        "server",
        "OAI_BRIDGE_KEEPALIVE_INTERVAL",
        "--keepalive-interval",
        _seconds,
        15.0,
        "seconds between ': keep-alive' comments while the upstream is silent (0 = off)",
        "SECONDS",
    ),
    Option(
        "max_body_bytes",
        "server",
        "OAI_BRIDGE_MAX_BODY_BYTES",
        "--max-body-bytes",
        _positive_int,
        8 << 20,
        "largest request body accepted (larger: 413)",
        "BYTES",
    ),
    Option(
        "max_upload_bytes",
        "server",
        "OAI_BRIDGE_MAX_UPLOAD_BYTES",
        "--max-upload-bytes",
        _positive_int,
        25 << 20,
        "largest multipart upload accepted (audio, images; larger: 413)",
        "BYTES",
    ),
    Option(
        "max_messages",
        "server",
        "OAI_BRIDGE_MAX_MESSAGES",
        "--max-messages",
        _positive_int,
        2048,
        "most messages one chat request may hold (more: 400)",
        "N",
    ),
    Option(
        "max_json_depth",
        "server",
        "OAI_BRIDGE_MAX_JSON_DEPTH",
        "--max-json-depth",
        _json_depth,
        64,
        "deepest nesting of arrays and objects accepted in a JSON body, 1-200 (deeper: 400)",
        "N",
    ),
    Option(
        "max_header_bytes",
        "server",
        "OAI_BRIDGE_MAX_HEADER_BYTES",
        "--max-header-bytes",
        _header_bytes,
        64 << 10,
        "largest request head (request line and headers) accepted (larger: 431, connection closed)",
        "BYTES",
    ),
    Option(
        "shutdown_grace",
        "server",
        "OAI_BRIDGE_SHUTDOWN_GRACE",
        "--shutdown-grace",
        _seconds,
        25.0,
        "seconds in-flight requests get to finish after SIGTERM/SIGINT (then: an error frame or 503)",
        "SECONDS",
    ),
    Option(
        "cors_origins",
        "server",
        "OAI_BRIDGE_CORS_ORIGINS",
        "--cors-origins",
        _origins,
        [],
        "browser origins allowed to call the API (CORS), comma-separated, or * for any; unset: CORS off",
        "A,B",
    ),
    Option(
        "cors_allow_headers",
        "server",
        "OAI_BRIDGE_CORS_ALLOW_HEADERS",
        "--cors-allow-headers",
        _header_names,
        CORS_ALLOW_HEADERS,
        "request headers a CORS preflight allows (a trailing * matches a prefix; * allows any)",
        "A,B",
    ),
    Option(
        "cors_max_age",
        "server",
        "OAI_BRIDGE_CORS_MAX_AGE",
        "--cors-max-age",
        _whole_min0,
        600,
        "seconds a browser may cache a CORS preflight answer",
        "SECONDS",
    ),
    Option(
        "gateway_url",
        "livepeer",
        "LIVEPEER_GATEWAY_URL",
        "--gateway",
        _url,
        None,
        "Livepeer gateway base URL, e.g. http://127.0.0.1:8935; unset: the built-in simulator",
        "URL",
    ),
    Option(
        "gateway_api",
        "livepeer",
        "LIVEPEER_GATEWAY_API",
        "--gateway-api",
        _api,
        "auto",
        "/llm generation: json (gateway >= v0.8.3), form (<= v0.8.2, Livepeer Studio) or auto",
        "API",
    ),
    Option(
        "gateway_token",
        "livepeer",
        "LIVEPEER_GATEWAY_TOKEN",
        "--gateway-token",
        str,
        None,
        "sent as 'Authorization: Bearer TOKEN' to the gateway (Studio, token-checking proxies)",
        "TOKEN",
        secret=True,
    ),
    Option(
        "cli_url",
        "livepeer",
        "LIVEPEER_CLI_URL",
        "--gateway-cli",
        _url,
        None,
        "gateway CLI URL (e.g. http://127.0.0.1:5935) to discover LLM models via /getNetworkCapabilities",
        "URL",
    ),
    Option(
        "models",
        "livepeer",
        "LIVEPEER_MODELS",
        "--models",
        _models,
        [],
        "models listed by /v1/models (comma-separated); any name is still forwarded",
        "A,B",
    ),
    Option(
        "model_pipelines",
        "livepeer",
        "LIVEPEER_MODEL_PIPELINES",
        "--model-pipelines",
        _pipelines,
        {},
        "what pipeline a model serves, beyond the gateway's defaults (model=pipeline,...); "
        "chat with an image-to-text model captions its image",
        "MAP",
    ),
    Option(
        "vision",
        "livepeer",
        "LIVEPEER_VISION",
        "--vision",
        _vision,
        "off",
        "image parts sent to an LLM: off (400) or caption (each image captioned by --vision-model, "
        "the caption inlined as text)",
        "MODE",
    ),
    Option(
        "vision_model",
        "livepeer",
        "LIVEPEER_VISION_MODEL",
        "--vision-model",
        str,
        "Salesforce/blip-image-captioning-large",
        "image-to-text model used by --vision caption",
        "MODEL",
    ),
    Option(
        "default_max_tokens",
        "livepeer",
        "LIVEPEER_DEFAULT_MAX_TOKENS",
        "--default-max-tokens",
        _positive_int,
        256,
        "max_tokens sent when the client sets none (the gateway bills by it)",
        "N",
    ),
    Option(
        "strip_assistant_header",
        "livepeer",
        "LIVEPEER_STRIP_ASSISTANT_HEADER",
        "--strip-assistant-header",
        _bool,
        True,
        "remove a leading 'assistant' header leaked by the runner's chat template",
        "BOOL",
    ),
    Option(
        "connect_timeout",
        "livepeer",
        "LIVEPEER_CONNECT_TIMEOUT",
        "--connect-timeout",
        _seconds,
        10.0,
        "seconds to open a connection to the gateway",
        "SECONDS",
    ),
    Option(
        "first_token_timeout",
        "livepeer",
        "LIVEPEER_FIRST_TOKEN_TIMEOUT",
        "--first-token-timeout",
        _seconds,
        120.0,
        "seconds to wait for the first streamed token (then 504)",
        "SECONDS",
    ),
    Option(
        "idle_timeout",
        "livepeer",
        "LIVEPEER_IDLE_TIMEOUT",
        "--idle-timeout",
        _seconds,
        60.0,
        "seconds of silence allowed between streamed tokens (then an error event)",
        "SECONDS",
    ),
    Option(
        "request_timeout",
        "livepeer",
        "LIVEPEER_REQUEST_TIMEOUT",
        "--request-timeout",
        _seconds,
        600.0,
        "seconds for a whole non-stream answer (then 504)",
        "SECONDS",
    ),
    Option(
        "retries",
        "failover",
        "OAI_BRIDGE_RETRIES",
        "--retries",
        _whole_min0,
        2,
        "extra attempts on one upstream after a 429, 5xx or reset, before the next upstream",
        "N",
    ),
    Option(
        "backoff",
        "failover",
        "OAI_BRIDGE_BACKOFF",
        "--backoff",
        _seconds,
        0.25,
        "base of the jittered exponential backoff between retries (seconds)",
        "SECONDS",
    ),
    Option(
        "max_retry_wait",
        "failover",
        "OAI_BRIDGE_MAX_RETRY_WAIT",
        "--max-retry-wait",
        _seconds,
        10.0,
        "longest Retry-After the bridge waits out before retrying (longer: the next upstream)",
        "SECONDS",
    ),
    Option(
        "silent_timeout",
        "failover",
        "OAI_BRIDGE_SILENT_TIMEOUT",
        "--silent-timeout",
        _seconds,
        8.0,
        "seconds a stream may take to its first chunk while another upstream could take over",
        "SECONDS",
    ),
    Option(
        "breaker_failures",
        "failover",
        "OAI_BRIDGE_BREAKER_FAILURES",
        "--breaker-failures",
        _positive_int,
        5,
        "consecutive failures of one upstream and model that open its circuit breaker",
        "N",
    ),
    Option(
        "breaker_cooldown",
        "failover",
        "OAI_BRIDGE_BREAKER_COOLDOWN",
        "--breaker-cooldown",
        _seconds,
        30.0,
        "seconds an open circuit breaker skips its upstream before one probe request",
        "SECONDS",
    ),
    Option(
        "max_resumes",
        "failover",
        "OAI_BRIDGE_MAX_RESUMES",
        "--max-resumes",
        _whole_min0,
        3,
        "times one broken stream may be continued on an upstream able to resume",
        "N",
    ),
)

OPTION_BY_NAME = {o.name: o for o in OPTIONS}
CONFIG_ENV = "OAI_BRIDGE_CONFIG"


@dataclass(kw_only=True)
class Settings(LivepeerTuning):
    """Every option: the server's own, and (inherited) the Livepeer backend's."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    keepalive_interval: float = 15.0
    max_body_bytes: int = 8 << 20
    max_upload_bytes: int = 25 << 20
    max_messages: int = 2048
    max_json_depth: int = 64
    max_header_bytes: int = 64 << 10
    shutdown_grace: float = 25.0
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off (no layer at all)
    cors_allow_headers: list[str] = field(default_factory=lambda: list(CORS_ALLOW_HEADERS))
    cors_max_age: int = 600
    gateway_url: str | None = None  # unset: the built-in simulator (when no backend is declared)
    retries: int = 2
    backoff: float = 0.25
    max_retry_wait: float = 10.0
    silent_timeout: float = 8.0
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    max_resumes: int = 3
    backends: list[BackendSpec] = field(default_factory=list)  # [backends.NAME] or env discovery
    routes: list[Route] = field(default_factory=list)  # [[routes]]

    @property
    def simulated(self) -> bool:
        """Nothing configured: the built-in Livepeer simulator answers."""
        return self.gateway_url is None and not self.backends

    @property
    def livepeer_backend(self) -> bool:
        """Whether the ``[livepeer]`` options make a backend named ``livepeer`` (a gateway URL is
        set, or nothing else is configured and the simulator stands in)."""
        return self.gateway_url is not None or not self.backends

    def policy(self) -> FailoverPolicy:
        return FailoverPolicy(
            retries=self.retries,
            backoff=self.backoff,
            max_retry_wait=self.max_retry_wait,
            silent_timeout=self.silent_timeout,
            breaker_failures=self.breaker_failures,
            breaker_cooldown=self.breaker_cooldown,
            max_resumes=self.max_resumes,
        )

    def livepeer_options(self, gateway_url: str | None = None) -> LivepeerOptions:
        """The ``[livepeer]`` options as the backend's ``LivepeerOptions`` (``gateway_url`` overridable)."""
        url = gateway_url or self.gateway_url
        if url is None:
            raise ConfigError("no Livepeer gateway URL")
        tuning = {f.name: getattr(self, f.name) for f in fields(LivepeerTuning)}
        tuning["models"] = list(self.models)
        tuning["model_pipelines"] = dict(self.model_pipelines)
        return LivepeerOptions(gateway_url=url, **tuning)

    def to_dict(self) -> dict[str, Any]:
        out = {o.name: getattr(self, o.name) for o in OPTIONS}
        out["backends"] = [b.to_dict() for b in self.backends]
        out["routes"] = [r.to_dict() for r in self.routes]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Settings:
        settings = cls(**{k: v for k, v in values.items() if k in OPTION_BY_NAME})
        settings.backends = [
            b if isinstance(b, BackendSpec) else BackendSpec.from_dict(b) for b in values.get("backends", [])
        ]
        settings.routes = [r if isinstance(r, Route) else Route.from_dict(r) for r in values.get("routes", [])]
        return settings


SECTIONS = ("server", "livepeer", "failover")


def _at(path: Path, line: int | None) -> str:
    return f"config file {path}, line {line}" if line else f"config file {path}"


def _read_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(option values, the raw ``backends`` and ``routes`` tables plus the file's text)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    values: dict[str, Any] = {}
    topology: dict[str, Any] = {"text": text}
    for section, table in data.items():
        if section in ("backends", "routes"):
            topology[section] = table
            continue
        if not isinstance(table, dict) or section not in SECTIONS:
            raise ConfigError(
                f"{_at(path, locate(text, (section,)))}: unknown section [{section}] "
                "(known: [server], [livepeer], [failover], [backends.NAME], [[routes]])"
            )
        for key, value in table.items():
            option = OPTION_BY_NAME.get(key)
            where = f"{_at(path, locate(text, (section,), key))}: [{section}] {key}"
            if option is None or option.section != section:
                known = ", ".join(o.name for o in OPTIONS if o.section == section)
                raise ConfigError(f"{where}: unknown field (known: {known})")
            values[key] = _parse(option, value, where)
    return values, topology


def _parse(option: Option, value: Any, where: str) -> Any:
    try:
        return option.parse(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_settings(
    cli: Mapping[str, Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < config file < env vars < CLI values (``None`` in ``cli`` means "not given")."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    path = config_file or env.get(CONFIG_ENV)
    topology: dict[str, Any] = {}
    if path:
        file_values, topology = _read_file(Path(path))
        values.update(file_values)
    for option in OPTIONS:
        if option.env in env and env[option.env] != "":
            values[option.name] = _parse(option, env[option.env], f"env {option.env}")
    for name, value in (cli or {}).items():
        if value is not None and name in OPTION_BY_NAME:
            option = OPTION_BY_NAME[name]
            values[name] = _parse(option, value, f"option {option.flag}")
    settings = Settings.from_dict(values)
    _topology(settings, topology, f"config file {path}", env)
    return settings


def _topology(settings: Settings, raw: dict[str, Any], source: str, env: Mapping[str, str]) -> None:
    """Backends (the file's, else those env vars register) and routes, checked against each other."""
    from .backends import BACKENDS

    text = raw.get("text", "")
    try:
        if "backends" in raw:
            settings.backends = parse_backends(raw["backends"], kinds=frozenset(BACKENDS), source=source, text=text)
        else:
            settings.backends = discover(env)
        names = {b.name for b in settings.backends}
        if settings.livepeer_backend:
            if "livepeer" in names:
                raise RouteError(
                    f"{source}: [backends.livepeer] and the [livepeer] gateway_url (or LIVEPEER_GATEWAY_URL) "
                    "both declare a backend named 'livepeer'; keep one"
                )
            names.add("livepeer")
        kinds = {b.name: b.kind for b in settings.backends} | {"livepeer": "livepeer"}
        resumable = {n for n in names if BACKENDS[kinds[n]].can_continue}
        settings.routes = parse_routes(
            raw.get("routes", []), backends=names, source=source, text=text, resumable=resumable
        )
    except RouteError as exc:
        raise ConfigError(str(exc)) from None
