"""The fault suite: every upstream failure, with streams and without, through the bridge to the
strict SDK, with its documented outcome asserted exactly (docs/configuration.md "Failover"):
retries and failover before the first byte, 504 on timeouts, an error frame mid-stream, never a
truncated stream reported as success, never a hang — and correct usage whenever it succeeds.

One upstream (``solo/*``: nothing to fail over to, no resumption) shows what a failure does on its
own; the same faults with a healthy fallback (``pair/*``) show the failover.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from routedstack import RoutedStack, chat_calls, client, start_pair

from oai_bridge.routes import Route, Upstream
from oai_bridge.simulators.common import Fault

pytestmark = pytest.mark.sdk

SETTINGS: dict[str, Any] = {
    "retries": 2,
    "backoff": 0.01,
    "max_retry_wait": 1.0,
    "silent_timeout": 0.5,
    "breaker_failures": 1000,  # the breaker is tested in test_failover; keep attempts countable here
    "keepalive_interval": 0,  # so that a silent upstream is a 504, not an error frame after a 200
}
TIMEOUTS = {"idle_timeout": 0.5, "first_token_timeout": 1.0, "request_timeout": 1.5}
PROMPT = "count the words of this fault suite"
ANSWER = f"Simulated reply to: {PROMPT}"


@pytest.fixture(scope="module")
def stack() -> Iterator[RoutedStack]:
    routes = [
        Route(model="solo/*", upstreams=(Upstream("a"),)),
        Route(model="pair/*", upstreams=(Upstream("a"), Upstream("b"))),
    ]
    s = start_pair(routes, TIMEOUTS, **SETTINGS)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean(stack: RoutedStack) -> Iterator[None]:
    stack.reset()
    yield
    stack.reset()


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault
    times: int | None  # how many requests the fault hits (None: all)
    stream: Any  # expected for a stream: "ok", or (status, code) before the first byte, or "frame:<code>"
    plain: Any  # expected for a non-stream request: "ok" or (status, code)
    attempts: int  # requests the primary receives (one upstream)


CASES = [
    Case("429 with Retry-After", Fault("status", status=429, retry_after="0.2"), 1, "ok", "ok", 2),
    Case("429 without Retry-After", Fault("status", status=429), 1, "ok", "ok", 2),
    Case(
        "429 always",
        Fault("status", status=429, retry_after="0"),
        None,
        (429, "rate_limit_exceeded"),
        (429, "rate_limit_exceeded"),
        3,
    ),
    Case("500 once", Fault("status", status=500), 1, "ok", "ok", 2),
    Case("500 always", Fault("status", status=500), None, (502, "upstream_error"), (502, "upstream_error"), 3),
    Case(
        "503 always", Fault("status", status=503), None, (503, "upstream_unavailable"), (503, "upstream_unavailable"), 3
    ),
    Case("reset before the body", Fault("reset"), None, (503, "server_disconnected"), (503, "server_disconnected"), 6),
    Case(
        "never answers", Fault("silent", delay=30), None, (504, "first_token_timeout"), (504, "first_token_timeout"), 1
    ),
    Case("slow first token", Fault("slow_first", delay=0.3), None, "ok", "ok", 1),
    Case("cut mid-way", Fault("cut", after=3), None, "frame:stream_cut", (502, "stream_cut"), 1),
    Case(
        "stall mid-stream",
        Fault("stall", after=3, delay=30),
        None,
        "frame:idle_timeout",
        (504, "first_token_timeout"),
        1,
    ),
    Case("malformed chunk", Fault("garbage", after=3), None, "frame:malformed_event", (502, "malformed_event"), 1),
    Case("missing [DONE]", Fault("no_finish", after=3), None, "frame:stream_incomplete", (502, "malformed_event"), 1),
    Case(
        "context length",
        Fault("context_length"),
        None,
        (400, "context_length_exceeded"),
        (400, "context_length_exceeded"),
        1,
    ),
    Case(
        "content filter",
        Fault("content_policy"),
        None,
        (400, "content_policy_violation"),
        (400, "content_policy_violation"),
        1,
    ),
]


def calls(stack: RoutedStack, name: str) -> int:
    return len(chat_calls(stack, name))


def check_usage(usage: Any, *, prompt: int) -> None:
    assert usage is not None
    assert usage.completion_tokens == len(ANSWER.split())
    assert usage.prompt_tokens == prompt
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def run_stream(stack: RoutedStack, model: str) -> tuple[str, list[Any]]:
    chunks: list[Any] = []
    with client(stack, timeout=10) as sdk:
        for chunk in sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            chunks.append(chunk)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_stream_on_one_upstream(stack: RoutedStack, case: Case) -> None:
    stack.plan("a").add(case.fault, times=case.times)
    started = time.monotonic()
    if case.stream == "ok":
        text, chunks = run_stream(stack, "solo/s")
        assert text == ANSWER
        assert chunks[-2].choices[0].finish_reason == "stop"
        check_usage(chunks[-1].usage, prompt=len(PROMPT.split()))
    elif isinstance(case.stream, str):  # an error frame after the first bytes, never a success
        code = case.stream.removeprefix("frame:")
        received: list[str] = []
        with client(stack, timeout=10) as sdk, pytest.raises(openai.APIError) as info:
            for chunk in sdk.chat.completions.create(
                model="solo/s", messages=[{"role": "user", "content": PROMPT}], stream=True
            ):
                received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        assert "".join(received) == "Simulated reply to:"  # what came before the failure, exactly
        body: Any = info.value.body
        assert body["code"] == code, body
    else:
        status, code = case.stream
        with client(stack, timeout=10) as sdk, pytest.raises(openai.APIStatusError) as status_info:
            run_stream_direct = sdk.chat.completions.create(
                model="solo/s", messages=[{"role": "user", "content": PROMPT}], stream=True
            )
            list(run_stream_direct)
        assert status_info.value.status_code == status
        assert status_info.value.body["code"] == code  # type: ignore[index]
    assert time.monotonic() - started < 8  # never a hang
    assert calls(stack, "a") == case.attempts


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_non_stream_on_one_upstream(stack: RoutedStack, case: Case) -> None:
    stack.plan("a").add(case.fault, times=case.times)
    started = time.monotonic()
    with client(stack, timeout=10) as sdk:
        if case.plain == "ok":
            answer = sdk.chat.completions.create(model="solo/n", messages=[{"role": "user", "content": PROMPT}])
            assert answer.choices[0].message.content == ANSWER
            check_usage(answer.usage, prompt=len(PROMPT.split()))
        else:
            status, code = case.plain
            with pytest.raises(openai.APIStatusError) as info:
                sdk.chat.completions.create(model="solo/n", messages=[{"role": "user", "content": PROMPT}])
            assert info.value.status_code == status, info.value.body
            assert info.value.body["code"] == code  # type: ignore[index]
            assert info.value.body["message"]  # type: ignore[index]
    assert time.monotonic() - started < 8


FAILOVER = [c for c in CASES if c.times is None and c.stream != "ok" and c.name != "content filter"]


@pytest.mark.parametrize("case", FAILOVER, ids=[c.name for c in FAILOVER])
def test_a_healthy_fallback_answers_before_the_first_byte_or_the_stream_ends_in_a_frame(
    stack: RoutedStack, case: Case
) -> None:
    stack.plan("a").add(case.fault, times=None)
    if isinstance(case.stream, str) and case.stream.startswith("frame:"):
        # after the first byte without a resumable upstream: the error frame, the fallback unused
        with client(stack, timeout=10) as sdk, pytest.raises(openai.APIError):
            list(
                sdk.chat.completions.create(model="pair/m", messages=[{"role": "user", "content": PROMPT}], stream=True)
            )
        assert calls(stack, "b") == 0
        return
    text, chunks = run_stream(stack, "pair/m")
    assert text == ANSWER
    check_usage(chunks[-1].usage, prompt=len(PROMPT.split()))
    assert calls(stack, "b") == 1
