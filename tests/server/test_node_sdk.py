"""The official openai Node SDK (npm `openai`, installed by `make test` in tests/node)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from livestack import MODEL, Stack

from oai_bridge.simulators.livepeer import prompt_tokens, reply_tokens

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_sdk_chat_stream_helper_and_errors(stack: Stack) -> None:
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `make test` (npm ci in tests/node) first"
    messages = [{"role": "user", "content": "Hello from Node"}]
    expected = "".join(reply_tokens(messages, 256))
    result = subprocess.run(
        ["node", str(NODE_DIR / "sdk_check.mjs"), stack.base_url, MODEL, expected],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=NODE_DIR,
    )
    assert result.returncode == 0, result.stderr
    seen = orjson.loads(result.stdout.strip().splitlines()[-1])
    usage = {
        "prompt_tokens": prompt_tokens(messages),
        "completion_tokens": len(reply_tokens(messages, 256)),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    assert seen == {
        "nonStream": expected,
        "nonStreamFinish": "stop",
        "usage": usage,
        "stream": expected,
        "roles": 1,
        "streamUsage": usage,
        "helper": expected,
        "helperRole": "assistant",
        "helperFinish": "stop",
        "error": {"status": 400, "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"},
        "ok": True,
    }
