"""Deterministic simulator of Ollama's native API (reference ``openai-anthropic-ollama.md`` §7).

Routes, as a real Ollama server (OLL ``server/routes.go``) answers them:

* ``GET|HEAD /`` → ``Ollama is running``; ``GET /api/version`` → ``{"version": "..."}``.
* ``GET /api/tags`` → ``{"models": [...]}`` (name, model, modified_at, size, digest, details).
* ``POST /api/chat`` → NDJSON (``application/x-ndjson``) when ``stream`` is omitted or true, one
  line per word, tool calls whole in one line (arguments an object, ``id`` ``call_<8 chars>``),
  then the ``done`` line with ``done_reason`` and ``total_duration``, ``load_duration``,
  ``prompt_eval_count``, ``prompt_eval_duration``, ``eval_count``, ``eval_duration`` (ns);
  ``"stream": false`` → that last object with the whole message (``application/json;
  charset=utf-8``). A final assistant message is continued (prefill), as Ollama does.
* ``POST /api/embed`` → ``{"model", "embeddings", "total_duration", "load_duration",
  "prompt_eval_count"}`` with ``common.embed`` vectors (``dimensions`` honoured).
* anything else → ``404 page not found`` (text, like Go's mux).

Answers come from ``simulators.common`` (the same text as every other simulator): a tool call
when tools are offered and no tool result exists yet, ``Tool result: ...`` after one, else the
reply (or the rest of it after an assistant prefix). ``options.num_predict`` cuts the answer
(``done_reason: "length"``), ``options.stop`` cuts it at a stop string (``"stop"``).

Errors are ``{"error": "<text>"}`` (Go's HTML-safe JSON): a missing model is ``400 model is
required``, an unknown one ``404 model 'x' not found`` (current ``ChatHandler``; the older
scheduler text is ``model "x" not found, try pulling it first``), an embedding-only model asked
to chat ``400 "x" does not support chat``, a wrong option type ``500 option "x" must be of type
integer``, tool-call arguments that are not an object the Go unmarshal error, and with
``"truncate": false`` a prompt longer than ``context_length`` words ``400 the input length exceeds
the context length``.

Faults (``FaultPlan``, one per request, kinds of ``common``) in Ollama's wire form:
``status`` → that status with ``{"error": message}`` (+ ``Retry-After``); on a stream with
``after`` > 0 → ``after`` lines, then the line ``{"error": message}`` with the status left at 200
(how Ollama reports a failure once streaming started). ``context_length`` → 400 ``the input length
exceeds the context length``; ``content_policy`` → 400 ``{"error": "... content policy ..."}``
(Ollama has no policy of its own; cloud-proxied models do); ``reset`` → the connection closed with
no response; ``silent`` → nothing (no head) for ``delay`` s, then closed; ``slow_first`` → the
first line ``delay`` s late; ``cut``/``stall``/``garbage``/``no_finish`` → ``after`` lines, then
the connection dropped / silence for ``delay`` s then dropped / one line that is not JSON then the
end / the end with no ``done`` line. Non-stream: ``cut`` drops the connection half way through
the announced body, ``garbage`` is truncated JSON, ``no_finish`` an object with ``"done": false``.

Deviations: the head of a stream goes out with the first line (as Ollama's gin writer does);
embeddings are ``common.embed`` vectors, not L2-normalized (so float and base64 answers decode to
the same exact values); no ``/api/generate``, ``/api/show``, ``/api/ps`` or model management;
a JSON syntax error says ``invalid JSON: ...`` rather than Go's decoder text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import random
import string
import time
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
    embed,
    hold,
    serve,
    tool_call_for,
    tool_result_reply,
)

__all__ = [
    "CONTEXT_ERROR",
    "DEFAULT_MODELS",
    "EMBEDDING_MODELS",
    "VERSION",
    "SimState",
    "create_app",
    "start",
    "state",
]

VERSION = "0.12.6"
DEFAULT_MODELS = ["llama3.2:latest", "qwen3:0.6b", "all-minilm:latest"]
EMBEDDING_MODELS = frozenset({"all-minilm:latest", "nomic-embed-text:latest"})
CONTEXT_ERROR = "the input length exceeds the context length"
POLICY_ERROR = "the request was refused by the content policy of the model provider"
MODIFIED_AT = "2025-06-01T12:00:00.123456789Z"
INT_OPTIONS = ("num_predict", "num_ctx", "top_k", "seed", "num_keep", "repeat_last_n")
FLOAT_OPTIONS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty")
_GO_ESCAPES = [(b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026")]
_GO_ESCAPES += [("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029")]
_ID_CHARS = string.ascii_lowercase + string.digits
_TEXT = "text/plain; charset=utf-8"


@dataclass
class SimState:
    """What one simulator app knows and counts (``state(server)``)."""

    models: list[str]
    token_delay: float = 0.0
    dimensions: int = 8
    context_length: int = 4096
    version: str = VERSION
    active_streams: int = 0
    disconnects: int = 0


STATE = web.AppKey("ollama_sim_state", SimState)
PLAN = web.AppKey("ollama_sim_plan", FaultPlan)


def state(server: RunningServer) -> SimState:
    return server.app[STATE]


# --------------------------------------------------------------------------- wire helpers


def go_json(obj: Any) -> bytes:
    """Compact JSON with Go's HTML-safe escaping (``encoding/json``)."""
    raw = orjson.dumps(obj)
    for needle, repl in _GO_ESCAPES:
        if needle in raw:
            raw = raw.replace(needle, repl)
    return raw


def created_at() -> str:
    """Now as Go marshals a UTC ``time.Time``: RFC 3339, nanoseconds, trailing zeros trimmed."""
    secs, frac = divmod(time.time_ns(), 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + (f".{digits}" if digits else "") + "Z"


def _error(status: int, message: str, fault: Fault | None = None) -> web.Response:
    headers = {"Retry-After": fault.retry_after} if fault is not None and fault.retry_after else None
    return web.Response(
        status=status,
        body=go_json({"error": message}),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _json(obj: Any) -> web.Response:
    return web.Response(body=go_json(obj), content_type="application/json", charset="utf-8")


def _resolve(name: str, models: list[str]) -> str | None:
    if name in models:
        return name
    if ":" not in name and f"{name}:latest" in models:
        return f"{name}:latest"
    return None


def _call_id() -> str:
    return "call_" + "".join(random.choices(_ID_CHARS, k=8))


def _decode(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, "missing request body"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"


async def _early(request: web.Request, fault: Fault | None, *, midstream: bool) -> web.StreamResponse | None:
    """The response a fault gives before any answer (``None``: answer, maybe with a later fault)."""
    if fault is None:
        return None
    if fault.kind == "status" and not midstream:
        return _error(fault.status, fault.message, fault)
    if fault.kind == "context_length":
        return _error(400, CONTEXT_ERROR)
    if fault.kind == "content_policy":
        return _error(400, POLICY_ERROR if fault.message == "simulated failure" else fault.message)
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


def _check_model(body: dict[str, Any], st: SimState) -> tuple[str, web.Response | None]:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return "", _error(400, "model is required")
    resolved = _resolve(name, st.models)
    if resolved is None:
        return name, _error(404, f"model '{name}' not found")
    return resolved, None


def _check_options(options: Any) -> str | None:
    if options is None:
        return None
    if not isinstance(options, dict):
        return "json: cannot unmarshal into Go struct field ChatRequest.options of type map[string]interface {}"
    for key in INT_OPTIONS:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f'option "{key}" must be of type integer'
    for key in FLOAT_OPTIONS:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f'option "{key}" must be of type float32'
    stop = options.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        return 'option "stop" must be of an array of strings'
    return None


def _check_messages(messages: Any) -> str | None:
    """What Go's unmarshal into ``[]api.Message`` would reject."""
    if not isinstance(messages, list):
        return "json: cannot unmarshal into Go struct field ChatRequest.messages of type []api.Message"
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role", ""), str)
            or not isinstance(m.get("content", ""), str)
        ):
            return "json: cannot unmarshal into Go struct field ChatRequest.messages of type api.Message"
        for call in m.get("tool_calls") or ():
            args = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if args is not None and not isinstance(args, dict):
                return (
                    "json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls."
                    "function.arguments of type api.ToolCallFunctionArguments"
                )
        for image in m.get("images") or ():
            try:
                base64.b64decode(str(image), validate=True)
            except (binascii.Error, ValueError):
                return "illegal base64 data at input byte 0"
    return None


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return max(count_tokens(" ".join(str(m.get("content") or "") for m in messages)), 1)


def _cut_at_stop(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    joined = "".join(pieces)
    hits = [at for s in stops if s and (at := joined.find(s)) != -1]
    if not hits:
        return pieces, False
    cut, pos, out = min(hits), 0, []
    for piece in pieces:
        if pos >= cut:
            break
        out.append(piece[: cut - pos])
        pos += len(piece)
    return [p for p in out if p], True


# --------------------------------------------------------------------------- /api/chat


@dataclass
class _Answer:
    model: str
    pieces: list[str]
    tool_call: dict[str, Any] | None
    done_reason: str
    prompt_tokens: int
    started: int  # perf_counter_ns at arrival

    def line(self, message: dict[str, Any]) -> bytes:
        return go_json({"model": self.model, "created_at": created_at(), "message": message, "done": False}) + b"\n"

    def lines(self) -> list[bytes]:
        out = [self.line({"role": "assistant", "content": p}) for p in self.pieces]
        if self.tool_call is not None:
            out.append(self.line({"role": "assistant", "content": "", "tool_calls": [self.tool_call]}))
        return out

    def final(self, message: dict[str, Any], done: bool = True) -> dict[str, Any]:
        total = time.perf_counter_ns() - self.started
        evals = len(self.pieces) + (1 if self.tool_call is not None else 0)
        obj: dict[str, Any] = {"model": self.model, "created_at": created_at(), "message": message}
        if done:
            obj["done_reason"] = self.done_reason
        obj["done"] = done
        obj |= {"total_duration": max(total, 1), "load_duration": 21_000}
        obj |= {"prompt_eval_count": self.prompt_tokens, "prompt_eval_duration": 1_000 * self.prompt_tokens}
        obj |= {"eval_count": evals, "eval_duration": max(total - 21_000, 1)}
        return obj

    def whole(self, done: bool = True) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.pieces)}
        if self.tool_call is not None:
            message["tool_calls"] = [self.tool_call]
        return self.final(message, done)


def _answer(body: dict[str, Any], model: str, started: int) -> _Answer:
    messages: list[dict[str, Any]] = body.get("messages") or []
    options = body.get("options") or {}
    tools = [t.get("function", {}).get("name") for t in body.get("tools") or () if isinstance(t, dict)]
    prompt = _prompt_tokens(messages)
    call = tool_call_for(messages, [n for n in tools if isinstance(n, str)])
    if call is not None:
        tool = {"id": _call_id(), "function": {"name": call[0], "arguments": orjson.loads(call[1])}}
        return _Answer(model, [], tool, "stop", prompt, started)
    full = tool_result_reply(messages) or continuation_pieces(messages)
    limit = options.get("num_predict")
    pieces = full if not isinstance(limit, int | float) or limit < 0 else full[: int(limit)]
    reason = "length" if len(pieces) < len(full) else "stop"
    pieces, stopped = _cut_at_stop(pieces, list(options.get("stop") or ()))
    return _Answer(model, pieces, None, "stop" if stopped else reason, prompt, started)


class _Writer:
    """Sends the stream head with the first bytes (as Ollama's gin writer does)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.resp: web.StreamResponse | None = None
        self.self_closed = False

    async def write(self, data: bytes) -> None:
        if self.resp is None:
            self.resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await self.resp.prepare(self.request)
        await self.resp.write(data)

    async def end(self) -> web.StreamResponse:
        if self.resp is None:
            await self.write(b"")
        assert self.resp is not None
        await self.resp.write_eof()
        return self.resp

    def drop(self) -> web.StreamResponse:
        self.self_closed = True
        close_connection(self.request)
        return self.resp if self.resp is not None else web.Response()


async def _stream(request: web.Request, st: SimState, answer: _Answer, fault: Fault | None) -> web.StreamResponse:
    lines = answer.lines()
    midstream = {"cut", "stall", "garbage", "no_finish", "status"}
    at = min(fault.after, len(lines)) if fault is not None and fault.kind in midstream else -1
    out = _Writer(request)
    st.active_streams += 1
    try:
        for i in range(len(lines) + 1):
            if i == at:
                assert fault is not None
                if fault.kind == "cut":
                    return out.drop()
                if fault.kind == "stall":
                    await hold(fault.delay)
                    return out.drop()
                if fault.kind == "garbage":
                    await out.write(b'{"model":' + go_json(answer.model) + b',"created_at":"' + b"\n")
                    return await out.end()
                if fault.kind == "status":
                    await out.write(go_json({"error": fault.message}) + b"\n")
                    return await out.end()
                return await out.end()  # no_finish
            if i == len(lines):
                break
            if i > 0 and st.token_delay > 0:
                await asyncio.sleep(st.token_delay)
            await out.write(lines[i])
        await out.write(go_json(answer.final({"role": "assistant", "content": ""})) + b"\n")
        return await out.end()
    except asyncio.CancelledError:
        if not out.self_closed:
            st.disconnects += 1
        raise
    except ConnectionResetError:
        if not out.self_closed:
            st.disconnects += 1
        return out.resp if out.resp is not None else web.Response()
    finally:
        st.active_streams -= 1


async def _whole(request: web.Request, body: bytes, fault: Fault | None) -> web.StreamResponse:
    """A non-stream answer, with the body-level faults."""
    kind = fault.kind if fault is not None else None
    if kind == "stall":
        await hold(fault.delay if fault is not None else 0)
        close_connection(request)
        return web.Response()
    if kind == "cut":  # announce the whole body, send half, drop the connection
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        close_connection(request)
        return resp
    if kind == "garbage":
        return web.Response(body=body[: len(body) // 2], content_type="application/json", charset="utf-8")
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def _chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    st, plan = request.app[STATE], request.app[PLAN]
    body, err = _decode(await request.read())
    plan.log(request, body)
    if err is not None:
        return _error(400, err)
    if not isinstance(body, dict):
        return _error(400, "json: cannot unmarshal into Go value of type api.ChatRequest")
    stream = body.get("stream") is not False
    fault = plan.next()
    early = await _early(request, fault, midstream=stream and fault is not None and fault.after > 0)
    if early is not None:
        return early
    model, refused = _check_model(body, st)
    if refused is not None:
        return refused
    if (err := _check_messages(body.get("messages", []))) is not None:
        return _error(400, err)
    if model in EMBEDDING_MODELS:
        return _error(400, f'"{body["model"]}" does not support chat')
    if (err := _check_options(body.get("options"))) is not None:
        return _error(500, err)
    messages = body.get("messages") or []
    if not messages:
        loaded = {"model": body["model"], "created_at": created_at(), "message": {"role": "assistant", "content": ""}}
        return _json(loaded | {"done_reason": "load", "done": True})
    if body.get("truncate") is False and _prompt_tokens(messages) > st.context_length:
        return _error(400, CONTEXT_ERROR)
    answer = _answer(body, body["model"], started)
    if stream:
        return await _stream(request, st, answer, fault)
    if st.token_delay > 0:
        await asyncio.sleep(st.token_delay * max(len(answer.pieces) - 1, 0))
    no_finish = fault is not None and fault.kind == "no_finish"
    return await _whole(request, go_json(answer.whole(done=not no_finish)), fault)


# --------------------------------------------------------------------------- other routes


async def _embed(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    st, plan = request.app[STATE], request.app[PLAN]
    body, err = _decode(await request.read())
    plan.log(request, body)
    if err is not None:
        return _error(400, err)
    if not isinstance(body, dict):
        return _error(400, "json: cannot unmarshal into Go value of type api.EmbedRequest")
    fault = plan.next()
    early = await _early(request, fault, midstream=False)
    if early is not None:
        return early
    raw = body.get("input")
    if isinstance(raw, str):
        texts = [raw] if raw else []
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        texts = list(raw)
    elif raw is None:
        texts = []
    else:
        return _error(400, "invalid input type")
    _, refused = _check_model(body, st)
    if refused is not None:
        return refused
    tokens = [count_tokens(t) for t in texts]
    if body.get("truncate") is False and any(n > st.context_length for n in tokens):
        return _error(400, CONTEXT_ERROR)
    dims = body.get("dimensions")
    size = dims if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0 else st.dimensions
    out: dict[str, Any] = {"model": body["model"], "embeddings": [embed(t, size) for t in texts]}
    if texts:
        out |= {"total_duration": max(time.perf_counter_ns() - started, 1), "load_duration": 21_000}
        out["prompt_eval_count"] = sum(tokens)
    if fault is not None and fault.kind == "no_finish":
        out.pop("embeddings")
    return await _whole(request, go_json(out), fault)


def _details(name: str) -> dict[str, Any]:
    base = name.split(":")[0]
    family = "bert" if "minilm" in base or "embed" in base else "qwen3" if base.startswith("qwen") else "llama"
    size = {"llama3.2": "3.2B", "qwen3": "751.63M", "all-minilm": "23M"}.get(base, "7B")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": "F16" if family == "bert" else "Q4_K_M",
    }


async def _tags(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    models = [
        {
            "name": name,
            "model": name,
            "modified_at": MODIFIED_AT,
            "size": 1_000_000 + len(name) * 1_000_003,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": _details(name),
        }
        for name in st.models
    ]
    return _json({"models": models})


async def _version(request: web.Request) -> web.StreamResponse:
    return _json({"version": request.app[STATE].version})


async def _root(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"Ollama is running", headers={"Content-Type": _TEXT})


async def _not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, body=b"404 page not found", headers={"Content-Type": _TEXT})


def create_app(
    plan: FaultPlan | None = None,
    *,
    models: list[str] | None = None,
    token_delay: float = 0.0,
    dimensions: int = 8,
    context_length: int = 4096,
    version: str = VERSION,
) -> web.Application:
    """The simulator app. ``models`` without a tag get ``:latest``; ``token_delay`` is seconds
    between streamed lines; ``dimensions`` the default embedding size; ``context_length`` (words)
    what ``"truncate": false`` enforces. Serve it with ``common.serve`` (handler cancellation on)."""
    app = web.Application()
    names = [m if ":" in m else f"{m}:latest" for m in (DEFAULT_MODELS if models is None else models)]
    app[STATE] = SimState(names, token_delay, dimensions, context_length, version)
    app[PLAN] = plan if plan is not None else FaultPlan()
    app.router.add_get("/", _root)
    app.router.add_get("/api/version", _version)
    app.router.add_get("/api/tags", _tags)
    app.router.add_post("/api/chat", _chat)
    app.router.add_post("/api/embed", _embed)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def start(host: str = "127.0.0.1", port: int = 0, **options: Any) -> RunningServer:
    """Serve a new simulator (``create_app`` options) on ``host:port`` (0: a free port)."""
    plan = FaultPlan()
    return await serve(create_app(plan, **options), plan, host, port)
