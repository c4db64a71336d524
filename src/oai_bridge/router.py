"""Public model name → upstreams, and carrying out the failover policy (``failover.py``).

A request's model picks a route (exact name or alias, else the longest ``prefix/*`` route, else
the backend that lists the model, else the default backend with the name unchanged); the route
gives ordered upstreams (fallback order, or weighted round-robin). ``Router.stream`` and
``Router.chat`` try them: retries and failover happen before the first byte reaches the client;
after it, a broken stream is continued on an upstream declared able to continue an assistant
prefix (same ``id``, no second role delta, nothing duplicated), or ends in an error frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, Health
from .errors import BridgeError, UpstreamError, UpstreamTimeout
from .failover import Breaker, FailoverPolicy, classify, counts_against, delay, resume_order, weighted_order
from .routes import Route, Upstream
from .types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model

__all__ = ["Router", "Target"]

log = logging.getLogger("oai_bridge.router")

Chunks = AsyncIterator[ChatCompletionChunk]


@dataclass(frozen=True)
class Target:
    """One upstream for one request: a backend and the model name it is asked for."""

    backend: Backend
    model: str
    resume: bool
    breaker: Breaker


class Router:
    def __init__(
        self,
        backends: list[Backend],
        routes: Iterable[Route] = (),
        *,
        policy: FailoverPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not backends:
            raise ValueError("a router needs at least one backend")
        self.backends = backends
        self.by_name = {b.name: b for b in backends}
        self.default = backends[0]
        self.policy = policy or FailoverPolicy()
        self.routes = list(routes)
        self._clock = clock
        self._exact: dict[str, Route] = {}
        for route in self.routes:
            if route.prefix is None:
                self._exact[route.model] = route
            for alias in route.aliases:
                self._exact[alias] = route
        self._prefixes = sorted((r for r in self.routes if r.prefix), key=lambda r: -len(r.model))
        self._owner: dict[str, Backend] = {}
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self._rr: dict[str, list[int]] = {}

    # ------------------------------------------------------------------ routing

    def _breaker(self, backend: str, model: str) -> Breaker:
        key = (backend, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(self.policy.breaker_failures, self.policy.breaker_cooldown)
        return breaker

    def _target(self, up: Upstream, model: str) -> Target:
        backend = self.by_name[up.backend]
        upstream_model = up.model or model
        return Target(backend, upstream_model, up.resume, self._breaker(backend.name, upstream_model))

    def targets(self, model: str) -> list[Target]:
        """The upstreams for ``model``, in the order to try them."""
        route = self._exact.get(model)
        rest = model
        if route is None:
            for candidate in self._prefixes:
                assert candidate.prefix is not None
                if model.startswith(candidate.prefix) and len(model) > len(candidate.prefix):
                    route, rest = candidate, model[len(candidate.prefix) :]
                    break
        if route is None:
            backend = self._owner.get(model, self.default)
            return [Target(backend, model, False, self._breaker(backend.name, model))]
        ups = list(route.upstreams)
        if route.strategy == "weighted" and len(ups) > 1:
            state = self._rr.setdefault(route.model, [0] * len(ups))
            ups = [ups[i] for i in weighted_order([u.weight for u in ups], state)]
        return [self._target(u, rest) for u in ups]

    def route(self, model: str) -> Backend:
        """The first backend for ``model`` (media endpoints use one upstream)."""
        return self.targets(model)[0].backend

    def resolve(self, model: str) -> tuple[Backend, str]:
        """The first backend for ``model`` and the model name to ask it for."""
        target = self.targets(model)[0]
        return target.backend, target.model

    def _usable(self, targets: list[Target], order: Iterable[int]) -> list[int]:
        """``order`` without upstreams whose breaker is open, unless that would leave none."""
        order = list(order)
        if len(order) < 2:  # one upstream is tried whatever its breaker says
            return order
        now = self._clock()
        open_ = [i for i in order if targets[i].breaker.state(now) == "open"]
        usable = [i for i in order if i not in open_]
        if open_ and usable:
            skipped = ", ".join(f"{targets[i].backend.name}/{targets[i].model}" for i in open_)
            log.info("circuit open, skipping %s", skipped)
        return usable or order

    # ------------------------------------------------------------------ attempts

    async def _attempt_first(self, target: Target, request: ChatCompletionRequest, limit: float | None) -> Any:
        """Open a stream on ``target`` and wait for its first chunk (at most ``limit`` s)."""
        it = target.backend.stream(request)
        try:
            if limit is None:
                first = await anext(it)
            else:
                try:
                    async with asyncio.timeout(limit):
                        first = await anext(it)
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"backend {target.backend.name!r} sent no first chunk within {limit:g} s.",
                        code="first_token_timeout",
                    ) from None
        except BaseException:
            await it.aclose()  # type: ignore[attr-defined]
            raise
        return it, first

    async def _try_in_order(
        self,
        targets: list[Target],
        order: list[int],
        call: Callable[[Target, float | None], Any],
    ) -> tuple[int, Any]:
        """Call ``call(target, first_chunk_limit)`` on each upstream of ``order`` per the policy;
        return ``(index, result)`` of the first success or raise the last failure."""
        policy = self.policy
        last: BridgeError | None = None
        order = self._usable(targets, order)
        for position, index in enumerate(order):
            target = targets[index]
            more = position < len(order) - 1
            limit = policy.silent_timeout if more else None
            tries = 0
            while True:
                target.breaker.allow(self._clock())
                try:
                    result = await call(target, limit)
                except BridgeError as exc:
                    last = exc
                    action = classify(exc)
                    if counts_against(exc):
                        target.breaker.failure(self._clock())
                    else:
                        target.breaker.release()
                    log.info(
                        "attempt on %s/%s failed (%s %s): %s",
                        target.backend.name,
                        target.model,
                        exc.status,
                        exc.code,
                        action,
                    )
                    if action == "final":
                        raise
                    if action == "retry" and tries < policy.retries:
                        retry_after = exc.retry_after if exc.status == 429 else None
                        if retry_after is None or retry_after <= policy.max_retry_wait:
                            tries += 1
                            await asyncio.sleep(delay(policy, tries, retry_after))
                            continue
                    break
                except BaseException:
                    target.breaker.release()
                    raise
                return index, result
        assert last is not None
        raise last

    # ------------------------------------------------------------------ chat

    def _ask(self, request: ChatCompletionRequest, target: Target) -> ChatCompletionRequest:
        if target.model == request.model:
            return request
        return request.model_copy(update={"model": target.model})

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        targets = self.targets(request.model)

        async def call(target: Target, limit: float | None) -> ChatCompletion:
            return await target.backend.chat(self._ask(request, target))

        index, result = await self._try_in_order(targets, list(range(len(targets))), call)
        targets[index].breaker.success()
        answer: ChatCompletion = result
        return answer

    def stream(self, request: ChatCompletionRequest) -> Chunks:
        return self._stream(request, self.targets(request.model))

    async def _stream(self, request: ChatCompletionRequest, targets: list[Target]) -> Chunks:
        async def call(target: Target, limit: float | None) -> Any:
            return await self._attempt_first(target, self._ask(request, target), limit)

        index, (it, first) = await self._try_in_order(targets, list(range(len(targets))), call)
        if len(targets) == 1 and not targets[0].resume:
            # The common case (one upstream, nothing to resume on): chunks pass untouched.
            try:
                yield first
                async for chunk in it:
                    yield chunk
                targets[0].breaker.success()
            except BridgeError as exc:
                if counts_against(exc):
                    targets[0].breaker.failure(self._clock())
                raise
            finally:
                targets[0].breaker.release()
                await it.aclose()
            return
        run = _Resumable(self, request, targets)
        async for chunk in run.pump(index, it, first):
            yield chunk

    # ------------------------------------------------------------------ models and health

    async def models(self) -> list[Model]:
        """Every backend's models (first lister owns a name), then the routed public names."""
        lists = await asyncio.gather(*(b.models() for b in self.backends), return_exceptions=True)
        merged: dict[str, Model] = {}
        for backend, listed in zip(self.backends, lists, strict=True):
            if isinstance(listed, BaseException):
                log.warning("listing the models of backend %r failed: %s", backend.name, listed)
                continue
            for model in listed:
                if model["id"] not in merged:
                    merged[model["id"]] = {**model, "backends": [backend.name]}
                    self._owner[model["id"]] = backend
                else:
                    merged[model["id"]].setdefault("backends", []).append(backend.name)
        created = int(time.time())
        for route in self.routes:
            names = [route.model, *route.aliases] if route.prefix is None else []
            for name in names:
                merged[name] = {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "oai-bridge",
                    "backends": list(dict.fromkeys(u.backend for u in route.upstreams)),
                }
        return list(merged.values())

    async def model(self, model_id: str) -> Model | None:
        for model in await self.models():
            if model["id"] == model_id:
                return model
        return None

    async def health(self) -> list[Health]:
        return list(await asyncio.gather(*(b.health() for b in self.backends)))

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()


class _Resumable:
    """One client stream over possibly several upstream streams (routes with fallbacks)."""

    def __init__(self, router: Router, request: ChatCompletionRequest, targets: list[Target]) -> None:
        self.router = router
        self.request = request
        self.targets = targets
        self.parts: list[str] = []  # the answer's text so far (choice 0)
        self.sent = 0  # chunks sent to the client
        self.resumable = True  # one choice, text only
        self.finished = False
        self.identity: tuple[str, int, str] | None = None

    def _track(self, chunk: ChatCompletionChunk) -> None:
        self.sent += 1
        if "usage" in chunk and not chunk["choices"]:
            return
        for choice in chunk["choices"]:
            if choice["index"] != 0:
                self.resumable = False
            delta = choice["delta"]
            content = delta.get("content")
            if content:
                self.parts.append(content)
            if delta.get("tool_calls"):
                self.resumable = False
            if choice["finish_reason"] is not None:
                self.finished = True

    def _restyle(self, chunk: ChatCompletionChunk, first_text: list[bool]) -> ChatCompletionChunk | None:
        """A continuation's chunk as part of the first answer: same id/created/model, no role, and
        whitespace the prefix already ended with not sent twice."""
        assert self.identity is not None
        chunk["id"], chunk["created"], chunk["model"] = self.identity
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if "role" in delta:
                delta.pop("role")
                if delta.get("refusal") is None:
                    delta.pop("refusal", None)
                if delta.get("content") in ("", None) and not delta.get("tool_calls"):
                    delta.pop("content", None)
            content = delta.get("content")
            if content and first_text[0]:
                first_text[0] = False
                sent = "".join(self.parts)
                tail = sent[len(sent.rstrip()) :]
                if tail and content.startswith(tail):
                    delta["content"] = content = content[len(tail) :]
                    if not content:
                        delta.pop("content")
            if not delta and choice["finish_reason"] is None:
                chunk["choices"] = [c for c in chunk["choices"] if c is not choice]
        if not chunk["choices"] and "usage" not in chunk:
            return None
        if not chunk["choices"] and chunk.get("usage") is None:
            return None
        return chunk

    async def pump(self, index: int, it: Any, first: ChatCompletionChunk) -> Chunks:
        router, policy = self.router, self.router.policy
        self.identity = (first["id"], first["created"], first["model"])
        resumes = 0
        continuing = False
        first_text = [False]
        pending: ChatCompletionChunk | None = first
        try:
            while True:
                try:
                    if pending is not None:
                        chunk = self._restyle(pending, first_text) if continuing else pending
                        pending = None
                        if chunk is not None:
                            self._track(chunk)
                            yield chunk
                    async for upstream_chunk in it:
                        chunk = self._restyle(upstream_chunk, first_text) if continuing else upstream_chunk
                        if chunk is None:
                            continue
                        self._track(chunk)
                        yield chunk
                    self.targets[index].breaker.success()
                    return
                except BridgeError as exc:
                    error = exc
                except Exception as exc:  # an upstream's unexpected failure mid-stream
                    log.exception("stream from %s failed", self.targets[index].backend.name)
                    error = UpstreamError(f"The upstream failed in the middle of the answer ({type(exc).__name__}).")
                await it.aclose()
                target = self.targets[index]
                if counts_against(error) or error.status >= 500:
                    target.breaker.failure(router._clock())
                if self.finished:
                    log.warning("stream from %s broke after its finish chunk: %s", target.backend.name, error.message)
                    return
                if not self.resumable or resumes >= policy.max_resumes:
                    raise error
                stalled = error.code == "idle_timeout"
                everyone = list(range(len(self.targets)))
                prefix = "".join(self.parts)
                if prefix:
                    order = resume_order(everyone, index, stalled=stalled, resumable=[t.resume for t in self.targets])
                else:  # only the role chunk went out: any upstream can start the answer afresh
                    order = ([index] if not stalled else []) + [i for i in everyone if i != index]
                if not order:
                    raise error
                log.info(
                    "resuming a stream cut on %s (%s) after %d characters", target.backend.name, error.code, len(prefix)
                )
                sent_prefix = prefix.rstrip() if prefix else ""

                async def call(t: Target, limit: float | None, sent_prefix: str = sent_prefix) -> Any:
                    req = (
                        self.request.continued(sent_prefix, model=t.model)
                        if sent_prefix
                        else router._ask(self.request, t)
                    )
                    return await router._attempt_first(t, req, limit)

                try:
                    index, (it, pending) = await router._try_in_order(self.targets, order, call)
                except BridgeError as retry_error:
                    log.warning("no upstream could continue the stream: %s", retry_error.message)
                    raise error from None
                resumes += 1
                continuing = True
                first_text[0] = bool(prefix)
        finally:
            await it.aclose()
