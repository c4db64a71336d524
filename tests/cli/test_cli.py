"""The command line as a user runs it: real processes on loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from oai_bridge.config import OPTIONS

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"
EXE = [sys.executable, "-m", "oai_bridge"]
OUTPUT: dict[int, str] = {}  # what each finished process printed, by pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early: {proc.stdout.read() if proc.stdout else b''!r}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


@contextmanager
def running(args: list[str], ready_url: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEPEER_", "OAI_BRIDGE_"))}
    full_env.update(env or {})
    proc = subprocess.Popen(EXE + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
    try:
        wait_http(ready_url, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            OUTPUT[proc.pid] = proc.stdout.read().decode(errors="replace")
            proc.stdout.close()


def chat(base: str, **extra: object) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "cli test"}], **extra}
    return httpx.post(base + "/v1/chat/completions", json=payload, timeout=20)


def test_help_documents_every_option() -> None:
    out = subprocess.run(EXE + ["serve", "--help"], capture_output=True, text=True, check=True).stdout
    for option in OPTIONS:
        assert option.flag in out and option.env in out, option.name
    assert "--config" in out and "simulator" in out
    top = subprocess.run(EXE + ["--help"], capture_output=True, text=True, check=True).stdout
    assert "serve" in top and "simulate" in top
    sim = subprocess.run(EXE + ["simulate", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--api" in sim and "--port" in sim


def test_serve_without_gateway_runs_the_simulator_and_says_so() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(["serve", "--port", str(port)], base + "/health") as proc:
        response = chat(base)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "Simulated reply to: cli test"
    log = OUTPUT[proc.pid]
    assert "BUILT-IN SIMULATOR" in log
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log


def test_serve_against_a_legacy_simulator_with_workers_env_and_config(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    config = tmp_path / "bridge.toml"
    config.write_text(f'[server]\nport = {port}\n\n[livepeer]\nmodels = ["{MODEL}", "my/other-model"]\n')
    with running(["simulate", "--port", str(sim_port), "--api", "form"], f"http://127.0.0.1:{sim_port}/healthz"):
        base = f"http://127.0.0.1:{port}"
        env = {"LIVEPEER_GATEWAY_URL": f"http://127.0.0.1:{sim_port}", "OAI_BRIDGE_WORKERS": "2"}
        with running(["serve", "--config", str(config)], base + "/health", env=env):
            listed = httpx.get(base + "/v1/models", timeout=10).json()["data"]
            assert [m["id"] for m in listed if m["pipelines"] == ["llm"]] == [MODEL, "my/other-model"]
            for _ in range(4):  # spread over both workers; each detects the legacy API by itself
                response = chat(base, stream=True)
                assert response.status_code == 200
                assert response.text.endswith("data: [DONE]\n\n")
                assert '"Simulated"' in response.text


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--gateway-api", "xml"], {}, "option --gateway-api: expected auto, json or form, got 'xml'"),
        (["--gateway", "ftp://x"], {}, "option --gateway: expected an http:// or https:// URL"),
        ([], {"OAI_BRIDGE_PORT": "eighty"}, "env OAI_BRIDGE_PORT:"),
    ],
)
def test_bad_configuration_fails_at_start(args: list[str], env: dict[str, str], message: str) -> None:
    full_env = {**os.environ, **env}
    result = subprocess.run(EXE + ["serve", *args], capture_output=True, text=True, env=full_env, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[livepeer]\ngateway_url = "http://x"\nidle_timeout = = 3\n')
    result = subprocess.run(EXE + ["serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "line 3" in result.stderr
