"""How transport failures talking to a gateway become ``BridgeError``s (one place for every call,
and for a stream being read)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from ...errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ..http import StreamErrors
from ..httpclient import ConnectFailed

NO_ORCHESTRATOR = (
    "The Livepeer gateway closed the connection without answering (this is how gateways since v0.8.7 "
    "report that no orchestrator serves the model)."
)


@contextmanager
def gateway_errors(gateway_url: str) -> Iterator[None]:
    """Map the clients' exceptions inside the block (``HttpClient``'s subclass aiohttp's);
    timeouts are left to the caller (its message)."""
    try:
        yield
    except aiohttp.ServerDisconnectedError:
        raise UpstreamUnavailable(NO_ORCHESTRATOR, code="no_orchestrator") from None
    except (aiohttp.ClientConnectorError, ConnectFailed) as exc:
        raise UpstreamUnavailable(
            f"Cannot connect to the Livepeer gateway at {gateway_url} ({exc.os_error}).",
            code="upstream_unreachable",
            retry_after=2.0,
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The request to the Livepeer gateway failed ({type(exc).__name__}).") from None


#: A gateway's stream: one silence limit from the head on (the head comes with the first token).
GATEWAY_STREAM_ERRORS = StreamErrors(
    silent=lambda _code, limit: UpstreamTimeout(
        f"The Livepeer gateway went silent for {limit:g} s in the middle of the answer.", code="idle_timeout"
    ),
    broken=lambda: UpstreamError("The connection to the Livepeer gateway broke in the middle of the answer."),
)
