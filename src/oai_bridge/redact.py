"""Secrets never leave the bridge in a log line or an error message (pure: no I/O).

``redact(text)`` replaces, with ``[redacted]``:

- every **registered secret** (``register_secret``): the configured backend API keys and the
  Livepeer gateway token register themselves when their config is built (``BackendConfig``,
  ``LivepeerTuning``); the CLI also registers env values whose names look secret
  (``*_API_KEY``, ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``, ...) before it reads the config;
- anything that **looks like a key** whoever it belongs to (a client's own key too): ``sk-…`` and
  ``sk-ant-…`` keys, ``Bearer …`` / ``Basic …`` credentials, the value after ``x-api-key``,
  ``api_key``, ``token``, ``secret``, ``password`` (``:`` or ``=``), the user:password of a URL,
  and JWTs.

It is applied where text may leave: ``BridgeError`` messages (so an upstream error body that
echoes a key is scrubbed before it becomes the client's error or a log line), health lines, the
CLI's config errors, and every log record through ``oai_bridge.logs.RedactingFilter``. It runs
on error and logging paths only: one regex pass over a short string.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

__all__ = ["MIN_SECRET_LENGTH", "REDACTED", "looks_secret_name", "redact", "register_env_secrets", "register_secret"]

REDACTED = "[redacted]"
#: Shorter values are not registered (they would redact ordinary words); keys are longer.
MIN_SECRET_LENGTH = 6

_KEY_LIKE = re.compile(
    r"(?P<scheme>\b(?:bearer|basic)\s+)(?!(?:token|authentication|auth)\b)[A-Za-z0-9._~+/=\-]{8,}"
    r"|\bsk-(?:ant-)?[A-Za-z0-9_\-]{8,}"
    r"|(?P<field>(?:\b(?:x-api-key|api[-_]?key|apikey|access[-_]?token|auth[-_]?token|token|secret|client[-_]?secret"
    r"|password|passwd)\b|[?&]key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}\[\]]{4,}"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
    re.IGNORECASE,
)
#: Each match of ``_KEY_LIKE`` holds one of these (lowercased): a text without any skips the regex.
_TRIGGERS = ("key", "token", "secret", "passw", "bearer", "basic", "sk-", "eyj")
_USERINFO = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|SECRET_KEY|PASSWORD|PASSWD|CREDS?|CREDENTIALS?)$", re.IGNORECASE
)

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # the longest first: one may contain another (replaced whole, never mutated)
_known: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears from now on (values under ``MIN_SECRET_LENGTH``
    characters are ignored). Idempotent and cheap after the first call."""
    global _known, _secrets
    if not value or len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        if value not in _secrets:
            ordered = tuple(sorted((*_secrets, value), key=len, reverse=True))
            _known = re.compile("|".join(map(re.escape, ordered)))
            _secrets = ordered


def looks_secret_name(name: str) -> bool:
    """Whether an env var's name says it holds a secret (``OPENAI_API_KEY``, ``GW_TOKEN``, ...)."""
    return bool(_SECRET_NAME.search(name))


def register_env_secrets(environ: Mapping[str, str], names: Iterable[str] = ()) -> None:
    """Register the values of ``names`` and of every env var whose name looks secret."""
    for name in names:
        register_secret(environ.get(name))
    for name, value in environ.items():
        if looks_secret_name(name):
            register_secret(value)


def _key_like(match: re.Match[str]) -> str:
    return (match.group("scheme") or match.group("field") or "") + REDACTED


def redact(text: str) -> str:
    """``text`` with every registered secret and anything that looks like a key replaced."""
    if not text:
        return text
    known, secrets = _known, _secrets
    if known is not None and any(secret in text for secret in secrets):
        text = known.sub(REDACTED, text)
    low = text.lower()
    if "://" in low:
        text = _USERINFO.sub("://" + REDACTED + "@", text)
    if any(trigger in low for trigger in _TRIGGERS):
        text = _KEY_LIKE.sub(_key_like, text)
    return text
