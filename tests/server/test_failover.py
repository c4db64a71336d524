"""Retries, failover, the circuit breaker and stream resumption, through the bridge, against the
simulators: every failure class with its exact attempts and outcome (``failover.py`` docstring)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from routedstack import RoutedStack, Up, chat_calls, client, start_pair, start_routed

from oai_bridge.routes import Route, Upstream
from oai_bridge.simulators.common import Fault

pytestmark = pytest.mark.sdk

SETTINGS: dict[str, Any] = {
    "retries": 2,
    "backoff": 0.01,
    "max_retry_wait": 1.0,
    "silent_timeout": 0.5,
    "breaker_failures": 3,
    "breaker_cooldown": 0.6,
    "max_resumes": 3,
    "keepalive_interval": 0,
}
TIMEOUTS = {"idle_timeout": 0.5, "first_token_timeout": 5.0}


@pytest.fixture(scope="module")
def stack() -> Iterator[RoutedStack]:
    routes = [
        Route(model="fo/*", upstreams=(Upstream("a", resume=True), Upstream("b", resume=True))),
        Route(model="noresume/*", upstreams=(Upstream("a"), Upstream("b"))),
        Route(model="named", upstreams=(Upstream("a", model="alpha"), Upstream("b", model="beta"))),
    ]
    s = start_pair(routes, TIMEOUTS, **SETTINGS)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean(stack: RoutedStack) -> Iterator[None]:
    stack.reset()
    yield
    stack.reset()


calls = chat_calls


def attempts(stack: RoutedStack) -> tuple[int, int]:
    return len(calls(stack, "a")), len(calls(stack, "b"))


def expected(prompt: str) -> str:
    return f"Simulated reply to: {prompt}"


def stream(stack: RoutedStack, model: str, prompt: str, **kwargs: Any) -> tuple[str, list[Any]]:
    with client(stack) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], stream=True, **kwargs
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def compliant(chunks: list[Any]) -> None:
    """One id, one role delta (the first), finish last (before usage)."""
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    roles = [c.choices[0].delta.role for c in chunks if c.choices]
    assert roles[0] == "assistant" and roles[1:] == [None] * (len(roles) - 1)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes[:-1] == [None] * (len(finishes) - 1)


# ----------------------------------------------------------------------- before the first byte


def test_429_with_retry_after_is_waited_out_on_the_same_upstream(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=429, retry_after="0.3", message="slow down"))
    started = time.monotonic()
    text, chunks = stream(stack, "fo/m429a", "one")
    assert time.monotonic() - started >= 0.3
    assert text == expected("one") and attempts(stack) == (2, 0)
    compliant(chunks)


def test_429_without_retry_after_backs_off_and_retries(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=429, message="slow down"), times=2)
    text, _ = stream(stack, "fo/m429b", "two")
    assert text == expected("two") and attempts(stack) == (3, 0)


def test_429_always_exhausts_retries_then_the_next_upstream_answers_and_is_named(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=429, retry_after="0"), times=None)
    with client(stack) as sdk:
        answer = sdk.chat.completions.create(model="named", messages=[{"role": "user", "content": "three"}])
    assert answer.choices[0].message.content == expected("three")
    assert answer.model == "beta"  # the upstream model that actually answered
    assert attempts(stack) == (3, 1)
    assert [c["body"]["model"] for c in calls(stack, "a")] == ["alpha"] * 3


def test_a_long_retry_after_goes_to_the_next_upstream_at_once(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=429, retry_after="30"))
    started = time.monotonic()
    text, _ = stream(stack, "fo/m429c", "four")
    assert time.monotonic() - started < 1.0
    assert text == expected("four") and attempts(stack) == (1, 1)


def test_429_on_the_last_upstream_reaches_the_client_with_retry_after(stack: RoutedStack) -> None:
    for name in ("a", "b"):
        stack.plan(name).add(Fault("status", status=429, retry_after="30"), times=None)
    with client(stack) as sdk, pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="fo/m429d", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "30"
    assert attempts(stack) == (1, 1)


def test_500_once_is_retried(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=500))
    text, _ = stream(stack, "fo/m500", "five")
    assert text == expected("five") and attempts(stack) == (2, 0)


def test_503_always_fails_over_after_the_retries(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=503), times=None)
    text, chunks = stream(stack, "fo/m503", "six")
    assert text == expected("six") and attempts(stack) == (3, 1)
    compliant(chunks)


def test_503_always_everywhere_is_a_503_for_the_client(stack: RoutedStack) -> None:
    for name in ("a", "b"):
        stack.plan(name).add(Fault("status", status=503), times=None)
    with client(stack) as sdk, pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="fo/m503all", messages=[{"role": "user", "content": "x"}], stream=True)
    assert info.value.status_code == 503
    assert attempts(stack) == (3, 3)


def test_non_stream_fails_over_too(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=502), times=None)
    with client(stack) as sdk:
        answer = sdk.chat.completions.create(model="fo/m502", messages=[{"role": "user", "content": "seven"}])
    assert answer.choices[0].message.content == expected("seven") and attempts(stack) == (3, 1)


def test_reset_before_headers_once_is_retried(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("reset"))
    text, _ = stream(stack, "fo/mreset1", "eight")
    assert text == expected("eight") and attempts(stack) == (2, 0)


def test_reset_before_headers_always_fails_over(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("reset"), times=None)
    text, _ = stream(stack, "fo/mreset", "nine")
    assert text == expected("nine")
    # each attempt reconnects at once once (a pooled connection may just have gone stale), 3 attempts
    assert attempts(stack) == (6, 1)


def test_a_silent_upstream_is_left_for_the_next_without_retry(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("silent", delay=10))
    started = time.monotonic()
    text, _ = stream(stack, "fo/msilent", "ten")
    assert 0.5 <= time.monotonic() - started < 3
    assert text == expected("ten") and attempts(stack) == (1, 1)


def test_a_slow_first_token_within_the_limit_is_waited_for(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("slow_first", delay=0.25))
    text, _ = stream(stack, "fo/mslow", "eleven")
    assert text == expected("eleven") and attempts(stack) == (1, 0)


def test_garbage_before_the_first_chunk_is_retried(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("garbage", after=0))
    text, _ = stream(stack, "fo/mgarbage0", "twelve")
    assert text == expected("twelve") and attempts(stack) == (2, 0)


def test_context_length_goes_to_the_next_upstream_without_retry(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("context_length"))
    text, _ = stream(stack, "fo/mctx", "thirteen")
    assert text == expected("thirteen") and attempts(stack) == (1, 1)


def test_content_policy_is_returned_as_it_is(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("content_policy"))
    with client(stack) as sdk, pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="fo/mpolicy", messages=[{"role": "user", "content": "x"}], stream=True)
    body: Any = info.value.body
    assert body["code"] == "content_policy_violation"
    assert attempts(stack) == (1, 0)


def test_a_flapping_primary_opens_its_breaker_and_recovers(stack: RoutedStack) -> None:
    stack.plan("a").add(Fault("status", status=500), times=None)
    assert stream(stack, "fo/mflap", "p1")[0] == expected("p1")
    assert attempts(stack) == (3, 1)  # three failures: the breaker opens
    assert stream(stack, "fo/mflap", "p2")[0] == expected("p2")
    assert attempts(stack) == (3, 2)  # skipped while open
    assert stream(stack, "fo/other", "p3")[0] == expected("p3")
    assert attempts(stack) == (6, 3)  # the breaker is per (upstream, model)
    time.sleep(0.7)
    stack.reset()  # the primary heals (and the request logs start over)
    assert stream(stack, "fo/mflap", "p4")[0] == expected("p4")
    assert attempts(stack) == (1, 0)  # after the cooldown one probe goes to the primary: healed
    assert stream(stack, "fo/mflap", "p5")[0] == expected("p5")
    assert attempts(stack) == (2, 0)  # closed again


# ----------------------------------------------------------------------- after the first byte


def continuation_of(call: dict[str, Any]) -> str:
    last = call["body"]["messages"][-1]
    assert last["role"] == "assistant"
    return str(last["content"])


@pytest.mark.parametrize("kind", ["cut", "garbage", "no_finish"])
def test_a_broken_stream_is_resumed_on_the_same_upstream(stack: RoutedStack, kind: str) -> None:
    prompt = f"resume after a {kind} please"
    stack.plan("a").add(Fault(kind, after=3))  # type: ignore[arg-type]
    text, chunks = stream(stack, f"fo/m{kind}", prompt, stream_options={"include_usage": True})
    assert text == expected(prompt)  # exactly the whole answer: nothing lost, nothing twice
    assert attempts(stack) == (2, 0)
    assert continuation_of(calls(stack, "a")[1]) == "Simulated reply to:"  # 3 pieces, trailing space trimmed
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None and usage.usage.completion_tokens > 0
    compliant(chunks[:-1])


def test_a_stalled_stream_is_resumed_on_another_upstream(stack: RoutedStack) -> None:
    prompt = "resume after a stall please"
    stack.plan("a").add(Fault("stall", after=4, delay=10))
    text, chunks = stream(stack, "fo/mstall", prompt)
    assert text == expected(prompt)
    assert attempts(stack) == (1, 1)
    assert continuation_of(calls(stack, "b")[0]) == "Simulated reply to: resume"
    compliant(chunks)


def test_resumption_is_bounded_and_ends_in_an_error_frame(stack: RoutedStack) -> None:
    prompt = "keep cutting this answer into pieces"
    stack.plan("a").add(Fault("cut", after=1), times=None)
    stack.plan("b").add(Fault("cut", after=1), times=None)
    with client(stack) as sdk, pytest.raises(openai.APIError):
        for _ in sdk.chat.completions.create(
            model="fo/mbounded", messages=[{"role": "user", "content": prompt}], stream=True
        ):
            pass
    assert sum(attempts(stack)) == 1 + SETTINGS["max_resumes"]


def test_without_a_capable_upstream_a_cut_stream_ends_in_an_error_frame(stack: RoutedStack) -> None:
    prompt = "no resume here please"
    stack.plan("a").add(Fault("cut", after=3))
    received: list[str] = []
    with client(stack) as sdk, pytest.raises(openai.APIError) as info:
        for chunk in sdk.chat.completions.create(
            model="noresume/m", messages=[{"role": "user", "content": prompt}], stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Simulated reply to:"  # what came before the cut, never reported as success
    assert "middle of the answer" in info.value.message
    assert attempts(stack) == (1, 0)  # no prefix is ever sent to an upstream not declared able


def test_livepeer_without_an_orchestrator_fails_over_to_ollama() -> None:
    """The issue's example: a Livepeer gateway first, a local Ollama behind it."""
    ups = [Up("gw", "livepeer"), Up("ol", "ollama")]
    route = Route(
        model="llama",
        upstreams=(
            Upstream("gw", model="meta-llama/Meta-Llama-3.1-8B-Instruct"),
            Upstream("ol", model="llama3.2:latest"),
        ),
    )
    mixed = start_routed(ups, [route], **SETTINGS)
    try:
        prompt = "[[sim fault=close]] hello"  # the gateway closes without answering: no orchestrator
        with client(mixed) as sdk:
            answer = sdk.chat.completions.create(model="llama", messages=[{"role": "user", "content": prompt}])
        gateway_calls = len(mixed.upstreams["gw"].requests)
        ollama_calls = [r for r in mixed.requests("ol") if r["path"] == "/api/chat"]
    finally:
        mixed.stop()
    assert answer.model == "llama3.2:latest"
    assert answer.choices[0].message.content == expected(prompt)
    assert gateway_calls == 6  # 3 attempts, each with one immediate reconnect
    assert len(ollama_calls) == 1


def test_weighted_round_robin_spreads_requests_by_weight() -> None:
    ups = [Up("a", "openai_compat"), Up("b", "openai_compat")]
    route = Route(model="spread", strategy="weighted", upstreams=(Upstream("a", weight=3), Upstream("b", weight=1)))
    spread = start_routed(ups, [route], **SETTINGS)
    try:
        for i in range(8):
            assert stream(spread, "spread", f"r{i}")[0] == expected(f"r{i}")
        counts = (len(calls(spread, "a")), len(calls(spread, "b")))
    finally:
        spread.stop()
    assert counts == (6, 2)
