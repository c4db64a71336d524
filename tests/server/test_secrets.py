"""No API key or bearer token ever shows: the real CLI at debug log level, with keyed backends of
every kind (their simulators, an upstream that echoes the credentials it gets back in a 401, one
that refuses connections, one that times out), driven through successes and every kind of
failure; its whole output and every answer are searched for each secret."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from oai_bridge.backends.generic_sse.wire import DIFY_EXAMPLE
from oai_bridge.simulators import anthropic, generic_sse, livepeer, ollama, openai_compat
from oai_bridge.simulators.common import Fault, RunningServer, serve

EXE = [sys.executable, "-m", "oai_bridge"]

# Keys that look like keys (the patterns catch them even unregistered) and keys that do not (only
# their registration as configured secrets can catch them); env names that look secret and not.
OAI_KEY = "sk-proj-Oai7Secret9Key0Abc123"
ANT_KEY = "sk-ant-api03-AntSecretKey-xyz789"
OLL_KEY = "ollama-cred-4f9c2b7d1e"
GSSE_KEY = "gsse-app-8d2e6f1a9c3b"
LP_KEY = "lp-backend-51c7e0a2f"
GATEWAY_TOKEN = "lp-gateway-93b1d4f6c"
CLIENT_KEY = "sk-client-secret"
SECRETS = [OAI_KEY, ANT_KEY, OLL_KEY, GSSE_KEY, LP_KEY, GATEWAY_TOKEN, CLIENT_KEY]
ENV = {
    "T_OPENAI_API_KEY": OAI_KEY,
    "T_ANTHROPIC_API_KEY": ANT_KEY,
    "OLL_CRED_VALUE": OLL_KEY,
    "GSSE_CRED_VALUE": GSSE_KEY,
    "LP_BACKEND_CRED": LP_KEY,
    "LIVEPEER_GATEWAY_TOKEN": GATEWAY_TOKEN,
}
LP_MODEL = "lp/meta-llama/Meta-Llama-3.1-8B-Instruct"
CLIENT_HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEPEER_", "OAI_BRIDGE_"))}
    env.update(ENV, **extra)
    return env


async def _echo(request: web.Request) -> web.Response:
    """A 401 that repeats every credential it received, bare and in headers, as careless
    upstreams and proxies do."""
    auth = request.headers.get("Authorization", "")
    bare = auth.removeprefix("Bearer ").strip() or request.headers.get("x-api-key", "") or "none"
    message = f"{bare} is not a valid key (got Authorization={auth!r} x-api-key={request.headers.get('x-api-key')!r}"
    message += f" X-Api-Key={request.headers.get('X-Api-Key')!r} url={request.url})"
    body = {"error": {"message": message, "type": "authentication_error"}, "message": message, "status": 401}
    return web.json_response(body, status=401)


@asynccontextmanager
async def echo_server() -> AsyncIterator[RunningServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    server = await serve(app, openai_compat.FaultPlan())
    try:
        yield server
    finally:
        await server.aclose()


def config_text(urls: dict[str, str], dead: str) -> str:
    dify = _toml_table(DIFY_EXAMPLE)
    echo_dify = _toml_table({**DIFY_EXAMPLE, "query": {"key": "{{api_key}}"}})
    return f"""
[livepeer]
gateway_url = "{urls["echo"]}"
gateway_api = "json"

[backends.oai]
kind = "openai_compat"
base_url = "{urls["oai"]}/v1"
api_key_env = "T_OPENAI_API_KEY"

[backends.slow]
kind = "openai_compat"
base_url = "{urls["oai"]}/v1"
api_key_env = "T_OPENAI_API_KEY"
first_token_timeout = 0.5
request_timeout = 0.5

[backends.ant]
kind = "anthropic"
base_url = "{urls["ant"]}"
api_key_env = "T_ANTHROPIC_API_KEY"

[backends.oll]
kind = "ollama"
base_url = "{urls["oll"]}"
api_key_env = "OLL_CRED_VALUE"

[backends.gsse]
kind = "generic_sse"
base_url = "{urls["gsse"]}"
api_key_env = "GSSE_CRED_VALUE"
models = ["dify-app"]
options = {dify}

[backends.lp]
kind = "livepeer"
base_url = "{urls["lp"]}"
api_key_env = "LP_BACKEND_CRED"

[backends.echo_oai]
kind = "openai_compat"
base_url = "{urls["echo"]}/v1"
api_key_env = "T_OPENAI_API_KEY"

[backends.echo_ant]
kind = "anthropic"
base_url = "{urls["echo"]}"
api_key_env = "T_ANTHROPIC_API_KEY"

[backends.echo_oll]
kind = "ollama"
base_url = "{urls["echo"]}"
api_key_env = "OLL_CRED_VALUE"

[backends.echo_gsse]
kind = "generic_sse"
base_url = "{urls["echo"]}"
api_key_env = "GSSE_CRED_VALUE"
options = {echo_dify}

[backends.echo_lp]
kind = "livepeer"
base_url = "{urls["echo"]}"
api_key_env = "LP_BACKEND_CRED"

[backends.dead]
kind = "openai_compat"
base_url = "{dead}/v1"
api_key_env = "T_OPENAI_API_KEY"
connect_timeout = 2

{
        _routes(
            [
                "livepeer",
                "oai",
                "slow",
                "ant",
                "oll",
                "gsse",
                "lp",
                "echo_oai",
                "echo_ant",
                "echo_oll",
                "echo_gsse",
                "echo_lp",
                "dead",
            ]
        )
    }
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return _toml_table(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return orjson.dumps(value).decode()  # strings, numbers and booleans read the same in TOML


def _toml_table(table: dict[str, Any]) -> str:
    return "{ " + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in table.items()) + " }"


def _routes(names: list[str]) -> str:
    return "\n".join(f'[[routes]]\nmodel = "{name}/*"\nbackend = "{name}"\n' for name in names)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(200):
            if proc.returncode is not None:
                raise AssertionError(f"the bridge exited early:\n{_read(log)}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the bridge never became ready:\n{_read(log)}")


def chat_body(model: str, *, stream: bool = False, text: str = "secret test") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream, "max_tokens": 8}


@pytest.mark.parametrize("workers", [1, 2])
async def test_no_secret_in_any_log_line_or_answer(tmp_path: Path, workers: int) -> None:
    sims = {
        "oai": await openai_compat.start(api_key=OAI_KEY),
        "ant": await anthropic.start(api_key=ANT_KEY),
        "oll": await ollama.start(),
        "gsse": await generic_sse.start(api_key=GSSE_KEY),
    }
    lp = await livepeer.start_simulator(api="json")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    seen: list[str] = []  # every status line, header and body the client got
    statuses: dict[str, int] = {}
    try:
        async with echo_server() as echo:
            urls = {name: sim.url for name, sim in sims.items()} | {"lp": lp.url, "echo": echo.url}
            config = tmp_path / "bridge.toml"
            config.write_text(config_text(urls, f"http://127.0.0.1:{free_port()}"))
            log = tmp_path / "bridge.log"
            with log.open("wb") as out:
                args = ["serve", "--config", str(config), "--port", str(port), "--log-level", "debug"]
                args += ["--retries", "0", "--breaker-failures", "1000", "--workers", str(workers)]
                proc = await asyncio.create_subprocess_exec(
                    *EXE, *args, stdout=out, stderr=subprocess.STDOUT, env=clean_env()
                )
            try:
                await _wait_ready(base + "/health", proc, log)
                async with httpx.AsyncClient(base_url=base, timeout=20, headers=CLIENT_HEADERS) as client:

                    async def call(label: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
                        response = await client.request(method, path, **kwargs)
                        statuses[label] = response.status_code
                        seen.append(f"{label} {response.status_code} {dict(response.headers)!r}\n{response.text}")
                        return response

                    # successes, every kind, stream and not
                    for model in ("oai/gpt-4o-mini", "ant/claude-3-5-haiku", "oll/llama3.2", "gsse/dify-app", LP_MODEL):
                        for stream in (False, True):
                            r = await call(
                                f"ok {model} {stream}",
                                "POST",
                                "/v1/chat/completions",
                                json=chat_body(model, stream=stream),
                            )
                            assert r.status_code == 200, r.text
                    await call("embeddings ok", "POST", "/v1/embeddings", json={"model": "oai/e", "input": "hi"})
                    await call("models", "GET", "/v1/models")
                    await call("health", "GET", "/health/backends")
                    # upstreams that echo the credentials they got, in a 401
                    for model in ("echo_oai/m", "echo_ant/m", "echo_oll/m", "echo_gsse/m", "echo_lp/m", "livepeer/m"):
                        for stream in (False, True):
                            await call(
                                f"echo {model} {stream}",
                                "POST",
                                "/v1/chat/completions",
                                json=chat_body(model, stream=stream),
                            )
                    await call("echo embeddings", "POST", "/v1/embeddings", json={"model": "echo_oai/e", "input": "x"})
                    await call(
                        "echo images", "POST", "/v1/images/generations", json={"model": "livepeer/sd", "prompt": "x"}
                    )
                    # the keyed simulators say 401 and 500 with the key in the message, also mid-stream
                    for name, key in (("oai", OAI_KEY), ("ant", ANT_KEY), ("oll", OLL_KEY), ("gsse", GSSE_KEY)):
                        model = {
                            "oai": "oai/m",
                            "ant": "ant/claude-3-5-haiku",
                            "oll": "oll/llama3.2",
                            "gsse": "gsse/dify-app",
                        }[name]
                        for status in (401, 500):
                            for stream in (False, True):
                                sims[name].plan.add(
                                    Fault("status", status=status, message=f"bad key {key}: Bearer {key}")
                                )
                                await call(
                                    f"{name} {status} {stream}",
                                    "POST",
                                    "/v1/chat/completions",
                                    json=chat_body(model, stream=stream),
                                )
                        sims[name].plan.add(Fault("status", status=500, message=f"broke; key={key} {key}", after=2))
                        await call(
                            f"{name} midstream",
                            "POST",
                            "/v1/chat/completions",
                            json=chat_body(model, stream=True, text="a b c d e f"),
                        )
                    # connection refused, timeouts
                    for stream in (False, True):
                        await call(
                            f"refused {stream}", "POST", "/v1/chat/completions", json=chat_body("dead/m", stream=stream)
                        )
                        sims["oai"].plan.add(Fault("silent", delay=3))
                        await call(
                            f"timeout {stream}", "POST", "/v1/chat/completions", json=chat_body("slow/m", stream=stream)
                        )
                    # bad client input, with the client's own key in its headers
                    await call("bad json", "POST", "/v1/chat/completions", content=b"{nope")
                    await call("no messages", "POST", "/v1/chat/completions", json={"model": "oai/m"})
                    await call(
                        "bad value", "POST", "/v1/chat/completions", json={**chat_body("oai/m"), "temperature": "hot"}
                    )
                    await call("too large", "POST", "/v1/embeddings", content=b"x" * (9 << 20))
                    await call("unknown path", "GET", "/v1/nothing")
                    await call("wrong method", "DELETE", "/v1/models")
                    await call("bad multipart", "POST", "/v1/audio/transcriptions", content=b"--x\r\n")
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    finally:
        for sim in sims.values():
            await sim.aclose()
        await lp.aclose()
    output = log.read_text(errors="replace")
    answers = "\n".join(seen)
    # the run did what it should: successes, the failures expected, debug logging, request ids
    assert statuses["echo echo_oai/m False"] == 401 and statuses["echo livepeer/m False"] == 502
    assert statuses["oai 500 False"] == 502 and statuses["refused False"] == 503
    assert statuses["timeout False"] == 504 and statuses["too large"] == 413 and statuses["bad json"] == 400
    assert "[req_" in output and "[-] uvicorn.error: Application startup complete." in output
    assert answers.count("[redacted]") >= 20, answers  # the echoes really came back, scrubbed
    for secret in SECRETS:
        assert secret not in output, f"{secret} in the log:\n{output}"
        assert secret not in answers, f"{secret} in an answer:\n{answers}"


def test_models_command_help_and_config_errors_print_no_secret(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    dead = f"http://127.0.0.1:{free_port()}"
    config.write_text(
        f'[backends.a]\nkind = "openai_compat"\nbase_url = "{dead}"\napi_key_env = "T_OPENAI_API_KEY"\n'
        f'[backends.b]\nkind = "ollama"\nbase_url = "http://user:{OLL_KEY}@127.0.0.1:1"\n'
        'api_key_env = "OLL_CRED_VALUE"\n'
    )
    runs = [
        ["models", "--json", "--config", str(config)],
        ["serve", "--help"],
        ["serve", "--gateway", GATEWAY_TOKEN],  # a token pasted where the URL goes
        ["serve", "--port", OAI_KEY],
        ["serve", "--gateway-tokn", GATEWAY_TOKEN],  # a misspelled flag: argparse quotes what follows
    ]
    bad_file = tmp_path / "bad.toml"  # a key pasted into the wrong field of a backend
    bad_file.write_text(f'[backends.x]\nkind = "ollama"\nbase_url = "{OLL_KEY}"\napi_key_env = "OLL_CRED_VALUE"\n')
    runs.append(["serve", "--config", str(bad_file)])
    procs = [subprocess.Popen(EXE + args, stdout=PIPE, stderr=PIPE, text=True, env=clean_env()) for args in runs]
    outputs = []
    for number, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=60)
        outputs.append(f"run {number}: {proc.returncode}\n{stdout}\n{stderr}")
    text = "\n".join(outputs)
    assert "unreachable" in text and "configuration error" in text and "unrecognized arguments" in text, text
    assert text.count("[redacted]") >= 4, text
    for secret in SECRETS:
        assert secret not in text, f"{secret} printed:\n{text}"


@pytest.mark.parametrize("name", ["LIVEPEER_GATEWAY_TOKEN", "MY_SERVICE_API_KEY", "X_SECRET", "DB_PASSWORD"])
def test_secret_looking_env_names(name: str) -> None:
    from oai_bridge.redact import looks_secret_name

    assert looks_secret_name(name)
    assert not looks_secret_name("LIVEPEER_DEFAULT_MAX_TOKENS") and not looks_secret_name("KEYBOARD")
