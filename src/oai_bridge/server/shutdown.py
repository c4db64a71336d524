"""Graceful shutdown: stop accepting, let the requests in flight finish, end the rest clearly.

On SIGTERM or SIGINT uvicorn closes the listening socket at once and calls ``shutdown()`` on every
open connection: an idle keep-alive connection is closed there, a busy one is closed after its
response. The bridge's protocol (``protocol.CoalescingHttpToolsProtocol``) passes that call on to
the app (``BridgeApp.begin_drain``), whose ``Drain`` gives the requests in flight
``shutdown_grace`` seconds. When the grace is over, every request still running is cancelled;
the cancelled code asks ``Drain.absorb()`` and answers instead of vanishing: a stream ends with
``data: {"error": {..., "code": "server_shutting_down"}}`` and a request that has sent nothing yet
gets a 503 with that code. Nothing here costs anything per request or chunk: the tasks cancelled
are uvicorn's own request tasks (``ServerState.tasks``), and the flag is read only by code that
was cancelled.

``run_server`` (one process) and ``run_workers`` (``--workers N``) run the CLI's uvicorn: the
single server exits 0 after a graceful stop (uvicorn re-raises the signal, which would make it
die by SIGTERM), and the workers' parent closes its copy of the listening socket when the signal
arrives, so that new connections are refused at once (each worker closes its own as it starts
draining) rather than queued on a socket no one accepts from.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import signal
import sys
from collections.abc import Generator
from types import FrameType

from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from ..errors import BridgeError

__all__ = ["Drain", "last_resort", "run_server", "run_workers", "shutting_down"]

log = logging.getLogger("oai_bridge.server")

#: Seconds uvicorn itself waits past the grace before it cancels whatever is left (a client that
#: does not read its error frame): the last resort, never the plan.
LAST_RESORT_MARGIN = 5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def shutting_down() -> BridgeError:
    return BridgeError(
        "The server is shutting down and could not finish this request; send it again.",
        status=503,
        code="server_shutting_down",
        retry_after=1.0,
    )


def last_resort(grace: float) -> int:
    """uvicorn's ``timeout_graceful_shutdown`` for a drain of ``grace`` seconds."""
    return (math.ceil(grace) if math.isfinite(grace) else 10**9) + LAST_RESORT_MARGIN


class Drain:
    """The graceful shutdown of one app: ``begin`` when uvicorn starts shutting down, cancel the
    requests still running ``grace`` seconds later, and tell the cancelled code that it was this
    (``absorb``)."""

    __slots__ = ("draining", "expired", "grace")

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False  # no new connections; the requests in flight may finish
        self.expired = False  # the grace is over: the requests still running were cancelled

    def begin(self, tasks: set[asyncio.Task[None]]) -> None:
        """Start the grace period for ``tasks`` (uvicorn's live set of request tasks); idempotent."""
        if self.draining:
            return
        self.draining = True
        running = sum(not t.done() for t in tasks)
        log.info("shutting down: %d request(s) in flight get up to %g s to finish", running, self.grace)
        if math.isfinite(self.grace):
            asyncio.get_running_loop().call_later(self.grace, self._expire, tasks)

    def _expire(self, tasks: set[asyncio.Task[None]]) -> None:
        self.expired = True
        running = [t for t in tasks if not t.done()]
        if running:
            log.warning(
                "shutdown grace of %g s is over: ending %d request(s) with server_shutting_down",
                self.grace,
                len(running),
            )
        for task in running:
            task.cancel()

    def absorb(self) -> bool:
        """Called with a ``CancelledError`` in hand: True once the grace is over (the cancellation
        is then undone, so that the caller can answer); before that a cancellation is someone
        else's (a client that left) and stays as it is."""
        if not self.expired:
            return False
        task = asyncio.current_task()
        if task is None or not task.cancelling():
            return False
        task.uncancel()
        return True


# ----------------------------------------------------------------------- running uvicorn


class BridgeServer(Server):
    """uvicorn's server; a graceful stop on SIGTERM/SIGINT is a clean exit (status 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            if self.started:
                self._captured_signals.clear()  # drained and closed: nothing to re-raise


def run_server(config: Config) -> None:
    """``uvicorn.run`` for one process, with ``BridgeServer``."""
    server = BridgeServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run_workers(config: Config) -> None:
    """``uvicorn.run`` for ``config.workers`` processes (the app given as an import string). On
    SIGTERM/SIGINT the parent closes its copy of the listening socket at once and tells the workers
    without waiting for the supervisor's next tick (up to 0.5 s)."""
    sock = config.bind_socket()
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before the worker rework
        supervisor = Multiprocess(config, target=BridgeServer(config).run, sockets=[sock])  # type: ignore[call-arg]
    else:
        supervisor = Multiprocess(config, sockets=[sock])

    def stop(sig: int, frame: FrameType | None) -> None:
        sock.close()
        supervisor.should_exit.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)  # replaces the supervisor's (which only queues the signal)
    with contextlib.suppress(KeyboardInterrupt):
        supervisor.run()
