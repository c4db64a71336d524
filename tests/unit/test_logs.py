"""Redaction (``oai_bridge.redact``) and the logging filters (``oai_bridge.logs``)."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config

import pytest

from oai_bridge.backends.base import BackendConfig
from oai_bridge.backends.livepeer import LivepeerOptions
from oai_bridge.config import Settings
from oai_bridge.errors import UpstreamError, status_error
from oai_bridge.logs import LOG_FORMAT, REQUEST_ID, RedactingFilter, install_filters, log_config
from oai_bridge.redact import REDACTED, redact, register_env_secrets, register_secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer sk-client-secret", "Authorization: Bearer [redacted]"),
        ("bearer eyJabc.def-ghi_jkl", "bearer [redacted]"),
        ("Incorrect API key provided: sk-proj-abcdefghijklmnop1234.", "Incorrect API key provided: [redacted]."),
        ("x-api-key: sk-ant-api03-xyzxyzxyzxyz", "x-api-key: [redacted]"),
        ('{"api_key": "hunter2hunter", "n": 1}', '{"api_key": "[redacted]", "n": 1}'),
        ("x-api-key=abcd1234&b=1", "x-api-key=[redacted]&b=1"),
        ("https://u:pa55word@host/x?key=AIzaSyABCDEF&b=1", "https://[redacted]@host/x?key=[redacted]&b=1"),
        ("token=abcd1234 password: 'letmein!'", "token=[redacted] password: '[redacted]'"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", "jwt [redacted]"),
        # ordinary text is left alone
        ("Missing bearer token", "Missing bearer token"),
        ("basic authentication failed", "basic authentication failed"),
        ("Invalid value for 'max_tokens': 5", "Invalid value for 'max_tokens': 5"),
        ("the task-abcdefghijkl ran; disk-0123456789", "the task-abcdefghijkl ran; disk-0123456789"),
        ("x-api-key header is required", "x-api-key header is required"),
        ("first_token_timeout: 5 s", "first_token_timeout: 5 s"),
        ("", ""),
    ],
)
def test_key_like_text_is_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(redact(text)) == redact(text)


def test_registered_secrets_are_redacted_wherever_they_appear() -> None:
    register_secret("plain-looking-value-42")
    register_secret("plain-looking-value-42-longer")  # one containing another: the longest wins
    register_secret("short")  # too short to register: would redact words
    assert redact("a plain-looking-value-42-longer b plain-looking-value-42c") == f"a {REDACTED} b {REDACTED}c"
    assert redact("short") == "short"
    register_env_secrets({"MY_SERVICE_API_KEY": "svc-value-1234", "HOME": "/root/home-dir"}, ["OTHER"])
    assert redact("svc-value-1234 /root/home-dir") == f"{REDACTED} /root/home-dir"


def test_configured_keys_register_themselves() -> None:
    BackendConfig(name="x", kind="openai_compat", base_url="http://h", api_key="cfg-backend-key-77")
    LivepeerOptions(gateway_url="http://gw", gateway_token="cfg-gateway-token-88")
    Settings(gateway_token="cfg-settings-token-99")
    assert redact("cfg-backend-key-77 cfg-gateway-token-88 cfg-settings-token-99") == " ".join([REDACTED] * 3)
    assert "cfg-settings-token-99" not in repr(Settings(gateway_token="cfg-settings-token-99"))


def test_bridge_errors_are_scrubbed_when_made() -> None:
    register_secret("echoed-upstream-key-5")
    error = status_error(401, "invalid key echoed-upstream-key-5 (Bearer sk-abcdefghijklmnop)")
    assert error.message == f"invalid key {REDACTED} (Bearer {REDACTED})"
    assert str(error) == error.message and b"echoed" not in error.to_json()
    assert UpstreamError("x", param="api_key=abcdefgh").param == f"api_key={REDACTED}"


def _logger(stream: io.StringIO) -> logging.Logger:
    handler = install_filters(logging.StreamHandler(stream))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("oai_bridge.test_logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


async def test_lines_name_their_request_and_hold_no_secret() -> None:
    register_secret("log-secret-value-3")
    stream = io.StringIO()
    log = _logger(stream)
    log.info("outside %s", "log-secret-value-3")

    async def request(rid: str) -> None:
        REQUEST_ID.set(rid)
        await asyncio.sleep(0)
        log.warning("upstream said %r", {"Authorization": "Bearer abcdefgh12345678"})
        try:
            raise ValueError("failed with log-secret-value-3")
        except ValueError:
            log.exception("boom")
        asyncio.get_running_loop().call_soon(log.info, "callback")  # callbacks keep their context
        await asyncio.sleep(0)

    await asyncio.gather(request("req_a"), request("req_b"))
    lines = stream.getvalue().splitlines()
    assert "[-] oai_bridge.test_logs: outside [redacted]" in lines[0]
    assert sum("[req_a]" in line for line in lines) == 3 and sum("[req_b]" in line for line in lines) == 3
    assert "log-secret-value-3" not in stream.getvalue() and "abcdefgh12345678" not in stream.getvalue()
    assert "ValueError: failed with [redacted]" in stream.getvalue()
    assert REQUEST_ID.get() == "-"


def test_the_filter_leaves_clean_records_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "n=%d", (3,), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "n=3"


def test_log_config_routes_uvicorn_through_the_filters(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(log_config("info"))
        register_secret("uvicorn-line-secret-1")
        logging.getLogger("uvicorn.error").info("Started with uvicorn-line-secret-1")
        token = REQUEST_ID.set("req_cfg")
        logging.getLogger("oai_bridge.server").warning("sk-ant-api03-abcdefghijk")
        REQUEST_ID.reset(token)
        logging.getLogger("oai_bridge.server").debug("not shown at info")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "[-] uvicorn.error: Started with [redacted]" in err
    assert "[req_cfg] oai_bridge.server: [redacted]" in err
    assert "not shown" not in err
