"""Deterministic simulator of a go-livepeer AI gateway's ``/llm`` route.

Two wire generations are served (pick one per app with ``api=``):

* ``"json"``: generation B (go-livepeer >= v0.8.3). JSON ``LLMRequest`` in, OpenAI-like
  ``choices``/``usage`` JSON or SSE out, no ``data: [DONE]``.
* ``"form"``: generation A (go-livepeer <= v0.8.2). ``multipart/form-data`` in,
  ``{"response", "tokens_used"}`` or ``{"chunk"}`` SSE out.

Other routes: ``GET /healthz`` (200, empty), ``GET /getNetworkCapabilities`` (capability 33 lists
the served models; on a real gateway this lives on the CLI port), any non-POST ``/llm`` (200, empty,
the request-validator quirk) and a Go-style ``404 page not found`` for everything else. Gateway
errors are ``{"error":{"message":...}}`` + ``"\\n"`` (Go's json.Encoder); 500/503 texts are masked.

Reply model (see :func:`reply_tokens`): the reply is ``"Simulated reply to: <last user message>"``
split into words, each word after the first carrying its leading space; completion tokens = words,
prompt tokens = words of every message + 4 per message.

Directives
----------
Put ``[[sim key=value ...]]`` anywhere in the last user message (generation A: the ``prompt``
field), or send a header ``X-Sim: key=value ...`` (the header wins per key). Values may be quoted:
``msg="two words"``. Directive blocks are removed before the reply text is built.

``fault=``
    ``refuse``          503 ``{"error":{"message":"Service Unavailable Error"}}``
    ``masked500``       500 ``{"error":{"message":"Internal Server Error"}}``
    ``bad400``          400 with the ``msg=`` text (default ``simulated bad request``)
    ``close``           close the TCP connection without any response (v0.8.7+ "no orchestrator")
    ``empty200``        200 with an empty body (validator quirk)
    ``stall``           send nothing (not even headers) for ``stall=`` s (default 3600), then answer
    ``stall_mid``       stream ``after=`` tokens (default 2), go silent ``stall=`` s, then continue
    ``cut``             stream ``after=`` tokens (default 2), end the body cleanly with no final chunk
    ``reset``           stream ``after=`` tokens (default 2), then drop the connection mid-body
    ``malformed``       after ``after=`` tokens (default 1) send one undecodable event, then continue
    ``midstream_error`` after ``after=`` tokens (default 2): gen B sends a ``"choices":null`` event
                        and drops the connection (gateway panic); gen A sends ``data: {}`` and ends
``delay=``        seconds between tokens (overrides the app's ``token_delay``)
``first_delay=``  seconds before the first token (headers go out only with the first token)
``tokens=N``      reply length in tokens (the words are cycled), still capped by ``max_tokens``
``leak=1``        prefix the first piece with ``"assistant\\n\\n"`` (runner chat-template leak)
An unknown ``fault=`` value is answered with a 400 so typos do not go unnoticed.

Non-stream requests: ``cut``/``malformed`` give a 200 with truncated JSON, ``reset`` sends headers
and half the body then drops the connection, ``midstream_error`` gives a masked 500, ``stall_mid``
behaves like ``stall``; ``first_delay + delay * (tokens - 1)`` is slept before answering.

Runner-side validation errors (gen B: a role other than system/user/assistant, temperature outside
[0, 2], top_p outside (0, 1], top_k 0 or < -1, max_tokens < 1, prompt over 8192 tokens; gen A: a
history item that is not a role/content object) fail "lazily" like the real runner: a masked 500
for non-stream requests, ``midstream_error`` with ``after=0`` for streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from oai_bridge.simulators import livepeer_media

GENERATIONS = ("json", "form")
DEFAULT_MODELS: list[str] = ["meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"]
LEAK_HEADER = "assistant\n\n"
MAX_MODEL_LEN = 8192
REQUEST_LOG_SIZE = 1000

_DIRECTIVE_RE = re.compile(r"\[\[sim\b(.*?)\]\]", re.DOTALL)
_KV_RE = re.compile(r'([A-Za-z_]\w*)=(?:"([^"]*)"|(\S+))')
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_PY_DECODER = json.JSONDecoder()
_POSITIONAL_FAULTS = frozenset({"stall_mid", "cut", "reset", "malformed", "midstream_error"})
_FAULTS = _POSITIONAL_FAULTS | {"refuse", "masked500", "bad400", "close", "empty200", "stall"}
_ROLES = frozenset({"system", "user", "assistant"})
_MALFORMED_EVENT = b'data: {"choices":[{"delta":\n\n'
_GEN_B_PANIC_EVENT = (
    b'data: {"choices":null,"created":0,"id":"","model":"",'
    b'"usage":{"completion_tokens":0,"prompt_tokens":0,"total_tokens":0}}\n\n'
)
_B_EVENT = (
    b'data: {"choices":[{"delta":{"content":%s,"role":"assistant"},"finish_reason":%s,"index":0}],'
    b'"created":%d,"id":"%s,"usage":{"completion_tokens":%d,"prompt_tokens":%d,"total_tokens":%d}}\n\n'
)
_A_FINAL = b'data: {"tokens_used":%d}\n\ndata: {"chunk":"[DONE]","tokens_used":%d,"done":true}\n\n'
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Connection": "keep-alive"}
_GO_ESCAPES = [(b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026")]
_GO_ESCAPES += [("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029")]


# ----------------------------------------------------------------------------- reply model


def _parse_kv(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _KV_RE.finditer(text)}


def parse_directives(text: str) -> dict[str, str]:
    """Collect ``key=value`` pairs from every ``[[sim ...]]`` block in ``text`` (later blocks win)."""
    out: dict[str, str] = {}
    if "[[sim" in text:
        for block in _DIRECTIVE_RE.findall(text):
            out.update(_parse_kv(block))
    return out


def strip_directives(text: str) -> str:
    """``text`` with every ``[[sim ...]]`` block removed (whitespace otherwise untouched)."""
    return _DIRECTIVE_RE.sub("", text) if "[[sim" in text else text


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Deterministic prompt size: whitespace-separated words (directives removed) + 4 per message."""
    return sum(len(strip_directives(m.get("content") or "").split()) + 4 for m in messages)


def _last_user_text(messages: list[dict[str, str]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return m.get("content") or ""
    return ""


def _pieces(words: list[str], count: int) -> list[str]:
    return [words[i % len(words)] if i == 0 else " " + words[i % len(words)] for i in range(count)]


def reply_tokens(
    messages: list[dict[str, str]], max_tokens: int, directives: dict[str, str] | None = None
) -> list[str]:
    """The exact pieces the simulator streams for ``messages`` (before faults, without the leak).

    ``directives`` (e.g. from an ``X-Sim`` header) override those found in the last user message.
    """
    user = _last_user_text(messages)
    d = parse_directives(user)
    if directives:
        d.update(directives)
    words = strip_directives(user).split()
    words = ["Simulated", "reply", "to:", *words] if words else ["Simulated", "reply."]
    count = len(words)
    if "tokens" in d:
        with contextlib.suppress(ValueError):
            count = max(int(d["tokens"]), 0)
    return _pieces(words, max(min(count, max_tokens), 0))


# ----------------------------------------------------------------------------- Go-ish JSON


def _gojson(obj: Any) -> bytes:
    """Compact JSON with Go's HTML-safe escaping of <, >, &, U+2028 and U+2029."""
    raw = orjson.dumps(obj)
    for needle, repl in _GO_ESCAPES:
        if needle in raw:
            raw = raw.replace(needle, repl)
    return raw


def _json_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


def _error(status: int, message: str = "") -> web.Response:
    """go-livepeer's respondJsonError: 500/503 texts are masked, only 400 keeps the real message."""
    message = {500: "Internal Server Error", 503: "Service Unavailable Error"}.get(status, message)
    return _json_response(status, _gojson({"error": {"message": message}}) + b"\n")


def _goq(c: str) -> str:
    return "'\\''" if c == "'" else "'" + (c if c == '"' else json.dumps(c, ensure_ascii=False)[1:-1]) + "'"


def _go_syntax_error(s: str, e: json.JSONDecodeError) -> str:
    """Approximate Go's ``encoding/json`` syntax error text from Python's decoder error."""
    pos, msg = e.pos, e.msg
    if msg.startswith("Unterminated string") or pos >= len(s):
        return "unexpected EOF"
    ch = s[pos]
    if ch == "-" and msg.startswith("Expecting value"):
        nxt = s[pos + 1 : pos + 2]
        return f"invalid character {_goq(nxt)} in numeric literal" if nxt else "unexpected EOF"
    context = {
        "Expecting property name": "looking for beginning of object key string",
        "Expecting ':'": "after object key",
        "Expecting ','": "after object key:value pair"
        if s.rfind("{", 0, pos) > s.rfind("[", 0, pos)
        else "after array element",
        "Invalid control character": "in string literal",
    }
    where = next((v for k, v in context.items() if msg.startswith(k)), "looking for beginning of value")
    return f"invalid character {_goq(ch)} {where}"


def _fix_surrogates(obj: Any) -> Any:
    if isinstance(obj, str):
        return _SURROGATE_RE.sub("\ufffd", obj)
    if isinstance(obj, list):
        return [_fix_surrogates(v) for v in obj]
    return {_fix_surrogates(k): _fix_surrogates(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def _go_decode(body: bytes) -> tuple[Any, str | None]:
    """Decode like Go's ``json.NewDecoder(r.Body).Decode``: first value only, Go-like error texts."""
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError:
        pass
    s = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if not s:
        return None, "EOF"
    try:
        return _fix_surrogates(_PY_DECODER.raw_decode(s)[0]), None
    except json.JSONDecodeError as e:
        return None, _go_syntax_error(s, e)


_JTYPES = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def _jtype(v: Any) -> str:
    return _JTYPES.get(type(v), "object")


def _type_error(v: Any, struct: str, field: str, gotype: str) -> str:
    return f"json: cannot unmarshal {_jtype(v)} into Go struct field {struct}.{field} of type {gotype}"


_SCALARS = {"model": "string", "temperature": "float32", "max_tokens": "int", "top_p": "float32"}
_SCALARS |= {"top_k": "int", "stream": "bool"}
_GO_TYPES = {
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float32": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _check_scalar(v: Any, gotype: str, struct: str, field: str) -> str | None:
    if v is None or _GO_TYPES[gotype](v):
        return None
    if gotype == "int" and isinstance(v, float):  # Go reports the literal for a non-integral number
        return f"json: cannot unmarshal number {v!r} into Go struct field {struct}.{field} of type int"
    return _type_error(v, struct, field, gotype)


def _fold(obj: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Go's case-insensitive key matching; a later duplicate key overwrites an earlier one."""
    return {low: v for k, v in obj.items() if (low := k.lower()) in names}


def _bind_llm_request(obj: Any) -> tuple[dict[str, Any], str | None]:
    """Bind a decoded body onto go-livepeer's ``worker.LLMRequest`` (pointers -> ``None``)."""
    if obj is None:
        return {}, None
    if not isinstance(obj, dict):
        return {}, f"json: cannot unmarshal {_jtype(obj)} into Go value of type worker.LLMRequest"
    fields = _fold(obj, ("messages", *_SCALARS))
    err: str | None = None
    for name, gotype in _SCALARS.items():
        if name in fields and (e := _check_scalar(fields[name], gotype, "LLMRequest", name)):
            err = err or e
    raw = fields.get("messages")
    if raw is not None:
        if not isinstance(raw, list):
            return fields, err or _type_error(raw, "LLMRequest", "messages", "[]worker.LLMMessage")
        msgs: list[dict[str, str]] = []
        for item in raw:
            if item is not None and not isinstance(item, dict):
                err = err or _type_error(item, "LLMRequest", "messages", "worker.LLMMessage")
                continue
            m = _fold(item or {}, ("role", "content"))
            for key in ("role", "content"):
                if e := _check_scalar(m.get(key), "string", "LLMMessage", "messages." + key):
                    err = err or e
            msgs.append({"role": m.get("role") or "", "content": m.get("content") or ""})
        fields["messages"] = msgs
    return fields, err


# ----------------------------------------------------------------------------- wire formats


class _JsonFormat:
    """Generation B byte builders."""

    closes_on_error = True
    error_event = _GEN_B_PANIC_EVENT

    def __init__(self, model: str, prompt: int) -> None:
        self.prompt, self.model = prompt, model
        self.rid = "chatcmpl-" + str(uuid.uuid4())
        self.rid_model = self.rid.encode() + b'","model":' + _gojson(model)

    def _event(self, piece: str, finish: bytes, k: int) -> bytes:
        p = self.prompt
        return _B_EVENT % (_gojson(piece), finish, int(time.time()), self.rid_model, k, p, p + k)

    def token(self, piece: str, k: int) -> bytes:
        return self._event(piece, b'""', k)

    def final(self, n: int) -> bytes:
        return self._event("", b'"stop"', n)

    def body(self, text: str, n: int) -> bytes:
        doc = {
            "choices": [{"finish_reason": "stop", "index": 0, "message": {"content": text, "role": "assistant"}}],
            "created": int(time.time()),
            "id": self.rid,
            "model": self.model,
            "usage": {"completion_tokens": n, "prompt_tokens": self.prompt, "total_tokens": self.prompt + n},
        }
        return _gojson(doc) + b"\n"


class _FormFormat:
    """Generation A byte builders."""

    closes_on_error = False
    error_event = b"data: {}\n\n"

    def __init__(self, model: str, prompt: int) -> None:
        self.prompt = prompt

    def token(self, piece: str, k: int) -> bytes:
        return b'data: {"chunk":' + _gojson(piece) + b"}\n\n"

    def final(self, n: int) -> bytes:
        return _A_FINAL % (self.prompt + n, self.prompt + n)

    def body(self, text: str, n: int) -> bytes:
        return _gojson({"response": text, "tokens_used": self.prompt + n}) + b"\n"


_Format = _JsonFormat | _FormFormat


# ----------------------------------------------------------------------------- app state / handlers


class _State:
    def __init__(self, api: str, models: list[str], token_delay: float, capabilities: str) -> None:
        self.api = api
        self.models = set(models)
        self.token_delay = token_delay
        self.requests: list[dict[str, Any]] = []
        self.active_streams = 0
        self.disconnects = 0
        if capabilities == "ok":
            self.caps_status, self.caps_body = 200, _gojson(_capabilities_doc(models))
        else:
            body = b'network capabilities not available\n{"capabilities_names":{},"orchestrators":[]}'
            self.caps_status, self.caps_body = 500, body

    def log(self, request: web.Request, js: Any, form: dict[str, str] | None) -> None:
        entry = {"content_type": request.content_type, "json": js if isinstance(js, dict) else None}
        entry |= {"form": form, "headers": dict(request.headers)}
        self.requests.append(entry)
        if len(self.requests) > REQUEST_LOG_SIZE:
            del self.requests[0]


_STATE = web.AppKey("livepeer_sim_state", _State)


def _capabilities_doc(models: list[str]) -> dict[str, Any]:
    names = ["Text to image", "Image to image", "Image to video", "Upscale", "Audio to text"]
    names += ["Segment anything 2", "Llm", "Image to text", "Live video to video", "Text to speech", "byoc"]
    per_model = {m: {"warm": True, "capacity": 1, "runnerVersion": "0.14.1"} for m in models}
    price = {"pricePerUnit": 1, "pixelsPerUnit": 1}
    orch = {
        "address": "0x" + "11" * 20,
        "local_address": "0x" + "11" * 20,
        "orch_uri": "https://127.0.0.1:8936",
        "capabilities": {
            "bitstring": [1 << 33],
            "mandatories": [0],
            "capacities": {"33": len(models)} if models else {},
            "version": "0.9.1",
            "constraints": {"PerCapability": {"33": {"models": per_model}}},
        },
        "price_info": price,
        "capabilities_prices": [{**price, "capability": 33, "constraint": m} for m in models],
        "hardware": [
            {"pipeline": "llm", "model_id": m, "gpu_info": {"0": {"id": "GPU-sim", "name": "Simulated GPU"}}}
            for m in models
        ],
    }
    return {"capabilities_names": {str(27 + i): n for i, n in enumerate(names)}, "orchestrators": [orch]}


def _num(d: dict[str, str], key: str, default: float) -> float:
    try:
        return float(d[key])
    except (KeyError, ValueError):
        return default


class _Emitter:
    """Buffers SSE events; headers are sent only together with the first flushed bytes."""

    def __init__(self, request: web.Request, content_type: str | None = None) -> None:
        self.request = request
        self.resp: web.StreamResponse | None = None
        self.buf: list[bytes] = []
        self.self_closed = False
        self.headers = _SSE_HEADERS if content_type is None else {"Content-Type": content_type}

    async def _prepared(self) -> web.StreamResponse:
        if self.resp is None:
            self.resp = web.StreamResponse(headers=self.headers)
            await self.resp.prepare(self.request)
        return self.resp

    async def flush(self) -> None:
        if self.buf:
            data = b"".join(self.buf)
            self.buf.clear()
            await (await self._prepared()).write(data)

    async def sleep(self, seconds: float) -> None:
        await self.flush()
        await asyncio.sleep(seconds)

    async def finish(self) -> web.StreamResponse:
        await self.flush()
        resp = await self._prepared()
        await resp.write_eof()
        return resp

    async def drop(self) -> web.StreamResponse:
        """Flush what is buffered, then close the connection without finishing the body."""
        await self.flush()
        self.self_closed = True
        _close_transport(self.request)
        return self.resp if self.resp is not None else web.Response()


def _close_transport(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


_STATUS_FAULTS = {"refuse": 503, "masked500": 500, "bad400": 400}


def _triage(
    request: web.Request, st: _State, text: str, model: str
) -> tuple[dict[str, str], web.StreamResponse | None]:
    """Directives (text, then the X-Sim header) and the early response, if any, they or the model call for."""
    d = parse_directives(text)
    if hdr := request.headers.get("X-Sim"):
        d.update(_parse_kv(hdr))
    fault = d.get("fault", "")
    if fault in _STATUS_FAULTS:
        return d, _error(_STATUS_FAULTS[fault], d.get("msg", "simulated bad request"))
    if fault in ("close", "empty200"):
        if fault == "close":
            _close_transport(request)
        return d, web.Response()
    if fault and fault not in _FAULTS:
        return d, _error(400, f"unknown simulator fault: {fault}")
    return d, None if model in st.models else _error(503)


async def _serve(
    request: web.Request,
    st: _State,
    fmt: _Format,
    d: dict[str, str],
    pieces: list[str],
    stream: bool,
    lazy_error: bool,
) -> web.StreamResponse:
    fault = "midstream_error" if lazy_error else d.get("fault", "")
    delay = _num(d, "delay", st.token_delay)
    first_delay = _num(d, "first_delay", 0.0)
    stall = _num(d, "stall", 3600.0)
    after = 0 if lazy_error else int(_num(d, "after", 1 if fault == "malformed" else 2))
    out = list(pieces)
    if out and d.get("leak") == "1":
        out[0] = LEAK_HEADER + out[0]
    n = len(out)
    em = _Emitter(request, None if stream else "application/json")
    st.active_streams += 1
    try:
        if fault == "stall" or (fault == "stall_mid" and not stream):
            await asyncio.sleep(stall)
        if not stream:
            wait = first_delay + delay * max(n - 1, 0)
            if wait > 0:
                await asyncio.sleep(wait)
            if fault == "midstream_error":
                return _error(500)
            body = fmt.body("".join(out), n)
            if fault in ("cut", "malformed"):
                return _json_response(200, body[: len(body) // 2])
            if fault == "reset":  # announce the full length, send half, drop the connection
                em.resp = web.StreamResponse(headers={"Content-Length": str(len(body)), **em.headers})
                em.buf.append(body[: len(body) // 2])
                await em.resp.prepare(request)
                return await em.drop()
            return _json_response(200, body)
        if first_delay > 0:
            await asyncio.sleep(first_delay)
        pos = min(after, n) if fault in _POSITIONAL_FAULTS else -1
        i = 0
        while True:
            stalled = False
            if i == pos:
                if fault == "malformed":
                    em.buf.append(_MALFORMED_EVENT)
                elif fault == "stall_mid":
                    await em.sleep(stall)
                    stalled = True
                elif fault == "cut":
                    return await em.finish()
                elif fault == "reset":
                    return await em.drop()
                elif fault == "midstream_error":
                    em.buf.append(fmt.error_event)
                    return await (em.drop() if fmt.closes_on_error else em.finish())
            if i == n:
                break
            if i > 0 and delay > 0 and not stalled:
                await em.sleep(delay)
            em.buf.append(fmt.token(out[i], i + 1))
            i += 1
        em.buf.append(fmt.final(n))
        return await em.finish()
    except asyncio.CancelledError:
        if not em.self_closed:
            st.disconnects += 1
        raise
    except ConnectionResetError:
        if not em.self_closed:
            st.disconnects += 1
        return em.resp if em.resp is not None else web.Response()
    finally:
        st.active_streams -= 1


async def _llm_json(request: web.Request, st: _State) -> web.StreamResponse:
    obj, err = _go_decode(await request.read())
    st.log(request, obj, None)
    if err is not None:
        return _error(400, err)
    req, err = _bind_llm_request(obj)
    if err is not None:
        return _error(400, err)
    model, messages, stream, max_tokens = (req.get(k) for k in ("model", "messages", "stream", "max_tokens"))
    if model is None or not messages or stream is None or max_tokens is None:
        return _error(400, "missing required fields")
    assert isinstance(messages, list) and isinstance(model, str) and isinstance(max_tokens, int)
    d, early = _triage(request, st, _last_user_text(messages), model)
    if early is not None:
        return early
    p = prompt_tokens(messages)
    temp, top_p, top_k = req.get("temperature"), req.get("top_p"), req.get("top_k")
    lazy = (
        any(m["role"] not in _ROLES for m in messages)
        or (temp is not None and not 0 <= temp <= 2)
        or (top_p is not None and not 0 < top_p <= 1)
        or (top_k is not None and (top_k == 0 or top_k < -1))
        or max_tokens < 1
        or p > MAX_MODEL_LEN
    )
    pieces = [] if lazy else reply_tokens(messages, max_tokens, d)
    return await _serve(request, st, _JsonFormat(model, p), d, pieces, bool(stream), lazy)


_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


async def _llm_form(request: web.Request, st: _State) -> web.StreamResponse:
    if request.content_type != "multipart/form-data":
        st.log(request, None, None)
        return _error(400, "request Content-Type isn't multipart/form-data")
    try:
        raw = await request.post()
    except ValueError as e:
        st.log(request, None, None)
        return _error(400, str(e))
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    st.log(request, None, form)
    prompt = form.get("prompt")
    if prompt is None:
        return _error(400, "missing required field: prompt")
    for key, conv, fn in (("max_tokens", int, "ParseInt"), ("temperature", float, "ParseFloat")):
        try:
            conv(form.get(key, "0"))
        except ValueError:
            return _error(400, f'strconv.{fn}: parsing "{form[key]}": invalid syntax')
    if form.get("stream", "false") not in _GO_BOOLS:
        return _error(400, f'strconv.ParseBool: parsing "{form["stream"]}": invalid syntax')
    model = form.get("model_id")
    if model is None or "stream" not in form:
        # v0.8.2 dereferences *req.ModelId / *req.Stream in a log call: nil-pointer panic, empty reply.
        _close_transport(request)
        return web.Response()
    d, early = _triage(request, st, prompt, model)
    if early is not None:
        return early
    max_tokens = int(form.get("max_tokens", "256"))
    try:
        history = json.loads(form.get("history", "[]"))
    except ValueError:
        history = None
    if not isinstance(history, list):
        return _json_response(400, b'{"detail":"Invalid JSON format for history"}\n')
    lazy = not all(
        isinstance(h, dict) and isinstance(h.get("role"), str) and isinstance(h.get("content"), str) for h in history
    )
    system = form.get("system_msg", "")
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages += [] if lazy else history
    messages.append({"role": "user", "content": prompt})
    p = prompt_tokens(messages)
    pieces = [] if lazy else reply_tokens(messages, max_tokens, d)
    return await _serve(request, st, _FormFormat(model, p), d, pieces, _GO_BOOLS[form["stream"]], lazy)


async def _handle_llm(request: web.Request) -> web.StreamResponse:
    if request.method != "POST":
        return web.Response()  # validator error handler only logs: 200, empty body
    st = request.app[_STATE]
    if st.api == "json":
        return await _llm_json(request, st)
    return await _llm_form(request, st)


async def _handle_healthz(request: web.Request) -> web.StreamResponse:
    return web.Response()


async def _handle_capabilities(request: web.Request) -> web.StreamResponse:
    st = request.app[_STATE]
    if st.caps_status == 200:
        return _json_response(200, st.caps_body)
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    return web.Response(status=st.caps_status, body=st.caps_body, headers=headers)


async def _handle_not_found(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
    return web.Response(status=404, body=b"404 page not found\n", headers=headers)


def create_app(
    *,
    api: str = "json",
    models: list[str] | None = None,
    token_delay: float = 0.0,
    capabilities: str = "ok",
) -> web.Application:
    """Build the simulator app. Serve it with ``handler_cancellation=True`` (see start_simulator)."""
    if api not in GENERATIONS:
        raise ValueError(f"api must be one of {GENERATIONS}, not {api!r}")
    if capabilities not in ("ok", "offchain"):
        raise ValueError(f"capabilities must be 'ok' or 'offchain', not {capabilities!r}")
    app = web.Application()
    app[_STATE] = _State(api, list(DEFAULT_MODELS if models is None else models), token_delay, capabilities)
    app.router.add_route("*", "/llm", _handle_llm)
    app.router.add_get("/healthz", _handle_healthz)
    app.router.add_get("/getNetworkCapabilities", _handle_capabilities)
    livepeer_media.install(app)
    app.router.add_route("*", "/{tail:.*}", _handle_not_found)
    return app


class RunningSimulator:
    """A simulator served on a real socket; ``await aclose()`` when done."""

    def __init__(self, runner: web.AppRunner, app: web.Application, host: str, port: int) -> None:
        self._runner = runner
        self._state = app[_STATE]
        self.app = app
        self.port = port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.requests: list[dict[str, Any]] = self._state.requests

    @property
    def active_streams(self) -> int:
        """``/llm`` generations (stream or not) currently being served."""
        return self._state.active_streams

    @property
    def disconnects(self) -> int:
        """Generations stopped because the client went away."""
        return self._state.disconnects

    async def aclose(self) -> None:
        await self._runner.cleanup()


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api: str = "json",
    models: list[str] | None = None,
    token_delay: float = 0.0,
    capabilities: str = "ok",
) -> RunningSimulator:
    """Serve a new simulator app on ``host:port`` (0 = a free port) in the running loop."""
    app = create_app(api=api, models=models, token_delay=token_delay, capabilities=capabilities)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        # Go's listener (the real gateway's) queues up to the kernel's somaxconn; aiohttp's default
        # of 128 would drop the SYNs of a burst of new connections (1 s+ retransmits under load).
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound = runner.addresses[0][1]
    except BaseException:
        await runner.cleanup()
        raise
    return RunningSimulator(runner, app, host, int(bound))


def run(host: str = "127.0.0.1", port: int = 8935, *, api: str = "json", token_delay: float = 0.0) -> None:
    """Serve until Ctrl-C / SIGTERM (used by ``oai-bridge simulate``)."""

    async def main() -> None:
        sim = await start_simulator(host, port, api=api, token_delay=token_delay)
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(f"Livepeer gateway simulator (api={api}) listening on {sim.url}", flush=True)
        try:
            await stop.wait()
        finally:
            await sim.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
