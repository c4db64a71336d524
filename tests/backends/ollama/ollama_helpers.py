"""Shared helpers of the Ollama backend tests: requests, real Ollama lines, the chunk-contract check."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.chat import ChatCompletion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from oai_bridge.types import ChatCompletionRequest

MODEL = "llama3.2"

# Reference §7.2 (OLL docs/api.md): a streamed answer's first and final lines.
REF_FIRST = (
    b'{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":'
    b'{"role":"assistant","content":"The","images":null},"done":false}'
)
REF_FINAL = (
    b'{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},'
    b'"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,'
    b'"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}'
)
# ollama/ollama#5890: a real non-stream answer of Ollama 0.2.8.
REAL_NON_STREAM = (
    b'{"model":"llama3.1:8b-instruct-q8_0","created_at":"2024-07-23T22:47:08.077302Z","message":{"role":"assistant",'
    b'"content":"100% digital, so I don\'t have feelings like humans do."},"done_reason":"stop","done":true,'
    b'"total_duration":2066221042,"load_duration":788808833,"prompt_eval_count":34,"prompt_eval_duration":113163000,'
    b'"eval_count":45,"eval_duration":1157882000}'
)


def req(**fields: Any) -> ChatCompletionRequest:
    payload: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hello world"}]}
    payload.update(fields)
    return ChatCompletionRequest.model_validate(payload, strict=True)


def line(content: str = "", **fields: Any) -> bytes:
    """An Ollama stream line (``done: false`` unless given)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    message.update(fields.pop("message", {}))
    body = {"model": MODEL, "created_at": "2025-01-01T00:00:00.5Z", "message": message, "done": False}
    body.update(fields)
    return orjson.dumps(body)


def done_line(reason: str = "stop", prompt: int = 3, completion: int = 5) -> bytes:
    return line(done=True, done_reason=reason, prompt_eval_count=prompt, eval_count=completion, total_duration=9)


def check_stream(chunks: list[dict[str, Any]], *, include_usage: bool) -> None:
    """The streaming contract (reference §2.2) on a complete chunk list, plus the SDK's own types."""
    assert chunks, "no chunks"
    ids = {(c["id"], c["created"], c["model"]) for c in chunks}
    assert len(ids) == 1, ids
    body = [c for c in chunks if c["choices"]]
    usage = [c for c in chunks if not c["choices"]]
    assert body[0]["choices"][0]["delta"].get("role") == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in body[1:])
    assert all(c["choices"][0]["finish_reason"] is None for c in body[:-1])
    assert body[-1]["choices"][0]["delta"] == {} and body[-1]["choices"][0]["finish_reason"] is not None
    assert len(usage) == (1 if include_usage else 0)
    if include_usage:
        assert chunks[-1] is usage[0]
    seen: set[int] = set()
    for c in body:
        for fragment in c["choices"][0]["delta"].get("tool_calls") or ():
            assert "index" in fragment and "function" in fragment
            first = fragment["index"] not in seen
            assert ("id" in fragment) == first and ("name" in fragment["function"]) == first
            seen.add(fragment["index"])
    if seen:
        assert body[-1]["choices"][0]["finish_reason"] in ("tool_calls", "length")
    for c in chunks:
        assert set(c) == {"id", "object", "created", "model", "choices"} | ({"usage"} if include_usage else set())
        SDKChunk.model_validate(orjson.loads(orjson.dumps(c)), strict=False)


def check_completion(body: dict[str, Any]) -> None:
    SDKCompletion.model_validate(orjson.loads(orjson.dumps(body)), strict=False)


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
