"""Reasoning apart from the answer, with the real engine on the starter model given reasoning
templates (gguf's own metadata editor): a template that opens the block itself (with and without
an ``enable_thinking`` switch), and one where the model writes the tags (steered by a grammar so
the block is certain) and past reasoning is passed back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from tests.conftest import load_params
from tests.core.engine.test_template_limits import with_template

CHATML = """{%- for message in messages -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor -%}"""
# Qwen3's shape: the generation prompt opens the block; enable_thinking=false writes it empty
OPENS_WITH_SWITCH = CHATML + """{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking is false %}<think>

</think>

{% else %}<think>
{% endif -%}
{%- endif -%}"""
# DeepSeek-R1's shape: the block opened, no switch
OPENS = CHATML + "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif -%}"
# the model writes the tags; earlier turns' reasoning is passed back
KEEPS_PAST = """{%- for message in messages -%}
<|im_start|>{{ message.role }}
{% if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>{% endif %}{{ message.content }}<|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"""
TAGS_GRAMMAR = 'root ::= "<think>" [a-z] [a-z ]{3,40} "</think>" [A-Za-z] [A-Za-z ]{3,40}'

GREEDY = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=48)
ASK = [{"role": "user", "content": "What is 2+2?"}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


@pytest.fixture(scope="module")
def models(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reasoning-models")
    return {name: with_template(starter_model, folder / f"{name}.gguf", template)
            for name, template in (("switch", OPENS_WITH_SWITCH), ("opens", OPENS), ("keeps", KEEPS_PAST))}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    c = EngineClient(log_path=tmp_path_factory.mktemp("engine") / "engine.log")
    yield c
    c.close()


def run(client: EngineClient, messages: list[dict[str, Any]], sampling: SamplingParams = GREEDY, **options: Any) -> tuple[Any, str, str]:
    """The reply, and the answer and reasoning text as they streamed."""
    events = list(client.stream(messages, sampling, **options))
    tokens = [e for e in events if e["ev"] == "token"]
    return events[-1]["reply"], "".join(e["text"] for e in tokens), "".join(e.get("reasoning", "") for e in tokens)


def test_a_template_that_opens_the_block_streams_reasoning_apart(client: EngineClient, models: dict[str, Path]) -> None:
    info = client.load(models["switch"], load_params())
    assert info.reasoning == {"reasons": True, "switch": "enable_thinking", "harmony": False, "effort": False}
    reply, answer, reasoning = run(client, STORY, thinking={})
    assert reply.reasoning and reasoning.strip() == reply.reasoning
    assert answer == reply.text
    assert "<think>" not in reply.text + reply.reasoning and "</think>" not in reply.text + reply.reasoning
    assert reply.reasoning_tokens > 0


def test_a_block_that_never_closes_stays_reasoning(client: EngineClient, models: dict[str, Path]) -> None:
    client.load(models["opens"], load_params())
    reply, answer, reasoning = run(client, STORY, SamplingParams(**{**GREEDY.to_dict(), "max_tokens": 12}), thinking={})
    assert reply.finish_reason == "length"
    assert reply.text == "" and answer == ""
    assert reply.reasoning and reply.reasoning_tokens == reply.completion_tokens


def test_the_budget_closes_the_block_and_the_model_answers(client: EngineClient, models: dict[str, Path]) -> None:
    client.load(models["opens"], load_params())
    free, _, _ = run(client, STORY, thinking={})
    reply, answer, _ = run(client, STORY, thinking={"budget": 6})
    assert free.reasoning_tokens > 6  # without a budget it thinks longer
    assert reply.reasoning_tokens <= 7 and reply.reasoning
    assert reply.text and answer == reply.text and "</think>" not in reply.text


def test_thinking_off_through_the_templates_switch(client: EngineClient, models: dict[str, Path]) -> None:
    client.load(models["switch"], load_params())
    reply, _, reasoning = run(client, ASK, thinking={"enabled": False})
    assert reply.reasoning == "" and reasoning == "" and reply.reasoning_tokens == 0
    assert reply.text


def test_thinking_off_without_a_switch_closes_the_opened_block(client: EngineClient, models: dict[str, Path]) -> None:
    client.load(models["opens"], load_params())
    reply, _, _ = run(client, ASK, thinking={"enabled": False})
    assert reply.reasoning == "" and reply.text and "</think>" not in reply.text


def test_tags_the_model_writes_are_split_and_past_reasoning_follows_the_template(client: EngineClient, models: dict[str, Path]) -> None:
    info = client.load(models["keeps"], load_params())
    assert info.reasoning["switch"] is None
    reply, answer, reasoning = run(client, ASK, grammar=TAGS_GRAMMAR, thinking={})
    assert reply.reasoning and reply.text and answer == reply.text
    assert "<think>" not in reply.text and "think>" not in reply.reasoning
    # this template passes earlier reasoning back: the prompt grows by it
    turn = [*ASK, {"role": "assistant", "content": reply.text}, {"role": "user", "content": "And 3+3?"}]
    with_thought = [*ASK, {"role": "assistant", "content": reply.text, "reasoning_content": reply.reasoning},
                    {"role": "user", "content": "And 3+3?"}]
    assert client.count_tokens(with_thought) > client.count_tokens(turn)
    # the Qwen3-shaped template drops it (its rule): no change
    client.load(models["switch"], load_params())
    assert client.count_tokens(with_thought) == client.count_tokens(turn)
