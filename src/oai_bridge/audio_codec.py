"""Re-encode WAV speech into the other ``response_format``s of ``/v1/audio/speech``.

Uses ``soundfile`` (libsndfile: MP3, Ogg Opus, FLAC) when the optional ``audio`` extra is
installed (``pip install oai-bridge[audio]``); without it, or for AAC (libsndfile has no AAC
encoder), the endpoint answers a clear 400. CPU-bound: callers run it in a worker thread.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["CONTENT_TYPES", "EncoderUnavailable", "available", "encode"]

#: response_format → (libsndfile format, subtype, content type)
FORMATS = {
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "opus": ("OGG", "OPUS", "audio/ogg"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
}
CONTENT_TYPES = {name: spec[2] for name, spec in FORMATS.items()}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class EncoderUnavailable(Exception):
    """This format cannot be produced here; the message says why."""


def _soundfile() -> Any:
    try:
        import soundfile
    except (ImportError, OSError):
        return None
    return soundfile


def available(response_format: str) -> bool:
    return response_format in FORMATS and _soundfile() is not None


def encode(wav: bytes, response_format: str) -> tuple[bytes, str]:
    """WAV bytes → (encoded bytes, content type)."""
    soundfile = _soundfile()
    if response_format not in FORMATS:
        raise EncoderUnavailable(f"no {response_format} encoder exists here (libsndfile has none)")
    if soundfile is None:
        raise EncoderUnavailable("the optional audio encoder is not installed (pip install 'oai-bridge[audio]')")
    data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    fmt, subtype, content_type = FORMATS[response_format]
    if response_format == "opus" and rate not in OPUS_RATES:
        raise EncoderUnavailable(f"Opus cannot carry {rate} Hz audio; ask for wav, flac or mp3")
    out = io.BytesIO()
    soundfile.write(out, data, rate, format=fmt, subtype=subtype)
    return out.getvalue(), content_type
