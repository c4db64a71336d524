"""The failover policy: classification, backoff, the breaker, weighted order, resume order."""

from __future__ import annotations

import random

import pytest

from oai_bridge.errors import (
    BridgeError,
    ContentPolicy,
    ContextLengthExceeded,
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from oai_bridge.failover import Breaker, FailoverPolicy, classify, counts_against, delay, resume_order, weighted_order


@pytest.mark.parametrize(
    ("error", "action", "counts"),
    [
        (RateLimited("slow down", retry_after=1.0), "retry", False),
        (RateLimited("slow down"), "retry", False),
        (UpstreamError("500"), "retry", True),
        (UpstreamUnavailable("503"), "retry", True),
        (UpstreamUnavailable("reset", code="connection_reset"), "retry", True),
        (UpstreamUnavailable("closed", code="server_disconnected"), "retry", True),
        (UpstreamUnavailable("no orchestrator", code="no_orchestrator"), "retry", True),
        (UpstreamTimeout("silent", code="first_token_timeout"), "next", True),
        (UpstreamTimeout("504 from upstream", code="upstream_timeout"), "retry", True),
        (ContextLengthExceeded("too long"), "next", False),
        (ContentPolicy("no"), "final", False),
        (UpstreamRejected("bad", status=400), "final", False),
        (UpstreamRejected("who", status=401), "final", False),
        (UpstreamRejected("missing", status=404, code="model_not_found"), "final", False),
        (InvalidRequest("bad"), "final", False),
    ],
)
def test_classify(error: BridgeError, action: str, counts: bool) -> None:
    assert classify(error) == action
    assert counts_against(error) is counts


def test_delay_prefers_retry_after_then_jittered_exponential_backoff() -> None:
    policy = FailoverPolicy(backoff=0.2, backoff_max=1.0)
    assert delay(policy, 1, 2.5) == 2.5
    assert delay(policy, 3, 0.0) == 0.0
    rng = random.Random(7)
    for attempt, base in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        for _ in range(50):
            assert base * 0.5 <= delay(policy, attempt, None, rng) <= base


def test_breaker_opens_after_consecutive_failures_and_probes_once_after_cooldown() -> None:
    breaker = Breaker(failures=3, cooldown=10.0)
    assert breaker.allow(0.0)
    breaker.failure(0.0)
    breaker.failure(1.0)
    breaker.success()  # a success resets the count
    breaker.failure(2.0)
    breaker.failure(3.0)
    assert breaker.state(3.0) == "closed"
    breaker.failure(4.0)
    assert breaker.state(4.0) == "open"
    assert not breaker.allow(13.9)
    assert breaker.reopens_in(10.0) == pytest.approx(4.0)
    assert breaker.state(14.0) == "half_open"
    assert breaker.allow(14.0)  # the probe
    assert not breaker.allow(14.5)  # only one at a time
    breaker.failure(15.0)  # the probe failed: open again, a full cooldown
    assert breaker.state(24.9) == "open"
    assert breaker.allow(25.0)
    breaker.success()
    assert breaker.state(25.0) == "closed" and breaker.allow(25.0) and breaker.allow(25.0)


def test_breaker_release_frees_the_probe_slot() -> None:
    breaker = Breaker(failures=1, cooldown=1.0)
    breaker.failure(0.0)
    assert breaker.allow(1.0)
    breaker.release()
    assert breaker.allow(1.0)


def test_weighted_order_is_smooth_and_proportional() -> None:
    state = [0, 0, 0]
    firsts = [weighted_order([5, 1, 1], state)[0] for _ in range(70)]
    assert firsts.count(0) == 50 and firsts.count(1) == 10 and firsts.count(2) == 10
    assert firsts[:7] == [0, 0, 1, 0, 2, 0, 0]  # nginx's smooth sequence for 5/1/1
    order = weighted_order([1, 3], [0, 0])
    assert sorted(order) == [0, 1]


def test_resume_order() -> None:
    able = [True, False, True, True]
    assert resume_order([0, 1, 2, 3], 2, stalled=False, resumable=able) == [2, 0, 3]
    assert resume_order([0, 1, 2, 3], 2, stalled=True, resumable=able) == [0, 3]
    assert resume_order([0, 1], 1, stalled=False, resumable=[False, False]) == []
