"""Simulator of a Dify-like streaming service: the example upstream of the ``generic_sse`` backend
(its options are ``backends.generic_sse.DIFY_EXAMPLE``).

``POST /stream`` takes JSON ``{"query": str, "history": [{role, content}], "system": str, "model",
"temperature", "max_tokens", ...}`` (unknown fields ignored; ``messages`` in OpenAI form may replace
``query``/``history``/``system``) and answers ``text/event-stream``::

    data: {"event":"message","task_id":...,"message_id":...,"conversation_id":...,"answer":"Simulated","created_at":...}

    data: {"event":"message","task_id":...,...,"answer":" reply",...}

    data: {"event":"message_end","task_id":...,...,"metadata":{"usage":{"prompt_tokens":..,
           "completion_tokens":..,"total_tokens":..},"stop_reason":"end"}}

as Dify's chat API does (compact JSON here). The answer is ``common.continuation_pieces`` of the
conversation (``tool_result_reply`` after a tool result), cut at ``max_tokens`` (then
``stop_reason`` is ``max_tokens``: an addition of this simulator, Dify sends none). Usage:
``count_tokens`` of every message's text, and one completion token per piece.

Errors before the stream are a status with Dify's body ``{"code": ..., "message": ..., "status": ...}``;
errors inside it are ``data: {"event":"error","status":..,"code":..,"message":..}`` and the end of
the body. A bare ``event: ping`` (no data, as Dify sends every 10 s) opens the stream with ``ping=True``.

Options of ``create_app``/``start``: ``api_key`` (require ``X-Api-Key``; 401 otherwise),
``cumulative`` (each ``message`` event carries the whole answer so far), ``token_delay`` (seconds
between events), ``stream_errors`` (``status``/``context_length``/``content_policy`` faults become
an error event inside a 200 stream, as Dify reports model-provider failures), ``ping``.

Faults (``common.FaultPlan``), in this wire form: ``status`` → the status and Dify error body
(``Retry-After`` when set), or after ``after`` > 0 message events an error event; ``context_length`` →
400 ``completion_request_error`` "Query or prefix prompt is too long, ..." (Dify's text);
``content_policy`` → 400 saying the content moderation policy rejected it; ``reset`` → the
connection closed before any response; ``silent`` → no response for ``delay`` s, then closed;
``slow_first`` → the head at once, the first event after ``delay`` s; ``cut`` → ``after`` events,
then the connection dropped mid-body; ``stall`` → ``after`` events, silence for ``delay`` s, then
dropped; ``garbage`` → ``after`` events, one event that is not JSON, then the end of the body;
``no_finish`` → ``after`` events, then the end of the body without ``message_end``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .common import (
    Fault,
    FaultPlan,
    RunningServer,
    close_connection,
    continuation_pieces,
    count_tokens,
    hold,
    serve,
    tool_result_reply,
)

__all__ = ["STREAM_PATH", "SimState", "create_app", "disconnects", "start", "state"]

STREAM_PATH = "/stream"
CONTEXT_MESSAGE = (
    "Query or prefix prompt is too long, you can reduce the prefix prompt, or shrink the max token, "
    "or switch to a llm with a larger token limit size."
)
CONTENT_MESSAGE = "The request was rejected by the content moderation policy of the application."
MALFORMED_EVENT = b'data: {"event": "message", "answer": "unterminated\n\n'
PING = b"event: ping\n\n"
_CODES = {400: "invalid_param", 401: "unauthorized", 404: "not_found", 429: "too_many_requests"}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_IN_STREAM = frozenset({"cut", "stall", "garbage", "no_finish"})
_ERRORS = frozenset({"status", "context_length", "content_policy"})


@dataclass
class SimState:
    plan: FaultPlan
    api_key: str | None = None
    cumulative: bool = False
    token_delay: float = 0.0
    stream_errors: bool = False
    ping: bool = False
    disconnects: int = 0  # streams stopped because the client went away
    active: int = 0  # streams being served now


STATE = web.AppKey("generic_sse_sim_state", SimState)


def _code(status: int) -> str:
    return _CODES.get(status, "internal_server_error" if status >= 500 else "error")


def _error(status: int, message: str, code: str | None = None, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else None
    body = orjson.dumps({"code": code or _code(status), "message": message, "status": status})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _error_of(fault: Fault) -> tuple[int, str, str]:
    """(status, code, message) of an error fault."""
    if fault.kind == "context_length":
        return 400, "completion_request_error", CONTEXT_MESSAGE
    if fault.kind == "content_policy":
        return 400, "content_moderation", CONTENT_MESSAGE
    return fault.status, _code(fault.status), fault.message


def _conversation(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The conversation as OpenAI-style messages, or an error message."""
    if "messages" in body:
        messages = body["messages"]
    else:
        query, history, system = body.get("query"), body.get("history") or [], body.get("system")
        if not isinstance(query, str):
            return [], "query is required and must be a string"
        if not isinstance(history, list):
            return [], "history must be a list of messages"
        messages = [*([{"role": "system", "content": system}] if isinstance(system, str) and system else [])]
        messages += [*history, {"role": "user", "content": query}]
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content", ""), str)
        for m in messages
    ):
        return [], "messages must be objects with a string role and content"
    return messages, None


def _answer(messages: list[dict[str, Any]], max_tokens: Any) -> tuple[list[str], str]:
    """(pieces, stop_reason)."""
    limit = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None
    full = tool_result_reply(messages) or continuation_pieces(messages)
    if limit is not None and len(full) > limit:
        return full[: max(limit, 0)], "max_tokens"
    return full, "end"


class _Writer:
    """One streamed answer: Dify-shaped events with shared ids."""

    def __init__(self, request: web.Request, resp: web.StreamResponse) -> None:
        self.request, self.resp = request, resp
        self.ids = {"task_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
        self.ids["conversation_id"] = str(uuid.uuid4())
        self.self_closed = False

    async def event(self, kind: str, **fields: Any) -> None:
        await self.resp.write(b"data: " + orjson.dumps({"event": kind, **self.ids, **fields}) + b"\n\n")

    def drop(self) -> web.StreamResponse:
        self.self_closed = True
        close_connection(self.request)
        return self.resp


async def _handle_stream(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    raw = await request.read()
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    st.plan.log(request, body)
    fault = st.plan.next()
    kind = fault.kind if fault else None
    if fault is not None and kind == "reset":
        close_connection(request)
        return web.Response()
    if fault is not None and kind == "silent":
        await hold(fault.delay)
        close_connection(request)
        return web.Response()
    errors_in_stream = st.stream_errors or (fault is not None and fault.after > 0)
    if fault is not None and kind in _ERRORS and not errors_in_stream:
        status, code, message = _error_of(fault)
        return _error(status, message, code, fault.retry_after)
    if st.api_key is not None and request.headers.get("X-Api-Key") != st.api_key:
        return _error(401, "Access token is invalid", "unauthorized")
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object.")
    messages, problem = _conversation(body)
    if problem is not None:
        return _error(400, problem)
    pieces, stop_reason = _answer(messages, body.get("max_tokens"))
    prompt = sum(count_tokens(m.get("content") or "") for m in messages)
    st.active += 1
    writer = _Writer(request, web.StreamResponse(headers=_SSE_HEADERS))
    try:
        await writer.resp.prepare(request)
        if st.ping:
            await writer.resp.write(PING)
        if fault is not None and kind == "slow_first":
            await asyncio.sleep(fault.delay)
        mid = fault if kind in _IN_STREAM or (kind in _ERRORS and errors_in_stream) else None
        sent = ""
        for i, piece in enumerate(pieces):
            if mid is not None and i == mid.after:
                return await _mid_fault(writer, mid)
            if i and st.token_delay > 0:
                await asyncio.sleep(st.token_delay)
            sent += piece
            await writer.event("message", answer=sent if st.cumulative else piece, created_at=int(time.time()))
        if mid is not None:
            return await _mid_fault(writer, mid)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)}
        await writer.event("message_end", metadata={"usage": usage, "stop_reason": stop_reason})
        await writer.resp.write_eof()
        return writer.resp
    except asyncio.CancelledError:
        if not writer.self_closed:
            st.disconnects += 1
        raise
    except ConnectionResetError:  # a write after the client went away
        if not writer.self_closed:
            st.disconnects += 1
        return writer.resp
    finally:
        st.active -= 1


async def _mid_fault(writer: _Writer, fault: Fault) -> web.StreamResponse:
    """The fault after ``fault.after`` message events (or at the end of a shorter answer)."""
    if fault.kind == "cut":
        return writer.drop()
    if fault.kind == "stall":
        await hold(fault.delay)
        return writer.drop()
    if fault.kind == "garbage":
        await writer.resp.write(MALFORMED_EVENT)
    elif fault.kind in _ERRORS:
        status, code, message = _error_of(fault)
        await writer.event("error", status=status, code=code, message=message)
    await writer.resp.write_eof()  # garbage, error and no_finish: a clean end without message_end
    return writer.resp


def create_app(
    plan: FaultPlan,
    *,
    api_key: str | None = None,
    cumulative: bool = False,
    token_delay: float = 0.0,
    stream_errors: bool = False,
    ping: bool = False,
) -> web.Application:
    """The simulator app (serve it with ``common.serve``: handler cancellation on)."""
    app = web.Application()
    app[STATE] = SimState(plan, api_key, cumulative, token_delay, stream_errors, ping)
    app.router.add_post(STREAM_PATH, _handle_stream)
    return app


async def start(host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningServer:
    """Serve a new simulator (``create_app`` options) on ``host:port`` (0: a free port)."""
    plan = FaultPlan()
    return await serve(create_app(plan, **options), plan, host, port)


def disconnects(server: RunningServer) -> int:
    """How many streams of ``server`` stopped because the client went away."""
    return server.app[STATE].disconnects


def state(server: RunningServer) -> SimState:
    return server.app[STATE]
