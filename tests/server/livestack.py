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

from oai_bridge.config import Settings
from oai_bridge.server.app import create_app
from oai_bridge.server.protocol import CoalescingHttpToolsProtocol
from oai_bridge.simulators.livepeer import RunningSimulator, start_simulator

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
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        sim = await start_simulator(api=api)
        config = Settings(gateway_url=sim.url, **settings)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config),
                host="127.0.0.1",
                port=0,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=2,
                http=CoalescingHttpToolsProtocol,
            )
        )
        ready["sim"], ready["server"] = sim, server
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            ready["error"] = task.exception()
            started.set()
            return
        ready["port"] = server.servers[0].sockets[0].getsockname()[1]
        started.set()
        try:
            await task
        finally:
            await sim.aclose()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=target, name=f"stack-{api}", daemon=True)
    thread.start()
    if not started.wait(20) or "error" in ready:
        raise RuntimeError(f"the test stack did not start: {ready.get('error')}")
    return Stack(
        simulator=ready["sim"],
        url=f"http://127.0.0.1:{ready['port']}",
        loop=loop,
        server=ready["server"],
        api=api,
        thread=thread,
    )


@contextmanager
def sdk_client(stack: Stack) -> Iterator[openai.OpenAI]:
    """The real openai SDK, validating every response strictly, not retrying."""
    with openai.OpenAI(
        base_url=stack.base_url, api_key="sk-test", _strict_response_validation=True, max_retries=0
    ) as client:
        yield client
