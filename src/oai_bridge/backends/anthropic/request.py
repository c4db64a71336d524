"""OpenAI chat request → Anthropic Messages request (reference ``openai-anthropic-ollama.md`` §6.7). Pure.

``build_request``:

- ``system`` and ``developer`` messages, wherever they are, → the top-level ``system`` string
  (joined with a blank line, in order).
- user content: strings and ``text`` parts → text blocks; ``image_url`` data URLs → base64
  ``image`` blocks, http(s) URLs → ``{"type": "image", "source": {"type": "url", "url": ...}}``;
  ``file`` parts with base64 PDF data → ``document`` blocks; ``input_audio`` and anything else → 400.
- assistant ``tool_calls`` → ``tool_use`` blocks after the assistant's text (``arguments`` parsed
  to ``input``; JSON that is not an object → 400); ``refusal`` parts → text.
- ``tool`` messages → ``tool_result`` blocks in a user turn; consecutive results share one turn.
- consecutive same-role turns are merged (tool results first in a user turn); empty and
  whitespace-only text is dropped (the API rejects such text blocks), an assistant turn left empty
  is dropped, a user turn left empty → 400. A turn that is one text block is sent as a string.
- the conversation's final assistant turn is a *prefill* to the API; it rejects one ending in
  whitespace, so trailing whitespace of that turn is stripped (also for ``is_continuation``
  requests: the router accounts for the stripped whitespace of its prefix).
- ``max_tokens`` = ``max_completion_tokens ?? max_tokens ?? default_max_tokens`` (required upstream).
- ``temperature`` above 1 is **refused** (400, ``param: temperature``): Anthropic's range is 0..1 and
  rescaling or clamping would silently change the sampling the client asked for. ``top_p``,
  ``top_k`` as they are; ``stop`` → ``stop_sequences``; ``user`` → ``metadata.user_id``.
- ``tools`` → ``{name, description, input_schema}``; ``tool_choice`` ``auto``/``none``/``required``
  (→ ``any``)/named (→ ``{"type": "tool", "name"}``); ``parallel_tool_calls: false`` →
  ``disable_parallel_tool_use``.
- refused with 400 naming the parameter: ``n`` > 1, ``logprobs``, ``top_logprobs`` > 0,
  ``response_format`` other than ``text`` (no JSON mode upstream), non-zero ``presence_penalty`` /
  ``frequency_penalty``, a non-empty ``logit_bias``, ``functions``/``function_call`` (use tools),
  ``audio``, ``modalities`` other than ``["text"]``, ``prediction``, ``web_search_options``,
  ``reasoning_effort``, and every parameter not named here.
- ignored as harmless (``HARMLESS_PARAMS``): ``seed``, ``store``, ``metadata``, ``service_tier``,
  ``prompt_cache_key``, ``prompt_cache_retention``, ``prompt_cache_options``, ``safety_identifier``,
  ``moderation``, ``verbosity``, and any parameter sent as ``null``.
"""

from __future__ import annotations

import re
from typing import Any, cast

import orjson

from ...errors import InvalidRequest
from ...types import ChatCompletionRequest, ChatMessage
from .wire import (
    DEFAULT_MAX_TOKENS,
    IMAGE_MEDIA_TYPES,
    ContentBlock,
    MessageParam,
    MessagesRequest,
    ToolChoice,
    ToolParam,
)

__all__ = ["HARMLESS_PARAMS", "build_request"]

#: OpenAI parameters accepted and ignored (they change nothing the client can observe here).
HARMLESS_PARAMS = frozenset(
    {
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",
        "moderation",
        "verbosity",
    }
)
_DATA_URL = re.compile(r"^data:([^;,]+)((?:;[^;,]*)*?);base64,(.*)$", re.DOTALL)


def _unsupported(param: str, what: str) -> InvalidRequest:
    named = what if param in what else f"{what} (parameter '{param}')"
    return InvalidRequest(f"{named} is not supported by the Anthropic API.", param=param, code="unsupported_parameter")


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    if request.n not in (None, 1):
        raise _unsupported("n", "Generating more than one choice (n > 1)")
    if request.logprobs:
        raise _unsupported("logprobs", "Log probabilities")
    if request.top_logprobs:
        raise _unsupported("top_logprobs", "Log probabilities")
    fmt = request.response_format
    if fmt is not None and fmt.get("type") not in (None, "text"):
        raise _unsupported("response_format", f"response_format {fmt.get('type')!r}")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise _unsupported(name, f"A non-zero {name}")
    if request.functions or request.function_call:
        param = "functions" if request.functions else "function_call"
        raise _unsupported(param, "The deprecated functions API (use tools)")
    if request.temperature is not None and request.temperature > 1:
        raise InvalidRequest(
            f"temperature {request.temperature:g} is out of the Anthropic API's range 0..1.",
            param="temperature",
            code="unsupported_value",
        )
    if request.stream_options is not None and not request.is_stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    for name, value in sorted((request.model_extra or {}).items()):
        if value is None or name in HARMLESS_PARAMS or name == "parallel_tool_calls":
            continue
        if name == "logit_bias" and not value:
            continue
        if name == "modalities" and value == ["text"]:
            continue
        if name in ("logit_bias", "modalities", "audio", "prediction", "web_search_options", "reasoning_effort"):
            raise _unsupported(name, f"The parameter {name!r}")
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {name} (not supported by the Anthropic API).",
            param=name,
            code="unknown_parameter",
        )


def _text_of(content: str | list[dict[str, Any]] | None, param: str, *, kinds: tuple[str, ...] = ("text",)) -> str:
    """The text of system/developer/tool content (a string or ``text`` parts)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        value = part.get(kind) if isinstance(kind, str) else None
        if kind not in kinds or not isinstance(value, str):
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported here.",
                param=f"{param}[{j}]",
                code="unsupported_content",
            )
        texts.append(value)
    return "".join(texts)


def _image(part: dict[str, Any], param: str) -> ContentBlock:
    raw = part.get("image_url")
    url = raw.get("url") if isinstance(raw, dict) else raw
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image_url part needs a url.", param=param)
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest(
            "Images must be http(s) URLs or base64 data URLs (data:image/png;base64,...).",
            param=param,
            code="invalid_image_url",
        )
    media_type = match.group(1).lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidRequest(
            f"Image type {media_type!r} is not supported by the Anthropic API "
            f"({', '.join(sorted(IMAGE_MEDIA_TYPES))}).",
            param=param,
            code="invalid_image_format",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": match.group(3)}}


def _document(part: dict[str, Any], param: str) -> ContentBlock:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        raise InvalidRequest("Only file parts with inline file_data (base64 PDF) are supported.", param=param)
    match = _DATA_URL.match(data)
    media_type, payload = (match.group(1).lower(), match.group(3)) if match else ("application/pdf", data)
    if media_type != "application/pdf":
        raise InvalidRequest(f"File type {media_type!r} is not supported (PDF only).", param=param)
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}


def _content_blocks(message: ChatMessage, i: int) -> list[ContentBlock]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    blocks: list[ContentBlock] = []
    user = message.role == "user"
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        kind = part.get("type")
        if kind == "text" or (kind == "refusal" and not user):
            text = part.get(kind)
            if not isinstance(text, str):
                raise InvalidRequest(f"A {kind} part needs a string {kind!r}.", param=param)
            if text.strip():  # the API rejects empty and whitespace-only text blocks
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url" and user:
            blocks.append(_image(part, param))
        elif kind == "file" and user:
            blocks.append(_document(part, param))
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} are not supported by the Anthropic API in {message.role} messages.",
                param=param,
                code="unsupported_content",
            )
    return blocks


def _tool_uses(message: ChatMessage, i: int) -> list[ContentBlock]:
    calls = getattr(message, "tool_calls", None)
    if not calls:
        return []
    if not isinstance(calls, list):
        raise InvalidRequest("tool_calls must be a list.", param=f"messages[{i}].tool_calls")
    blocks: list[ContentBlock] = []
    for j, call in enumerate(calls):
        param = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise InvalidRequest("A tool call needs an id and a function.", param=param)
        name, arguments = function.get("name"), function.get("arguments") or "{}"
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise InvalidRequest("A tool call needs a function name and string arguments.", param=param)
        try:
            args = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise InvalidRequest(
                "Tool call arguments must be a JSON object (the Anthropic API takes tool input as an object).",
                param=f"{param}.function.arguments",
            )
        blocks.append({"type": "tool_use", "id": call["id"], "name": name, "input": args})
    return blocks


def _tool_result(message: ChatMessage, i: int) -> ContentBlock:
    call_id = getattr(message, "tool_call_id", None)
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest("A tool message needs its tool_call_id.", param=f"messages[{i}].tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    text = _text_of(message.content, f"messages[{i}].content")
    if text.strip():
        block["content"] = text
    return cast(ContentBlock, block)


def _turns(request: ChatCompletionRequest) -> tuple[str, list[MessageParam]]:
    """(the system text, the alternating user/assistant turns)."""
    system: list[str] = []
    turns: list[tuple[str, list[ContentBlock], int]] = []  # role, blocks, first message index
    for i, message in enumerate(request.messages):
        role: str = message.role
        if role in ("system", "developer"):
            text = _text_of(message.content, f"messages[{i}].content")
            if text:
                system.append(text)
            continue
        if role == "tool":
            role, blocks = "user", [_tool_result(message, i)]
        elif role in ("user", "assistant"):
            blocks = _content_blocks(message, i) + (_tool_uses(message, i) if role == "assistant" else [])
        else:
            raise InvalidRequest(
                f"Messages with role {role!r} are not supported by the Anthropic API.",
                param=f"messages[{i}].role",
                code="unsupported_role",
            )
        if role == "assistant" and not blocks:
            continue  # says nothing; the API rejects empty content
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks, i))
    _strip_prefill(turns)
    out: list[MessageParam] = []
    for role, blocks, first in turns:
        if not blocks:
            raise InvalidRequest(
                "This message has no content; the Anthropic API needs non-empty messages.",
                param=f"messages[{first}].content",
            )
        if role == "user":  # the API wants tool results before anything else in the turn
            blocks.sort(key=lambda b: b["type"] != "tool_result")
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append(cast(MessageParam, {"role": role, "content": blocks[0]["text"]}))
        else:
            out.append(cast(MessageParam, {"role": role, "content": blocks}))
    return "\n\n".join(system), out


def _strip_prefill(turns: list[tuple[str, list[ContentBlock], int]]) -> None:
    """Anthropic rejects a final assistant turn ending in whitespace: strip it (see module doc)."""
    while turns and turns[-1][0] == "assistant":
        blocks = turns[-1][1]
        while blocks and blocks[-1]["type"] == "text":
            text = blocks[-1]["text"].rstrip()
            if text:
                blocks[-1] = {"type": "text", "text": text}
                return
            blocks.pop()
        if blocks:
            return
        turns.pop()


def _tools(request: ChatCompletionRequest) -> list[ToolParam]:
    out: list[ToolParam] = []
    for i, tool in enumerate(request.tools or ()):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest("Only function tools are supported by the Anthropic API.", param=f"tools[{i}]")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("A function tool needs a name.", param=f"tools[{i}].function.name")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        param: ToolParam = {"name": name, "input_schema": schema}
        if isinstance(function.get("description"), str):
            param["description"] = function["description"]
        out.append(param)
    return out


def _tool_choice(request: ChatCompletionRequest, has_tools: bool) -> ToolChoice | None:
    choice = request.tool_choice
    parallel = (request.model_extra or {}).get("parallel_tool_calls")
    out: ToolChoice | None
    if choice is None:
        out = {"type": "auto"} if has_tools and parallel is False else None
    elif choice in ("auto", "none", "required"):
        out = cast(ToolChoice, {"type": "any" if choice == "required" else choice})
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice names no function.", param="tool_choice")
        out = {"type": "tool", "name": name}
    else:
        raise InvalidRequest(f"tool_choice {choice!r} is not supported by the Anthropic API.", param="tool_choice")
    if out is not None and not has_tools:
        if out["type"] in ("auto", "none"):
            return None
        raise InvalidRequest("tool_choice requires tools.", param="tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def build_request(
    request: ChatCompletionRequest, *, default_max_tokens: int = DEFAULT_MAX_TOKENS, stream: bool | None = None
) -> MessagesRequest:
    """Validate ``request`` and translate it to a Messages API body (see the module doc).

    ``stream`` overrides the request's own flag. Raises ``InvalidRequest`` for what the API cannot do.
    """
    _refuse_unsupported(request)
    system, messages = _turns(request)
    body: MessagesRequest = {
        "model": request.model,
        "max_tokens": request.token_limit or default_max_tokens,
        "messages": messages,
        "stream": request.is_stream if stream is None else stream,
    }
    if system:
        body["system"] = system
    if request.stop_sequences:
        body["stop_sequences"] = request.stop_sequences
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None and request.top_k > 0:
        body["top_k"] = request.top_k
    if request.user:
        body["metadata"] = {"user_id": request.user}
    tools = _tools(request)
    if tools:
        body["tools"] = tools
    choice = _tool_choice(request, bool(tools))
    if choice is not None:
        body["tool_choice"] = choice
    return body
