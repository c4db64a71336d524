"""CORS: off by default (no layer at all); when origins are configured, preflights are answered
for every route (the raw chat route too) and every answer to an allowed origin — JSON, streams,
errors, 404s — carries the CORS headers a browser needs."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from routedstack import RoutedStack, Up, start_routed

from oai_bridge.config import CORS_ALLOW_HEADERS, ConfigError, Settings, load_settings
from oai_bridge.server.app import BridgeApp, create_app
from oai_bridge.simulators.common import Fault

ORIGIN = "https://app.example.com"
CHAT = {"model": "oa/gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}
#: What openai-node (dangerouslyAllowBrowser) and anthropic-ts ask for, plus one the bridge refuses.
REQUESTED = (
    "authorization, content-type, x-stainless-os, x-stainless-retry-count, openai-organization, "
    "x-api-key, anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, x-evil"
)


def _stack(**settings: object) -> Iterator[RoutedStack]:
    stack = start_routed([Up("oa", "openai_compat")], retries=0, **settings)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def cors() -> Iterator[RoutedStack]:
    yield from _stack(cors_origins=[ORIGIN, "http://localhost:5173"])


@pytest.fixture(scope="module")
def plain() -> Iterator[RoutedStack]:
    yield from _stack()


def preflight(stack: RoutedStack, path: str, origin: str = ORIGIN, method: str = "POST") -> httpx.Response:
    headers = {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": REQUESTED}
    return httpx.options(stack.url + path, headers=headers, timeout=10)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def test_off_by_default_there_is_no_layer_and_no_cors_header(plain: RoutedStack) -> None:
    assert type(create_app(Settings())) is BridgeApp
    assert load_settings(environ={}).cors_origins == []
    response = preflight(plain, "/v1/chat/completions")
    assert response.status_code == 405 and not cors_headers(response)
    for response in (
        httpx.post(plain.url + "/v1/chat/completions", json=CHAT, headers={"Origin": ORIGIN}, timeout=10),
        httpx.get(plain.url + "/v1/models", headers={"Origin": ORIGIN}, timeout=10),
    ):
        assert response.status_code == 200 and not cors_headers(response)
        assert "origin" not in response.headers.get("vary", "").lower()


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/chat/completions", "/v1/models", "/v1/embeddings", "/v1/audio/speech", "/nope"]
)
def test_a_preflight_from_an_allowed_origin_is_answered_for_every_route(cors: RoutedStack, path: str) -> None:
    response = preflight(cors, path)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["vary"] == "Origin"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "GET" in response.headers["access-control-allow-methods"]
    allowed = [h.strip() for h in response.headers["access-control-allow-headers"].split(",")]
    assert allowed == [h.strip() for h in REQUESTED.split(",") if h.strip() != "x-evil"]
    assert response.headers["access-control-max-age"] == "600"
    assert response.headers["x-request-id"].startswith("req_")


def test_a_preflight_from_another_origin_is_refused(cors: RoutedStack) -> None:
    for origin in ("https://evil.example.com", "https://app.example.com.evil.net", "null"):
        response = preflight(cors, "/v1/chat/completions", origin=origin)
        assert response.status_code == 403
        assert not cors_headers(response)
        assert response.json()["error"]["code"] == "cors_origin_not_allowed"
        assert response.headers["x-request-id"]


def test_origins_match_case_insensitively_and_each_listed_origin_works(cors: RoutedStack) -> None:
    for origin in ("HTTPS://APP.EXAMPLE.COM", "http://localhost:5173"):
        response = preflight(cors, "/v1/models", origin=origin, method="GET")
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == origin


def _check_actual(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["vary"] == "Origin"
    exposed = [h.strip() for h in response.headers["access-control-expose-headers"].split(",")]
    assert "x-request-id" in exposed and "retry-after" in exposed
    assert response.headers["x-request-id"]


def test_every_kind_of_answer_to_an_allowed_origin_carries_cors_headers(cors: RoutedStack) -> None:
    headers = {"Origin": ORIGIN, "Authorization": "Bearer sk-browser"}
    with httpx.Client(base_url=cors.url, headers=headers, timeout=10) as client:
        _check_actual(client.post("/v1/chat/completions", json=CHAT), 200)
        stream = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        _check_actual(stream, 200)
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.text.endswith("data: [DONE]\n\n")
        _check_actual(client.post("/v1/chat/completions", content=b"{nope"), 400)
        cors.plan("oa").add(Fault("status", status=500))
        _check_actual(client.post("/v1/chat/completions", json=CHAT), 502)
        cors.plan("oa").add(Fault("status", status=500, after=2))
        broken = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        _check_actual(broken, 200)
        assert '"error"' in broken.text
        _check_actual(client.get("/v1/models"), 200)
        _check_actual(client.post("/v1/embeddings", json={"model": "oa/e", "input": "x"}), 200)
        _check_actual(client.get("/v1/models/none-such"), 404)
        _check_actual(client.get("/v1/nothing"), 404)
        _check_actual(client.delete("/v1/models"), 405)
        _check_actual(client.options("/v1/models"), 405)  # an OPTIONS that is not a preflight
        _check_actual(client.post("/v1/embeddings", content=b"x" * (9 << 20)), 413)
        _check_actual(client.get("/health"), 200)


def test_answers_to_other_origins_and_to_non_browsers_carry_none(cors: RoutedStack) -> None:
    other = httpx.post(cors.url + "/v1/chat/completions", json=CHAT, headers={"Origin": "https://evil.example.com"})
    assert other.status_code == 200 and not cors_headers(other)
    plain = httpx.post(cors.url + "/v1/chat/completions", json=CHAT)
    assert plain.status_code == 200 and not cors_headers(plain)


def test_any_origin_and_any_header() -> None:
    for stack in _stack(cors_origins=["*"], cors_allow_headers=["*"], cors_max_age=5):
        response = preflight(stack, "/v1/chat/completions", origin="https://anyone.example")
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "*"
        assert "vary" not in response.headers
        assert response.headers["access-control-allow-headers"] == REQUESTED
        assert response.headers["access-control-max-age"] == "5"
        actual = httpx.post(stack.url + "/v1/chat/completions", json=CHAT, headers={"Origin": "https://x.example"})
        assert actual.headers["access-control-allow-origin"] == "*"


def test_cors_options_parse_and_check() -> None:
    settings = load_settings({"cors_origins": "https://A.example.com/, http://localhost:3000"}, environ={})
    assert settings.cors_origins == ["https://a.example.com", "http://localhost:3000"]
    assert settings.cors_allow_headers == CORS_ALLOW_HEADERS
    env = {"OAI_BRIDGE_CORS_ORIGINS": "*", "OAI_BRIDGE_CORS_ALLOW_HEADERS": "Authorization,X-Stainless-*"}
    settings = load_settings(environ=env)
    assert (settings.cors_origins, settings.cors_allow_headers) == (["*"], ["authorization", "x-stainless-*"])
    for bad in ("app.example.com", "https://app.example.com/path"):
        with pytest.raises(ConfigError, match="--cors-origins"):
            load_settings({"cors_origins": bad}, environ={})
    with pytest.raises(ConfigError, match="--cors-allow-headers"):
        load_settings({"cors_allow_headers": "x y"}, environ={})
