"""Byte-level tests of the simulator's batch media routes (oai_bridge.simulators.livepeer_media)."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
import struct
import time
import zlib
from typing import Any

import aiohttp
import pytest

from oai_bridge.simulators.livepeer import RunningSimulator
from oai_bridge.simulators.livepeer_media import (
    MEDIA,
    MediaState,
    image_size,
    is_mp4,
    make_mp4,
    make_png,
    make_wav,
    png_size,
    sam2_masks,
    transcript,
    wav_duration,
)

JSON_CT = "application/json"
TEXT_CT = "text/plain; charset=utf-8"
URL = rb"/stream/([0-9a-f]{8})/[0-9a-f]{8}\.%s"
NOT_MULTIPART = b'{"error":{"message":"request Content-Type isn\'t multipart/form-data"}}\n'
PNG_40x30 = make_png(40, 30, (1, 2, 3))


def state(sim: RunningSimulator) -> MediaState:
    return sim.app[MEDIA]


def seed_of(key: str | bytes) -> int:
    return zlib.crc32(key.encode() if isinstance(key, str) else key) & 0x7FFFFFFF


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Check every chunk CRC and the pixel data; return width, height and the (single) colour."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, tags = 8, b"", []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(tag + body)
        tags.append(tag)
        idat += body if tag == b"IDAT" else b""
        pos += 12 + n
    assert tags == [b"IHDR", b"IDAT", b"IEND"]
    w, h = png_size(data)
    raw = zlib.decompress(idat)
    assert raw == (b"\x00" + raw[1:4] * w) * h
    return w, h, raw[1:4]


def form(fields: dict[str, str], files: dict[str, Any] | None = None) -> aiohttp.FormData:
    fd = aiohttp.FormData(default_to_multipart=True)
    for k, v in fields.items():
        fd.add_field(k, v)
    for k, data in (files or {}).items():
        fd.add_field(k, data, filename=f"in.{'wav' if k == 'audio' else 'png'}", content_type="image/png")
    return fd


async def call(
    session: aiohttp.ClientSession, sim: RunningSimulator, path: str, body: Any = None, **headers: str
) -> tuple[int, str, bytes]:
    if isinstance(body, dict):
        body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    async with session.post(sim.url + path, data=body, headers=hdrs) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def fetch(session: aiohttp.ClientSession, sim: RunningSimulator, path: bytes | str) -> tuple[int, str, bytes]:
    async with session.get(sim.url + (path.decode() if isinstance(path, bytes) else path)) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def err(message: str) -> bytes:
    return json.dumps({"error": {"message": message}}, separators=(",", ":")).encode() + b"\n"


# ----------------------------------------------------------------------------- pure helpers


def test_pure_helpers() -> None:
    assert png_size(make_png(3, 2)) == (3, 2) == image_size(make_png(3, 2))
    assert decode_png(make_png(5, 4, (9, 8, 7))) == (5, 4, b"\x09\x08\x07")
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + bytes(20))
    assert image_size(b"GIF89a\x10\x00\x20\x00" + bytes(8)) == (16, 32)
    jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08\x00\x30\x00\x40\x03" + bytes(12)
    assert image_size(jpeg) == (64, 48) and image_size(b"nope") is None
    assert wav_duration(make_wav(1.25)) == 1.25 and wav_duration(make_wav(2, rate=8000)) == 2.0
    for bad in (b"", b"RIFF\x00\x00\x00\x00WAVE", b"ID3" + bytes(40)):
        with pytest.raises(ValueError):
            wav_duration(bad)
    mp4 = make_mp4(1024, 576, 6)
    assert is_mp4(mp4) and mp4 == make_mp4(1024, 576, 6) and mp4[4:8] == b"ftyp" and b"moov" in mp4
    assert not is_mp4(bytes(32)) and not is_mp4(b"\x00\x00\x00\xffftypisom" + bytes(8))
    assert sam2_masks(b"k", 3) == sam2_masks(b"k", 3) != sam2_masks(b"j", 3)
    assert transcript(2.5, "false") == {"chunks": [], "text": " Simulated transcript of a 2.50 second recording."}


# ----------------------------------------------------------------------------- images


async def test_text_to_image_defaults(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    status, ctype, body = await call(session, sim, "/text-to-image", {"prompt": "a red fox", "model_id": "m"})
    assert (status, ctype) == (200, JSON_CT)
    url = URL % b"png"
    m = re.fullmatch(rb'\{"images":\[\{"nsfw":false,"seed":%d,"url":"(%s)"\}\]\}\n' % (seed_of("a red fox"), url), body)
    assert m, body
    status, ctype, png = await fetch(session, sim, m.group(1))
    assert (status, ctype) == (200, "image/png")
    assert decode_png(png)[:2] == (512, 512)
    assert (await fetch(session, sim, m.group(1)))[2] == png  # deterministic, still stored


async def test_text_to_image_options_and_nsfw(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    req = {"prompt": "cat [[sim nsfw=1]]", "width": 64, "height": 32, "seed": 7, "num_images_per_prompt": 3}
    status, _, body = await call(session, sim, "/text-to-image", req)
    doc = json.loads(body)
    assert status == 200 and [(i["nsfw"], i["seed"]) for i in doc["images"]] == [(True, 7), (True, 8), (True, 9)]
    assert len({i["url"].split("/")[2] for i in doc["images"]}) == 1  # one request id
    for image in doc["images"]:
        assert decode_png((await fetch(session, sim, image["url"]))[2]) == (64, 32, b"\x00\x00\x00")
    _, _, body = await call(session, sim, "/text-to-image", {**req, "safety_check": False, "num_images_per_prompt": 0})
    (image,) = json.loads(body)["images"]
    assert image["nsfw"] is False and decode_png((await fetch(session, sim, image["url"]))[2])[2] != b"\x00\x00\x00"


async def test_text_to_image_errors(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    cases = [
        (b'{"prompt":', 400, err("unexpected EOF")),
        (b"", 400, err("EOF")),
        (b"[]", 400, err("json: cannot unmarshal array into Go value of type worker.TextToImageParams")),
        (
            b'{"prompt":"x","width":"big"}',
            400,
            err("json: cannot unmarshal string into Go struct field TextToImageParams.width of type int"),
        ),
        (b"{}", 400, err("missing required field: prompt")),
        (b'{"prompt":"x","width":5000}', 500, err("Internal Server Error")),
        (b'{"prompt":"x","num_images_per_prompt":17}', 500, err("Internal Server Error")),
    ]
    for raw, code, expected in cases:
        assert (await call(session, sim, "/text-to-image", raw))[::2] == (code, expected), raw
    async with session.get(sim.url + "/text-to-image") as r:  # validator quirk
        assert (r.status, await r.read()) == (200, b"")


async def test_multipart_routes_need_multipart(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    for path in ("/image-to-image", "/upscale", "/image-to-video", "/audio-to-text", "/image-to-text"):
        assert await call(session, sim, path, {"prompt": "x"}) == (400, JSON_CT, NOT_MULTIPART)
    bad = b"--b\r\n"
    status, _, body = await call(session, sim, "/segment-anything-2", bad, Content_Type="multipart/form-data")
    assert (status, body) == (400, err("no multipart boundary param in Content-Type"))


async def test_image_to_image(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    fields = {"prompt": "paint it", "num_images_per_prompt": "2", "seed": "-3", "strength": "0.5"}
    status, _, body = await call(session, sim, "/image-to-image", form(fields, {"image": PNG_40x30}))
    doc = json.loads(body)
    assert status == 200 and [i["seed"] for i in doc["images"]] == [-3, -2]
    for image in doc["images"]:
        assert decode_png((await fetch(session, sim, image["url"]))[2])[:2] == (40, 30)
    _, _, body = await call(session, sim, "/image-to-image", form({"prompt": "p"}, {"image": b"not an image"}))
    image = json.loads(body)["images"][0]
    assert image["seed"] == seed_of(f"p|{zlib.crc32(b'not an image')}")
    assert png_size((await fetch(session, sim, image["url"]))[2]) == (512, 512)
    cases = [
        (form({"prompt": "p"}), "missing required field: image"),
        (form({"prompt": "p", "image": "plain field, no filename"}), "missing required field: image"),
        (form({}, {"image": PNG_40x30}), "missing required field: prompt"),
        (
            form({"prompt": "p", "strength": "abc"}, {"image": PNG_40x30}),
            'strconv.ParseFloat: parsing "abc": invalid syntax',
        ),
        (form({"prompt": "p", "seed": "1.5"}, {"image": PNG_40x30}), 'strconv.ParseInt: parsing "1.5": invalid syntax'),
        (form({"prompt": "p", "safety_check": "yes"}), 'strconv.ParseBool: parsing "yes": invalid syntax'),
    ]
    for data, message in cases:
        assert (await call(session, sim, "/image-to-image", data))[::2] == (400, err(message))


async def test_upscale(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    for image, size in ((PNG_40x30, (160, 120)), (make_png(600, 300), (2048, 1200)), (b"??", (2048, 2048))):
        status, _, body = await call(session, sim, "/upscale", form({"prompt": "sharp"}, {"image": image}))
        (item,) = json.loads(body)["images"]
        assert status == 200 and item["url"].endswith(".png")
        assert png_size((await fetch(session, sim, item["url"]))[2]) == size


# ----------------------------------------------------------------------------- video


async def test_image_to_video_sync(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    status, ctype, body = await call(session, sim, "/image-to-video", form({"fps": "8"}, {"image": PNG_40x30}))
    m = re.fullmatch(
        rb'\{"images":\[\{"nsfw":false,"seed":%d,"url":"(%s)"\}\]\}\n' % (seed_of(PNG_40x30), URL % b"mp4"), body
    )
    assert (status, ctype) == (200, JSON_CT) and m, body
    status, ctype, mp4 = await fetch(session, sim, m.group(1))
    assert (status, ctype) == (200, "video/mp4") and is_mp4(mp4) and b"1024x576 8fps" in mp4


async def test_image_to_video_async(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    fields = {"prompt": "[[sim video_seconds=0.3]]", "seed": "5", "width": "64", "height": "48"}
    data = form(fields, {"image": PNG_40x30})
    status, ctype, body = await call(session, sim, "/image-to-video", data, Prefer="respond-async")
    m = re.fullmatch(rb'\{"request_id":"([0-9a-f]{8})"\}\n', body)
    assert (status, ctype) == (202, JSON_CT) and m, body
    poll = b'{"request_id":"%s"}' % m.group(1)
    assert await call(session, sim, "/image-to-video/result", poll) == (202, TEXT_CT, b'{"status":"processing"}\n')
    await asyncio.sleep(0.35)
    status, ctype, body = await call(session, sim, "/image-to-video/result", poll)
    done = rb'\{"result":\{"images":\[\{"nsfw":false,"seed":5,"url":"(/stream/%s/[0-9a-f]{8}\.mp4)"\}\]\},'
    done += rb'"status":"complete"\}\n'
    m2 = re.fullmatch(done % m.group(1), body)
    assert (status, ctype) == (200, TEXT_CT) and m2, body
    assert (await call(session, sim, "/image-to-video/result", poll))[2] == body  # stable
    status, _, mp4 = await fetch(session, sim, m2.group(1))
    assert status == 200 and is_mp4(mp4) and b"64x48" in mp4
    assert await call(session, sim, "/image-to-video/result", b'{"request_id":"nope"}') == (
        400,
        JSON_CT,
        err("invalid request ID"),
    )
    async with session.get(sim.url + "/image-to-video/result") as r:  # no validator here: decoded anyway
        assert (r.status, await r.read()) == (400, err("EOF"))


async def test_image_to_video_async_failure(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    data = form({"prompt": "[[sim video_seconds=0]]"}, {"image": PNG_40x30})
    _, _, body = await call(session, sim, "/image-to-video", data, Prefer="respond-async", X_Sim="fault=refuse")
    poll = {"request_id": json.loads(body)["request_id"]}
    expected = b'{"result":{"error":{"message":"Internal Server Error"}},"status":"complete"}\n'
    assert await call(session, sim, "/image-to-video/result", poll) == (200, TEXT_CT, expected)


# ----------------------------------------------------------------------------- audio, text, masks


async def test_audio_to_text(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    status, ctype, body = await call(session, sim, "/audio-to-text", form({}, {"audio": make_wav(7.5)}))
    assert (status, ctype) == (200, JSON_CT)
    assert body == (
        b'{"chunks":[{"text":" Simulated transcript of a 7.50 second recording.","timestamp":[0,3.75]},'
        b'{"text":" This is simulated sentence 2.","timestamp":[3.75,7.5]}],'
        b'"text":" Simulated transcript of a 7.50 second recording. This is simulated sentence 2."}\n'
    )
    wav = {"audio": make_wav(2.5)}
    _, _, body = await call(session, sim, "/audio-to-text", form({"return_timestamps": "word"}, wav))
    chunks = json.loads(body)["chunks"]
    assert [c["text"] for c in chunks][:2] == [" Simulated", " transcript"] and chunks[-1]["timestamp"] == [2.14, 2.5]
    _, _, body = await call(session, sim, "/audio-to-text", form({"return_timestamps": "false"}, wav))
    assert body == b'{"chunks":[],"text":" Simulated transcript of a 2.50 second recording."}\n'
    for audio in (b"ID3 not a wav", make_wav(0.9)):
        assert (await call(session, sim, "/audio-to-text", form({}, {"audio": audio})))[::2] == (
            400,
            err("audio duration calculation failed"),
        )
    assert (await call(session, sim, "/audio-to-text", form({"return_timestamps": "x"}, wav)))[0] == 503


async def test_text_to_speech(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    status, ctype, body = await call(session, sim, "/text-to-speech", {"text": "hello world", "model_id": "m"})
    m = re.fullmatch(rb'\{"audio":\{"url":"(%s)"\}\}\n' % (URL % b"wav"), body)
    assert (status, ctype) == (200, JSON_CT) and m, body
    status, ctype, wav = await fetch(session, sim, m.group(1))
    assert (status, ctype) == (200, "audio/wav") and wav_duration(wav) == pytest.approx(0.66)
    assert wav[20:24] == b"\x01\x00\x01\x00" and wav[24:28] == struct.pack("<I", 16000)  # PCM, mono, 16 kHz
    _, _, body = await call(session, sim, "/text-to-speech", {"text": ""})
    assert wav_duration((await fetch(session, sim, json.loads(body)["audio"]["url"]))[2]) == 0.5
    assert (await call(session, sim, "/text-to-speech", {"description": "x"}))[::2] == (
        400,
        err("text field is required"),
    )


async def test_image_to_text(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    data = form({"prompt": "a photo of"}, {"image": PNG_40x30})
    assert await call(session, sim, "/image-to-text", data) == (
        200,
        JSON_CT,
        b'{"text":"a photo of a simulated caption of a 40x30 image"}\n',
    )
    _, _, body = await call(session, sim, "/image-to-text", form({}, {"image": PNG_40x30}))
    assert body == b'{"text":"a simulated caption of a 40x30 image"}\n'
    huge = {"image": io.BytesIO(PNG_40x30 + bytes(50 * 1024 * 1024))}  # BytesIO: no large-bytes warning
    assert (await call(session, sim, "/image-to-text", form({}, huge)))[::2] == (503, err("Service Unavailable Error"))


async def test_segment_anything_2(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    data = form({"point_coords": "[[10, 20]]", "point_labels": "[1]"}, {"image": PNG_40x30})
    status, _, body = await call(session, sim, "/segment-anything-2", data)
    assert status == 200 and list(json.loads(body)) == ["logits", "masks", "scores"]
    doc = json.loads(body)
    assert [len(ast.literal_eval(doc[k])) for k in ("logits", "masks", "scores")] == [3, 3, 3]
    assert all(v in (0.0, 1.0) for m in ast.literal_eval(doc["masks"]) for row in m for v in row)
    data = form({"multimask_output": "false"}, {"image": PNG_40x30})
    assert len(ast.literal_eval(json.loads((await call(session, sim, "/segment-anything-2", data))[2])["scores"])) == 1
    data = form({"box": "[1, 2"}, {"image": PNG_40x30})
    message = "Error parsing JSON for box: Expecting ',' delimiter: line 1 column 6 (char 5)"
    assert (await call(session, sim, "/segment-anything-2", data))[::2] == (400, err(message))


# ----------------------------------------------------------------------------- store, faults, log, routing


async def test_store_eviction_and_not_found(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    state(sim).per_request = 2
    _, _, body = await call(session, sim, "/text-to-image", {"prompt": "x", "num_images_per_prompt": 3, "width": 8})
    urls = [i["url"] for i in json.loads(body)["images"]]
    assert [(await fetch(session, sim, u))[0] for u in urls] == [404, 200, 200]
    assert await fetch(session, sim, urls[0]) == (404, TEXT_CT, b"ErrNotFound\n")
    state(sim).total = 3
    await call(session, sim, "/text-to-image", {"prompt": "y", "num_images_per_prompt": 2, "width": 8})
    assert [(await fetch(session, sim, u))[0] for u in urls] == [404, 404, 200]
    assert (await fetch(session, sim, "/stream/00000000/none.png"))[0] == 404


async def test_faults_and_models(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    t2i = {"prompt": "x", "width": 8, "height": 8}
    cases = [
        ("fault=refuse", 503, err("Service Unavailable Error")),
        ("fault=masked500 msg=hidden", 500, err("Internal Server Error")),
        ('fault=bad400 msg="no good"', 400, err("no good")),
        ("fault=bogus", 400, err("unknown simulator fault: bogus")),
        ("fault=empty200", 200, b""),
    ]
    for header, code, expected in cases:
        assert (await call(session, sim, "/text-to-image", t2i, X_Sim=header))[::2] == (code, expected)
    prompt = {"prompt": "[[sim fault=bad400]]"}
    assert (await call(session, sim, "/image-to-text", form(prompt, {"image": PNG_40x30})))[0] == 400
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(session, sim, "/text-to-speech", {"text": "x"}, X_Sim="fault=close")
    start = time.monotonic()
    assert (await call(session, sim, "/text-to-speech", {"text": "x"}, X_Sim="delay=0.2"))[0] == 200
    assert time.monotonic() - start >= 0.2
    state(sim).models = {"text-to-image": frozenset({"a/b"})}
    assert (await call(session, sim, "/text-to-image", {**t2i, "model_id": "a/b"}))[0] == 200
    for req in ({**t2i, "model_id": "c/d"}, t2i):
        assert (await call(session, sim, "/text-to-image", req))[::2] == (503, err("Service Unavailable Error"))
    assert (await call(session, sim, "/text-to-speech", {"text": "x"}))[0] == 503


async def test_request_log(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    await call(session, sim, "/image-to-image", form({"prompt": "p", "strength": "0.5"}, {"image": PNG_40x30}))
    entry = sim.requests[-1]
    assert (entry["path"], entry["method"], entry["content_type"]) == ("/image-to-image", "POST", "multipart/form-data")
    assert entry["form"] == {"prompt": "p", "strength": "0.5"} and entry["json"] is None
    assert entry["files"] == {"image": {"filename": "in.png", "content_type": "image/png", "size": len(PNG_40x30)}}
    _, _, body = await call(session, sim, "/text-to-image", {"prompt": "q", "width": 8}, X_Sim="delay=0")
    assert sim.requests[-1]["json"] == {"prompt": "q", "width": 8} and sim.requests[-1]["headers"]["X-Sim"] == "delay=0"
    await fetch(session, sim, json.loads(body)["images"][0]["url"])
    assert (sim.requests[-1]["path"], sim.requests[-1]["method"]) == (json.loads(body)["images"][0]["url"], "GET")
    llm = {"model": "meta-llama/Meta-Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}]}
    await call(session, sim, "/llm", {**llm, "stream": False, "max_tokens": 4})
    assert "path" not in sim.requests[-1]  # /llm entries keep their shape


async def test_routing_order_unchanged(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    not_found = (404, TEXT_CT, b"404 page not found\n")
    assert await fetch(session, sim, "/nope") == not_found
    assert await call(session, sim, "/stream/abc/def.png") == not_found  # only GET serves media
    async with session.get(sim.url + "/healthz") as r:
        assert (r.status, await r.read()) == (200, b"")
