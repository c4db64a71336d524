"""oai-bridge: an OpenAI-compatible API server and library in front of a Livepeer AI gateway.

Library surface: the OpenAI wire types, the error family, the SSE codec, and the Livepeer
backend's pure translation functions plus its async client functions::

    from oai_bridge import livepeer_stream_chat
    async for chunk in livepeer_stream_chat("http://127.0.0.1:8935", {"model": "...", "messages": [...]}):
        ...
"""

__version__ = "0.1.0"

from .backends.livepeer import (
    LivepeerBackend,
    LivepeerOptions,
    build_request,
    parse_response,
    parse_stream,
)
from .backends.livepeer import chat as livepeer_chat
from .backends.livepeer import stream_chat as livepeer_stream_chat
from .errors import BridgeError
from .types import ChatCompletionRequest

__all__ = [
    "BridgeError",
    "ChatCompletionRequest",
    "LivepeerBackend",
    "LivepeerOptions",
    "__version__",
    "build_request",
    "livepeer_chat",
    "livepeer_stream_chat",
    "parse_response",
    "parse_stream",
]
