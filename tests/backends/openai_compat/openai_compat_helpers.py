"""Shared helpers of the openai_compat tests: requests, chunk builders, the compliance check
(reference §2.2 as a function) and a per-choice fold to compare content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from openai.types.chat import ChatCompletion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from oai_bridge.backends.base import BackendConfig
from oai_bridge.backends.openai_compat import OpenAICompatBackend
from oai_bridge.sse import SSEDecoder
from oai_bridge.types import ChatCompletionRequest

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "openai-real-streams"
ID, CREATED, MODEL = "chatcmpl-up", 1727346168, "upstream-model"
ROLE = {"role": "assistant", "content": "", "refusal": None}
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
FINISHES = {"stop", "length", "tool_calls", "content_filter", "function_call"}
KEY = "sk-test-secret-key"
MakeBackend = Callable[..., OpenAICompatBackend]


def config(url: str, **fields: Any) -> BackendConfig:
    """A backend config for a server at ``url`` (short timeouts, the test key)."""
    values: dict[str, Any] = {
        "name": "compat",
        "kind": "openai_compat",
        "base_url": url + "/v1",
        "api_key": KEY,
        "connect_timeout": 2.0,
        "first_token_timeout": 5.0,
        "idle_timeout": 5.0,
        "request_timeout": 5.0,
    }
    values.update(fields)
    return BackendConfig(**values)


def req(**fields: Any) -> ChatCompletionRequest:
    payload: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    payload.update(fields)
    return ChatCompletionRequest.model_validate(payload, strict=True)


def ch(delta: dict[str, Any], finish: str | None = None, *, index: int = 0, logprobs: Any = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def chunk(*choices: dict[str, Any], usage: Any = "absent", **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL}
    out.update(top)
    out["choices"] = list(choices)
    if usage != "absent":
        out["usage"] = usage
    return out


def sse_data(raw: bytes) -> list[bytes]:
    """The data of every event of an SSE body."""
    return [e.data for e in SSEDecoder().feed(raw)]


def fixture_events(name: str) -> list[bytes]:
    return sse_data((FIXTURES / name).read_bytes())


def assert_compliant(chunks: list[dict[str, Any]], *, include_usage: bool) -> None:
    """Every rule of reference §2.2 / §9 that a client can trip over."""
    assert chunks, "no chunks"
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1, "id/created/model changed"
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and isinstance(c["created"], int)
        SDKChunk.model_validate(orjson.loads(orjson.dumps(c)), strict=False)
        if include_usage:
            assert "usage" in c
        else:
            assert "usage" not in c, c
    usage = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage) == 1 and usage[0] is chunks[-1] and isinstance(usage[0]["usage"], dict)
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert not usage
    seen: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for choice in c["choices"]:
            assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}, choice
            st = seen.setdefault(choice["index"], {"n": 0, "finish": None, "calls": set(), "tools": False})
            delta = choice["delta"]
            assert st["finish"] is None, f"choice {choice['index']} continued after its finish"
            assert ("role" in delta) == (st["n"] == 0), f"role misplaced: {delta}"
            st["n"] += 1
            for frag in delta.get("tool_calls") or ():
                assert isinstance(frag["index"], int) and isinstance(frag["function"], dict), frag
                first = frag["index"] not in st["calls"]
                assert ("id" in frag) == first and ("type" in frag) == first, frag
                assert ("name" in frag["function"]) == first or (not first and frag["function"].get("name")), frag
                st["calls"].add(frag["index"])
                st["tools"] = True
            if choice["finish_reason"] is not None:
                assert choice["finish_reason"] in FINISHES
                assert delta == {}, "finish shares a chunk with content"
                if st["tools"] and choice["finish_reason"] == "stop":
                    raise AssertionError("stop after tool calls")
                st["finish"] = choice["finish_reason"]
    assert all(st["finish"] for st in seen.values()), "a choice never finished"


def fold(chunks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per choice: text, refusal, tool calls, finish, logprobs tokens (what a client accumulates)."""
    out: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for choice in c["choices"]:
            st = out.setdefault(choice["index"], {"text": "", "refusal": "", "calls": {}, "finish": None, "tokens": []})
            delta = choice["delta"]
            st["text"] += delta.get("content") or ""
            st["refusal"] += delta.get("refusal") or ""
            for frag in delta.get("tool_calls") or ():
                call = st["calls"].setdefault(frag["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] += frag.get("id", "")
                call["name"] += frag["function"].get("name", "")
                call["arguments"] += frag["function"].get("arguments", "")
            lp = choice["logprobs"]
            for key in ("content", "refusal"):
                for token in (lp or {}).get(key) or ():
                    st["tokens"].append(token["token"])
            if choice["finish_reason"]:
                st["finish"] = choice["finish_reason"]
    return out


def check_completion(body: dict[str, Any]) -> None:
    SDKCompletion.model_validate(orjson.loads(orjson.dumps(body)), strict=False)
    for choice in body["choices"]:
        assert set(choice) == {"index", "message", "logprobs", "finish_reason"}
        assert {"role", "content", "refusal"} <= set(choice["message"])
        assert choice["finish_reason"] in FINISHES
