"""One short function per endpoint: parse → route → call → respond. No translation here."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BridgeError, InvalidRequest, NotFound
from ..types import ChatCompletionRequest
from .streaming import SSEResponse

JSON = "application/json"


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return "req_" + uuid.uuid4().hex


def json_response(data: Any, request: Request, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status,
        media_type=JSON,
        headers={"x-request-id": request.state.request_id},
    )


def error_response(error: BridgeError, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **error.headers()}
    return Response(error.to_json(), status_code=error.status, media_type=JSON, headers=headers)


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BridgeError(f"The request body is larger than {limit} bytes.", status=413, code="request_too_large")
    if declared is not None:
        body = await request.body()
    else:
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise BridgeError(
                    f"The request body is larger than {limit} bytes.", status=413, code="request_too_large"
                )
            parts.append(part)
        body = b"".join(parts)
    if len(body) > limit:
        raise BridgeError(f"The request body is larger than {limit} bytes.", status=413, code="request_too_large")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "The request body is not valid JSON (it must be a UTF-8 JSON object).", code="invalid_json"
        ) from None


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[dict[str,any]]", "function-after[_stop_list(), union[str,list[str]]]"):
            continue  # pydantic's union-branch labels, not fields
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_chat_request(payload: Any) -> ChatCompletionRequest:
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(payload, strict=True)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = _param(tuple(error["loc"]))
        if error["type"] == "missing":
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            ) from None
        raise InvalidRequest(
            f"Invalid value for '{param}': {error['msg']}.", param=param, code="invalid_value"
        ) from None


async def chat_completions(request: Request) -> Any:
    app_state = request.app.state
    chat = parse_chat_request(await read_json(request, app_state.settings.max_body_bytes))
    backend = app_state.router.route(chat.model)
    if chat.is_stream:
        return SSEResponse(
            backend.stream(chat),
            request_id=request.state.request_id,
            keepalive=app_state.settings.keepalive_interval,
        )
    return json_response(await backend.chat(chat), request)


async def list_models(request: Request) -> Response:
    return json_response({"object": "list", "data": await request.app.state.router.models()}, request)


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    model = await request.app.state.router.model(model_id)
    if model is None:
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return json_response(model, request)


async def health(request: Request) -> Response:
    return json_response({"status": "ok"}, request)
