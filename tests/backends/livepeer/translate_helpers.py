"""Shared helpers of the Livepeer translation tests: request builder, SDK-type checks, expected bodies."""

from __future__ import annotations

import re
from typing import Any

import orjson
from openai.types.chat import ChatCompletion as SDKCompletion
from openai.types.chat import ChatCompletionChunk as SDKChunk

from oai_bridge.types import ChatCompletionRequest

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
UPSTREAM_ID = "chatcmpl-1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"
NEW_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")
ROLE = {"role": "assistant", "content": "", "refusal": None}


def req(**fields: Any) -> ChatCompletionRequest:
    payload: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    payload.update(fields)
    return ChatCompletionRequest.model_validate(payload, strict=True)


def check_chunk(chunk: dict[str, Any], *, include_usage: bool) -> None:
    assert set(chunk) == {"id", "object", "created", "model", "choices"} | ({"usage"} if include_usage else set())
    for choice in chunk["choices"]:
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
    SDKChunk.model_validate(orjson.loads(orjson.dumps(chunk)), strict=False)


def check_completion(body: dict[str, Any], *, with_usage: bool = True) -> None:
    assert set(body) == {"id", "object", "created", "model", "choices"} | ({"usage"} if with_usage else set())
    SDKCompletion.model_validate(orjson.loads(orjson.dumps(body)), strict=False)


def expected_completion(
    content: str,
    finish: str,
    usage: dict[str, int] | None,
    *,
    id: str = UPSTREAM_ID,
    created: int = 1700000000,
    model: str = MODEL,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body
