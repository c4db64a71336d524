"""LangChain's ChatOpenAI against the bridge (invoke and stream)."""

from __future__ import annotations

import pytest
from livestack import MODEL, Stack

from oai_bridge.simulators.livepeer import reply_tokens

langchain_openai = pytest.importorskip("langchain_openai")


def _llm(stack: Stack, **kwargs: object) -> object:
    return langchain_openai.ChatOpenAI(model=MODEL, base_url=stack.base_url, api_key="sk-test", max_retries=0, **kwargs)


def _expected(text: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return "".join(reply_tokens(messages, 256))


def test_invoke(stack: Stack) -> None:
    result = _llm(stack).invoke("Hello from LangChain")  # type: ignore[attr-defined]
    assert result.content == _expected("Hello from LangChain")
    assert result.response_metadata["finish_reason"] == "stop"
    assert result.usage_metadata["output_tokens"] == len(
        reply_tokens([{"role": "user", "content": "Hello from LangChain"}], 256)
    )


def test_stream_with_usage(stack: Stack) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    llm = _llm(stack, stream_usage=True)
    chunks = list(llm.stream([SystemMessage("Be brief."), HumanMessage("Stream it")]))  # type: ignore[attr-defined]
    assert "".join(str(c.content) for c in chunks) == _expected("Stream it", system="Be brief.")
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == len(reply_tokens([{"role": "user", "content": "Stream it"}], 256))
