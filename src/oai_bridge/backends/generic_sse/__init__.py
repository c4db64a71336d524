"""Generic server-sent-events backend (configured, not coded): ``wire`` (shapes, the example
config), ``expressions`` (paths, conditions, templates), ``options`` (validation), ``translate``
(pure), ``backend`` (I/O)."""

from .backend import GenericSSEBackend
from .expressions import Condition, Path, compile_template, lookup, parse_condition, parse_path, render
from .translate import (
    StreamParser,
    StreamSpec,
    build_request,
    classify_error,
    error_from_response,
    parse_options,
    parse_stream,
    request_params,
)
from .wire import DIFY_EXAMPLE, PLACEHOLDERS, UpstreamRequest

__all__ = [
    "DIFY_EXAMPLE",
    "PLACEHOLDERS",
    "Condition",
    "GenericSSEBackend",
    "Path",
    "StreamParser",
    "StreamSpec",
    "UpstreamRequest",
    "build_request",
    "classify_error",
    "compile_template",
    "error_from_response",
    "lookup",
    "parse_condition",
    "parse_options",
    "parse_path",
    "parse_stream",
    "render",
    "request_params",
]
