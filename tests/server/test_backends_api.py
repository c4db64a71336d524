"""Several backends behind one bridge: embeddings, the merged model list, /health/backends, a
generic SSE service declared only in a config file, and ``oai-bridge models``."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from routedstack import RoutedStack, Up, client, start_configured, start_routed

from oai_bridge.routes import Route, Upstream
from oai_bridge.simulators.common import embed

pytestmark = pytest.mark.sdk

TEXTS = ["the first text", "a second, longer text to embed"]


@pytest.fixture(scope="module")
def stack() -> Iterator[RoutedStack]:
    ups = [Up("oa", "openai_compat"), Up("ol", "ollama"), Up("an", "anthropic")]
    routes = [
        Route(model="embed-oa", upstreams=(Upstream("oa", model="text-embedding-3-small"),)),
        Route(model="embed-ol", upstreams=(Upstream("ol", model="all-minilm:latest"),)),
        Route(model="claude", aliases=("sonnet",), upstreams=(Upstream("an", model="claude-sonnet-4-5"),)),
    ]
    s = start_routed(ups, routes)
    yield s
    s.stop()


@pytest.mark.parametrize("model", ["embed-oa", "embed-ol"])
def test_embeddings_float_and_base64_decode_to_the_same_vectors(stack: RoutedStack, model: str) -> None:
    with client(stack) as sdk:
        as_float = sdk.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    # Unasked, the SDK requests base64 and decodes it after parsing: its strict validation (list of
    # floats) would reject the base64 strings OpenAI itself sends, so this client is not strict.
    with openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0) as sdk:
        default = sdk.embeddings.create(model=model, input=TEXTS)
    raw = httpx.post(
        stack.base_url + "/embeddings", json={"model": model, "input": TEXTS, "encoding_format": "base64"}
    ).json()
    assert all(isinstance(d["embedding"], str) for d in raw["data"])
    decoded = [
        list(struct.unpack(f"<{len(v) // 4}f", v)) for v in (base64.b64decode(d["embedding"]) for d in raw["data"])
    ]
    want = [embed(t) for t in TEXTS]
    assert [d.embedding for d in as_float.data] == want
    assert [d.embedding for d in default.data] == want
    assert decoded == want
    assert [d.index for d in default.data] == [0, 1]
    assert default.usage.prompt_tokens > 0


def test_embeddings_on_a_backend_without_them_is_a_400(stack: RoutedStack) -> None:
    response = httpx.post(stack.base_url + "/embeddings", json={"model": "claude", "input": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_models_merge_every_backend_and_the_routes(stack: RoutedStack) -> None:
    with client(stack) as sdk:
        models = {m.id: m for m in sdk.models.list()}
    assert {"gpt-4o-mini", "llama3.2:latest", "claude", "sonnet", "embed-oa"} <= set(models)
    extra: Any = models["llama3.2:latest"].model_extra
    assert extra["backends"] == ["ol"]
    assert (models["claude"].model_extra or {})["backends"] == ["an"]
    with client(stack) as sdk:
        assert sdk.models.retrieve("sonnet").id == "sonnet"


def test_health_backends(stack: RoutedStack) -> None:
    body = httpx.get(stack.url + "/health/backends").json()
    assert body["status"] == "ok"
    lines = {b["name"]: b for b in body["backends"]}
    assert set(lines) == {"oa", "ol", "an"}
    assert {b["status"] for b in lines.values()} == {"connected"}
    assert lines["ol"]["kind"] == "ollama" and lines["ol"]["latency_ms"] >= 0
    assert httpx.get(stack.url + "/health").json() == {"status": "ok"}


def test_health_backends_reports_an_unreachable_backend(tmp_path: Path) -> None:
    stack = start_routed([Up("oa", "openai_compat")], [])
    try:
        asyncio.run_coroutine_threadsafe(stack.upstreams["oa"].aclose(), stack.loop).result(10)
        response = httpx.get(stack.url + "/health/backends")
    finally:
        stack.stop()
    assert response.status_code == 503
    line = response.json()["backends"][0]
    assert line["status"] == "unreachable" and "Connect" in line["error"]


# ----------------------------------------------------------------------- config-only generic SSE

GENERIC_CONFIG = """\
[backends.dify]
kind = "generic_sse"
base_url = "{url:dify}"
api_key_env = "TEST_DIFY_KEY"
models = ["support-bot"]

[backends.dify.options]
path = "/stream"
headers = { "X-Api-Key" = "{{api_key}}" }
text_path = "answer"
text_when = "event == message"
done_when = "event == message_end"
error_when = "event == error"
error_path = "message"
usage_prompt_path = "metadata.usage.prompt_tokens"
usage_completion_path = "metadata.usage.completion_tokens"

[backends.dify.options.body]
query = "{{last_user_message}}"
history = "{{history}}"
model = "{{model}}"

[[routes]]
model = "support"
upstreams = [{ backend = "dify", model = "support-bot" }]
"""


def test_a_generic_sse_service_defined_only_in_config_streams_to_the_sdk(tmp_path: Path) -> None:
    up = Up("dify", "generic_sse", sim={"api_key": "dify-secret"})
    os.environ["TEST_DIFY_KEY"] = "dify-secret"  # the bridge reads keys from the environment
    stack = start_configured([up], GENERIC_CONFIG, {"TEST_DIFY_KEY": "dify-secret"}, tmp_path)
    try:
        with client(stack) as sdk:
            with sdk.chat.completions.stream(
                model="support",
                messages=[{"role": "user", "content": "How do I reset my password?"}],
                stream_options={"include_usage": True},
            ) as stream:
                deltas = [e.delta for e in stream if e.type == "content.delta"]
                final = stream.get_final_completion()
        body = stack.requests("dify")[-1]
    finally:
        stack.stop()
    assert "".join(deltas) == "Simulated reply to: How do I reset my password?"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 9
    assert body["body"]["query"] == "How do I reset my password?" and body["body"]["model"] == "support-bot"
    assert body["headers"]["X-Api-Key"] == "dify-secret"


# ----------------------------------------------------------------------- oai-bridge models

MODELS_CONFIG = """\
[backends.local]
kind = "ollama"
base_url = "{url:local}"

[backends.gone]
kind = "openai_compat"
base_url = "http://127.0.0.1:9/v1"
connect_timeout = 1

[[routes]]
model = "fast"
upstreams = [{ backend = "local", model = "llama3.2:latest" }, { backend = "gone", model = "x" }]
"""


def test_models_command_prints_health_and_the_merged_list(tmp_path: Path) -> None:
    stack = start_configured([Up("local", "ollama")], MODELS_CONFIG, {}, tmp_path)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "oai_bridge", "models", "--config", str(tmp_path / "bridge.toml")],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith(("LIVEPEER_", "OLLAMA_", "OPENAI_"))},
        )
    finally:
        stack.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["BACKEND", "KIND", "STATUS", "URL", "DETAIL"]
    local = next(line.split() for line in lines if line.startswith("local "))
    gone = next(line.split() for line in lines if line.startswith("gone "))
    assert local[1:3] == ["ollama", "connected"]
    assert gone[1:3] == ["openai_compat", "unreachable"]
    models = {line.split()[0]: line.split()[1:] for line in lines[lines.index("") + 2 :] if line.strip()}
    assert models["llama3.2:latest"] == ["local"]
    assert models["fast"] == ["local,", "gone"]
