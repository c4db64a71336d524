"""Deterministic simulator of an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, LM Studio).

Routes (``base_url`` = ``<url>/v1``), in OpenAI's wire form (reference §1-§4, the real captures in
``fixtures/openai-real-streams``):

* ``POST /v1/chat/completions``: ``stream: true`` → ``text/event-stream`` with ``data: <json>\\n\\n``
  events: per choice a role chunk (``{"role":"assistant","content":"","refusal":null}``, or with
  the tool call's first fragment and ``content: null``), one chunk per word (tool-call arguments in
  three slices), a finish chunk with ``delta: {}``, the usage chunk (``choices: []``) when
  ``stream_options.include_usage``, then ``data: [DONE]\\n\\n``. ``n`` choices are interleaved and
  carry the same text. ``logprobs``/``top_logprobs`` give a deterministic logprob per token.
  Otherwise one ``chat.completion``.
* ``GET /v1/models`` and ``GET /v1/models/{id}``; ``POST /v1/embeddings`` (``common.embed``
  vectors, ``dimensions``, ``encoding_format`` ``float``/``base64``).
* anything else → 404 ``Invalid URL (METHOD /path)``.

Answers come from ``simulators.common`` (identical text on every simulator): a tool call when
tools are offered (``tool_choice`` ``"none"`` offers none, a named one picks it) and no tool
result exists yet, ``Tool result: ...`` after one, else the reply, or the rest of it when the last
message is an assistant prefix (prefilled, as llama.cpp and vLLM continue it). ``max_tokens`` /
``max_completion_tokens`` cut the answer (``finish_reason: "length"``), ``stop`` cuts it at a stop
string. When started with ``api_key=``, requests need ``Authorization: Bearer <key>`` (else 401
``invalid_api_key``). Validation as OpenAI's: missing ``model``/``messages``, ``n`` out of 1..128,
``stream_options`` without ``stream`` → 400; with ``check_model=True`` an unknown model → 404
``model_not_found``; vLLM's ``continue_final_message`` together with ``add_generation_prompt`` → 400.

Faults (``FaultPlan``, kinds of ``common``; chat and embeddings requests only): ``status`` → that
status with ``{"error": {"message", "type", "param", "code"}}`` (+ ``Retry-After``), or on a stream
with ``after`` > 0, ``after`` content events then ``data: {"error": {...}}`` and the end of the
body; ``context_length`` → 400 ``context_length_exceeded`` (param ``messages``, OpenAI's text);
``content_policy`` → 400 ``content_policy_violation``; ``reset`` → closed with no response;
``silent`` → no head for ``delay`` s, then closed; ``slow_first`` → everything ``delay`` s late;
``cut``/``stall``/``garbage``/``no_finish`` → the role chunk and ``after`` content events (nothing
at all for ``after=0``), then the connection dropped / silence for ``delay`` s then dropped / an
event that is not JSON then dropped / the end of the body with no finish and no ``[DONE]``.
Non-stream: ``cut`` drops the connection half way through the announced body, ``garbage`` and
``no_finish`` answer truncated JSON, ``stall`` is silence then a drop.

Deviations of real servers, switchable at start (``deviations={...}``) and at run time
(``set_deviations(server, {...})``): ``no_finish_chunk`` (no finish chunk), ``empty_finish_reason``
(``"finish_reason": ""`` instead of null), ``role_every_chunk``, ``finish_with_content`` (the
finish on the last content chunk), ``usage_every_chunk`` (cumulative usage on every chunk, no
usage chunk, whether asked or not), ``done_no_blank_line`` (``data: [DONE]\\n`` at the end),
``no_done`` (no ``[DONE]``), ``detail_errors`` (FastAPI ``{"detail": "..."}`` error bodies),
``unstable_ids`` (``id``/``created`` change every chunk), ``bare_chunks`` (no ``id``, ``object``,
``created``), ``float_embeddings`` (``encoding_format: "base64"`` ignored).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ..embeddings import embedding_response
from .common import (
    Fault,
    FaultPlan,
    RunningServer,
    close_connection,
    continuation_pieces,
    count_tokens,
    embed,
    hold,
    serve,
    tool_call_for,
    tool_result_reply,
)

__all__ = [
    "DEFAULT_MODELS",
    "DEVIATIONS",
    "STATE",
    "SimState",
    "create_app",
    "set_deviations",
    "start",
    "state",
]

DEFAULT_MODELS = ["gpt-4o-mini", "text-embedding-3-small"]
DEVIATIONS = frozenset(
    {
        "no_finish_chunk",
        "empty_finish_reason",
        "role_every_chunk",
        "done_no_blank_line",
        "usage_every_chunk",
        "detail_errors",
        "finish_with_content",
        "no_done",
        "unstable_ids",
        "bare_chunks",
        "float_embeddings",
    }
)
FINGERPRINT = "fp_simulated"
CONTEXT_WINDOW = 4096
CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is not "
    "allowed by our content policy."
)
LOGPROB = -0.25
GARBAGE_EVENT = b'data: {"id":"chatcmpl-broken","choices":[{"delta":\n\n'
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
MIDSTREAM = frozenset({"cut", "stall", "garbage", "no_finish"})


@dataclass
class SimState:
    """What one simulator app knows and counts (``state(server)``); ``deviations`` may be changed
    while it runs."""

    models: list[str]
    api_key: str | None = None
    token_delay: float = 0.0
    deviations: set[str] = field(default_factory=set)
    check_model: bool = False
    dimensions: int = 8
    active_streams: int = 0
    disconnects: int = 0


STATE = web.AppKey("openai_compat_sim_state", SimState)
PLAN = web.AppKey("openai_compat_sim_plan", FaultPlan)


def state(server: RunningServer) -> SimState:
    return server.app[STATE]


def _check_deviations(deviations: Iterable[str]) -> set[str]:
    chosen = set(deviations)
    unknown = chosen - DEVIATIONS
    if unknown:
        raise ValueError(f"unknown deviation(s) {sorted(unknown)} (known: {sorted(DEVIATIONS)})")
    return chosen


def set_deviations(server: RunningServer, deviations: Iterable[str]) -> None:
    """Switch the running simulator's deviations (replacing the current set)."""
    state(server).deviations = _check_deviations(deviations)


# --------------------------------------------------------------------------- wire helpers


def _error(
    st: SimState,
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    retry_after: str | None = None,
) -> web.Response:
    if "detail_errors" in st.deviations:
        body: dict[str, Any] = {"detail": message}
    else:
        body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _status_error(st: SimState, fault: Fault) -> web.Response:
    kind, code = _status_kind(fault.status)
    return _error(st, fault.status, fault.message, type=kind, code=code, retry_after=fault.retry_after)


def _status_kind(status: int) -> tuple[str, str | None]:
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return ""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(_text(m.get("content"))) for m in messages)


def _slices(text: str, parts: int = 3) -> list[str]:
    size = max(-(-len(text) // parts), 1)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _cut_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    text = "".join(pieces)
    cuts = [at for at in (text.find(s) for s in stops if s) if at != -1]
    if not cuts:
        return pieces, False
    keep, out, used = min(cuts), [], 0
    for piece in pieces:
        if used + len(piece) > keep:
            if keep > used:
                out.append(piece[: keep - used])
            break
        out.append(piece)
        used += len(piece)
    return out, True


def _logprobs(piece: str, top: int) -> dict[str, Any]:
    entry = {"token": piece, "logprob": LOGPROB, "bytes": list(piece.encode())}
    alternatives = [entry] + [
        {"token": f"{piece}~{k}", "logprob": LOGPROB - k, "bytes": list(f"{piece}~{k}".encode())} for k in range(1, top)
    ]
    return {"content": [{**entry, "top_logprobs": alternatives[:top]}], "refusal": None}


# --------------------------------------------------------------------------- the answer


@dataclass
class _Answer:
    model: str
    n: int
    pieces: list[str]
    call: tuple[str, str, str] | None  # (id, name, arguments)
    finish: str
    prompt_tokens: int
    logprobs: int | None  # top_logprobs when logprobs were asked for

    @property
    def steps(self) -> list[str]:
        """What each content event carries: words, or argument slices of the tool call."""
        return _slices(self.call[2]) if self.call is not None else self.pieces

    def usage(self, steps: int | None = None) -> dict[str, int]:
        done = self.n * (len(self.steps) if steps is None else steps)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


def _answer(body: dict[str, Any]) -> _Answer:
    messages: list[dict[str, Any]] = body["messages"]
    choice = body.get("tool_choice")
    tools = [t.get("function", {}).get("name") for t in body.get("tools") or () if isinstance(t, dict)]
    if choice == "none":
        tools = []
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        tools = [choice["function"].get("name")]
    n = body.get("n") or 1
    top = (body.get("top_logprobs") or 0) if body.get("logprobs") is True else None
    prompt = _prompt_tokens(messages)
    reply = tool_result_reply(messages)
    call = None if reply is not None else tool_call_for(messages, [t for t in tools if isinstance(t, str)])
    if call is not None:
        return _Answer(body["model"], n, [], (f"call_{uuid.uuid4().hex[:24]}", *call), "tool_calls", prompt, top)
    full = reply if reply is not None else continuation_pieces(messages)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    pieces = full[:limit] if isinstance(limit, int) and limit >= 0 else full
    finish = "length" if len(pieces) < len(full) else "stop"
    stop = body.get("stop")
    pieces, stopped = _cut_at_stop(pieces, [stop] if isinstance(stop, str) else list(stop or ()))
    return _Answer(body["model"], n, pieces, None, "stop" if stopped else finish, prompt, top)


def _validate(st: SimState, body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return _error(st, 400, "Invalid type for request body: expected an object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(st, 400, "you must provide a model parameter")
    if st.check_model and model not in st.models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(st, 404, message, code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return _error(st, 400, "'messages' must be a non-empty array of message objects.", param="messages")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or not 1 <= n <= 128):
        return _error(st, 400, f"Invalid 'n': expected an integer between 1 and 128, got {n!r}.", param="n")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return _error(st, 400, message, param="stream_options")
    if body.get("continue_final_message") and body.get("add_generation_prompt", True):
        message = "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        return _error(st, 400, message)
    return None


# --------------------------------------------------------------------------- faults


def _auth(request: web.Request, st: SimState) -> web.Response | None:
    if st.api_key is None:
        return None
    header = request.headers.get("Authorization", "")
    if header == f"Bearer {st.api_key}":
        return None
    if not header:
        message = "You didn't provide an API key. You need to provide your API key in an Authorization header."
        return _error(st, 401, message)
    return _error(st, 401, "Incorrect API key provided.", code="invalid_api_key")


async def _early(
    request: web.Request, st: SimState, fault: Fault | None, *, midstream: bool, prompt: int = 0
) -> web.StreamResponse | None:
    """The response a fault gives before any answer (``None``: answer, maybe with a later fault)."""
    if fault is None:
        return None
    if fault.kind == "status" and not midstream:
        return _status_error(st, fault)
    if fault.kind == "context_length":
        message = (
            f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, your messages resulted in "
            f"{max(prompt, CONTEXT_WINDOW + 1)} tokens. Please reduce the length of the messages."
        )
        return _error(st, 400, message, param="messages", code="context_length_exceeded")
    if fault.kind == "content_policy":
        message = CONTENT_POLICY_MESSAGE if fault.message == "simulated failure" else fault.message
        return _error(st, 400, message, code="content_policy_violation")
    if fault.kind == "reset":
        close_connection(request)
        return web.Response()
    if fault.kind == "silent":
        await hold(fault.delay)
        close_connection(request)
        return web.Response()
    if fault.kind == "slow_first":
        await asyncio.sleep(fault.delay)
    return None


async def _whole(request: web.Request, body: bytes, fault: Fault | None) -> web.StreamResponse:
    """A non-stream answer, with the body-level faults."""
    kind = fault.kind if fault is not None else None
    if kind == "stall":
        await hold(fault.delay if fault is not None else 0)
        close_connection(request)
        return web.Response()
    if kind == "cut":  # announce the whole body, send half, drop the connection
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        close_connection(request)
        return resp
    if kind in ("garbage", "no_finish"):
        return web.Response(body=body[: len(body) // 2], content_type="application/json")
    return web.Response(body=body, content_type="application/json")


# --------------------------------------------------------------------------- chat


class _Chunks:
    """The chunk bytes of one streamed answer, with the switched-on deviations applied."""

    def __init__(self, answer: _Answer, deviations: set[str], include_usage: bool) -> None:
        self.answer = answer
        self.deviations = set(deviations)
        self.include_usage = include_usage
        self.id = "chatcmpl-" + uuid.uuid4().hex[:29]
        self.created = int(time.time())
        self.count = 0
        self.done_steps = 0  # content events made so far (for cumulative usage)

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        dev = self.deviations
        obj: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        if "unstable_ids" in dev:
            obj["id"], obj["created"] = f"{self.id}{self.count}", self.created + self.count
        if "bare_chunks" in dev:
            obj = {}
        obj |= {"model": self.answer.model, "system_fingerprint": FINGERPRINT, "choices": choices}
        if usage is not None:
            obj["usage"] = usage
        self.count += 1
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def choice(self, index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> bytes:
        if "role_every_chunk" in self.deviations:
            delta = {"role": "assistant", **delta}
        reason = "" if finish is None and "empty_finish_reason" in self.deviations else finish
        entry = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        usage = self.answer.usage(self.done_steps) if "usage_every_chunk" in self.deviations else None
        return self.chunk([entry], usage)

    def role_step(self) -> list[bytes]:
        a = self.answer
        if a.call is not None:
            call_id, name, _ = a.call
            first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            delta: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}
        else:
            delta = {"role": "assistant", "content": "", "refusal": None}
        logprobs: dict[str, Any] | None = None if a.logprobs is None else {"content": [], "refusal": None}
        return [self.choice(i, dict(delta), logprobs) for i in range(a.n)]

    def content_step(self, k: int, finish: str | None) -> list[bytes]:
        a = self.answer
        self.done_steps = k + 1
        piece = a.steps[k]
        if a.call is not None:
            delta: dict[str, Any] = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            logprobs = None
        else:
            delta = {"content": piece}
            logprobs = None if a.logprobs is None else _logprobs(piece, a.logprobs)
        return [self.choice(i, dict(delta), logprobs, finish) for i in range(a.n)]

    def steps(self) -> list[list[bytes]]:
        """Role chunks, then one step per content event (``n`` chunks each)."""
        a, dev = self.answer, self.deviations
        merged = "finish_with_content" in dev and "no_finish_chunk" not in dev
        count = len(a.steps)
        out = [self.role_step()]
        out += [self.content_step(k, a.finish if merged and k == count - 1 else None) for k in range(count)]
        return out

    def tail(self) -> bytes:
        """Finish chunks, usage chunk, ``[DONE]`` (as the deviations say)."""
        a, dev = self.answer, self.deviations
        out = []
        merged = "finish_with_content" in dev and a.steps
        if "no_finish_chunk" not in dev and not merged:
            out += [self.choice(i, {}, None, a.finish) for i in range(a.n)]
        if self.include_usage and "usage_every_chunk" not in dev:
            out.append(self.chunk([], a.usage()))
        if "no_done" not in dev:
            out.append(b"data: [DONE]\n" if "done_no_blank_line" in dev else b"data: [DONE]\n\n")
        return b"".join(out)


async def _stream(
    request: web.Request, st: SimState, answer: _Answer, fault: Fault | None, include_usage: bool
) -> web.StreamResponse:
    chunks = _Chunks(answer, st.deviations, include_usage)
    steps = chunks.steps()
    positional = fault is not None and (fault.kind in MIDSTREAM or fault.kind == "status")
    at = (0 if fault.after == 0 else min(fault.after + 1, len(steps))) if fault is not None and positional else -1
    resp = web.StreamResponse(headers=SSE_HEADERS)
    self_closed = False
    st.active_streams += 1
    try:
        await resp.prepare(request)
        for i in range(len(steps) + 1):
            if i == at:
                assert fault is not None
                if fault.kind in ("cut", "stall", "garbage"):
                    if fault.kind == "stall":
                        await hold(fault.delay)
                    elif fault.kind == "garbage":
                        await resp.write(GARBAGE_EVENT)
                    self_closed = True
                    close_connection(request)
                    return resp
                if fault.kind == "status":
                    kind, code = _status_kind(fault.status)
                    error = {"message": fault.message, "type": kind, "param": None, "code": code}
                    await resp.write(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
                await resp.write_eof()  # no_finish (and the status error): the end, no finish
                return resp
            if i == len(steps):
                break
            if i > 1 and st.token_delay > 0:
                await asyncio.sleep(st.token_delay)
            await resp.write(b"".join(steps[i]))
        await resp.write(chunks.tail())
        await resp.write_eof()
        return resp
    except asyncio.CancelledError:
        if not self_closed:
            st.disconnects += 1
        raise
    except ConnectionResetError:
        if not self_closed:
            st.disconnects += 1
        return resp
    finally:
        st.active_streams -= 1


def _completion(answer: _Answer, deviations: set[str]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(answer.pieces), "refusal": None}
    if answer.call is not None:
        call_id, name, arguments = answer.call
        message["content"] = None
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
    logprobs = None
    if answer.logprobs is not None:
        content = [_logprobs(p, answer.logprobs)["content"][0] for p in answer.pieces]
        logprobs = {"content": content, "refusal": None}
    finish = "" if "empty_finish_reason" in deviations else answer.finish
    body: dict[str, Any] = {}
    if "bare_chunks" not in deviations:
        body = {"id": "chatcmpl-" + uuid.uuid4().hex[:29], "object": "chat.completion", "created": int(time.time())}
    body |= {"model": answer.model, "system_fingerprint": FINGERPRINT}
    body["choices"] = [
        {"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish} for i in range(answer.n)
    ]
    body["usage"] = answer.usage()
    return body


async def _chat(request: web.Request) -> web.StreamResponse:
    st, plan = request.app[STATE], request.app[PLAN]
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        plan.log(request, None)
        return _error(st, 400, "We could not parse the JSON body of your request.")
    plan.log(request, body)
    refused = _auth(request, st) or _validate(st, body)
    if refused is not None:
        return refused
    stream = body.get("stream") is True
    fault = plan.next()
    midstream = stream and fault is not None and fault.after > 0
    early = await _early(request, st, fault, midstream=midstream, prompt=_prompt_tokens(body["messages"]))
    if early is not None:
        return early
    answer = _answer(body)
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await _stream(request, st, answer, fault, include_usage)
    if st.token_delay > 0:
        await asyncio.sleep(st.token_delay * max(len(answer.steps) - 1, 0))
    return await _whole(request, orjson.dumps(_completion(answer, st.deviations)), fault)


# --------------------------------------------------------------------------- other routes


def _inputs(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return [" ".join(map(str, v)) for v in value]
    return None


async def _embeddings(request: web.Request) -> web.StreamResponse:
    st, plan = request.app[STATE], request.app[PLAN]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        plan.log(request, None)
        return _error(st, 400, "We could not parse the JSON body of your request.")
    plan.log(request, body)
    refused = _auth(request, st)
    if refused is not None:
        return refused
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _error(st, 400, "you must provide a model parameter")
    texts = _inputs(body.get("input"))
    if texts is None:
        return _error(st, 400, "'input' must be a non-empty string or array.", param="input")
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        message = f"Invalid value for 'encoding_format': {encoding!r}. Supported values are: 'float' and 'base64'."
        return _error(st, 400, message, param="encoding_format")
    dims = body.get("dimensions", st.dimensions)
    if not isinstance(dims, int) or dims < 1:
        return _error(st, 400, "'dimensions' must be a positive integer.", param="dimensions")
    fault = plan.next()
    early = await _early(request, st, fault, midstream=False)
    if early is not None:
        return early
    base64 = encoding == "base64" and "float_embeddings" not in st.deviations
    prompt = sum(count_tokens(t) for t in texts)
    answer = embedding_response(
        [embed(t, dims) for t in texts],
        model=body["model"],
        prompt_tokens=prompt,
        encoding="base64" if base64 else None,
    )
    return await _whole(request, orjson.dumps(answer), fault)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system"}


async def _models(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    request.app[PLAN].log(request, None)
    refused = _auth(request, st)
    if refused is not None:
        return refused
    return web.json_response({"object": "list", "data": [_model(m) for m in st.models]}, dumps=_dumps)


async def _one_model(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    request.app[PLAN].log(request, None)
    refused = _auth(request, st)
    if refused is not None:
        return refused
    name = request.match_info["model"]
    if name not in st.models:
        message = f"The model '{name}' does not exist"
        return _error(st, 404, message, param="model", code="model_not_found")
    return web.json_response(_model(name), dumps=_dumps)


async def _not_found(request: web.Request) -> web.StreamResponse:
    return _error(request.app[STATE], 404, f"Invalid URL ({request.method} {request.path})")


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def create_app(
    plan: FaultPlan | None = None,
    *,
    models: list[str] | None = None,
    api_key: str | None = None,
    token_delay: float = 0.0,
    deviations: Iterable[str] = (),
    check_model: bool = False,
    dimensions: int = 8,
) -> web.Application:
    """The simulator app: ``models`` served (any name is accepted unless ``check_model``),
    ``api_key`` required as a bearer token when set, ``token_delay`` seconds between streamed
    content events, ``deviations`` (names in ``DEVIATIONS``), ``dimensions`` the default embedding
    size. Serve it with ``common.serve`` (handler cancellation on)."""
    app = web.Application()
    app[STATE] = SimState(
        models=list(DEFAULT_MODELS if models is None else models),
        api_key=api_key,
        token_delay=token_delay,
        deviations=_check_deviations(deviations),
        check_model=check_model,
        dimensions=dimensions,
    )
    app[PLAN] = plan if plan is not None else FaultPlan()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _one_model)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def start(host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningServer:
    """Serve a new simulator (``create_app`` options) on ``host:port`` (0: a free port); its
    ``url + "/v1"`` is an OpenAI ``base_url``."""
    plan = FaultPlan()
    return await serve(create_app(plan, **options), plan, host, port)
