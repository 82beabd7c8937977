"""Reasoning through the API server: OpenAI's ``reasoning_content`` (message and stream deltas),
Anthropic's thinking blocks, and thinking turned off by the request, from the same splitter as the
chat window, on the starter model given a Qwen3-shaped template (engine test_reasoning)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import anthropic
import openai
import pytest

from tests.conftest import THREADS
from tests.core.engine.test_reasoning import OPENS_WITH_SWITCH
from tests.core.engine.test_template_limits import with_template
from tests.core.server.conftest import API_CTX
from tests.support.api_server import ServerProcess

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
ASK = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, starter_model: Path) -> Iterator[ServerProcess]:
    model = with_template(starter_model, tmp_path_factory.mktemp("models") / "thinker.gguf", OPENS_WITH_SWITCH)
    proc = ServerProcess(tmp_path_factory.mktemp("serve-home"), "--model", str(model), "--ctx", str(API_CTX),
                         "--threads", str(THREADS))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def model_id(server: ServerProcess) -> str:
    return openai.OpenAI(base_url=server.root + "/v1", api_key="x").models.list().data[0].id


def oai(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.root + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_reply_has_reasoning_content_apart(server: ServerProcess, model_id: str) -> None:
    r = oai(server).chat.completions.create(model=model_id, messages=STORY, max_tokens=40, temperature=0)  # type: ignore[arg-type]
    msg = r.choices[0].message
    reasoning = getattr(msg, "reasoning_content", None)
    assert reasoning and "<think>" not in reasoning and "</think>" not in reasoning
    assert "<think>" not in (msg.content or "")


def test_openai_stream_sends_reasoning_deltas_then_content(server: ServerProcess, model_id: str) -> None:
    whole = oai(server).chat.completions.create(model=model_id, messages=STORY, max_tokens=40, temperature=0)  # type: ignore[arg-type]
    reasoning, content = "", ""
    for chunk in oai(server).chat.completions.create(model=model_id, messages=STORY, max_tokens=40, temperature=0,  # type: ignore[arg-type]
                                                     stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert reasoning.strip() == getattr(whole.choices[0].message, "reasoning_content", None)
    assert content == (whole.choices[0].message.content or "")


def test_reasoning_effort_none_turns_thinking_off(server: ServerProcess, model_id: str) -> None:
    r = oai(server).chat.completions.create(model=model_id, messages=ASK, max_tokens=16, temperature=0,  # type: ignore[arg-type]
                                            reasoning_effort="none")  # type: ignore[arg-type]
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    assert r.choices[0].message.content
    r = oai(server).chat.completions.create(model=model_id, messages=ASK, max_tokens=16, temperature=0,  # type: ignore[arg-type]
                                            extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert getattr(r.choices[0].message, "reasoning_content", None) is None


def test_anthropic_thinking_blocks(server: ServerProcess, model_id: str) -> None:
    client = anthropic.Anthropic(base_url=server.root, api_key="unused", max_retries=0, timeout=120)
    msg = client.messages.create(model=model_id, messages=STORY, max_tokens=40, extra_body={"temperature": 0})  # type: ignore[arg-type]
    assert msg.content[0].type == "thinking" and msg.content[0].thinking
    with client.messages.stream(model=model_id, messages=STORY, max_tokens=40, extra_body={"temperature": 0}) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking.strip() == msg.content[0].thinking  # type: ignore[union-attr]
    off = client.messages.create(model=model_id, messages=ASK, max_tokens=16, thinking={"type": "disabled"},  # type: ignore[arg-type]
                                 extra_body={"temperature": 0})
    assert [b.type for b in off.content] == ["text"]
