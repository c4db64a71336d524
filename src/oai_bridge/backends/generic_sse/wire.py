"""Wire shapes of a generic server-sent-events service (no I/O).

The service is described by configuration only (see ``backend.py``): what this module holds is
what every such service shares — the request the backend sends (``UpstreamRequest``), the names a
template may use (``PLACEHOLDERS``), the pseudo-paths a condition may test (``@event``, ``@data``),
the finish reasons a ``finish_map`` may produce, and ``DIFY_EXAMPLE``: the options of the example
(Dify-like) service that the simulator serves and the docs show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "DIFY_EXAMPLE",
    "EVENT_PSEUDO_PATH",
    "DATA_PSEUDO_PATH",
    "FINISH_REASONS",
    "PLACEHOLDERS",
    "HEADER_PLACEHOLDERS",
    "Method",
    "UpstreamRequest",
]

Method = Literal["POST", "GET"]

#: Everything a ``body``/``query`` template may name as ``{{name}}``.
PLACEHOLDERS: Final = frozenset(
    {
        "messages",  # [{"role", "content"}] (content flattened to a string; developer -> system)
        "last_user_message",  # the text of the last user message
        "system",  # the system (and developer) messages' texts joined with a blank line
        "history",  # the non-system messages before the last user message, as ``messages``
        "model",
        "max_tokens",  # max_completion_tokens, else max_tokens
        "temperature",
        "top_p",
        "stop",  # always a list of strings when set
        "user",
        "api_key",
        "stream",  # always true: the service streams
    }
)
#: What a ``headers`` value may name (anything else in a header would be a surprise).
HEADER_PLACEHOLDERS: Final = frozenset({"api_key", "model"})

#: Pseudo-paths of a condition: the SSE ``event:`` name (``message`` when absent) and the raw data text.
EVENT_PSEUDO_PATH: Final = "@event"
DATA_PSEUDO_PATH: Final = "@data"

#: What an upstream finish reason may be mapped to (the service makes no tool calls).
FINISH_REASONS: Final = ("stop", "length", "content_filter")


@dataclass(frozen=True)
class UpstreamRequest:
    """One request to the service, rendered from the templates (``body`` is JSON or ``None``)."""

    method: Method
    path: str
    headers: dict[str, str] = field(repr=False)  # may hold the API key
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None


#: ``[backends.NAME.options]`` of the example Dify-like service (``simulators/generic_sse.py``):
#: ``POST /stream`` with ``{"query", "history", "model", ...}`` answered by
#: ``data: {"event":"message","answer":"..."}`` events and a ``message_end`` with the usage.
DIFY_EXAMPLE: Final[dict[str, Any]] = {
    "path": "/stream",
    "method": "POST",
    "headers": {"X-Api-Key": "{{api_key}}"},
    "body": {
        "query": "{{last_user_message}}",
        "history": "{{history}}",
        "system": "{{system}}",
        "model": "{{model}}",
        "temperature": "{{temperature}}",
        "max_tokens": "{{max_tokens}}",
        "user": "{{user}}",
        "response_mode": "streaming",
        "inputs": {},
    },
    "text_path": "answer",
    "text_when": "event == message",
    "done_when": "event == message_end",
    "error_when": "event == error",
    "error_path": "message",
    "error_status_path": "status",
    "usage_prompt_path": "metadata.usage.prompt_tokens",
    "usage_completion_path": "metadata.usage.completion_tokens",
    "finish_reason_path": "metadata.stop_reason",
    "finish_map": {"end": "stop", "max_tokens": "length"},
}
