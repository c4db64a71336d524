"""The real openai SDK (strict response validation) through the bridge to the simulator, for both
gateway generations. Also run under openai 1.x by ``make test`` (marker ``sdk``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import openai
import pytest
from livestack import MODEL, Stack, sdk_client

from oai_bridge.simulators.livepeer import prompt_tokens, reply_tokens

pytestmark = pytest.mark.sdk

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the bridge"},
]


@pytest.fixture
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk_client(stack) as client:
        yield client


def expected(messages: list[dict[str, str]], max_tokens: int = 256) -> tuple[str, int, int]:
    tokens = reply_tokens(messages, max_tokens)
    return "".join(tokens), prompt_tokens(messages), len(tokens)


def test_non_stream_exact_content_and_usage(oai: openai.OpenAI, stack: Stack) -> None:
    text, prompt, completion = expected(MESSAGES)
    result = oai.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert result.object == "chat.completion"
    assert result.model == MODEL
    assert result.id.startswith("chatcmpl-")
    assert isinstance(result.created, int)
    assert len(result.choices) == 1
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == text
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        prompt,
        completion,
        prompt + completion,
    )


def test_stream_exact_content_usage_and_order(oai: openai.OpenAI, stack: Stack) -> None:
    text, prompt, completion = expected(MESSAGES)
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == text
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == "stop"
    last_choice = with_choices[-1].choices[0].delta
    assert last_choice.content is None and last_choice.role is None
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (prompt, completion)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage(oai: openai.OpenAI, stack: Stack) -> None:
    chunks = list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_helper_final_message(oai: openai.OpenAI, stack: Stack) -> None:
    text, _, _ = expected(MESSAGES)
    with oai.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == text
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].message.content == text
    assert final.choices[0].finish_reason == "stop"


async def test_async_client_stream(stack: Stack) -> None:
    messages = [{"role": "user", "content": "async hello [[sim tokens=12]]"}]
    text, _, completion = expected(messages)
    assert completion == 12
    async with openai.AsyncOpenAI(
        base_url=stack.base_url, api_key="sk-test", _strict_response_validation=True, max_retries=0
    ) as aclient:
        stream = await aclient.chat.completions.create(model=MODEL, messages=messages, stream=True)  # type: ignore[arg-type]
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == text


@pytest.mark.parametrize("streamed", [False, True])
def test_max_tokens_reached_is_length(oai: openai.OpenAI, stack: Stack, streamed: bool) -> None:
    messages = [{"role": "user", "content": "long one [[sim tokens=40]]"}]
    text, _, completion = expected(messages, max_tokens=5)
    assert completion == 5
    c = oai
    if streamed:
        chunks = list(c.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, stream=True))  # type: ignore[arg-type]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == text
        assert chunks[-1].choices[0].finish_reason == "length"
    else:
        result = c.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=5)  # type: ignore[arg-type]
        assert result.choices[0].message.content == text
        assert result.choices[0].finish_reason == "length"
        assert result.usage is not None and result.usage.completion_tokens == 5


@pytest.mark.parametrize("streamed", [False, True])
def test_stop_sequence_cuts_the_text(oai: openai.OpenAI, stack: Stack, streamed: bool) -> None:
    messages = [{"role": "user", "content": "stop early please"}]
    full, _, _ = expected(messages)
    assert full == "Simulated reply to: stop early please"
    c = oai
    if streamed:
        chunks = list(c.chat.completions.create(model=MODEL, messages=messages, stop=[" early", "to: "], stream=True))  # type: ignore[arg-type]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Simulated reply "
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        result = c.chat.completions.create(model=MODEL, messages=messages, stop="reply")  # type: ignore[arg-type]
        assert result.choices[0].message.content == "Simulated "
        assert result.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("streamed", [False, True])
def test_leaked_assistant_header_is_stripped(oai: openai.OpenAI, stack: Stack, streamed: bool) -> None:
    messages = [{"role": "user", "content": "hi [[sim leak=1]]"}]
    text, _, _ = expected(messages)
    c = oai
    if streamed:
        chunks = list(c.chat.completions.create(model=MODEL, messages=messages, stream=True))  # type: ignore[arg-type]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == text
    else:
        assert c.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content == text  # type: ignore[arg-type]


def test_developer_role_and_text_parts(oai: openai.OpenAI, stack: Stack) -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
    ]
    text, _, _ = expected(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "part one\npart two"}]
    )
    result = oai.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert result.choices[0].message.content == text
    sent = stack.llm_requests()[-1]
    if stack.api == "json":
        assert sent["json"]["messages"] == [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "part one\npart two"},
        ]
    else:
        assert sent["form"]["system_msg"] == "Be kind."
        assert sent["form"]["prompt"] == "part one\npart two"


def test_models_list_and_retrieve_with_slash(oai: openai.OpenAI, stack: Stack) -> None:
    c = oai
    ids = [m.id for m in c.models.list()]
    assert MODEL in ids
    model = c.models.retrieve(MODEL)  # 3.x sends %2F, 1.x a raw slash
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        c.models.retrieve("no/such-model")
    assert info.value.body == {  # type: ignore[comparison-overlap]
        "message": "The model 'no/such-model' does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_raw_sse_bytes_framing_and_close(stack: Stack) -> None:
    """No `event:` lines, every event `data: ...\\n\\n`, `[DONE]` last, body ends right after it."""
    body = b'{"model":"' + MODEL.encode() + b'","stream":true,"messages":[{"role":"user","content":"raw bytes"}]}'
    port = int(stack.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        data = b""
        done_at = end_at = None
        while end_at is None:
            piece = sock.recv(65536)
            assert piece, "connection closed before the body ended"
            data += piece
            if done_at is None and b"data: [DONE]\n\n" in data:
                done_at = time.monotonic()
            if data.endswith(b"\r\n0\r\n\r\n"):
                end_at = time.monotonic()
    head, _, raw = data.partition(b"\r\n\r\n")
    assert b"content-type: text/event-stream" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    # de-chunk
    payload = b""
    while raw:
        size_line, _, rest = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        payload += rest[:size]
        raw = rest[size + 2 :]
    assert b"event:" not in payload
    events = payload.split(b"\n\n")
    assert events[-1] == b""
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events[:-1])
    assert events[-2] == b"data: [DONE]"
    assert done_at is not None and end_at - done_at < 0.5
