"""Paths, conditions and templates of the generic_sse config (pure table tests)."""

from __future__ import annotations

import ast
from pathlib import Path as FsPath
from typing import Any

import pytest

from oai_bridge.backends.generic_sse import expressions, options
from oai_bridge.backends.generic_sse.expressions import (
    MISSING,
    NOT_JSON,
    Interp,
    Whole,
    compile_template,
    lookup,
    parse_condition,
    parse_conditions,
    parse_path,
    render,
    render_text,
)
from oai_bridge.backends.generic_sse.wire import PLACEHOLDERS

EVENT = {"event": "message", "answer": "hi", "choices": [{"delta": {"content": "x"}}, {"n": 2}], "n": 3, "ok": True}


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("answer", ("answer",)),
        ("choices[0].delta.content", ("choices", 0, "delta", "content")),
        ("data.text", ("data", "text")),
        ("[0].text", (0, "text")),
        ("choices[-1].n", ("choices", -1, "n")),
        ("a[0][1]", ("a", 0, 1)),
        ("  spaced.out  ", ("spaced", "out")),
        ("@type-less-key", None),
    ],
)
def test_parse_path(text: str, steps: tuple[Any, ...] | None) -> None:
    if steps is None:
        with pytest.raises(ValueError, match="text_path"):
            parse_path(text, "text_path")
        return
    assert parse_path(text, "text_path").steps == steps


@pytest.mark.parametrize(
    "text",
    ["", "   ", ".a", "a.", "a..b", "a[x]", "a[0", "a[0]b", "a b", "a.[0]", 'a."b"', 5, None, "@event"],
)
def test_bad_paths_name_the_option(text: Any) -> None:
    with pytest.raises(ValueError, match=r"^usage_prompt_path: "):
        parse_path(text, "usage_prompt_path")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("answer", "hi"),
        ("choices[0].delta.content", "x"),
        ("choices[-1].n", 2),
        ("choices[2].n", MISSING),
        ("choices[-3]", MISSING),
        ("answer.deeper", MISSING),
        ("n[0]", MISSING),
        ("choices.delta", MISSING),
        ("absent", MISSING),
    ],
)
def test_lookup(path: str, expected: Any) -> None:
    assert lookup(parse_path(path, "p").steps, EVENT) == expected


@pytest.mark.parametrize(
    ("condition", "event", "data", "obj", "expected"),
    [
        ("event == message", "message", b"", EVENT, True),
        ("event == message_end", "message", b"", EVENT, False),
        ("event != message_end", "message", b"", EVENT, True),
        ("event==message", "message", b"", EVENT, True),
        ('event == "message"', "message", b"", EVENT, True),
        ("n == 3", "message", b"", EVENT, True),
        ("n == 3.0", "message", b"", EVENT, True),
        ('n == "3"', "message", b"", EVENT, False),
        ("ok == true", "message", b"", EVENT, True),
        ("n == true", "message", b"", EVENT, False),
        ("error == null", "message", b"", EVENT, True),
        ("error != null", "message", b"", {"error": {"message": "x"}}, True),
        ("error != null", "message", b"", {"error": None}, False),
        ("absent != message", "message", b"", EVENT, True),
        ("@event == error", "error", b"{}", {}, True),
        ("@event == error", "message", b"{}", {}, False),
        ("@data == [DONE]", "message", b"[DONE]", NOT_JSON, True),
        ("@data == [DONE]", "message", b" [DONE] ", NOT_JSON, True),
        ("@data != [DONE]", "message", b"[DONE]", NOT_JSON, False),
        ("event == message", "message", b"[DONE]", NOT_JSON, False),
        ("event != message", "message", b"[DONE]", NOT_JSON, False),
        ('event == "two words"', "message", b"", {"event": "two words"}, True),
    ],
)
def test_conditions(condition: str, event: str, data: bytes, obj: Any, expected: bool) -> None:
    assert parse_condition(condition, "done_when").matches(event, data, obj) is expected


@pytest.mark.parametrize(
    "text", ["", "event", "event = message", "event ==", "== message", 'event == "open', "@other == x", 7]
)
def test_bad_conditions_name_the_option(text: Any) -> None:
    with pytest.raises(ValueError, match=r"^done_when: "):
        parse_condition(text, "done_when")


def test_condition_lists() -> None:
    conds = parse_conditions(["event == message_end", "@data == [DONE]"], "done_when")
    assert [c.text for c in conds] == ["event == message_end", "@data == [DONE]"]
    with pytest.raises(ValueError, match=r"^done_when\[1\]: "):
        parse_conditions(["event == x", "nope"], "done_when")
    for bad in ([], {"a": 1}, 3):
        with pytest.raises(ValueError, match=r"^done_when: "):
            parse_conditions(bad, "done_when")


PARAMS: dict[str, Any] = {
    "messages": [{"role": "user", "content": "hi"}],
    "last_user_message": "hi",
    "temperature": 0.5,
    "max_tokens": None,
    "stop": ["\n\n", "END"],
    "stream": True,
    "model": "m",
}


def test_compile_whole_and_interpolated_strings() -> None:
    assert compile_template("{{messages}}", "body.m", PLACEHOLDERS) == Whole("messages")
    assert compile_template("{{ model }}", "body.m", PLACEHOLDERS) == Whole("model")
    assert compile_template("Q: {{last_user_message}}!", "body.q", PLACEHOLDERS) == Interp(
        ("Q: ", Whole("last_user_message"), "!")
    )
    assert compile_template("no {placeholders} {{ here", "body.q", PLACEHOLDERS) == "no {placeholders} {{ here"


def test_render_body() -> None:
    table = {
        "msgs": "{{messages}}",
        "temperature": "{{temperature}}",
        "max_tokens": "{{max_tokens}}",
        "prompt": "User says: {{last_user_message}} (t={{temperature}}, max={{max_tokens}}, stop={{stop}})",
        "flags": {"stream": "{{stream}}", "n": 1, "on": True, "list": ["{{model}}", "{{max_tokens}}", 2.5]},
        "inputs": {},
    }
    template = compile_template(table, "body", PLACEHOLDERS)
    assert render(template, PARAMS) == {
        "msgs": [{"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "prompt": 'User says: hi (t=0.5, max=, stop=["\\n\\n","END"])',
        "flags": {"stream": True, "n": 1, "on": True, "list": ["m", None, 2.5]},
        "inputs": {},
    }
    kept = render(template, PARAMS, drop_unset=False)
    assert kept["max_tokens"] is None and "max_tokens" in kept


def test_render_text_for_headers() -> None:
    template = compile_template("Bearer {{api_key}}", "headers.Authorization", frozenset({"api_key"}))
    assert render_text(template, {"api_key": "sk-1"}) == "Bearer sk-1"
    assert render_text(compile_template("{{api_key}}", "h", frozenset({"api_key"})), {"api_key": "k"}) == "k"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"q": "{{nope}}"}, r"^body\.q: unknown placeholder \{\{nope\}\}"),
        ({"a": {"b": ["x", "{{temprature}}"]}}, r"^body\.a\.b\[1\]: unknown placeholder"),
        ({"when": __import__("datetime").date(2024, 1, 1)}, r"^body\.when: unsupported value of type date"),
    ],
)
def test_bad_templates_name_the_option(value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compile_template(value, "body", PLACEHOLDERS)


@pytest.mark.parametrize("module", [expressions, options])
def test_extra_pure_modules_do_no_io(module: Any) -> None:
    tree = ast.parse(FsPath(module.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert not {n.split(".")[0] for n in names} & {"aiohttp", "starlette", "uvicorn", "httpx", "socket", "asyncio"}
