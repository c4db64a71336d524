"""A real stack on loopback: the Livepeer simulator and the bridge (uvicorn) in a background thread
with its own event loop, so tests can drive it with sync and async clients alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
import uvicorn
from routedstack import Up
from routedstack import start_stack as start_routed_stack

from oai_bridge.config import Settings
from oai_bridge.simulators.livepeer import RunningSimulator

T = TypeVar("T")
MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


@dataclass
class Stack:
    simulator: RunningSimulator
    url: str  # bridge root, e.g. http://127.0.0.1:PORT
    loop: asyncio.AbstractEventLoop
    server: uvicorn.Server
    api: str
    thread: threading.Thread = field(repr=False)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def llm_requests(self) -> list[dict[str, Any]]:
        return list(self.simulator.requests)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_stack(api: str = "json", **settings: Any) -> Stack:
    """Simulator (``api`` generation) + bridge pointed at it; extra kwargs are Settings fields."""
    up = Up("livepeer", "livepeer", sim={"api": api})
    routed = start_routed_stack([up], lambda urls: Settings(gateway_url=urls["livepeer"], **settings))
    return Stack(
        simulator=routed.upstreams["livepeer"],
        url=routed.url,
        loop=routed.loop,
        server=routed.server,
        api=api,
        thread=routed.thread,
    )


@contextmanager
def sdk_client(stack: Stack) -> Iterator[openai.OpenAI]:
    """The real openai SDK, validating every response strictly, not retrying."""
    with openai.OpenAI(
        base_url=stack.base_url, api_key="sk-test", _strict_response_validation=True, max_retries=0
    ) as client:
        yield client
