"""Which backends exist and which public model names go to which upstreams (pure: parsing only).

From the config file::

    [backends.gw1]                      # a backend: its name, kind and where it is
    kind = "livepeer"                   # a key of backends.BACKENDS
    base_url = "http://10.0.0.5:8935"
    api_key_env = "GW1_TOKEN"           # the env var holding its key (keys never go in the file)
    first_token_timeout = 60            # connect_/first_token_/idle_/request_timeout, seconds
    models = ["meta-llama/Meta-Llama-3.1-8B-Instruct"]
    [backends.gw1.options]              # what only this kind understands
    gateway_api = "json"

    [[routes]]                          # a public model name → ordered upstreams
    model = "llama"                     # or "prefix/*": the rest of the name is the upstream model
    aliases = ["default"]
    strategy = "fallback"               # or "weighted" (smooth weighted round-robin)
    upstreams = [
      { backend = "gw1", model = "meta-llama/Meta-Llama-3.1-8B-Instruct" },
      { backend = "local", model = "llama3.1:8b", resume = true, weight = 1 },
    ]

and, when the file declares no backends, from env vars (``discover``): ``LIVEPEER_GATEWAY_URL``,
``OLLAMA_URL``, ``LLAMACPP_URL``, ``LMSTUDIO_URL``, ``OPENAI_API_KEY`` (+ ``OPENAI_BASE_URL``),
``ANTHROPIC_API_KEY`` (+ ``ANTHROPIC_BASE_URL``). Every error names the file, the line and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "BackendSpec",
    "Route",
    "RouteError",
    "Upstream",
    "discover",
    "locate",
    "parse_backends",
    "parse_routes",
]

TIMEOUTS = ("connect_timeout", "first_token_timeout", "idle_timeout", "request_timeout")
BACKEND_KEYS = frozenset({"kind", "base_url", "api_key_env", "models", "options", *TIMEOUTS})
ROUTE_KEYS = frozenset({"model", "aliases", "strategy", "upstreams", "backend", "upstream_model", "resume", "weight"})
UPSTREAM_KEYS = frozenset({"backend", "model", "weight", "resume"})


class RouteError(ValueError):
    """A wrong backend or route declaration; the message names where."""


@dataclass(frozen=True)
class BackendSpec:
    """A declared backend, before it is built (JSON-able: worker processes receive it)."""

    name: str
    kind: str
    base_url: str
    api_key_env: str | None = None
    connect_timeout: float = 10.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    request_timeout: float = 600.0
    models: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def api_key(self, environ: Mapping[str, str]) -> str | None:
        return environ.get(self.api_key_env) or None if self.api_key_env else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["models"] = list(self.models)
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackendSpec:
        return cls(**{**data, "models": tuple(data.get("models", ()))})


@dataclass(frozen=True)
class Upstream:
    backend: str
    model: str | None = None  # None: the requested name (or, for a prefix route, the rest of it)
    weight: int = 1
    resume: bool = False  # able to continue an assistant prefix (stream resumption)


@dataclass(frozen=True)
class Route:
    model: str  # a public name, or "prefix/*"
    upstreams: tuple[Upstream, ...]
    strategy: Literal["fallback", "weighted"] = "fallback"
    aliases: tuple[str, ...] = ()

    @property
    def prefix(self) -> str | None:
        return self.model[:-1] if self.model.endswith("/*") else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        ups = tuple(Upstream(**u) for u in data["upstreams"])
        return cls(model=data["model"], upstreams=ups, strategy=data["strategy"], aliases=tuple(data["aliases"]))


# --------------------------------------------------------------------------- locating errors


def locate(text: str, table: tuple[str | int, ...], key: str | None = None) -> int | None:
    """The 1-based line of ``key`` inside TOML table ``table`` (``("backends", "gw1")``, or
    ``("routes", 2)`` for the third ``[[routes]]``), else the table's header line, else ``None``."""
    header_line: int | None = None
    current: tuple[str | int, ...] | None = None
    counts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("[["):
            name = line[2:].split("]]", 1)[0].strip()
            counts[name] = counts.get(name, -1) + 1
            current = (name, counts[name])
        elif line.startswith("["):
            current = tuple(part.strip().strip('"') for part in line[1:].split("]", 1)[0].split("."))
        else:
            if current == table and key is not None and line.split("=", 1)[0].strip().strip('"') == key:
                return number
            continue
        if current == table:
            header_line = number
    if header_line is None and len(table) > 1 and isinstance(table[-1], str):
        return locate(text, table[:-1], table[-1])  # an inline table: the line of its key
    return header_line


def _where(source: str, text: str, table: tuple[str | int, ...], key: str | None) -> str:
    line = locate(text, table, key) if text else None
    name = table[0] if table[0] == "routes" else ".".join(str(p) for p in table)
    label = f"[[routes]] #{int(table[1]) + 1}" if table[0] == "routes" else f"[{name}]"
    at = f"{source}, line {line}" if line else source
    return f"{at}: {label}" + (f" {key}" if key else "")


# --------------------------------------------------------------------------- backends


def _url(value: Any) -> str:
    text = str(value).strip()
    if not text.startswith(("http://", "https://")) or not urlsplit(text).hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < 0:
        raise ValueError(f"expected seconds >= 0, got {value!r}")
    return float(value)


def parse_backends(tables: Any, *, kinds: frozenset[str], source: str = "config", text: str = "") -> list[BackendSpec]:
    """``[backends.NAME]`` tables → specs (``kinds``: the registry's keys)."""
    if not isinstance(tables, dict):
        raise RouteError(f"{source}: backends must be tables ([backends.NAME])")
    specs: list[BackendSpec] = []
    for name, table in tables.items():
        where = (("backends", name), source, text)

        def fail(key: str | None, message: str, where: tuple[Any, ...] = where) -> RouteError:
            return RouteError(f"{_where(where[1], where[2], where[0], key)}: {message}")

        if not isinstance(table, dict):
            raise fail(None, "must be a table")
        unknown = sorted(set(table) - BACKEND_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown field (known: {', '.join(sorted(BACKEND_KEYS))})")
        kind = table.get("kind")
        if kind is None:
            raise fail(None, "missing field 'kind'")
        if kind not in kinds:
            raise fail("kind", f"unknown kind {kind!r} (known: {', '.join(sorted(kinds))})")
        if "base_url" not in table:
            raise fail(None, "missing field 'base_url'")
        values: dict[str, Any] = {"name": str(name), "kind": kind}
        try:
            values["base_url"] = _url(table["base_url"])
        except ValueError as exc:
            raise fail("base_url", str(exc)) from None
        for key in TIMEOUTS:
            if key in table:
                try:
                    values[key] = _seconds(table[key])
                except ValueError as exc:
                    raise fail(key, str(exc)) from None
        if "api_key_env" in table:
            if not isinstance(table["api_key_env"], str) or not table["api_key_env"]:
                raise fail("api_key_env", "expected the name of an environment variable")
            values["api_key_env"] = table["api_key_env"]
        models = table.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise fail("models", "expected a list of model names")
        values["models"] = tuple(models)
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise fail("options", "expected a table")
        values["options"] = options
        specs.append(BackendSpec(**values))
    return specs


# --------------------------------------------------------------------------- routes


def _upstream(raw: Any, fail: Any, backends: set[str]) -> Upstream:
    if isinstance(raw, str):
        raw = {"backend": raw}
    if not isinstance(raw, dict):
        raise fail("upstreams", "each upstream is a table {backend = ..., model = ...} or a backend name")
    unknown = sorted(set(raw) - UPSTREAM_KEYS)
    if unknown:
        raise fail("upstreams", f"unknown upstream field {unknown[0]!r} (known: {', '.join(sorted(UPSTREAM_KEYS))})")
    backend = raw.get("backend")
    if backend not in backends:
        raise fail("upstreams", f"unknown backend {backend!r} (declared: {', '.join(sorted(backends)) or 'none'})")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise fail("upstreams", "an upstream's model must be a non-empty string")
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise fail("upstreams", f"weight must be a whole number >= 1, got {weight!r}")
    resume = raw.get("resume", False)
    if not isinstance(resume, bool):
        raise fail("upstreams", f"resume must be true or false, got {resume!r}")
    return Upstream(backend=str(backend), model=model, weight=weight, resume=resume)


def parse_routes(
    tables: Any, *, backends: set[str], source: str = "config", text: str = "", resumable: set[str] | None = None
) -> list[Route]:
    """``[[routes]]`` tables → routes. ``resumable``: backends whose kind can continue a prefix
    (``resume = true`` on any other is refused)."""
    if not isinstance(tables, list):
        raise RouteError(f"{source}: routes must be an array of tables ([[routes]])")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):

        def fail(key: str | None, message: str, index: int = index) -> RouteError:
            return RouteError(f"{_where(source, text, ('routes', index), key)}: {message}")

        if not isinstance(table, dict):
            raise fail(None, "must be a table")
        unknown = sorted(set(table) - ROUTE_KEYS)
        if unknown:
            raise fail(unknown[0], f"unknown field (known: {', '.join(sorted(ROUTE_KEYS))})")
        model = table.get("model")
        if not isinstance(model, str) or not model.strip():
            raise fail("model" if "model" in table else None, "missing or empty field 'model'")
        if "*" in model and not (model.endswith("/*") and model.count("*") == 1 and len(model) > 2):
            raise fail("model", f"a pattern must look like 'prefix/*', got {model!r}")
        if "upstreams" in table and "backend" in table:
            raise fail("backend", "give either 'backend' (one upstream) or 'upstreams', not both")
        if "upstreams" in table:
            raw_ups = table["upstreams"]
            if not isinstance(raw_ups, list) or not raw_ups:
                raise fail("upstreams", "expected a non-empty list")
            ups = tuple(_upstream(u, fail, backends) for u in raw_ups)
        elif "backend" in table:
            single = {"backend": table["backend"], "model": table.get("upstream_model")}
            single |= {k: table[k] for k in ("weight", "resume") if k in table}
            ups = (_upstream(single, lambda _k, m: fail("backend", m), backends),)
        else:
            raise fail(None, "missing field 'upstreams' (or 'backend')")
        if resumable is not None:
            for up in ups:
                if up.resume and up.backend not in resumable:
                    raise fail("upstreams", f"backend {up.backend!r} cannot continue an answer (resume = true)")
        strategy = table.get("strategy", "fallback")
        if strategy not in ("fallback", "weighted"):
            raise fail("strategy", f"expected fallback or weighted, got {strategy!r}")
        aliases = table.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise fail("aliases", "expected a list of names")
        for name in (model, *aliases):
            if name in seen:
                raise fail(
                    "model" if name == model else "aliases", f"{name!r} is already routed by route #{seen[name] + 1}"
                )
            seen[name] = index
        routes.append(Route(model=model, upstreams=ups, strategy=strategy, aliases=tuple(aliases)))
    return routes


# --------------------------------------------------------------------------- env discovery


def _v1(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def discover(environ: Mapping[str, str]) -> list[BackendSpec]:
    """Backends registered by well-known env vars (used when the config file declares none).
    ``LIVEPEER_GATEWAY_URL`` is not here: the ``[livepeer]`` options already make that backend."""

    def url(name: str, *, v1: bool = False, default: str = "") -> str:
        raw = environ.get(name, "").strip() or default
        try:
            return _v1(_url(raw)) if v1 else _url(raw)
        except ValueError as exc:
            raise RouteError(f"env {name}: {exc}") from None

    found: list[BackendSpec] = []
    if environ.get("OLLAMA_URL", "").strip():
        found.append(BackendSpec(name="ollama", kind="ollama", base_url=url("OLLAMA_URL")))
    if environ.get("LLAMACPP_URL", "").strip():
        found.append(BackendSpec(name="llamacpp", kind="openai_compat", base_url=url("LLAMACPP_URL", v1=True)))
    if environ.get("LMSTUDIO_URL", "").strip():
        found.append(BackendSpec(name="lmstudio", kind="openai_compat", base_url=url("LMSTUDIO_URL", v1=True)))
    if environ.get("OPENAI_API_KEY", "").strip():
        base = url("OPENAI_BASE_URL", default="https://api.openai.com/v1")
        found.append(BackendSpec(name="openai", kind="openai_compat", base_url=base, api_key_env="OPENAI_API_KEY"))
    if environ.get("ANTHROPIC_API_KEY", "").strip():
        base = url("ANTHROPIC_BASE_URL", default="https://api.anthropic.com")
        found.append(BackendSpec(name="anthropic", kind="anthropic", base_url=base, api_key_env="ANTHROPIC_API_KEY"))
    return found
