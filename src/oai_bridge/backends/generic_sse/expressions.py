"""The little languages of a ``generic_sse`` config, parsed once at config time (pure, no I/O).

**Paths** pick a value out of an event's JSON: dotted keys and ``[n]`` indexes (``[-1]`` is the
last element), e.g. ``answer``, ``choices[0].delta.content``, ``data.text``, ``[0].text``. A key is
any run of characters other than ``.``, ``[``, ``]``, quotes and whitespace. A path that does not
lead anywhere (missing key, index out of range, wrong type) gives ``MISSING``.

**Conditions** test an event: ``PATH == VALUE`` or ``PATH != VALUE``. ``VALUE`` is read as JSON when
it is valid JSON (``400``, ``true``, ``null``, ``"two words"``) and as a bare string otherwise
(``message``, ``[DONE]``). ``== null`` also matches a missing path. Besides JSON paths a condition
may test the pseudo-paths ``@event`` (the SSE ``event:`` name, ``message`` when the event has none)
and ``@data`` (the raw data text, e.g. ``@data == [DONE]``); both compare as text. A JSON-path
condition never matches an event whose data is not JSON. An option holding conditions takes one
string or an array of strings (any of them matching is a match).

**Templates** are TOML values whose strings may hold ``{{name}}`` placeholders. A string that is
exactly one placeholder is replaced by the parameter's JSON value (a list, a number, ``null``...);
placeholders inside a longer string are interpolated as text (``null`` → empty, ``true``/``false``,
numbers as JSON, lists as compact JSON). With ``unset = "drop"`` a table key whose whole-value
placeholder is unset (``null``) is left out; inside arrays it stays ``null``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .wire import DATA_PSEUDO_PATH, EVENT_PSEUDO_PATH

__all__ = [
    "MISSING",
    "Condition",
    "Interp",
    "Path",
    "Template",
    "Whole",
    "any_match",
    "compile_template",
    "lookup",
    "parse_condition",
    "parse_conditions",
    "parse_path",
    "render",
    "render_text",
    "to_text",
]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
NOT_JSON: Final = _Missing()  # the parsed form of an event whose data is not JSON

_KEY = re.compile(r"[^.\[\]\s\"']+")
_INDEX = re.compile(r"\[(-?\d+)\]")
_PSEUDO = (EVENT_PSEUDO_PATH, DATA_PSEUDO_PATH)


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Path:
    """A parsed path: ``steps`` are keys (``str``) and indexes (``int``); ``pseudo`` is ``@event``
    or ``@data`` for a pseudo-path (conditions only)."""

    text: str
    steps: tuple[str | int, ...]
    pseudo: str | None = None


def parse_path(text: Any, option: str, *, pseudo: bool = False) -> Path:
    """Parse ``text`` (the value of ``option``); ``pseudo`` allows ``@event``/``@data``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{option}: expected a path such as 'choices[0].delta.content', got {text!r}")
    s = text.strip()
    if s.startswith("@"):
        if pseudo and s in _PSEUDO:
            return Path(s, (), s)
        where = "only @event and @data exist" if pseudo else "pseudo-paths are only for conditions"
        raise ValueError(f"{option}: {s!r} is not a path ({where})")
    steps: list[str | int] = []
    i = 0
    while i < len(s):
        if s[i] == "[":
            m = _INDEX.match(s, i)
            if m is None:
                raise ValueError(f"{option}: bad index at position {i} of path {s!r} (expected [n])")
            steps.append(int(m.group(1)))
        else:
            start = i + 1 if s[i] == "." and steps else i
            m = _KEY.match(s, start)
            if m is None or (start == i and steps):
                raise ValueError(f"{option}: bad path {s!r} at position {i} (keys are joined by '.')")
            steps.append(m.group())
        i = m.end()
    return Path(s, tuple(steps))


def lookup(steps: Iterable[str | int], value: Any) -> Any:
    """The value at ``steps`` in ``value``, or ``MISSING``."""
    for step in steps:
        if isinstance(step, str):
            if not isinstance(value, dict) or step not in value:
                return MISSING
            value = value[step]
        else:
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return MISSING
            value = value[step]
    return value


# --------------------------------------------------------------------------- conditions

_CONDITION = re.compile(r"^\s*(\S+?)\s*(==|!=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Condition:
    """``path == literal`` (or ``!=`` when ``negate``); ``as_text`` is the literal as text."""

    text: str
    path: Path
    negate: bool
    literal: Any
    as_text: str

    def matches(self, event: str, data: bytes, obj: Any) -> bool:
        """Does the event (its SSE name, raw data, parsed JSON or ``NOT_JSON``) match?"""
        pseudo = self.path.pseudo
        if pseudo is not None:
            actual = event if pseudo == EVENT_PSEUDO_PATH else data.decode("utf-8", "replace").strip()
            return (actual == self.as_text) != self.negate
        if obj is NOT_JSON:
            return False
        return _equal(lookup(self.path.steps, obj), self.literal) != self.negate


def _equal(actual: Any, literal: Any) -> bool:
    if literal is None:
        return actual is MISSING or actual is None
    if actual is MISSING:
        return False
    if isinstance(literal, bool) or isinstance(actual, bool):
        return type(actual) is type(literal) and actual == literal
    return bool(actual == literal)


def parse_condition(text: Any, option: str) -> Condition:
    """Parse one ``PATH == VALUE`` / ``PATH != VALUE`` condition."""
    m = _CONDITION.match(text) if isinstance(text, str) else None
    if m is None or not m.group(3):
        raise ValueError(f"{option}: expected a condition such as 'event == message', got {text!r}")
    path = parse_path(m.group(1), option, pseudo=True)
    raw = m.group(3)
    literal: Any
    try:
        literal = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if raw.startswith('"'):
            raise ValueError(f"{option}: bad quoted value {raw!r} in condition {text!r}") from None
        literal = raw
    as_text = literal if isinstance(literal, str) else raw
    return Condition(text.strip(), path, m.group(2) == "!=", literal, as_text)


def parse_conditions(value: Any, option: str) -> tuple[Condition, ...]:
    """One condition or an array of them (any matching is a match)."""
    if isinstance(value, str):
        return (parse_condition(value, option),)
    if isinstance(value, list) and value:
        return tuple(parse_condition(v, f"{option}[{i}]") for i, v in enumerate(value))
    raise ValueError(f"{option}: expected a condition string or a non-empty array of them, got {value!r}")


def any_match(conditions: tuple[Condition, ...], event: str, data: bytes, obj: Any) -> bool:
    return any(c.matches(event, data, obj) for c in conditions)


# --------------------------------------------------------------------------- templates

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Whole:
    """A string that is exactly one placeholder: replaced by the parameter's value."""

    name: str


@dataclass(frozen=True)
class Interp:
    """A string with placeholders inside: literal text (``str``) and parameter names (``Whole``)."""

    parts: tuple[str | Whole, ...]


Template = Any  # nested dict / list / scalar / Whole / Interp


def compile_template(value: Any, option: str, allowed: frozenset[str]) -> Template:
    """Compile a TOML value (strings, numbers, bools, tables, arrays) into a template."""
    if isinstance(value, str):
        return _compile_string(value, option, allowed)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Mapping):
        out: dict[str, Template] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{option}: table keys must be strings, got {key!r}")
            out[key] = compile_template(item, f"{option}.{key}", allowed)
        return out
    if isinstance(value, list):
        return [compile_template(item, f"{option}[{i}]", allowed) for i, item in enumerate(value)]
    raise ValueError(f"{option}: unsupported value of type {type(value).__name__} (strings, numbers, bools, tables)")


def _compile_string(text: str, option: str, allowed: frozenset[str]) -> str | Whole | Interp:
    parts: list[str | Whole] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        name = m.group(1)
        if name not in allowed:
            raise ValueError(f"{option}: unknown placeholder {{{{{name}}}}} (known here: {', '.join(sorted(allowed))})")
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(Whole(name))
        pos = m.end()
    if not parts:
        return text
    if pos < len(text):
        parts.append(text[pos:])
    if len(parts) == 1 and isinstance(parts[0], Whole):
        return parts[0]
    return Interp(tuple(parts))


def placeholders(template: Template) -> set[str]:
    """Every parameter name ``template`` uses."""
    if isinstance(template, Whole):
        return {template.name}
    if isinstance(template, Interp):
        return {p.name for p in template.parts if isinstance(p, Whole)}
    if isinstance(template, dict):
        return set().union(*(placeholders(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(placeholders(v) for v in template))
    return set()


def to_text(value: Any) -> str:
    """A parameter value as text inside a longer string (or a query parameter)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def render_text(template: str | Whole | Interp, params: Mapping[str, Any]) -> str:
    """A template string rendered as text (headers, query parameters)."""
    if isinstance(template, Whole):
        return to_text(params.get(template.name))
    if isinstance(template, Interp):
        return "".join(p if isinstance(p, str) else to_text(params.get(p.name)) for p in template.parts)
    return template


def render(template: Template, params: Mapping[str, Any], *, drop_unset: bool = True) -> Any:
    """The JSON value of ``template`` for ``params`` (see the module docstring)."""
    if isinstance(template, Whole):
        return params.get(template.name)
    if isinstance(template, Interp):
        return render_text(template, params)
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, item in template.items():
            value = render(item, params, drop_unset=drop_unset)
            if value is None and drop_unset and isinstance(item, Whole):
                continue
            out[key] = value
        return out
    if isinstance(template, list):
        return [render(item, params, drop_unset=drop_unset) for item in template]
    return template
