"""Batch media pipelines of a go-livepeer AI gateway, for the :mod:`.livepeer` simulator.

:func:`install` adds them to a ``livepeer.create_app`` app, before its catch-all 404. JSON is decoded
like Go's ``json.Decoder``; multipart routes need ``multipart/form-data`` (else 400 ``request
Content-Type isn't multipart/form-data``), files are parts with a filename, the first of repeated
fields wins. Non-POST requests to validated routes get 200 with an empty body (validator quirk).

* ``/text-to-image`` (JSON), ``/image-to-image``, ``/upscale``: ``{"images":[{"nsfw","seed","url"}]}``
  with PNGs of width x height (512x512 if missing: gateway override), of the input's size, 4x it.
* ``/image-to-video``: the same with one ``.mp4`` (1024x576 default); ``Prefer: respond-async`` gives
  202 ``{"request_id":...}``; ``/image-to-video/result`` (JSON, any method) then answers 202
  ``{"status":"processing"}``, later 200 ``{"result":{"images":[...]},"status":"complete"}``.
* ``/audio-to-text`` (WAV): :func:`transcript`; ``/text-to-speech`` (JSON): ``{"audio":{"url":...}}``;
  ``/image-to-text``: ``{"text":"[<prompt> ]a simulated caption of a WxH image"}``;
  ``/segment-anything-2``: :func:`sam2_masks`; ``GET /stream/<reqid>/<file>``: stored media or 404.

Deterministic but for the 8-hex ids and names (``RandomManifestID``). Seed: ``seed`` or the crc32 of
the prompt (else of the image), ``+ i`` for image ``i``. PNG: one colour from prompt and seed. MP4:
an ISO-BMFF **container stub** (``ftyp``, ``moov``/``mvhd``, ``free``; no tracks: sniffers accept
it, nothing plays it). WAV: a quiet tone, 16 kHz mono PCM16, 0.06 s per character (0.5-120 s).
Store: ``store_per_request`` items per request id (12: go-tools' ``dataCacheLen``), ``store_total``
in all (256; the real one keeps every session), oldest evicted. Each request, ``/stream`` too, is
logged in ``RunningSimulator.requests`` with ``path``, ``method``, ``content_type``, ``json``,
``form``, ``files`` (``{field: {filename, content_type, size}}``) and ``headers``.

Directives (``[[sim ...]]`` in a ``prompt`` field, or ``X-Sim``): ``delay=S``, ``fault=refuse``
(503), ``masked500``, ``bad400`` (with ``msg=``), ``close`` (no response), ``empty200``, ``nsfw=1``
(nsfw, black image, unless ``safety_check`` is false), ``video_seconds=S`` (async run time, default
``video_delay``). Async video still answers 202, then ``{"result":{"error":{"message":"Internal
Server Error"}},"status":"complete"}``. A model missing from ``models`` is 503 (no orchestrator).

From the gateway code: the result route sets no Content-Type (Go sniffs ``text/plain;
charset=utf-8``); an unknown id is 400 ``invalid request ID``; audio under one whole second is 400
``audio duration calculation failed``; runner errors that are not "returned 400" exhaust the
orchestrators, 503 here (v0.8.7+ closes the connection): image-to-text over 50 MB (runner 413),
an unknown ``return_timestamps``. Deviations: a missing ``prompt``/file is 400 ``missing required
field: <name>`` (really runner 422, then 503); an image that is no PNG/JPEG/GIF counts as 512x512
(``image.DecodeConfig`` fails there); only RIFF/WAVE audio is read (ffprobe reads more); sizes
outside 1..4096 or over 16 images are a masked 500 (runner OOM); sync image-to-video never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import re
import secrets
import struct
import time
import wave
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype

from oai_bridge.simulators import livepeer as _lp

_SDXL, _SVD = "stabilityai/sdxl-turbo", "stabilityai/stable-video-diffusion-img2vid-xt"
DEFAULT_MEDIA_MODELS = {"text-to-image": _SDXL, "image-to-image": _SDXL, "image-to-video": _SVD}
DEFAULT_MEDIA_MODELS["upscale"] = "stabilityai/stable-diffusion-x4-upscaler"
DEFAULT_MEDIA_MODELS["audio-to-text"] = "openai/whisper-large-v3"
DEFAULT_MEDIA_MODELS["segment-anything-2"] = "facebook/sam2-hiera-large"
DEFAULT_MEDIA_MODELS["image-to-text"] = "Salesforce/blip-image-captioning-large"
DEFAULT_MEDIA_MODELS["text-to-speech"] = "parler-tts/parler-tts-large-v1"
MP4_MAGIC = b"ftyp"
MAX_SIDE = 4096
UPSCALE_MAX_SIDE = 2048
MAX_IMAGES = 16
IMAGE_TO_TEXT_LIMIT = 50 * 1024 * 1024
MAX_BODY = 256 * 1024 * 1024
JOB_LIMIT = 1000

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CONTENT_TYPES = {"png": "image/png", "mp4": "video/mp4", "wav": "audio/wav"}
_INT_RE = re.compile(r"[+-]?[0-9]+")
_MEDIA_FAULTS = frozenset({"refuse", "masked500", "bad400", "close", "empty200"})
_SNIFFED = {"Content-Type": "text/plain; charset=utf-8"}
_NOT_FOUND = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}
_ASYNC_ERROR: dict[str, Any] = {"error": {"message": "Internal Server Error"}}

# ----------------------------------------------------------------------------- pure media helpers


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


@lru_cache(maxsize=32)
def make_png(width: int, height: int, rgb: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    """A valid 8-bit RGB PNG of ``width`` x ``height`` pixels, all of colour ``rgb``."""
    if not (0 < width <= 1 << 16 and 0 < height <= 1 << 16):
        raise ValueError(f"bad PNG size {width}x{height}")
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    per_block = max(1, (1 << 20) // len(row))
    full, rest = divmod(height, per_block)
    comp, block = zlib.compressobj(6), row * per_block
    idat = b"".join([comp.compress(block) for _ in range(full)] + [comp.compress(row * rest), comp.flush()])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _PNG_SIG + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR; ``ValueError`` if ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != _PNG_SIG or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        if 0xC0 <= (marker := data[i + 1]) <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        standalone = marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7
        i += (1 if marker == 0xFF else 2) if standalone else 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, GIF or JPEG (what Go's image package decodes), else None."""
    if data[:8] == _PNG_SIG:
        return png_size(data) if data[12:16] == b"IHDR" and len(data) >= 24 else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    return _jpeg_size(data) if data[:2] == b"\xff\xd8" else None


def make_wav(seconds: float, rate: int = 16000) -> bytes:
    """RIFF/WAVE, PCM 16-bit mono: a quiet ~400 Hz tone lasting ``seconds``."""
    frames, period = max(0, round(seconds * rate)), max(2, rate // 400)
    cycle = struct.pack(f"<{period}h", *(round(1000 * math.sin(2 * math.pi * i / period)) for i in range(period)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((cycle * (frames // period + 1))[: frames * 2])
    return buf.getvalue()


def wav_duration(data: bytes) -> float:
    """Seconds of audio in a RIFF/WAVE file (data size / byte rate); ``ValueError`` if not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos, byte_rate, size = 12, 0, -1
    while pos + 8 <= len(data) and size < 0:
        cid, clen, body = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little"), pos + 8
        if cid == b"fmt " and clen >= 16 and body + 16 <= len(data):
            byte_rate = int.from_bytes(data[body + 8 : body + 12], "little")
        elif cid == b"data":
            size = min(clen, len(data) - body)
        pos = body + clen + (clen & 1)
    if byte_rate <= 0 or size < 0:
        raise ValueError("WAVE file without a usable fmt/data chunk")
    return size / byte_rate


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def make_mp4(width: int, height: int, fps: int = 6, frames: int = 25, note: str = "") -> bytes:
    """A deterministic ISO-BMFF container stub (``ftyp``, ``moov``/``mvhd``, ``free``): no tracks."""
    ftyp = _box(MP4_MAGIC, b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    duration = round(frames * 1000 / max(fps, 1))  # timescale 1000
    mvhd = struct.pack(">5IIH", 0, 0, 0, 1000, duration, 0x10000, 0x100) + bytes(10)
    mvhd += struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000) + bytes(24) + struct.pack(">I", 1)
    text = f"oai-bridge simulator stub, not playable: {width}x{height} {fps}fps {frames} frames {note}".strip()
    return ftyp + _box(b"moov", _box(b"mvhd", mvhd)) + _box(b"free", text.encode())


def is_mp4(data: bytes) -> bool:
    """True if ``data`` starts with a well-formed ISO-BMFF ``ftyp`` box."""
    return len(data) >= 16 and data[4:8] == MP4_MAGIC and 16 <= int.from_bytes(data[:4], "big") <= len(data)


def transcript(duration: float, return_timestamps: str = "true") -> dict[str, Any]:
    """Audio-to-text ``TextResponse``: a sentence per started 5 s (<= 50) as sentence/word/no chunks."""

    def _ts(x: float) -> float | int:
        return int(r) if (r := round(x, 2)) == int(r) else r  # Go prints whole float64s without ".0"

    n = min(max(1, math.ceil(duration / 5)), 50)
    sentences = [f"Simulated transcript of a {duration:.2f} second recording."]
    sentences += [f"This is simulated sentence {i}." for i in range(2, n + 1)]
    text = "".join(" " + s for s in sentences)
    mode = return_timestamps.lower()
    pieces = [] if mode in ("false", "0") else text.split() if mode == "word" else sentences
    step = duration / max(len(pieces), 1)
    chunks = [{"text": " " + p, "timestamp": [_ts(i * step), _ts((i + 1) * step)]} for i, p in enumerate(pieces)]
    return {"chunks": chunks, "text": text}


def sam2_masks(key: bytes, count: int) -> dict[str, str]:
    """Deterministic ``MasksResponse`` strings: ``count`` 4x4 masks, scores and logits."""
    c = zlib.crc32(key)
    grid = [[[(k * 16 + r * 4 + q) % 32 for q in range(4)] for r in range(4)] for k in range(count)]
    masks = [[[float((c >> b) & 1) for b in row] for row in m] for m in grid]
    logits = [[[round(((c >> b) % 2000) / 100 - 10, 2) for b in row] for row in m] for m in grid]
    scores = [round(0.95 - 0.1 * k - (c % 100) / 10000, 4) for k in range(count)]
    return {"logits": str(logits), "masks": str(masks), "scores": str(scores)}


def _crc_seed(key: str | bytes) -> int:
    return zlib.crc32(key.encode() if isinstance(key, str) else key) & 0x7FFFFFFF


def _rgb(*parts: object) -> tuple[int, int, int]:
    c = zlib.crc32("|".join(map(str, parts)).encode())
    return (c >> 16) & 255, (c >> 8) & 255, c & 255


_rand_id = partial(secrets.token_hex, 4)  # core.RandomManifestID: 4 random bytes, hex


# ----------------------------------------------------------------------------- state


@dataclass
class _Job:
    ready_at: float
    build: Callable[[], dict[str, Any]]
    result: bytes | None = None


class MediaState:
    """Config, object store (``items``: URL path -> (content type, bytes)) and async video ``jobs``."""

    def __init__(
        self, models: Mapping[str, Collection[str]] | None, video_delay: float, per_request: int, total: int
    ) -> None:
        self.models = None if models is None else {k: frozenset(v) for k, v in models.items()}
        self.video_delay, self.per_request, self.total = video_delay, per_request, total
        self.items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.jobs: OrderedDict[str, _Job] = OrderedDict()

    def serves(self, pipeline: str, model: str | None) -> bool:
        return self.models is None or (model or DEFAULT_MEDIA_MODELS[pipeline]) in self.models.get(pipeline, ())

    def put(self, request_id: str, name: str, data: bytes) -> str:
        """Store ``data``, evict the oldest beyond the limits, return the gateway-relative URL."""
        path = f"/stream/{request_id}/{name}"
        self.items[path] = (_CONTENT_TYPES.get(name.rpartition(".")[2], "application/octet-stream"), data)
        same = [k for k in self.items if k.startswith(f"/stream/{request_id}/")]
        for k in same[: max(0, len(same) - self.per_request)]:
            del self.items[k]
        while len(self.items) > self.total:
            self.items.popitem(last=False)
        return path


MEDIA = web.AppKey("livepeer_media_state", MediaState)


# ----------------------------------------------------------------------------- request plumbing


class _Reply(Exception):
    """Raised with the response (``args[0]``) that ends a handler early."""


def _fail(status: int, message: str = "") -> _Reply:
    return _Reply(_lp._error(status, message))


def _log(request: web.Request, js: Any = None, form: Any = None, files: Any = None) -> None:
    if _lp._STATE not in request.app:
        return
    entry: dict[str, Any] = {"path": request.path, "method": request.method, "content_type": request.content_type}
    entry |= {"json": js if isinstance(js, dict) else None, "form": form, "files": files}
    requests = request.app[_lp._STATE].requests
    requests.append(entry | {"headers": dict(request.headers)})
    if len(requests) > _lp.REQUEST_LOG_SIZE:
        del requests[0]


def _ok(body: dict[str, Any], status: int = 200) -> web.Response:
    return _lp._json_response(status, _lp._gojson(body) + b"\n")


async def _json_request(
    request: web.Request, gotype: str, spec: dict[str, str], any_method: bool = False
) -> dict[str, Any]:
    """Decode and bind a JSON body onto a Go struct of pointer fields (``null``/absent left out)."""
    if request.method != "POST" and not any_method:
        _log(request)
        raise _Reply(web.Response())  # the validator's error handler only logs: 200, empty body
    obj, err = _lp._go_decode(await request.content.read())
    _log(request, js=obj)
    if err is None and obj is not None and not isinstance(obj, dict):
        err = f"json: cannot unmarshal {_lp._jtype(obj)} into Go value of type {gotype}"
    fields = _lp._fold(obj, tuple(spec)) if isinstance(obj, dict) else {}
    for name, v in fields.items():
        err = err or _lp._check_scalar(v, spec[name], gotype.rpartition(".")[2], name)
    if err is not None:
        raise _fail(400, err)
    return {k: v for k, v in fields.items() if v is not None}


async def _read_multipart(request: web.Request) -> tuple[dict[str, str], dict[str, bytes], dict[str, Any], str | None]:
    """Text fields, files, file metadata and Go's error text (``r.MultipartReader`` + ``BindMultipart``)."""
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    meta: dict[str, Any] = {}
    mime = parse_mimetype(request.headers.get("Content-Type", ""))
    if (mime.type, mime.subtype) != ("multipart", "form-data"):
        return fields, files, meta, "request Content-Type isn't multipart/form-data"
    if not mime.parameters.get("boundary"):
        return fields, files, meta, "no multipart boundary param in Content-Type"
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValueError("nested multipart")
            buf, name = bytearray(), part.name or ""
            while chunk := await part.read_chunk(1 << 20):  # part.read() would apply client_max_size
                buf += chunk
                if (total := total + len(chunk)) > MAX_BODY:
                    return fields, files, meta, "multipart: message too large"
            data = bytes(buf)
            if part.filename and name not in files:
                files[name], ctype = data, part.headers.get("Content-Type", "application/octet-stream")
                meta[name] = {"filename": part.filename, "content_type": ctype, "size": len(data)}
            elif not part.filename:
                fields.setdefault(name, data.decode("utf-8", "replace"))
    except Exception:
        return fields, files, meta, "multipart: NextPart: EOF"
    return fields, files, meta, None


def _convert(raw: str, kind: str) -> Any:
    """One form value with ``strconv`` semantics; ``ValueError`` carries Go's error text."""
    if kind == "str" or (kind == "int" and _INT_RE.fullmatch(raw)):
        return raw if kind == "str" else int(raw)
    if kind == "bool" and raw in _lp._GO_BOOLS:
        return _lp._GO_BOOLS[raw]
    with contextlib.suppress(ValueError):
        if kind == "float" and raw.strip() == raw and "_" not in raw:
            return float(raw)
    raise ValueError(f"strconv.Parse{kind.title()}: parsing {json.dumps(raw, ensure_ascii=False)}: invalid syntax")


async def _form_request(
    request: web.Request, spec: dict[str, str], required: tuple[str, ...], file_field: str
) -> tuple[dict[str, Any], bytes]:
    if request.method != "POST":
        _log(request)
        raise _Reply(web.Response())  # the validator's error handler only logs: 200, empty body
    fields, files, meta, err = await _read_multipart(request)
    _log(request, form=fields, files=meta)
    form: dict[str, Any] = {}
    for name in sorted(spec):  # Go binds struct fields in (alphabetical) order
        if err is None and name in fields:
            try:
                form[name] = _convert(fields[name], spec[name])
            except ValueError as e:
                err = str(e)
    if err is not None:
        raise _fail(400, err)
    for name in required:
        if not (files.get(name) if name == file_field else form.get(name)):
            raise _fail(400, f"missing required field: {name}")
    return form, files[file_field]


async def _triage(
    request: web.Request, text: str, pipeline: str, model: str | None, defer: bool = False
) -> dict[str, str]:
    """Directives (``text``, then ``X-Sim``), the ``delay``, and the faults they call for."""
    d = _lp.parse_directives(text)
    if hdr := request.headers.get("X-Sim"):
        d.update(_lp._parse_kv(hdr))
    fault = d.get("fault", "")
    if fault and fault not in _MEDIA_FAULTS:
        raise _fail(400, f"unknown simulator fault: {fault}")
    if (delay := _lp._num(d, "delay", 0.0)) > 0:
        await asyncio.sleep(delay)
    if fault == "close":
        _lp._close_transport(request)
    if fault in ("close", "empty200"):
        raise _Reply(web.Response())
    if not defer and fault in _lp._STATUS_FAULTS:
        raise _fail(_lp._STATUS_FAULTS[fault], d.get("msg", "simulated bad request"))
    if not defer and not request.app[MEDIA].serves(pipeline, model):
        raise _fail(503)
    return d


def _image_dims(data: bytes) -> tuple[int, int]:
    width, height = image_size(data) or (512, 512)
    return min(max(width, 1), MAX_SIDE), min(max(height, 1), MAX_SIDE)


def _images(
    request: web.Request, d: dict[str, str], key: str, req: dict[str, Any], size: tuple[int, int]
) -> web.Response:
    count = max(1, req.get("num_images_per_prompt", 1))
    if not (0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE and count <= MAX_IMAGES):
        raise _fail(500)
    store, rid, seed = request.app[MEDIA], _rand_id(), req.get("seed", _crc_seed(key))
    nsfw = d.get("nsfw") == "1" and req.get("safety_check", True)
    images = []
    for s in range(seed, seed + count):
        png = make_png(size[0], size[1], (0, 0, 0) if nsfw else _rgb(key, s))
        images.append({"nsfw": nsfw, "seed": s, "url": store.put(rid, _rand_id() + ".png", png)})
    return _ok({"images": images})


# ----------------------------------------------------------------------------- handlers

_S, _I, _F, _B = "str", "int", "float", "bool"
_T2I = {"prompt": "string", "model_id": "string", "loras": "string", "height": "int", "width": "int"}
_T2I |= {"guidance_scale": "float32", "negative_prompt": "string", "safety_check": "bool", "seed": "int"}
_T2I |= {"num_inference_steps": "int", "num_images_per_prompt": "int"}
_I2I = {"prompt": _S, "model_id": _S, "loras": _S, "strength": _F, "guidance_scale": _F, "image_guidance_scale": _F}
_I2I |= {"negative_prompt": _S, "safety_check": _B, "seed": _I, "num_inference_steps": _I, "num_images_per_prompt": _I}
_UPSCALE = {"prompt": _S, "model_id": _S, "safety_check": _B, "seed": _I, "num_inference_steps": _I}
_I2V = {"prompt": _S, "model_id": _S, "height": _I, "width": _I, "fps": _I, "motion_bucket_id": _I}
_I2V |= {"noise_aug_strength": _F, "safety_check": _B, "seed": _I, "num_inference_steps": _I}
_A2T = {"model_id": _S, "return_timestamps": _S, "metadata": _S}
_SAM2 = {"model_id": _S, "point_coords": _S, "point_labels": _S, "box": _S, "mask_input": _S}
_SAM2 |= {"multimask_output": _B, "return_logits": _B, "normalize_coords": _B}
_I2T = {"prompt": _S, "model_id": _S}
_TTS = {"model_id": "string", "text": "string", "description": "string"}


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ROUTES: dict[str, _Handler] = {}


def _route(path: str) -> Callable[[_Handler], _Handler]:
    """Register a handler for ``path``; a raised :class:`_Reply` becomes its response."""

    def register(handler: _Handler) -> _Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except _Reply as reply:
                response: web.StreamResponse = reply.args[0]
                return response

        _ROUTES[path] = run
        return handler

    return register


@_route("/text-to-image")
async def _text_to_image(request: web.Request) -> web.StreamResponse:
    req = await _json_request(request, "worker.TextToImageParams", _T2I)
    if not (prompt := req.get("prompt") or ""):
        raise _fail(400, "missing required field: prompt")
    d = await _triage(request, prompt, "text-to-image", req.get("model_id"))
    return _images(request, d, _lp.strip_directives(prompt), req, (req.get("width", 512), req.get("height", 512)))


@_route("/image-to-image")
async def _image_to_image(request: web.Request) -> web.StreamResponse:
    form, image = await _form_request(request, _I2I, ("prompt", "image"), "image")
    d = await _triage(request, form["prompt"], "image-to-image", form.get("model_id"))
    key = f"{_lp.strip_directives(form['prompt'])}|{zlib.crc32(image)}"
    return _images(request, d, key, form, _image_dims(image))


@_route("/upscale")
async def _upscale(request: web.Request) -> web.StreamResponse:
    form, image = await _form_request(request, _UPSCALE, ("prompt", "image"), "image")
    d = await _triage(request, form["prompt"], "upscale", form.get("model_id"))
    width, height = (max(v, 1) for v in image_size(image) or (512, 512))
    key = f"{_lp.strip_directives(form['prompt'])}|{zlib.crc32(image)}"
    size = (min(4 * width, UPSCALE_MAX_SIDE), min(4 * height, UPSCALE_MAX_SIDE))
    return _images(request, d, key, form, size)


@_route("/image-to-video")
async def _image_to_video(request: web.Request) -> web.StreamResponse:
    form, image = await _form_request(request, _I2V, ("image",), "image")
    is_async, model = request.headers.get("Prefer") == "respond-async", form.get("model_id")
    d = await _triage(request, form.get("prompt", ""), "image-to-video", model, defer=is_async)
    ms, rid = request.app[MEDIA], _rand_id()
    width, height, fps = form.get("width", 1024), form.get("height", 576), form.get("fps", 6)
    seed, ok = form.get("seed", _crc_seed(image)), 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE

    def build() -> dict[str, Any]:
        url = ms.put(rid, _rand_id() + ".mp4", make_mp4(width, height, fps, note=f"seed={seed}"))
        return {"images": [{"nsfw": False, "seed": seed, "url": url}]}

    if not is_async:
        return _ok(build()) if ok else _lp._error(500)
    failed = not ok or d.get("fault") in _lp._STATUS_FAULTS or not ms.serves("image-to-video", model)
    ready = time.monotonic() + _lp._num(d, "video_seconds", ms.video_delay)
    ms.jobs[rid] = _Job(ready, (lambda: _ASYNC_ERROR) if failed else build)
    while len(ms.jobs) > JOB_LIMIT:
        ms.jobs.popitem(last=False)
    return _ok({"request_id": rid}, 202)


@_route("/image-to-video/result")
async def _image_to_video_result(request: web.Request) -> web.StreamResponse:
    req = await _json_request(request, "server.ImageToVideoResultRequest", {"request_id": "string"}, True)
    if (job := request.app[MEDIA].jobs.get(req.get("request_id", ""))) is None:
        raise _fail(400, "invalid request ID")
    if time.monotonic() < job.ready_at:  # no Content-Type is set: Go sniffs text/plain
        return web.Response(status=202, body=b'{"status":"processing"}\n', headers=_SNIFFED)
    if job.result is None:
        job.result = _lp._gojson({"result": job.build(), "status": "complete"}) + b"\n"
    return web.Response(status=200, body=job.result, headers=_SNIFFED)


@_route("/audio-to-text")
async def _audio_to_text(request: web.Request) -> web.StreamResponse:
    form, audio = await _form_request(request, _A2T, ("audio",), "audio")
    await _triage(request, "", "audio-to-text", form.get("model_id"))
    try:
        duration = wav_duration(audio)
    except ValueError:
        duration = 0.0
    if int(duration) <= 0:
        raise _fail(400, "audio duration calculation failed")
    if (mode := form.get("return_timestamps", "true")).lower() not in ("true", "1", "sentence", "false", "0", "word"):
        raise _fail(503)  # the runner's 500 -> orchestrators exhausted
    return _ok(transcript(duration, mode))


@_route("/text-to-speech")
async def _text_to_speech(request: web.Request) -> web.StreamResponse:
    req = await _json_request(request, "worker.TextToSpeechParams", _TTS)
    await _triage(request, "", "text-to-speech", req.get("model_id"))
    if "text" not in req:
        raise _fail(400, "text field is required")
    wav = make_wav(min(max(0.5, 0.06 * len(req["text"])), 120.0))
    return _ok({"audio": {"url": request.app[MEDIA].put(_rand_id(), _rand_id() + ".wav", wav)}})


@_route("/image-to-text")
async def _image_to_text(request: web.Request) -> web.StreamResponse:
    form, image = await _form_request(request, _I2T, ("image",), "image")
    await _triage(request, prompt := form.get("prompt", ""), "image-to-text", form.get("model_id"))
    if len(image) > IMAGE_TO_TEXT_LIMIT:
        raise _fail(503)  # the runner's 413 is no "returned 400": orchestrators exhausted
    caption = "a simulated caption of a {}x{} image".format(*(image_size(image) or (512, 512)))
    prefix = _lp.strip_directives(prompt).strip()
    return _ok({"text": f"{prefix} {caption}" if prefix else caption})


@_route("/segment-anything-2")
async def _segment_anything_2(request: web.Request) -> web.StreamResponse:
    form, image = await _form_request(request, _SAM2, ("image",), "image")
    await _triage(request, "", "segment-anything-2", form.get("model_id"))
    for name in ("point_coords", "point_labels", "box", "mask_input"):
        try:
            json.loads(form.get(name) or "null")
        except json.JSONDecodeError as e:
            raise _fail(400, f"Error parsing JSON for {name}: {e}") from None
    key = image + "|".join(form.get(k, "") for k in ("point_coords", "point_labels", "box")).encode()
    return _ok(sam2_masks(key, 3 if form.get("multimask_output", True) else 1))


async def _stream(request: web.Request) -> web.StreamResponse:
    _log(request)
    if (item := request.app[MEDIA].items.get(request.path)) is None:
        return web.Response(status=404, body=b"ErrNotFound\n", headers=_NOT_FOUND)
    return web.Response(body=item[1], headers={"Content-Type": item[0]})


def install(
    app: web.Application,
    *,
    models: Mapping[str, Collection[str]] | None = None,
    video_delay: float = 0.5,
    store_per_request: int = 12,
    store_total: int = 256,
) -> MediaState:
    """Register the media routes and ``GET /stream/...`` on ``app`` (before any catch-all route).

    ``models``: pipeline (e.g. ``"text-to-image"``) -> served model ids (an absent ``model_id``
    means the gateway's default for that pipeline, :data:`DEFAULT_MEDIA_MODELS`); ``None`` serves
    every model, a pipeline missing from the mapping serves none (503). ``video_delay``: seconds
    until an async image-to-video job completes. ``store_*``: media store limits.
    """
    state = MediaState(models, video_delay, store_per_request, store_total)
    app[MEDIA] = state
    for path, handler in _ROUTES.items():
        app.router.add_route("*", path, handler)
    app.router.add_get("/stream/{tail:.+}", _stream)
    return state
