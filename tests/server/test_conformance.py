"""One conformance test over every backend kind: the strict openai SDK and its stream helper get
the same compliant output shape (and the same text) through the bridge, whatever the upstream."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from routedstack import RoutedStack, Up, client, start_routed

from oai_bridge.backends import BACKENDS
from oai_bridge.backends.generic_sse.wire import DIFY_EXAMPLE
from oai_bridge.routes import Route, Upstream

pytestmark = pytest.mark.sdk

UPSTREAM_MODEL = {
    "livepeer": "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "openai_compat": "gpt-4o-mini",
    "ollama": "llama3.2:latest",
    "anthropic": "claude-sonnet-4-5",
    "generic_sse": "dify-app",
}
BACKEND_OPTIONS: dict[str, dict[str, Any]] = {
    "generic_sse": {"options": DIFY_EXAMPLE, "models": ("dify-app",), "api_key_env": "CONFORMANCE_DIFY_KEY"},
    "anthropic": {"options": {"default_max_tokens": 1024}},
}
TOOL_KINDS = ("openai_compat", "ollama", "anthropic")
PROMPT = "Say hello to the conformance suite"
EXPECTED = "Simulated reply to: Say hello to the conformance suite"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
}


DIFY_KEY = "app-conformance-key"


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def kind_stack(request: pytest.FixtureRequest) -> Iterator[tuple[str, RoutedStack]]:
    kind = str(request.param)
    os.environ["CONFORMANCE_DIFY_KEY"] = DIFY_KEY
    assert set(UPSTREAM_MODEL) == set(BACKENDS), "a new backend kind needs its conformance entry"
    sim = {"api_key": DIFY_KEY} if kind == "generic_sse" else {}
    up = Up("up", kind, sim=sim, backend=dict(BACKEND_OPTIONS.get(kind, {})))
    route = Route(model="chat", upstreams=(Upstream(backend="up", model=UPSTREAM_MODEL[kind]),))
    stack = start_routed([up], [route])
    yield kind, stack
    stack.stop()


def test_non_stream(kind_stack: tuple[str, RoutedStack]) -> None:
    kind, stack = kind_stack
    with client(stack) as sdk:
        answer = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": PROMPT}])
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == EXPECTED
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == UPSTREAM_MODEL[kind]  # the upstream model that answered
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_stream_shape(kind_stack: tuple[str, RoutedStack]) -> None:
    kind, stack = kind_stack
    with client(stack) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert chunks[0].model == UPSTREAM_MODEL[kind]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    *body, finish, usage = chunks
    assert [c.choices[0].finish_reason for c in body] == [None] * len(body)
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None and finish.choices[0].delta.role is None
    assert usage.choices == [] and usage.usage is not None and usage.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in body) == EXPECTED


def test_stream_without_usage_has_no_usage(kind_stack: tuple[str, RoutedStack]) -> None:
    _, stack = kind_stack
    with client(stack) as sdk:
        chunks = list(
            sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": PROMPT}], stream=True)
        )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all("usage" not in c.model_dump(exclude_unset=True) for c in chunks)


def test_stream_helper(kind_stack: tuple[str, RoutedStack]) -> None:
    _, stack = kind_stack
    with client(stack) as sdk:
        with sdk.chat.completions.stream(model="chat", messages=[{"role": "user", "content": PROMPT}]) as stream:
            deltas = [e.delta for e in stream if e.type == "content.delta"]
            final = stream.get_final_completion()
    assert "".join(deltas) == EXPECTED
    assert final.choices[0].message.content == EXPECTED
    assert final.choices[0].finish_reason == "stop"


def test_streamed_tool_calls(kind_stack: tuple[str, RoutedStack]) -> None:
    kind, stack = kind_stack
    if kind not in TOOL_KINDS:
        pytest.skip(f"{kind} has no tool calls (refused with a 400, tested in its backend tests)")
    messages: Any = [{"role": "user", "content": "Weather in Paris"}]
    with client(stack) as sdk:
        chunks = list(sdk.chat.completions.create(model="chat", messages=messages, tools=[WEATHER_TOOL], stream=True))
        with sdk.chat.completions.stream(model="chat", messages=messages, tools=[WEATHER_TOOL]) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
    fragments = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert fragments, "no tool-call fragments"
    assert all(f.index == 0 for f in fragments)
    head, *rest = fragments
    assert head.id and head.type == "function" and head.function is not None
    assert head.function.name == "get_weather"
    assert all(f.id is None and f.type is None for f in rest)
    assert all(f.function is not None and f.function.name is None for f in rest)
    arguments = "".join((f.function.arguments or "") for f in fragments if f.function)
    assert json.loads(arguments) == {"text": "Weather in Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    call = final.choices[0].message.tool_calls
    assert call is not None and call[0].function.name == "get_weather"
    assert json.loads(call[0].function.arguments) == {"text": "Weather in Paris"}
    # the tool's result goes back, and the answer uses it
    follow: Any = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call[0].model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call[0].id, "content": "21 C and sunny"},
    ]
    with client(stack) as sdk:
        answer = sdk.chat.completions.create(model="chat", messages=follow, tools=[WEATHER_TOOL])
    assert answer.choices[0].message.content == "Tool result: 21 C and sunny"


def test_n_is_served_or_refused_with_an_openai_400(kind_stack: tuple[str, RoutedStack]) -> None:
    kind, stack = kind_stack
    messages: Any = [{"role": "user", "content": PROMPT}]
    with client(stack) as sdk:
        if kind == "openai_compat":  # the upstream serves n: passed through
            answer = sdk.chat.completions.create(model="chat", messages=messages, n=2)
            assert [c.index for c in answer.choices] == [0, 1]
            assert {c.message.content for c in answer.choices} == {EXPECTED}
            return
        with pytest.raises(openai.BadRequestError) as info:
            sdk.chat.completions.create(model="chat", messages=messages, n=2)
    body: Any = info.value.body
    assert body["param"] == "n", body
    assert body["type"] == "invalid_request_error"
