"""Logging: every line names its request, and no line holds a secret.

- ``REQUEST_ID`` is a context variable the server sets at the start of each request (the value
  of its ``x-request-id``); tasks and callbacks started while handling the request inherit it.
- ``RequestIdFilter`` puts it on each record as ``record.request_id`` (``-`` outside a request),
  for a format such as ``LOG_FORMAT``'s ``[%(request_id)s]``.
- ``RedactingFilter`` runs ``oai_bridge.redact.redact`` over each record's message, exception
  text and stack (registered secrets and anything that looks like a key become ``[redacted]``).

The CLI installs both on its one log handler, for the bridge's loggers and uvicorn's alike
(``log_config``). A library user adds them to any handler::

    handler = logging.StreamHandler()
    install_filters(handler)                  # RequestIdFilter + RedactingFilter
    handler.setFormatter(logging.Formatter(LOG_FORMAT))

Filters sit on handlers, not loggers, so records propagated from any logger pass through them.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from .redact import redact, register_secret

__all__ = [
    "LOG_FORMAT",
    "NO_REQUEST",
    "REQUEST_ID",
    "RedactingFilter",
    "RequestIdFilter",
    "install_filters",
    "log_config",
]

NO_REQUEST = "-"
REQUEST_ID: ContextVar[str] = ContextVar("oai_bridge_request_id", default=NO_REQUEST)
LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id``: the request being handled when the record was made, or ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class RedactingFilter(logging.Filter):
    """Replaces secrets in a record's message (its arguments merged in), exception text and stack
    with ``[redacted]``. ``secrets``: values to redact besides the registered ones."""

    def __init__(self, name: str = "", secrets: Iterable[str] = ()) -> None:
        super().__init__(name)
        for secret in secrets:
            register_secret(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_filters(handler: logging.Handler) -> logging.Handler:
    """Add a ``RequestIdFilter`` and a ``RedactingFilter`` to ``handler`` (returned)."""
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    return handler


def log_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: one stderr handler with both filters and
    ``LOG_FORMAT`` on the root logger; uvicorn's loggers propagate to it. The CLI applies it and
    hands it to uvicorn, which applies it again in each worker process."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "oai_bridge.logs.RequestIdFilter"},
            "redact": {"()": "oai_bridge.logs.RedactingFilter"},
        },
        "formatters": {"bridge": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "bridge",
                "filters": ["request_id", "redact"],
            }
        },
        "root": {"level": upper, "handlers": ["stderr"]},
        "loggers": {
            name: {"level": upper, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }
