"""Settings: defaults < TOML file < env vars < CLI flags, and the error messages for bad values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oai_bridge.cli import build_parser
from oai_bridge.config import CORS_ALLOW_HEADERS, OPTIONS, ConfigError, Settings, load_settings

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8080,
    "workers": 1,
    "log_level": "info",
    "keepalive_interval": 15.0,
    "max_body_bytes": 8 * 1024 * 1024,
    "max_upload_bytes": 25 * 1024 * 1024,
    "max_messages": 2048,
    "max_json_depth": 64,
    "max_header_bytes": 65536,
    "shutdown_grace": 25.0,
    "cors_origins": [],
    "cors_allow_headers": list(CORS_ALLOW_HEADERS),
    "cors_max_age": 600,
    "gateway_url": None,
    "gateway_api": "auto",
    "gateway_token": None,
    "cli_url": None,
    "models": [],
    "model_pipelines": {},
    "vision": "off",
    "vision_model": "Salesforce/blip-image-captioning-large",
    "default_max_tokens": 256,
    "strip_assistant_header": True,
    "connect_timeout": 10.0,
    "first_token_timeout": 120.0,
    "idle_timeout": 60.0,
    "request_timeout": 600.0,
    "retries": 2,
    "backoff": 0.25,
    "max_retry_wait": 10.0,
    "silent_timeout": 8.0,
    "breaker_failures": 5,
    "breaker_cooldown": 30.0,
    "max_resumes": 3,
}

FULL_TOML = """\
# every option
[server]
host = "0.0.0.0"
port = 9000
workers = 4
log_level = "DEBUG"
keepalive_interval = 5
max_body_bytes = 1048576
max_upload_bytes = 2048
max_messages = 16
max_json_depth = 8
max_header_bytes = 4096
shutdown_grace = 3
cors_origins = ["https://app.example.com"]
cors_allow_headers = ["authorization"]
cors_max_age = 60

[livepeer]
gateway_url = "https://gw.example.com:8935/"
gateway_api = "form"
gateway_token = "sekret"
cli_url = "http://127.0.0.1:5935"
models = ["meta-llama/Meta-Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"]
model_pipelines = { "my/captioner" = "image-to-text" }
vision = "caption"
vision_model = "my/captioner"
default_max_tokens = 128
strip_assistant_header = false
connect_timeout = 2.5
first_token_timeout = 30
idle_timeout = 12
request_timeout = 90.0

[failover]
retries = 0
backoff = 0.5
max_retry_wait = 3
silent_timeout = 4.5
breaker_failures = 2
breaker_cooldown = 60
max_resumes = 1
"""

FULL_VALUES: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 9000,
    "workers": 4,
    "log_level": "debug",
    "keepalive_interval": 5.0,
    "max_body_bytes": 1048576,
    "max_upload_bytes": 2048,
    "max_messages": 16,
    "max_json_depth": 8,
    "max_header_bytes": 4096,
    "shutdown_grace": 3.0,
    "cors_origins": ["https://app.example.com"],
    "cors_allow_headers": ["authorization"],
    "cors_max_age": 60,
    "gateway_url": "https://gw.example.com:8935",
    "gateway_api": "form",
    "gateway_token": "sekret",
    "cli_url": "http://127.0.0.1:5935",
    "models": ["meta-llama/Meta-Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"],
    "model_pipelines": {"my/captioner": "image-to-text"},
    "vision": "caption",
    "vision_model": "my/captioner",
    "default_max_tokens": 128,
    "strip_assistant_header": False,
    "connect_timeout": 2.5,
    "first_token_timeout": 30.0,
    "idle_timeout": 12.0,
    "request_timeout": 90.0,
    "retries": 0,
    "backoff": 0.5,
    "max_retry_wait": 3.0,
    "silent_timeout": 4.5,
    "breaker_failures": 2,
    "breaker_cooldown": 60.0,
    "max_resumes": 1,
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oai-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def exact_types(settings: Settings, values: dict[str, Any]) -> None:
    got = settings.to_dict()
    assert (got.pop("backends"), got.pop("routes")) == ([], [])
    assert got == values
    for name, value in values.items():
        assert type(got[name]) is type(value), name


def cli_values(*argv: str) -> dict[str, Any]:
    """What ``oai-bridge serve ARGV`` hands to ``load_settings``."""
    args = build_parser().parse_args(["serve", *argv])
    return {o.name: getattr(args, o.name) for o in OPTIONS}


# ----------------------------------------------------------------------------- precedence


def test_defaults() -> None:
    settings = load_settings(environ={})
    exact_types(settings, DEFAULTS)
    assert settings == Settings()
    assert settings.simulated is True
    assert [o.name for o in OPTIONS] == list(DEFAULTS)
    assert {o.name: o.default for o in OPTIONS} == DEFAULTS
    with pytest.raises(ConfigError, match="no Livepeer gateway URL"):
        settings.livepeer_options()


def test_defaults_ignore_unrelated_env_and_empty_values() -> None:
    env = {"PORT": "1", "OAI_BRIDGE_PORT": "", "LIVEPEER_GATEWAY_URL": "", "OAI_BRIDGE_CONFIG": ""}
    exact_types(load_settings(environ=env), DEFAULTS)


def test_file_values(tmp_path: Path) -> None:
    settings = load_settings(config_file=write(tmp_path, FULL_TOML), environ={})
    exact_types(settings, FULL_VALUES)
    assert settings.simulated is False
    opts = settings.livepeer_options()
    assert (opts.gateway_url, opts.gateway_api, opts.gateway_token, opts.cli_url) == (
        "https://gw.example.com:8935",
        "form",
        "sekret",
        "http://127.0.0.1:5935",
    )
    assert opts.models == FULL_VALUES["models"]
    assert (opts.default_max_tokens, opts.strip_assistant_header) == (128, False)
    assert (opts.connect_timeout, opts.first_token_timeout, opts.idle_timeout, opts.request_timeout) == (
        2.5,
        30.0,
        12.0,
        90.0,
    )
    assert settings.livepeer_options("http://other:1").gateway_url == "http://other:1"


def test_file_from_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9001\n")
    assert load_settings(environ={"OAI_BRIDGE_CONFIG": str(path)}).port == 9001
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 9002\n")
    # An explicit --config wins over OAI_BRIDGE_CONFIG.
    assert load_settings(config_file=other, environ={"OAI_BRIDGE_CONFIG": str(path)}).port == 9002


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    settings = load_settings(config_file=write(tmp_path, "[livepeer]\nidle_timeout = 5\n"), environ={})
    exact_types(settings, DEFAULTS | {"idle_timeout": 5.0})


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {
        "OAI_BRIDGE_PORT": "9100",
        "OAI_BRIDGE_LOG_LEVEL": "warning",
        "LIVEPEER_GATEWAY_URL": "http://10.0.0.2:8935",
        "LIVEPEER_GATEWAY_API": "json",
        "LIVEPEER_MODELS": "a, b,,c ",
        "LIVEPEER_STRIP_ASSISTANT_HEADER": "yes",
        "LIVEPEER_IDLE_TIMEOUT": "7.5",
        "OAI_BRIDGE_WORKERS": "",  # empty: not set, the file's value stays
    }
    settings = load_settings(config_file=write(tmp_path, FULL_TOML), environ=env)
    exact_types(
        settings,
        FULL_VALUES
        | {
            "port": 9100,
            "log_level": "warning",
            "gateway_url": "http://10.0.0.2:8935",
            "gateway_api": "json",
            "models": ["a", "b", "c"],
            "strip_assistant_header": True,
            "idle_timeout": 7.5,
        },
    )


def test_cli_overrides_env(tmp_path: Path) -> None:
    env = {"OAI_BRIDGE_PORT": "9100", "LIVEPEER_GATEWAY_URL": "http://10.0.0.2:8935", "LIVEPEER_MODELS": "e1"}
    cli = cli_values("--port", "9200", "--gateway", "http://cli-gw:8935/", "--models", "m1,m2", "--workers", "3")
    settings = load_settings(cli, config_file=write(tmp_path, FULL_TOML), environ=env)
    exact_types(
        settings,
        FULL_VALUES
        | {
            "port": 9200,
            "gateway_url": "http://cli-gw:8935",
            "models": ["m1", "m2"],
            "workers": 3,
        },
    )


def test_cli_none_means_not_given() -> None:
    env = {"OAI_BRIDGE_PORT": "9100"}
    assert load_settings({"port": None, "host": None}, environ=env).port == 9100
    assert load_settings(cli_values(), environ=env).port == 9100
    assert load_settings({"unknown_name": "x", "port": 9300}, environ=env).port == 9300


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:8935", "http://127.0.0.1:8935"),
        ("https://gw.example.com/", "https://gw.example.com"),
        ("https://gw.example.com/base//", "https://gw.example.com/base"),
        ("  http://h:1  ", "http://h:1"),
        ("", None),
    ],
)
def test_gateway_url_accepted(value: str, expected: str | None) -> None:
    assert load_settings(cli_values("--gateway", value), environ={}).gateway_url == expected


@pytest.mark.parametrize("value", ["127.0.0.1:8935", "gw.example.com", "ftp://gw.example.com", "htp://x", "http://"])
def test_gateway_url_rejected(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cli_values("--gateway", value), environ={})
    assert str(info.value).startswith("option --gateway: ")
    with pytest.raises(ConfigError, match="^env LIVEPEER_GATEWAY_URL: "):
        load_settings(environ={"LIVEPEER_GATEWAY_URL": value})


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({"LIVEPEER_MODELS": "a,b"}, "models", ["a", "b"]),
        (
            {"LIVEPEER_MODELS": " meta-llama/Meta-Llama-3.1-8B-Instruct , x "},
            "models",
            ["meta-llama/Meta-Llama-3.1-8B-Instruct", "x"],
        ),
        ({"LIVEPEER_MODELS": ",,"}, "models", []),
        ({"LIVEPEER_STRIP_ASSISTANT_HEADER": "off"}, "strip_assistant_header", False),
        ({"LIVEPEER_STRIP_ASSISTANT_HEADER": "TRUE"}, "strip_assistant_header", True),
        ({"LIVEPEER_STRIP_ASSISTANT_HEADER": "0"}, "strip_assistant_header", False),
        ({"OAI_BRIDGE_PORT": "0"}, "port", 0),
        ({"OAI_BRIDGE_KEEPALIVE_INTERVAL": "0"}, "keepalive_interval", 0.0),
        ({"LIVEPEER_GATEWAY_TOKEN": "tok en"}, "gateway_token", "tok en"),
        ({"LIVEPEER_CLI_URL": "http://127.0.0.1:5935/"}, "cli_url", "http://127.0.0.1:5935"),
    ],
)
def test_env_values(env: dict[str, str], name: str, expected: Any) -> None:
    assert getattr(load_settings(environ=env), name) == expected


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('models = ["a", "b"]', ["a", "b"]),
        ('models = "a, b"', ["a", "b"]),
        ('models = ["a", "", "  "]', ["a"]),
        ("models = []", []),
    ],
)
def test_models_from_file(tmp_path: Path, toml: str, expected: list[str]) -> None:
    assert load_settings(config_file=write(tmp_path, f"[livepeer]\n{toml}\n"), environ={}).models == expected


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    assert str(info.value) == f"config file {path}: not found"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[server]\nport = 80\nhost = \n", 3),
        ("[server]\nport = 80\n[livepeer\n", 3),
        ('[livepeer]\ngateway_url = "http://x\n', 2),
        ("port = = 1\n", 1),
        ("[server]\nport = 1\nport = 2\n", 3),
    ],
)
def test_bad_toml_syntax_mentions_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    message = str(info.value)
    assert message.startswith(f"config file {path}")
    assert f"line {line}" in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nprot = 80\n", "line 2: [server] prot: unknown field"),
        ("[livepeer]\ngateway = 'http://x'\n", "[livepeer] gateway: unknown field"),
        ("[server]\ngateway_url = 'http://x'\n", "[server] gateway_url: unknown field"),
        ("[livepeer]\nport = 80\n", "[livepeer] port: unknown field"),
        ("[sever]\nport = 80\n", "unknown section [sever]"),
        ("[anthropic]\napi_key = 'k'\n", "line 1: unknown section [anthropic]"),
        ("port = 80\n", "unknown section [port]"),
        ("[server.extra]\nport = 80\n", "[server] extra: unknown field"),
    ],
)
def test_unknown_key_or_section(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    message = str(info.value)
    assert message.startswith(f"config file {path}"), message
    assert named in message


def test_unknown_field_lists_known_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=write(tmp_path, "[server]\nprot = 80\n"), environ={})
    assert str(info.value).endswith(
        "(known: host, port, workers, log_level, keepalive_interval, max_body_bytes, max_upload_bytes, "
        "max_messages, max_json_depth, max_header_bytes, shutdown_grace, cors_origins, cors_allow_headers, "
        "cors_max_age)"
    )


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("livepeer", 'idle_timeout = "soon"'),
        ("livepeer", "idle_timeout = -1"),
        ("livepeer", "idle_timeout = true"),
        ("livepeer", "idle_timeout = nan"),
        ("livepeer", "idle_timeout = [1]"),
        ("livepeer", "default_max_tokens = 0"),
        ("livepeer", 'default_max_tokens = "many"'),
        ("livepeer", "default_max_tokens = 1.5"),
        ("livepeer", "strip_assistant_header = 'maybe'"),
        ("livepeer", "gateway_api = 'grpc'"),
        ("livepeer", "gateway_url = 'localhost:8935'"),
        ("server", "port = 70000"),
        ("server", "port = -1"),
        ("server", "port = 8080.5"),
        ("server", "workers = 0"),
        ("server", "workers = true"),
        ("server", "log_level = 'verbose'"),
    ],
)
def test_bad_value_names_section_and_key(tmp_path: Path, section: str, line: str) -> None:
    path = write(tmp_path, f"[{section}]\n{line}\n")
    key = line.split(" ", 1)[0]
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    assert str(info.value).startswith(f"config file {path}, line 2: [{section}] {key}: ")


def test_bad_number_message(tmp_path: Path) -> None:
    path = write(tmp_path, '[livepeer]\nidle_timeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path, environ={})
    expected = f"config file {path}, line 2: [livepeer] idle_timeout: could not convert string to float: 'soon'"
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("env", "where"),
    [
        ({"LIVEPEER_IDLE_TIMEOUT": "soon"}, "env LIVEPEER_IDLE_TIMEOUT: "),
        ({"LIVEPEER_IDLE_TIMEOUT": "nan"}, "env LIVEPEER_IDLE_TIMEOUT: "),
        ({"OAI_BRIDGE_WORKERS": "two"}, "env OAI_BRIDGE_WORKERS: "),
        ({"OAI_BRIDGE_WORKERS": "1.5"}, "env OAI_BRIDGE_WORKERS: "),
        ({"OAI_BRIDGE_PORT": "65536"}, "env OAI_BRIDGE_PORT: "),
        ({"LIVEPEER_STRIP_ASSISTANT_HEADER": "maybe"}, "env LIVEPEER_STRIP_ASSISTANT_HEADER: "),
        ({"LIVEPEER_GATEWAY_API": "JSON"}, "env LIVEPEER_GATEWAY_API: "),
        ({"OAI_BRIDGE_LOG_LEVEL": "trace"}, "env OAI_BRIDGE_LOG_LEVEL: "),
    ],
)
def test_bad_env_value(env: dict[str, str], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert str(info.value).startswith(where)


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (("--port", "http"), "option --port: "),
        (("--idle-timeout", "-3"), "option --idle-timeout: "),
        (("--default-max-tokens", "0"), "option --default-max-tokens: "),
        (("--gateway-api", "grpc"), "option --gateway-api: "),
    ],
)
def test_bad_cli_value(argv: tuple[str, ...], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cli_values(*argv), environ={})
    assert str(info.value).startswith(where)


def test_settings_dict_round_trip(tmp_path: Path) -> None:
    settings = load_settings(config_file=write(tmp_path, FULL_TOML), environ={})
    assert Settings.from_dict(settings.to_dict() | {"not_an_option": 1}) == settings
