"""LivepeerBackend against the real simulator on loopback: discovery, auth header, generation
detection, unreachable gateway."""

from __future__ import annotations

import socket

import pytest

from oai_bridge.backends.livepeer import LivepeerBackend, LivepeerOptions
from oai_bridge.errors import UpstreamUnavailable
from oai_bridge.simulators.livepeer import DEFAULT_MODELS, start_simulator
from oai_bridge.types import ChatCompletionRequest

REQUEST = ChatCompletionRequest.model_validate(
    {"model": DEFAULT_MODELS[0], "messages": [{"role": "user", "content": "hi"}]}
)


async def test_models_are_discovered_from_network_capabilities() -> None:
    sim = await start_simulator(models=["org/a", "org/b"])
    backend = LivepeerBackend(LivepeerOptions(gateway_url=sim.url, cli_url=sim.url, models=["org/configured"]))
    try:
        models = await backend.models()
        ids = [m["id"] for m in models]
        assert ids[:3] == ["org/configured", "org/a", "org/b"]
        assert all(m["pipelines"] == ["llm"] for m in models[:3])
        by_id = {m["id"]: m for m in models}
        assert by_id["stabilityai/sdxl-turbo"]["pipelines"] == ["image-to-image", "text-to-image"]
        assert by_id["openai/whisper-large-v3"]["pipelines"] == ["audio-to-text"]
        assert all(m["object"] == "model" and m["owned_by"] == "livepeer" for m in await backend.models())
    finally:
        await backend.aclose()
        await sim.aclose()


async def test_off_chain_capabilities_answer_is_tolerated() -> None:
    sim = await start_simulator(capabilities="offchain")
    backend = LivepeerBackend(LivepeerOptions(gateway_url=sim.url, cli_url=sim.url, models=["org/configured"]))
    try:
        assert [m["id"] for m in await backend.models() if m["pipelines"] == ["llm"]] == [
            "org/configured",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
        ]
    finally:
        await backend.aclose()
        await sim.aclose()


@pytest.mark.parametrize("api", ["json", "form"])
async def test_token_is_sent_as_bearer_and_generation_is_remembered(api: str) -> None:
    sim = await start_simulator(api=api)
    backend = LivepeerBackend(LivepeerOptions(gateway_url=sim.url, gateway_token="s3cret"))
    try:
        assert backend.generation is None
        first = await backend.chat(REQUEST)
        assert backend.generation == api
        second = await backend.chat(REQUEST)
        assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
        served = [r for r in sim.requests if r["json"] is not None or r["form"] is not None]
        assert all(r["headers"].get("Authorization") == "Bearer s3cret" for r in served)
        # auto probes JSON once on a legacy gateway, then goes straight to multipart
        expected_json_probes = 1 if api == "form" else 0
        assert sum(1 for r in sim.requests if r["content_type"] == "application/json") == (
            expected_json_probes + (2 if api == "json" else 0)
        )
    finally:
        await backend.aclose()
        await sim.aclose()


async def test_unreachable_gateway_is_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = LivepeerBackend(LivepeerOptions(gateway_url=f"http://127.0.0.1:{port}", connect_timeout=2))
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await backend.chat(REQUEST)
        assert info.value.status == 503 and info.value.code == "upstream_unreachable"
    finally:
        await backend.aclose()
