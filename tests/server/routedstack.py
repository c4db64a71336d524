"""A real stack on loopback with several upstream simulators (any kinds) behind the bridge, routed
by backends and routes declared like a config file. Runs in a background thread with its own loop."""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import uvicorn

from oai_bridge.config import Settings, load_settings
from oai_bridge.routes import BackendSpec, Route, Upstream
from oai_bridge.server.app import create_app
from oai_bridge.server.protocol import CoalescingHttpToolsProtocol
from oai_bridge.simulators.common import FaultPlan

#: How each kind's simulator is started, and the base_url suffix its backend takes.
SIMULATORS: dict[str, tuple[str, str]] = {
    "openai_compat": ("oai_bridge.simulators.openai_compat", "/v1"),
    "ollama": ("oai_bridge.simulators.ollama", ""),
    "anthropic": ("oai_bridge.simulators.anthropic", ""),
    "generic_sse": ("oai_bridge.simulators.generic_sse", ""),
}


@dataclass
class Up:
    """One upstream: a simulator of ``kind`` and the backend declared for it."""

    name: str
    kind: str
    sim: dict[str, Any] = field(default_factory=dict)  # simulator start options
    backend: dict[str, Any] = field(default_factory=dict)  # BackendSpec fields (timeouts, options, ...)


@dataclass
class RoutedStack:
    url: str
    loop: asyncio.AbstractEventLoop
    server: uvicorn.Server
    upstreams: dict[str, Any]  # name → RunningServer (or the Livepeer RunningSimulator)
    thread: threading.Thread = field(repr=False)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def plan(self, name: str) -> FaultPlan:
        plan: FaultPlan = self.upstreams[name].plan
        return plan

    def requests(self, name: str) -> list[dict[str, Any]]:
        return list(self.upstreams[name].requests)

    def reset(self) -> None:
        for up in self.upstreams.values():
            if hasattr(up, "plan"):
                up.plan.clear()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


async def _start_sim(up: Up) -> tuple[Any, str]:
    if up.kind == "livepeer":
        from oai_bridge.simulators.livepeer import start_simulator

        sim = await start_simulator(**up.sim)
        return sim, sim.url
    module, suffix = SIMULATORS[up.kind]
    server = await importlib.import_module(module).start(**up.sim)
    return server, server.url + suffix


def start_routed(ups: list[Up], routes: list[Route] | None = None, **settings: Any) -> RoutedStack:
    """Start every upstream's simulator, then the bridge with them as ``[backends.NAME]`` and
    ``routes`` (default: each backend's name routes ``NAME/*`` to it). ``settings``: Settings fields."""

    def make(urls: dict[str, str]) -> Settings:
        config = Settings(**settings)
        config.backends = [BackendSpec(name=up.name, kind=up.kind, base_url=urls[up.name], **up.backend) for up in ups]
        config.routes = (
            routes
            if routes is not None
            else [Route(model=f"{up.name}/*", upstreams=(Upstream(backend=up.name),)) for up in ups]
        )
        return config

    return start_stack(ups, make)


CHAT_PATH = "/v1/chat/completions"


def start_pair(routes: list[Route], timeouts: dict[str, float], **settings: Any) -> RoutedStack:
    """Two OpenAI-compatible simulators, ``a`` and ``b`` (backends with ``timeouts``), behind ``routes``."""
    ups = [Up(name, "openai_compat", backend=dict(timeouts)) for name in ("a", "b")]
    return start_routed(ups, routes, **settings)


def chat_calls(stack: RoutedStack, name: str) -> list[dict[str, Any]]:
    """The chat requests upstream ``name`` received (since its last reset)."""
    return [r for r in stack.requests(name) if r["path"] == CHAT_PATH]


def start_configured(ups: list[Up], toml: str, environ: dict[str, str], tmp: Path) -> RoutedStack:
    """Start the simulators, then the bridge from a config file: ``toml`` with ``{url:NAME}``
    replaced by each simulator's base URL, loaded like ``oai-bridge serve --config`` does."""

    def make(urls: dict[str, str]) -> Settings:
        text = toml
        for name, url in urls.items():
            text = text.replace("{url:" + name + "}", url)
        path = tmp / "bridge.toml"
        path.write_text(text, encoding="utf-8")
        return load_settings(config_file=path, environ=environ)

    return start_stack(ups, make)


def start_stack(ups: list[Up], make: Callable[[dict[str, str]], Settings]) -> RoutedStack:
    """Start the simulators, then the bridge with ``make(urls)`` (urls: name → backend base URL)."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> None:
        sims: dict[str, Any] = {}
        urls: dict[str, str] = {}
        try:
            for up in ups:
                sims[up.name], urls[up.name] = await _start_sim(up)
            config = make(urls)
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
            ready["sims"], ready["server"] = sims, server
            task = asyncio.ensure_future(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if task.done():
                ready["error"] = task.exception() or RuntimeError("the bridge failed to start (see the log)")
                started.set()
                return
            ready["port"] = server.servers[0].sockets[0].getsockname()[1]
            started.set()
            await task
        except BaseException as exc:
            ready.setdefault("error", exc)
            started.set()
            raise
        finally:
            for sim in sims.values():
                await sim.aclose()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="routed-stack", daemon=True)
    thread.start()
    if not started.wait(20) or "error" in ready:
        raise RuntimeError(f"the routed stack did not start: {ready.get('error')!r}")
    return RoutedStack(
        url=f"http://127.0.0.1:{ready['port']}",
        loop=loop,
        server=ready["server"],
        upstreams=ready["sims"],
        thread=thread,
    )


@contextmanager
def client(stack: RoutedStack, **options: Any) -> Iterator[openai.OpenAI]:
    """The real openai SDK, validating every response strictly, not retrying."""
    with openai.OpenAI(
        base_url=stack.base_url,
        api_key="sk-test",
        _strict_response_validation=True,
        max_retries=0,
        **options,
    ) as sdk:
        yield sdk
