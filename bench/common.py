"""What the overhead bench sends and small helpers shared by its modules (no third-party imports).

The same logical request goes straight to the simulator's ``/llm`` ("direct") and through the
bridge's ``/v1/chat/completions`` ("bridge"); see bench/README.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from loadgen import percentile

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a short poem about bridges. [[sim tokens=50]]"},
]
TOKENS = 50

KINDS = ("nonstream", "stream")
LABEL = {"nonstream": "non-stream request", "stream": f"{TOKENS}-chunk stream"}


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], p: float) -> float:
    return percentile(sorted(values), p)


def body_for(kind: str, target: str) -> dict[str, Any]:
    stream = kind == "stream"
    if target == "direct":  # the Livepeer /llm JSON request (gateway >= v0.8.3)
        return {"model": MODEL, "messages": MESSAGES, "max_tokens": TOKENS, "stream": stream}
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": TOKENS}
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
