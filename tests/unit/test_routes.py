"""Backends and routes from the config file and env vars: parsing, and errors naming line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from oai_bridge.config import ConfigError, Settings, load_settings
from oai_bridge.routes import BackendSpec, Route, Upstream, discover, locate

CONFIG = """\
[server]
port = 8080

[backends.gw1]
kind = "livepeer"
base_url = "http://10.0.0.5:8935/"
api_key_env = "GW1_TOKEN"
first_token_timeout = 60
models = ["meta-llama/Meta-Llama-3.1-8B-Instruct"]

[backends.gw1.options]
gateway_api = "json"

[backends.local]
kind = "ollama"
base_url = "http://127.0.0.1:11434"

[[routes]]
model = "llama"
aliases = ["default"]
upstreams = [
  { backend = "gw1", model = "meta-llama/Meta-Llama-3.1-8B-Instruct" },
  { backend = "local", model = "llama3.1:8b", resume = true, weight = 2 },
]

[[routes]]
model = "ollama/*"
backend = "local"
strategy = "weighted"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_backends_and_routes_from_the_file(tmp_path: Path) -> None:
    settings = load_settings(config_file=write(tmp_path, CONFIG), environ={"OLLAMA_URL": "http://ignored:1"})
    assert settings.backends == [
        BackendSpec(
            name="gw1",
            kind="livepeer",
            base_url="http://10.0.0.5:8935",
            api_key_env="GW1_TOKEN",
            first_token_timeout=60.0,
            models=("meta-llama/Meta-Llama-3.1-8B-Instruct",),
            options={"gateway_api": "json"},
        ),
        BackendSpec(name="local", kind="ollama", base_url="http://127.0.0.1:11434"),
    ]
    assert settings.routes == [
        Route(
            model="llama",
            aliases=("default",),
            upstreams=(
                Upstream(backend="gw1", model="meta-llama/Meta-Llama-3.1-8B-Instruct"),
                Upstream(backend="local", model="llama3.1:8b", resume=True, weight=2),
            ),
        ),
        Route(model="ollama/*", strategy="weighted", upstreams=(Upstream(backend="local"),)),
    ]
    assert settings.routes[1].prefix == "ollama/"
    assert settings.simulated is False and settings.livepeer_backend is False
    assert settings.backends[0].api_key({"GW1_TOKEN": "t0k"}) == "t0k"
    # workers receive the settings as JSON and rebuild them exactly
    assert Settings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[backends.a]\nkind = "ollama"\nbase_url = "ftp://x"\n', "line 3: [backends.a] base_url: expected an http"),
        ('[backends.a]\nkind = "olama"\nbase_url = "http://x"\n', "line 2: [backends.a] kind: unknown kind 'olama'"),
        ('[backends.a]\nbase_url = "http://x"\n', "line 1: [backends.a]: missing field 'kind'"),
        ('[backends.a]\nkind = "ollama"\n', "line 1: [backends.a]: missing field 'base_url'"),
        (
            '[backends.a]\nkind = "ollama"\nbase_url = "http://x"\nidle_timeout = -2\n',
            "line 4: [backends.a] idle_timeout: expected seconds >= 0",
        ),
        ('[backends.a]\nkind = "ollama"\nbase_url = "http://x"\nkey = 1\n', "line 4: [backends.a] key: unknown field"),
        (
            '[backends.a]\nkind = "ollama"\nbase_url = "http://x"\n\n[[routes]]\nmodel = "m"\nbackend = "b"\n',
            "line 7: [[routes]] #1 backend: unknown backend 'b' (declared: a)",
        ),
        (
            '[backends.a]\nkind = "ollama"\nbase_url = "http://x"\n\n[[routes]]\nmodel = "m"\nbackend = "a"\n'
            '[[routes]]\nmodel = "n"\naliases = ["m"]\nbackend = "a"\n',
            "line 10: [[routes]] #2 aliases: 'm' is already routed by route #1",
        ),
        (
            '[backends.a]\nkind = "ollama"\nbase_url = "http://x"\n[[routes]]\nmodel = "m*"\nbackend = "a"\n',
            "line 5: [[routes]] #1 model: a pattern must look like 'prefix/*'",
        ),
        (
            '[backends.a]\nkind = "ollama"\nbase_url = "http://x"\n[[routes]]\nmodel = "m"\n'
            'upstreams = [{ backend = "a", weight = 0 }]\n',
            "line 6: [[routes]] #1 upstreams: weight must be a whole number >= 1",
        ),
        (
            '[backends.a]\nkind = "ollama"\nbase_url = "http://x"\n[[routes]]\nmodel = "m"\n'
            'strategy = "random"\nbackend = "a"\n',
            "line 6: [[routes]] #1 strategy: expected fallback or weighted",
        ),
        (
            '[livepeer]\ngateway_url = "http://gw:1"\n[[routes]]\nmodel = "m"\n'
            'upstreams = [{ backend = "livepeer", resume = true }]\n',
            "[[routes]] #1 upstreams: backend 'livepeer' cannot continue an answer",
        ),
        (
            '[livepeer]\ngateway_url = "http://gw:1"\n[backends.livepeer]\nkind = "ollama"\nbase_url = "http://x"\n',
            "both declare a backend named 'livepeer'",
        ),
        ("[backends]\na = 1\n", "line 2: [backends.a]: must be a table"),
    ],
)
def test_bad_declarations_name_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    assert str(info.value).startswith(f"config file {path}"), str(info.value)
    assert message in str(info.value)


def test_env_discovery_without_a_file() -> None:
    env = {
        "OLLAMA_URL": "http://127.0.0.1:11434",
        "LLAMACPP_URL": "http://127.0.0.1:8081",
        "LMSTUDIO_URL": "http://127.0.0.1:1234/v1/",
        "OPENAI_API_KEY": "sk-test",
        "ANTHROPIC_API_KEY": "sk-ant",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",
    }
    found = {b.name: (b.kind, b.base_url, b.api_key_env) for b in discover(env)}
    assert found == {
        "ollama": ("ollama", "http://127.0.0.1:11434", None),
        "llamacpp": ("openai_compat", "http://127.0.0.1:8081/v1", None),
        "lmstudio": ("openai_compat", "http://127.0.0.1:1234/v1", None),
        "openai": ("openai_compat", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": ("anthropic", "http://127.0.0.1:9", "ANTHROPIC_API_KEY"),
    }
    settings = load_settings(environ={"OLLAMA_URL": "http://127.0.0.1:11434"})
    assert [b.name for b in settings.backends] == ["ollama"]
    assert settings.simulated is False and settings.livepeer_backend is False
    both = load_settings(environ={"OLLAMA_URL": "http://o:1", "LIVEPEER_GATEWAY_URL": "http://gw:2"})
    assert both.livepeer_backend and [b.name for b in both.backends] == ["ollama"]
    with pytest.raises(ConfigError, match="env OLLAMA_URL: expected an http"):
        load_settings(environ={"OLLAMA_URL": "localhost:11434"})


def test_locate() -> None:
    text = "[a]\nx = 1\n[b.c]\ny = 2\n[[r]]\nz = 1\n[[r]]\nz = 2\n"
    assert locate(text, ("a",), "x") == 2
    assert locate(text, ("b", "c"), "y") == 4
    assert locate(text, ("b", "c")) == 3
    assert locate(text, ("r", 1), "z") == 8
    assert locate(text, ("r", 0)) == 5
    assert locate(text, ("nope",)) is None
