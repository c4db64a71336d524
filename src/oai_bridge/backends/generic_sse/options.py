"""The options of a ``generic_sse`` backend, validated once at config time (pure, no I/O).

``parse_options`` turns a ``[backends.NAME.options]`` table into a ``StreamSpec``: paths,
conditions and templates parsed (``expressions``), every problem a ``ValueError`` naming the
option. Each option is documented in ``backend.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from ...types import FinishReason
from .expressions import Condition, Path, Template, compile_template, parse_conditions, parse_path, placeholders
from .wire import FINISH_REASONS, HEADER_PLACEHOLDERS, PLACEHOLDERS, Method

__all__ = ["DEFAULT_BODY", "KNOWN_OPTIONS", "StreamSpec", "parse_options"]

DEFAULT_BODY: Final = {"model": "{{model}}", "messages": "{{messages}}", "stream": "{{stream}}"}
KNOWN_OPTIONS: Final = frozenset(
    {
        "path",
        "method",
        "headers",
        "body",
        "query",
        "unset",
        "text_path",
        "text_when",
        "done_when",
        "done_on_close",
        "error_when",
        "error_path",
        "error_status_path",
        "usage_prompt_path",
        "usage_completion_path",
        "cumulative",
        "finish_reason_path",
        "finish_map",
        "health_path",
    }
)


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """A validated ``generic_sse`` options table (see ``backend.py`` for each option)."""

    path: str = "/"
    method: Method = "POST"
    headers: dict[str, Template] = field(default_factory=dict)
    body: Template = None
    query: dict[str, Template] = field(default_factory=dict)
    drop_unset: bool = True
    text_path: Path
    text_when: tuple[Condition, ...] = ()
    done_when: tuple[Condition, ...] = ()
    done_on_close: bool = False
    error_when: tuple[Condition, ...] = ()
    error_path: Path | None = None
    error_status_path: Path | None = None
    usage_prompt_path: Path | None = None
    usage_completion_path: Path | None = None
    cumulative: bool = False
    finish_reason_path: Path | None = None
    finish_map: dict[str, FinishReason] = field(default_factory=dict)
    health_path: str = "/"
    uses_api_key: bool = False


def _string(options: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = options.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {value!r}")
    return value


def _bool(options: Mapping[str, Any], name: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value


def _table(options: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = options.get(name)
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a table, got {value!r}")
    return value


def _url_path(options: Mapping[str, Any], name: str, default: str) -> str:
    value = _string(options, name, default) or default
    if not value.startswith("/"):
        raise ValueError(f"{name}: expected a path starting with '/', got {value!r}")
    return value


def _optional_path(options: Mapping[str, Any], name: str) -> Path | None:
    return parse_path(options[name], name) if options.get(name) is not None else None


def _headers(options: Mapping[str, Any]) -> dict[str, Template]:
    out: dict[str, Template] = {}
    for key, value in (_table(options, "headers") or {}).items():
        if not isinstance(value, str):
            raise ValueError(f"headers.{key}: expected a string, got {value!r}")
        out[key] = compile_template(value, f"headers.{key}", HEADER_PLACEHOLDERS)
    return out


def _query(options: Mapping[str, Any]) -> dict[str, Template]:
    out: dict[str, Template] = {}
    for key, value in (_table(options, "query") or {}).items():
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"query.{key}: expected a string, number or bool, got {value!r}")
        out[key] = compile_template(value, f"query.{key}", PLACEHOLDERS)
    return out


def _finish_map(options: Mapping[str, Any]) -> dict[str, FinishReason]:
    out: dict[str, FinishReason] = {}
    for key, value in (_table(options, "finish_map") or {}).items():
        if value not in FINISH_REASONS:
            raise ValueError(f"finish_map.{key}: expected one of {', '.join(FINISH_REASONS)}, got {value!r}")
        out[key] = cast(FinishReason, value)
    return out


def parse_options(options: Mapping[str, Any], *, has_api_key: bool = False) -> StreamSpec:
    """Validate a ``[backends.NAME.options]`` table. Every problem is a ``ValueError`` naming the
    option; ``has_api_key`` tells whether ``{{api_key}}`` has a value to stand for."""
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown generic_sse option(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_OPTIONS))})"
        )
    method = (_string(options, "method", "POST") or "POST").upper()
    if method not in ("POST", "GET"):
        raise ValueError(f"method: expected POST or GET, got {options.get('method')!r}")
    path = _url_path(options, "path", "/")
    if "?" in path or "#" in path:
        raise ValueError(f"path: put query parameters in the query table, not in the path ({path!r})")
    unset = _string(options, "unset", "drop")
    if unset not in ("drop", "null"):
        raise ValueError(f"unset: expected 'drop' or 'null', got {unset!r}")
    body_table = _table(options, "body")
    if method == "GET" and body_table is not None:
        raise ValueError("body: a GET request has no body (use the query table)")
    body = compile_template(body_table if body_table is not None else DEFAULT_BODY, "body", PLACEHOLDERS)
    if method == "GET":
        body = None
    headers, query = _headers(options), _query(options)
    if "text_path" not in options:
        raise ValueError("text_path: required (where each event's text is, e.g. 'answer')")
    cond = {k: parse_conditions(options[k], k) for k in ("text_when", "done_when", "error_when") if k in options}
    done_on_close = _bool(options, "done_on_close")
    if not cond.get("done_when") and not done_on_close:
        raise ValueError("done_when: required unless done_on_close = true (how does the answer end?)")
    error_path = _optional_path(options, "error_path")
    if cond.get("error_when") and error_path is None:
        error_path = parse_path("message", "error_path")
    used = set().union(*(placeholders(t) for t in (body, *headers.values(), *query.values())))
    if "api_key" in used and not has_api_key:
        raise ValueError(
            "headers/body/query use {{api_key}} but the backend has no api_key configured "
            "(set api_key_env, and that environment variable)"
        )
    if "finish_map" in options and "finish_reason_path" not in options:
        raise ValueError("finish_map: needs finish_reason_path (where the finish reason is)")
    return StreamSpec(
        path=path,
        method=cast(Method, method),
        headers=headers,
        body=body,
        query=query,
        drop_unset=unset == "drop",
        text_path=parse_path(options["text_path"], "text_path"),
        text_when=cond.get("text_when", ()),
        done_when=cond.get("done_when", ()),
        done_on_close=done_on_close,
        error_when=cond.get("error_when", ()),
        error_path=error_path,
        error_status_path=_optional_path(options, "error_status_path"),
        usage_prompt_path=_optional_path(options, "usage_prompt_path"),
        usage_completion_path=_optional_path(options, "usage_completion_path"),
        cumulative=_bool(options, "cumulative"),
        finish_reason_path=_optional_path(options, "finish_reason_path"),
        finish_map=_finish_map(options),
        health_path=_url_path(options, "health_path", path if method == "POST" else "/"),
        uses_api_key="api_key" in used,
    )
