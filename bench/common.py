"""What the overhead bench sends and small helpers shared by its modules (no third-party imports).

Two comparisons ("groups"), each sending the same logical request several ways (see bench/README.md):

* ``livepeer``: straight to the Livepeer simulator's ``/llm`` ("direct") and through the bridge's
  ``/v1/chat/completions`` with its Livepeer backend ("bridge"): the product's main path;
* ``openai``: one fast OpenAI-compatible upstream (``bench/upstream.py``) reached directly
  ("direct"), through the bridge's ``openai_compat`` backend ("bridge") and through LiteLLM's proxy
  ("litellm", when installed), all with the same OpenAI request.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen import percentile

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
#: the OpenAI group's public model name: a name LiteLLM's cost map knows, so LiteLLM's cost
#: bookkeeping takes its normal path (an unknown name makes it log a failed lookup per request)
OA_MODEL = "gpt-4o-mini"
PROMPT = "Write a short poem about bridges."
TOKENS = 50
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": f"{PROMPT} [[sim tokens={TOKENS}]]"},
]

KINDS = ("nonstream", "stream")
LABEL = {"nonstream": "non-stream request", "stream": f"{TOKENS}-chunk stream"}
GROUPS = ("livepeer", "openai")
GROUP_LABEL = {
    "livepeer": "Livepeer path (upstream: the Livepeer gateway simulator)",
    "openai": "OpenAI path (upstream: bench/upstream.py, a fast OpenAI-compatible server)",
}
ROLES = ("direct", "bridge", "litellm")


@dataclass(frozen=True)
class Way:
    """One way to send the request: ``group`` (livepeer/openai), ``role`` (direct/bridge/litellm),
    ``server`` (the Stack server that receives it), ``path`` and the model name."""

    group: str
    role: str
    server: str
    path: str
    model: str

    @property
    def key(self) -> str:
        return f"{self.group}.{self.role}"


WAYS = {
    w.key: w
    for w in (
        Way("livepeer", "direct", "sim", "/llm", MODEL),
        Way("livepeer", "bridge", "bridge", "/v1/chat/completions", MODEL),
        Way("openai", "direct", "upstream", "/v1/chat/completions", OA_MODEL),
        Way("openai", "bridge", "bridge", "/v1/chat/completions", OA_MODEL),
        Way("openai", "litellm", "litellm", "/v1/chat/completions", OA_MODEL),
    )
}


def slow_messages(seconds: float) -> list[dict[str, str]]:
    """A stream of TOKENS events, the first after seconds/TOKENS, the last at ``seconds``: both
    upstreams honour the Livepeer simulator's ``delay``/``first_delay`` directives."""
    d = seconds / TOKENS
    return [MESSAGES[0], {"role": "user", "content": f"{PROMPT} [[sim tokens={TOKENS} delay={d:g} first_delay={d:g}]]"}]


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], p: float) -> float:
    return percentile(sorted(values), p)


def body_for(kind: str, way: Way, slow_seconds: float = 0.0) -> dict[str, Any]:
    """``kind`` nonstream/stream; ``slow_seconds`` > 0: a slow stream of that length."""
    stream = kind == "stream"
    messages = slow_messages(slow_seconds) if slow_seconds > 0 else MESSAGES
    if way.server == "sim":  # the Livepeer /llm JSON request (gateway >= v0.8.3)
        return {"model": way.model, "messages": messages, "max_tokens": TOKENS, "stream": stream}
    body: dict[str, Any] = {"model": way.model, "messages": messages, "max_tokens": TOKENS}
    if stream:
        body["stream"] = True
    return body


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def raw_request(port: int, path: str, body: dict[str, Any]) -> str:
    data = compact(body)
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data.encode())}\r\n\r\n{data}"
    )
