"""The engine's hooks for the API server, on the real engine and the starter model: extra stop
strings, a JSON-schema grammar, a prompt that must fit as it is, raw prompts, tools to the
template, and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.engine.client import EngineClient
from app.core.engine.protocol import SamplingParams
from app.core.errors import ContextOverflow
from tests.conftest import load_params

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, max_tokens=24)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_extra_stop_strings_end_the_reply_before_them(engine: EngineClient) -> None:
    full = engine.chat(QUESTION, GREEDY).text
    word = full.split()[1]
    cut = engine.chat(QUESTION, GREEDY, stop=[word])
    assert cut.text == full[:full.index(word)] and cut.finish_reason == "stop"


def test_a_json_schema_grammar_shapes_the_reply(engine: EngineClient) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    reply = engine.chat(QUESTION, SamplingParams.from_dict({**GREEDY.to_dict(), "max_tokens": 40}), json_schema=schema)
    assert isinstance(json.loads(reply.text)["city"], str)
    assert isinstance(json.loads(engine.chat(QUESTION, GREEDY, json_schema={}).text), dict)


def test_without_trimming_a_prompt_that_does_not_fit_raises_with_its_numbers(engine: EngineClient) -> None:
    n_ctx = engine.model.n_ctx  # type: ignore[union-attr]
    with pytest.raises(ContextOverflow) as e:
        engine.chat([{"role": "user", "content": "word " * n_ctx}], GREEDY, trim=False)
    assert e.value.n_ctx == n_ctx and e.value.prompt_tokens > n_ctx and e.value.reserve == GREEDY.max_tokens


def test_a_raw_prompt_skips_the_template(engine: EngineClient) -> None:
    reply = engine.chat([], GREEDY, prompt="The capital of France is")
    assert reply.prompt_tokens < 10 and reply.text


def test_tools_reach_the_template(engine: EngineClient) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert engine.chat(QUESTION, GREEDY, tools=tools).text == engine.chat(QUESTION, GREEDY).text  # its template ignores them
    assert engine.model is not None and engine.model.template_tools is False


def test_embeddings_are_one_normalized_vector_per_input(starter_model: Path, tmp_path: Path) -> None:
    with EngineClient(log_path=tmp_path / "engine.log") as client:
        client.load(starter_model, load_params(512), embedding=True)
        vectors, tokens = client.embed(["hello world", "a cat sat on the mat"])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) == 576 and tokens > 4
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-4
