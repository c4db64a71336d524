"""A faithful Anthropic Messages API simulator (reference ``openai-anthropic-ollama.md`` §6 and the
real streams in ``fixtures/anthropic-streams``): the test double of the ``anthropic`` backend.

Routes: ``POST /v1/messages`` (JSON or ``stream: true`` SSE), ``POST /v1/messages/count_tokens``,
``GET /v1/models`` (paged: ``limit``, ``after_id``, ``before_id``; ``data``, ``has_more``,
``first_id``, ``last_id``) and ``GET /v1/models/{id}``. Every answer carries a ``request-id``.

Like the real API it checks ``x-api-key`` (or ``Authorization: Bearer``) when started with
``api_key=`` (401 ``authentication_error``), requires ``anthropic-version`` (400; any
``YYYY-MM-DD`` value is accepted), and validates the body: unknown top-level fields, ``model``,
``max_tokens`` (required, ≥ 1), ``messages`` (roles user/assistant; consecutive same-role turns are
accepted, as the API combines them; an assistant first turn is accepted), empty or whitespace-only
text blocks, ``tool_result`` ids that answer no ``tool_use`` of the previous turn and ``tool_use``
ids left unanswered, a final assistant turn ending in whitespace, ``temperature``/``top_p`` outside
0..1, ``tools``/``tool_choice`` shapes. A prompt longer than ``context_window`` tokens gets the
real 400 ``prompt is too long: N tokens > M maximum``.

The answer comes from ``common`` (identical text to every other simulator): a tool call when tools
are offered (``tool_choice`` ``none`` offers none, ``tool`` offers the named one) and no result came
back yet — streamed as ``input_json_delta`` (an empty slice, then three); ``Tool result: ...`` after
a tool result; else the deterministic reply, or its rest when the last turn is an assistant
*prefill*. ``stop_sequences`` end it with ``stop_reason: "stop_sequence"`` and the matched string;
``max_tokens`` (one token per piece) with ``"max_tokens"``. Streams have the exact event sequence
of the fixtures: ``message_start`` (usage with ``input_tokens``), ``content_block_start``, ``ping``,
deltas, ``content_block_stop``, ``message_delta`` (stop reason, cumulative ``output_tokens``),
``message_stop``; an empty answer has no content block.

Faults (``FaultPlan``, applied to ``POST /v1/messages`` only), in Anthropic's wire form:

=================  ==========================================================================
``status``         that status with ``{"type": "error", "error": {type, message}}`` (type by status:
                   400 ``invalid_request_error``, 401 ``authentication_error``, 403
                   ``permission_error``, 404 ``not_found_error``, 413 ``request_too_large``, 429
                   ``rate_limit_error``, 500 ``api_error``, 503/529 ``overloaded_error``),
                   ``retry-after`` when set. **Extension:** with ``after > 0`` on a stream request
                   the 200 stream sends ``after`` content events, then ``event: error`` with that
                   type and ends (how the API reports e.g. overload mid-stream)
``context_length`` 400 ``invalid_request_error`` ``prompt is too long: N tokens > M maximum``
``content_policy`` 400 ``invalid_request_error`` ``Output blocked by content filtering policy``
``reset``          the connection closed without a response
``silent``         nothing at all for ``delay`` s, then the connection closed
``slow_first``     nothing for ``delay`` s (not even the head), then the normal answer
``cut``            ``after`` content events, then the connection closed mid-body (non-stream: half
                   the announced body)
``stall``          ``after`` content events, silence for ``delay`` s, then closed (non-stream: half
                   the body, then the same)
``garbage``        ``after`` content events, one event whose data is not JSON, end of body
                   (non-stream: half the JSON body)
``no_finish``      ``after`` content events, then the body ends without ``message_delta`` /
                   ``message_stop`` (non-stream: a message with ``stop_reason: null``)
=================  ==========================================================================

Options of ``create_app``/``start``: ``api_key`` (require it), ``models`` (ids, newest first;
default ``DEFAULT_MODELS``), ``strict_models`` (404 ``not_found_error`` for other models; off by
default so any model name works), ``token_delay`` (seconds between streamed deltas),
``context_window`` (default 200000 tokens).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .common import (
    Fault,
    FaultPlan,
    RunningServer,
    close_connection,
    continuation_pieces,
    conversation_text,
    count_tokens,
    hold,
    serve,
    tool_call_for,
    tool_result_reply,
)

__all__ = ["DEFAULT_MODELS", "GARBAGE", "OPTIONS", "Answer", "SimState", "answer", "create_app", "start", "state"]

#: (id, display_name, created_at), newest first as the API lists them.
DEFAULT_MODELS: list[tuple[str, str, str]] = [
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
]
OPTIONS = ("api_key", "context_window", "models", "strict_models", "token_delay")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
CONTEXT_LENGTH = "prompt is too long: {n} tokens > {m} maximum"
CONTENT_POLICY = "Output blocked by content filtering policy"
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
GARBAGE = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_del\n\n'
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
    }
)
BLOCK_TYPES = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})
_BASE62 = string.ascii_letters + string.digits


@dataclass
class SimState:
    plan: FaultPlan
    api_key: str | None
    models: list[dict[str, Any]]
    token_delay: float
    strict_models: bool
    context_window: int
    active_streams: int = 0
    disconnects: int = 0
    request_ids: list[str] = field(default_factory=list)


_STATE = web.AppKey("anthropic_sim", SimState)


def state(server: RunningServer) -> SimState:
    """The simulator's counters (``active_streams``, ``disconnects``) and settings."""
    return server.app[_STATE]


def _rid(prefix: str) -> str:
    return prefix + "01" + "".join(secrets.choice(_BASE62) for _ in range(22))


# --------------------------------------------------------------------------- answers on the wire


def _sse(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(obj),
        content_type="application/json",
        headers={"request-id": _rid("req_"), **(headers or {})},
    )


def _error(status: int, message: str, *, retry_after: str | None = None) -> web.Response:
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": _rid("req_")}
    return _json(status, body, {"retry-after": retry_after} if retry_after is not None else None)


def _check_headers(request: web.Request, st: SimState) -> web.Response | None:
    if st.api_key is not None:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("Authorization", "")
        if key is None and auth.startswith("Bearer "):
            key = auth[len("Bearer ") :]
        if not key:
            return _error(401, "x-api-key header is required")
        if key != st.api_key:
            return _error(401, "invalid x-api-key")
    version = request.headers.get("anthropic-version")
    if not version:
        return _error(400, "anthropic-version: header is required")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", version):
        return _error(400, f'anthropic-version: "{version}" is not a valid version')
    return None


# --------------------------------------------------------------------------- validation


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _check_message(i: int, m: Any) -> str | None:
    if not isinstance(m, dict):
        return f"messages.{i}: Input should be a valid dictionary"
    if m.get("role") not in ("user", "assistant"):
        return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    content = m.get("content")
    if isinstance(content, list):
        for j, b in enumerate(content):
            kind = b.get("type") if isinstance(b, dict) else None
            if kind not in BLOCK_TYPES:
                return f"messages.{i}.content.{j}.type: Input tag {kind!r} found using 'type' does not match any of the expected tags"  # noqa: E501
            if kind == "text" and not isinstance(b.get("text"), str):
                return f"messages.{i}.content.{j}.text: Field required"
            if kind == "tool_use" and m["role"] != "assistant" or kind == "tool_result" and m["role"] != "user":
                return f"messages.{i}.content.{j}: {kind} blocks are not allowed in {m['role']} messages"
    elif not isinstance(content, str):
        return f"messages.{i}.content: Input should be a valid string or list"
    if any(b.get("type") == "text" and not str(b.get("text", "")).strip() for b in _blocks(content)):
        return "messages: text content blocks must contain non-whitespace text"
    return None


def _check_pairs(messages: list[dict[str, Any]]) -> str | None:
    """``tool_result`` must answer a ``tool_use`` of the turn before, and every ``tool_use`` (but in
    the last turn) must be answered in the next turn."""
    for i, m in enumerate(messages):
        uses = [b.get("id") for b in _blocks(m.get("content")) if b.get("type") == "tool_use"]
        nxt = _blocks(messages[i + 1].get("content")) if i + 1 < len(messages) else None
        if uses and nxt is not None:
            answered = {b.get("tool_use_id") for b in nxt if b.get("type") == "tool_result"}
            missing = [u for u in uses if u not in answered]
            if missing:
                return (
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(map(str, missing))}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message."
                )
        prev = _blocks(messages[i - 1].get("content")) if i > 0 else []
        offered = {b.get("id") for b in prev if b.get("type") == "tool_use"}
        for j, b in enumerate(_blocks(m.get("content"))):
            if b.get("type") == "tool_result" and b.get("tool_use_id") not in offered:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{b.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
    return None


def _check_params(body: dict[str, Any]) -> str | None:
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1):
            return f"{name}: range: 0..1"
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a valid list of strings"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list"
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return f"tools.{i}.name: Field required"
            if not isinstance(tool.get("input_schema"), dict):
                return f"tools.{i}.input_schema: Field required"
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "none", "tool"):
            return "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
        if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
            return "tool_choice.tool.name: Field required"
        if not tools:
            return "tool_choice may only be specified while providing tools."
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        return "metadata: Extra inputs are not permitted"
    return None


def _validate(body: Any) -> str | None:
    """The message of the 400 the real API would answer, or ``None``."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary"
    for name in body:
        if name not in KNOWN_FIELDS:
            return f"{name}: Extra inputs are not permitted"
    if "model" not in body:
        return "model: Field required"
    if not isinstance(body["model"], str) or not body["model"]:
        return "model: Input should be a valid string"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, m in enumerate(messages):
        if err := _check_message(i, m):
            return err
    last = messages[-1]
    if last["role"] == "assistant":
        blocks = _blocks(last["content"])
        if blocks and blocks[-1].get("type") == "text" and blocks[-1]["text"] != blocks[-1]["text"].rstrip():
            return "messages: final assistant content cannot end with trailing whitespace"
    return _check_pairs(messages) or _check_params(body)


# --------------------------------------------------------------------------- the answer


def _neutral(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation in the common helpers' terms: a user turn's ``tool_result`` blocks become
    ``tool`` messages (then its other blocks a user message), so the answer equals the one every
    other simulator gives for the same OpenAI conversation; consecutive same-role turns are
    combined into one, as the API does."""
    out: list[dict[str, Any]] = []
    for m in messages:
        blocks = _blocks(m.get("content"))
        if m["role"] == "user":
            results = [b for b in blocks if b.get("type") == "tool_result"]
            out.extend({"role": "tool", "content": b.get("content") or ""} for b in results)
            blocks = [b for b in blocks if b.get("type") != "tool_result"]
            if results and not blocks:
                continue
        if out and out[-1]["role"] == m["role"]:  # the API combines consecutive same-role turns
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m["role"], "content": blocks})
    return out


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts: list[str] = []
    system = body.get("system")
    texts.extend([system] if isinstance(system, str) else [b.get("text", "") for b in _blocks(system)])
    for m in body.get("messages") or ():
        for b in _blocks(m.get("content") if isinstance(m, dict) else None):
            if b.get("type") == "text":
                texts.append(b["text"])
            elif b.get("type") == "tool_use":
                texts.append(orjson.dumps(b.get("input")).decode())
            elif b.get("type") == "tool_result":
                inner = b.get("content")
                texts.extend([inner] if isinstance(inner, str) else [x.get("text", "") for x in _blocks(inner)])
    return max(count_tokens(" ".join(texts)), 1)


@dataclass
class Answer:
    pieces: list[str]
    stop_reason: str
    stop_sequence: str | None = None
    tool: tuple[str, str, str] | None = None  # (id, name, arguments JSON)

    @property
    def output_tokens(self) -> int:
        return max(count_tokens(self.tool[2]), 1) if self.tool else len(self.pieces)


def _rest(pieces: list[str], prefix: str | None) -> list[str]:
    """What follows an assistant prefill of ``pieces`` (as ``common.continuation_pieces`` does)."""
    if prefix is None:
        return pieces
    full = "".join(pieces)
    if not full.startswith(prefix):
        return [" [continuation of an unknown prefix]"]
    rest = full[len(prefix) :]
    return re.findall(r"\s*\S+", rest) or ([rest] if rest else [])


def answer(body: dict[str, Any]) -> Answer:
    """What the simulated model says to a validated request (see the module doc)."""
    messages = _neutral(body["messages"])
    prefilled = messages[-1]["role"] == "assistant"
    tools = [t["name"] for t in body.get("tools") or ()]
    choice = body.get("tool_choice") or {"type": "auto"}
    if choice["type"] == "none":
        tools = []
    elif choice["type"] == "tool":
        tools = [choice["name"]]
    call = None if prefilled else tool_call_for(messages, tools)
    if call is not None:
        return Answer([], "tool_use", tool=(_rid("toolu_"), call[0], call[1]))
    reply = tool_result_reply(messages)
    if reply is not None:
        full = _rest(reply, conversation_text(messages)[1])
    else:
        full = continuation_pieces(messages)
    limit = body["max_tokens"]
    pieces, reason = (full[:limit], "max_tokens") if len(full) > limit else (full, "end_turn")
    text = "".join(pieces)
    found = [(text.find(s), s) for s in body.get("stop_sequences") or () if s and s in text]
    if not found:
        return Answer(pieces, reason)
    at, stop = min(found)
    cut: list[str] = []
    length = 0
    for piece in pieces:
        if length + len(piece) >= at:
            if at > length:
                cut.append(piece[: at - length])
            break
        cut.append(piece)
        length += len(piece)
    return Answer(cut, "stop_sequence", stop)


def _message(model: str, ans: Answer, prompt: int, *, finished: bool = True) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if ans.tool is not None:
        content.append({"type": "tool_use", "id": ans.tool[0], "name": ans.tool[1], "input": orjson.loads(ans.tool[2])})
    elif ans.pieces:
        content.append({"type": "text", "text": "".join(ans.pieces)})
    return {
        "id": _rid("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": ans.stop_reason if finished else None,
        "stop_sequence": ans.stop_sequence if finished else None,
        "usage": {
            "input_tokens": prompt,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": ans.output_tokens if finished else 1,
            "service_tier": "standard",
        },
    }


def _slices(arguments: str) -> list[str]:
    n = len(arguments)
    return [s for s in (arguments[: n // 3], arguments[n // 3 : 2 * n // 3], arguments[2 * n // 3 :]) if s]


def _events(ans: Answer) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(events before the content, the content events, the closing events) of a streamed answer."""
    if ans.tool is not None:
        ident, name, arguments = ans.tool
        block = {"type": "tool_use", "id": ident, "name": name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": s} for s in ["", *_slices(arguments)]]
    elif ans.pieces:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in ans.pieces]
    else:
        block, deltas = None, []
    head = [PING]
    tail = [
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": ans.stop_reason, "stop_sequence": ans.stop_sequence},
                "usage": {"output_tokens": ans.output_tokens},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    if block is not None:
        head.insert(0, _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}))
        tail.insert(0, _sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    content = [_sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    return head, content, tail


# --------------------------------------------------------------------------- handlers

MID_FAULTS = frozenset({"cut", "stall", "garbage", "no_finish"})


async def _early_fault(request: web.Request, fault: Fault, body: dict[str, Any]) -> web.StreamResponse | None:
    """The answer a fault gives before any generation (``None``: generate, maybe with a mid fault)."""
    kind = fault.kind
    if kind == "status" and not (fault.after > 0 and body.get("stream") is True):
        return _error(fault.status, fault.message, retry_after=fault.retry_after)
    if kind == "context_length":
        window = request.app[_STATE].context_window
        return _error(400, CONTEXT_LENGTH.format(n=window + _prompt_tokens(body), m=window))
    if kind == "content_policy":
        return _error(400, CONTENT_POLICY)
    if kind in ("reset", "silent"):
        if kind == "silent":
            await hold(fault.delay)
        close_connection(request)
        return web.Response()
    if kind == "slow_first":
        await asyncio.sleep(fault.delay)
    return None


async def _messages(request: web.Request) -> web.StreamResponse:
    st = request.app[_STATE]
    raw = await request.read()
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    st.plan.log(request, body if body is not None else raw.decode("utf-8", "replace"))
    if (refused := _check_headers(request, st)) is not None:
        return refused
    if body is None:
        return _error(400, "There was an issue with the formatting or content of your request: invalid JSON body.")
    fault = st.plan.next()
    if fault is not None and isinstance(body, dict):
        early = await _early_fault(request, fault, body)
        if early is not None:
            return early
    if (problem := _validate(body)) is not None:
        return _error(400, problem)
    model = body["model"]
    if st.strict_models and model not in {m["id"] for m in st.models}:
        return _error(404, f"model: {model}")
    prompt = _prompt_tokens(body)
    if prompt > st.context_window:
        return _error(400, CONTEXT_LENGTH.format(n=prompt, m=st.context_window))
    ans = answer(body)
    mid = fault if fault is not None and (fault.kind in MID_FAULTS or fault.kind == "status") else None
    st.active_streams += 1
    try:
        if body.get("stream"):
            return await _stream(request, st, model, ans, prompt, mid)
        return await _single(request, st, model, ans, prompt, mid)
    finally:
        st.active_streams -= 1


async def _single(
    request: web.Request, st: SimState, model: str, ans: Answer, prompt: int, fault: Fault | None
) -> web.StreamResponse:
    if st.token_delay and ans.pieces:
        await asyncio.sleep(st.token_delay * len(ans.pieces))
    kind = fault.kind if fault is not None else None
    if kind == "no_finish":
        partial = Answer(ans.pieces[: fault.after] if fault else [], ans.stop_reason)
        return _json(200, _message(model, partial, prompt, finished=False))
    body = orjson.dumps(_message(model, ans, prompt))
    if kind == "garbage":
        return web.Response(body=body[: len(body) // 2], content_type="application/json")
    if kind in ("cut", "stall"):
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        try:
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            if kind == "stall" and fault is not None:
                await hold(fault.delay)
        except ConnectionResetError:
            return resp
        close_connection(request)
        return resp
    return web.Response(body=body, content_type="application/json", headers={"request-id": _rid("req_")})


async def _stream(
    request: web.Request, st: SimState, model: str, ans: Answer, prompt: int, fault: Fault | None
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "request-id": _rid("req_"),
        }
    )
    start = _message(model, Answer([], ans.stop_reason), prompt, finished=False)
    start["content"] = []
    head, content, tail = _events(ans)
    closed_by_us = False
    try:
        await resp.prepare(request)
        await resp.write(_sse("message_start", {"type": "message_start", "message": start}) + b"".join(head))
        for i in range(len(content) + 1):
            if fault is not None and i == min(fault.after, len(content)):
                closed_by_us = True
                return await _mid_fault(request, resp, fault)
            if i == len(content):
                break
            if i > 0 and st.token_delay:
                await asyncio.sleep(st.token_delay)
            await resp.write(content[i])
        await resp.write(b"".join(tail))
        await resp.write_eof()
        return resp
    except asyncio.CancelledError:
        if not closed_by_us:
            st.disconnects += 1
        raise
    except ConnectionResetError:
        if not closed_by_us:
            st.disconnects += 1
        return resp


async def _mid_fault(request: web.Request, resp: web.StreamResponse, fault: Fault) -> web.StreamResponse:
    if fault.kind == "status":
        kind = ERROR_TYPES.get(fault.status) or ("api_error" if fault.status >= 500 else "invalid_request_error")
        await resp.write(_sse("error", {"type": "error", "error": {"type": kind, "message": fault.message}}))
        await resp.write_eof()
    elif fault.kind == "garbage":
        await resp.write(GARBAGE)
        await resp.write_eof()
    elif fault.kind == "no_finish":
        await resp.write_eof()
    else:  # cut, stall
        if fault.kind == "stall":
            await hold(fault.delay)
        close_connection(request)
    return resp


async def _count_tokens(request: web.Request) -> web.StreamResponse:
    st = request.app[_STATE]
    try:
        body: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    st.plan.log(request, body)
    if (refused := _check_headers(request, st)) is not None:
        return refused
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        return _error(400, "messages: Field required")
    return _json(200, {"input_tokens": _prompt_tokens(body)})


async def _models(request: web.Request) -> web.StreamResponse:
    st = request.app[_STATE]
    st.plan.log(request, None)
    if (refused := _check_headers(request, st)) is not None:
        return refused
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        return _error(400, "limit: Input should be a valid integer")
    if not 1 <= limit <= 1000:
        return _error(400, "limit: Input should be between 1 and 1000")
    ids = [m["id"] for m in st.models]
    after, before = request.query.get("after_id"), request.query.get("before_id")
    if before is not None:
        end = ids.index(before) if before in ids else 0
        page, more = st.models[max(end - limit, 0) : end], end - limit > 0
    else:
        begin = ids.index(after) + 1 if after in ids else 0 if after is None else len(ids)
        page, more = st.models[begin : begin + limit], begin + limit < len(ids)
    return _json(
        200,
        {
            "data": page,
            "has_more": more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        },
    )


async def _model(request: web.Request) -> web.StreamResponse:
    st = request.app[_STATE]
    st.plan.log(request, None)
    if (refused := _check_headers(request, st)) is not None:
        return refused
    ident = request.match_info["model_id"]
    for m in st.models:
        if m["id"] == ident:
            return _json(200, m)
    return _error(404, f"model: {ident}")


async def _not_found(request: web.Request) -> web.StreamResponse:
    return _error(404, "Not Found")


def _model_infos(models: list[str] | None) -> list[dict[str, Any]]:
    if models is None:
        return [{"type": "model", "id": i, "display_name": d, "created_at": c} for i, d, c in DEFAULT_MODELS]
    return [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"} for i in models]


def create_app(plan: FaultPlan, **options: Any) -> web.Application:
    """The simulator app (options: see the module doc). Serve it with ``common.serve``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown anthropic simulator option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    app = web.Application()
    app[_STATE] = SimState(
        plan=plan,
        api_key=options.get("api_key"),
        models=_model_infos(options.get("models")),
        token_delay=float(options.get("token_delay", 0.0)),
        strict_models=bool(options.get("strict_models", False)),
        context_window=int(options.get("context_window", 200_000)),
    )
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model_id}", _model)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def start(host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningServer:
    """Serve a new simulator on ``host:port`` (0: a free port); ``.plan`` scripts its faults."""
    plan = FaultPlan()
    return await serve(create_app(plan, **options), plan, host, port)
