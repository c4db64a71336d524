"""The ``generic_sse`` backend: any service that streams server-sent events carrying its own JSON,
made into an OpenAI chat model by configuration alone.

Example — a Dify-like service (``POST /stream`` → ``data: {"event":"message","answer":"..."}``
events, then ``data: {"event":"message_end","metadata":{"usage":{...}}}``; this is what
``oai-bridge``'s ``generic_sse`` simulator serves)::

    [backends.dify]
    kind = "generic_sse"
    base_url = "https://dify.example.com"
    models = ["dify-app"]               # the service has no model list: these are listed
    api_key_env = "DIFY_API_KEY"        # "{{api_key}}" below stands for this variable's value

    [backends.dify.options]
    path = "/stream"                    # default "/"
    method = "POST"                     # "POST" (default) or "GET"
    headers = { X-Api-Key = "{{api_key}}" }
    text_path = "answer"                # required: where each event's text is
    text_when = "event == message"      # only these events carry answer text
    done_when = "event == message_end"  # this event ends the answer successfully
    error_when = "event == error"       # this event carries an error ...
    error_path = "message"              # ... with its message here (default "message")
    error_status_path = "status"        # ... and an HTTP-like status here (optional)
    usage_prompt_path = "metadata.usage.prompt_tokens"
    usage_completion_path = "metadata.usage.completion_tokens"
    finish_reason_path = "metadata.stop_reason"
    finish_map = { end = "stop", max_tokens = "length" }

    [backends.dify.options.body]        # the JSON body, a template
    query = "{{last_user_message}}"
    history = "{{history}}"
    system = "{{system}}"
    model = "{{model}}"
    temperature = "{{temperature}}"
    max_tokens = "{{max_tokens}}"
    user = "{{user}}"
    response_mode = "streaming"
    inputs = {}

An OpenAI-style stream would be ``text_path = "choices[0].delta.content"``,
``done_when = "@data == [DONE]"``, ``finish_reason_path = "choices[0].finish_reason"``.

Options (all validated by ``from_config``; a bad one is a ``ValueError`` naming it):

``path``, ``method``
    Where the request goes (default ``POST /``; query parameters go in ``query``, not in
    ``path``). ``GET`` sends no body.
``headers``
    A table of strings; ``{{api_key}}`` (``config.api_key``; using it without a key configured is
    an error) and ``{{model}}`` may appear. The rendered headers are never logged or put in
    messages. ``Accept: text/event-stream`` is added unless given, and ``Content-Type:
    application/json`` for a body.
``body`` (POST only)
    A table: the JSON body template. A string that is exactly ``"{{name}}"`` becomes the
    parameter's JSON value; placeholders inside longer strings are interpolated as text (unset →
    empty). Default: ``{model = "{{model}}", messages = "{{messages}}", stream = "{{stream}}"}``.
    Placeholders: ``messages`` (``[{role, content}]``, content flattened to a string, developer →
    system), ``last_user_message``, ``system`` (system messages joined by a blank line), ``history``
    (the non-system messages before the last user message), ``model``, ``max_tokens``,
    ``temperature``, ``top_p``, ``stop`` (a list), ``user``, ``api_key``, ``stream`` (always true).
``unset``
    ``"drop"`` (default): a body key whose whole value is an unset parameter is left out;
    ``"null"``: it is sent as ``null``. (Inside arrays an unset value is always ``null``.)
``query``
    A table of URL query parameters (strings, numbers, bools; placeholders as in ``body``; lists
    are sent as compact JSON; unset ones are left out). Allowed with both methods.
``text_path`` (required)
    Path to the text piece in each event's JSON: dotted keys and ``[n]`` indexes
    (``answer``, ``choices[0].delta.content``, ``data.text``). Events without it carry no text.
``text_when``, ``done_when``, ``error_when``
    Conditions (one string or an array, any matching): ``PATH == VALUE`` / ``PATH != VALUE``; the
    pseudo-paths ``@event`` (the SSE ``event:`` name, ``message`` without one) and ``@data`` (the raw data, e.g.
    ``@data == [DONE]``) are allowed (see ``expressions.py``). ``done_when`` is required unless
    ``done_on_close``. An event whose data is not JSON and that matches no condition is a
    ``malformed_event``; events with empty data are keep-alives.
``done_on_close`` (bool, default false)
    A clean end of the body counts as the end of the answer (otherwise ``stream_incomplete``).
``error_path``, ``error_status_path``
    Where an error event's message (default ``message``) and status (optional) are. Before the
    first chunk the error is classified (context length, content policy, then the status table);
    after it, it is an ``UpstreamError``.
``usage_prompt_path``, ``usage_completion_path``
    Paths to token counts, read from any event (the last one found wins). Counts the service
    does not report are 0 (in ``chat`` answers, and in the usage chunk when one is asked for).
``cumulative`` (bool, default false)
    The text at ``text_path`` is the whole answer so far: only the new suffix is emitted (a
    repeat is ignored; text that changes what was already sent is a ``malformed_event``).
``finish_reason_path``, ``finish_map``
    Where a finish reason is (any event, last wins) and how its values map to ``stop``,
    ``length`` or ``content_filter`` (unmapped values that are not one of those → ``stop``).
    Default finish: ``stop``. Stop sequences are emulated by the bridge.
``health_path``
    ``GET`` probed by ``/health/backends`` (any answer below 500 = connected). Default: ``path``
    for a POST service (a cheap 405), ``/`` for a GET service (whose path would start a stream).

The service streams only, so ``chat`` is the fold of ``stream``. Not supported (400): tools, tool
conversations, ``n > 1``, logprobs, JSON response formats, non-text content parts. It cannot
continue a partial answer (``can_continue = False``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ...chunks import fold_chunks
from ...errors import UpstreamError, UpstreamTimeout, retry_after
from ...types import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Model
from ..base import BackendConfig
from ..http import HttpBackendBase, drain, open_response, read_body, settle, sse_events
from ..httpclient import Response
from .expressions import render_text
from .translate import StreamParser, StreamSpec, build_request, error_from_response, error_message, parse_options

__all__ = ["GenericSSEBackend"]

log = logging.getLogger("oai_bridge.generic_sse")


class GenericSSEBackend(HttpBackendBase):
    """``Backend`` for a server-sent-events service described by its ``options`` (module docstring)."""

    kind = "generic_sse"
    #: The service cannot continue an assistant prefix: never resume a stream here.
    can_continue = False

    def __init__(self, config: BackendConfig, spec: StreamSpec) -> None:
        super().__init__(config)
        self.spec = spec
        self.health_path = spec.health_path

    @classmethod
    def from_config(cls, config: BackendConfig) -> GenericSSEBackend:
        return cls(config, parse_options(config.options, has_api_key=bool(config.api_key)))

    def health_headers(self) -> dict[str, str]:
        params = {"api_key": self.config.api_key, "model": None}
        return {k: render_text(v, params) for k, v in self.spec.headers.items()}

    async def models(self) -> list[Model]:
        return [
            {"id": m, "object": "model", "created": self._created, "owned_by": self.name} for m in self.config.models
        ]

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        timeout = self.config.request_timeout
        try:
            async with asyncio.timeout(timeout):
                return await fold_chunks(self._stream(request, include_usage=True))
        except TimeoutError:
            raise UpstreamTimeout(f"{self.what} did not finish its answer within {timeout:g} s.") from None

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return self._stream(request, include_usage=None)

    async def _open(self, request: ChatCompletionRequest) -> Response:
        """Send the rendered request; return a 2xx response (error statuses raised)."""
        upstream = build_request(request, self.spec, api_key=self.config.api_key)
        headers = dict(upstream.headers)
        given = {k.lower() for k in headers}
        if "accept" not in given:
            headers["Accept"] = "text/event-stream"
        kwargs: dict[str, Any] = {"headers": headers}
        if upstream.body is not None:
            if "content-type" not in given:
                headers["Content-Type"] = "application/json"
            kwargs["data"] = orjson.dumps(upstream.body)
        if upstream.query:
            kwargs["params"] = upstream.query
        first = self.config.first_token_timeout
        resp = await open_response(
            self.session(), upstream.method, self.base_url + upstream.path, what=self.what, timeout=first, **kwargs
        )
        if resp.status >= 300:
            body = await read_body(resp, what=self.what, timeout=first)
            raise error_from_response(resp.status, body, retry_after=retry_after(resp.headers), what=self.what)
        if resp.content_type == "application/json":  # an error or a blocking answer, not a stream
            body = await read_body(resp, what=self.what, timeout=first)
            raise UpstreamError(
                f"{self.what} answered JSON instead of an event stream: {error_message(body) or 'no details'}"
            )
        return resp

    async def _stream(
        self, request: ChatCompletionRequest, *, include_usage: bool | None
    ) -> AsyncIterator[ChatCompletionChunk]:
        parser = StreamParser(self.spec, request=request, include_usage=include_usage, what=self.what)
        resp = await self._open(request)
        complete = False
        try:
            events = sse_events(
                resp, what=self.what, idle=self.config.idle_timeout, first=self.config.first_token_timeout
            )
            try:
                async for event in events:
                    for chunk in parser.feed(event.event, event.data):
                        yield chunk
                    if parser.done:
                        break
            finally:
                await events.aclose()
            for chunk in parser.end():
                yield chunk
            complete = True
            if not parser.builder.stopped:
                await drain(resp)
        finally:
            settle(resp, complete=complete)
