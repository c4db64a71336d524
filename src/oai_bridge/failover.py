"""The failover policy (pure): what to do after an upstream failed, how long to wait, which
upstream to try first, and the circuit breaker. The router (``router.py``) carries it out.

Before the first byte reaches the client (``classify``):

=======================================================  ==============================================
failure (its ``BridgeError`` code, see ``backends/http``)  action
=======================================================  ==============================================
429 ``rate_limit_exceeded``                              wait ``Retry-After`` (else jittered backoff) and
                                                         retry the same upstream up to ``retries`` times,
                                                         then the next; a ``Retry-After`` longer than
                                                         ``max_retry_wait`` goes to the next at once
5xx, reset, ``server_disconnected``, no orchestrator     jittered backoff, retry up to ``retries`` times,
                                                         then the next upstream
silent upstream (``first_token_timeout``)                the next upstream, no retry
``context_length_exceeded``                              the next upstream (it may have a longer
                                                         context), no retry
content policy, any other 4xx                            returned to the client as it is
=======================================================  ==============================================

After the first byte, a cut (``stream_cut``, ``stream_incomplete``, ``malformed_event``, an error
event) is resumed on the same upstream when it is declared able to continue (``resume = true``),
else on the next able one; a stall (``idle_timeout``) is resumed on another able upstream, never
the stalled one (``resume_order``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .errors import BridgeError

__all__ = ["Breaker", "FailoverPolicy", "classify", "counts_against", "delay", "resume_order", "weighted_order"]

Action = Literal["retry", "next", "final"]

RETRYABLE_CODES = frozenset(
    {"server_disconnected", "connection_reset", "upstream_unreachable", "no_orchestrator", "upstream_unavailable"}
)


@dataclass(frozen=True)
class FailoverPolicy:
    retries: int = 2  # extra attempts on the same upstream (429, 5xx, resets)
    backoff: float = 0.25  # seconds: base of the jittered exponential backoff
    backoff_max: float = 4.0
    max_retry_wait: float = 10.0  # longest Retry-After honoured by waiting
    silent_timeout: float = 8.0  # first chunk limit when another upstream can take over
    breaker_failures: int = 5  # consecutive failures that open the breaker
    breaker_cooldown: float = 30.0  # seconds before an open breaker lets one probe through
    max_resumes: int = 3  # continuations of one stream


def classify(error: BridgeError) -> Action:
    """What to do with an upstream failure before the client got a byte."""
    status, code = error.status, error.code
    if code == "first_token_timeout" or code == "context_length_exceeded":
        return "next"
    if status == 429 or status >= 500:
        return "retry"
    if code in RETRYABLE_CODES:
        return "retry"
    return "final"


def counts_against(error: BridgeError) -> bool:
    """Whether the failure is the upstream's fault (feeds its breaker): not 4xx, not 429."""
    return error.status >= 500 or error.code in RETRYABLE_CODES


def delay(policy: FailoverPolicy, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): the upstream's ``Retry-After``
    when it gave one, else ``backoff * 2^(attempt-1)`` (capped) minus up to 50 % jitter."""
    if retry_after is not None:
        return max(retry_after, 0.0)
    base: float = min(policy.backoff * 2.0 ** (attempt - 1), policy.backoff_max)
    jitter: float = (rng or random).random()
    return base * (1.0 - 0.5 * jitter)


def resume_order(candidates: list[int], failed: int, *, stalled: bool, resumable: list[bool]) -> list[int]:
    """Indexes of the upstreams to continue a broken stream on: the same one first after a cut,
    never the same one after a stall; only those declared able to continue."""
    order = [failed] if not stalled else []
    order += [i for i in candidates if i != failed]
    return [i for i in order if resumable[i]]


def weighted_order(weights: list[int], state: list[int]) -> list[int]:
    """Smooth weighted round-robin (nginx's): the index to try first this time, then the others by
    weight; ``state`` (one int per upstream, initially zeros) is updated in place."""
    total = sum(weights)
    for i, w in enumerate(weights):
        state[i] += w
    first = max(range(len(weights)), key=lambda i: state[i])
    state[first] -= total
    rest = sorted((i for i in range(len(weights)) if i != first), key=lambda i: -weights[i])
    return [first, *rest]


class Breaker:
    """A circuit breaker for one (upstream, model): closed → open after ``failures`` consecutive
    failures → after ``cooldown`` s, half-open: one probe request goes through; its success closes
    the breaker, its failure opens it again. ``now`` is a monotonic clock reading in seconds."""

    __slots__ = ("_failures", "_limit", "_opened_at", "_probing", "cooldown")

    def __init__(self, failures: int, cooldown: float) -> None:
        self._limit = failures
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def state(self, now: float) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self, now: float) -> bool:
        """May a request go to this upstream now? (Taking the half-open probe slot if so.)"""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def reopens_in(self, now: float) -> float:
        return 0.0 if self._opened_at is None else max(self.cooldown - (now - self._opened_at), 0.0)

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self, now: float) -> None:
        self._failures += 1
        if self._probing or self._failures >= self._limit:
            self._opened_at = now
        self._probing = False

    def release(self) -> None:
        """The probe ended without a verdict (e.g. the client left): let another probe through."""
        self._probing = False
