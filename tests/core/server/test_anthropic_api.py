"""The Anthropic Messages API of ``quantdesk serve`` through the official ``anthropic`` client."""

from __future__ import annotations

import anthropic
import pytest

from app.core.engine.client import EngineClient
from tests.core.server.conftest import KEY, greedy
from tests.support.api_server import ServerProcess

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def client(server: ServerProcess, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root, api_key=key, max_retries=0, timeout=120)


def test_a_message_is_the_engines_greedy_reply(server: ServerProcess, engine: EngineClient) -> None:
    expected = engine.chat([{"role": "system", "content": "Answer briefly."}, *QUESTION], greedy(20))
    msg = client(server).messages.create(model="starter", system="Answer briefly.", messages=QUESTION,  # type: ignore[arg-type]
                                         max_tokens=20, extra_body={"temperature": 0})
    assert msg.content[0].type == "text" and msg.content[0].text == expected.text
    assert msg.stop_reason == ("max_tokens" if expected.finish_reason == "length" else "end_turn")
    assert msg.usage.output_tokens == expected.completion_tokens
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == expected.prompt_tokens


def test_a_streamed_message_has_the_same_text_and_events(server: ServerProcess, engine: EngineClient) -> None:
    expected = engine.chat(QUESTION, greedy(20))
    with client(server).messages.stream(model="starter", messages=QUESTION, max_tokens=20, extra_body={"temperature": 0}) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected.text
    assert final.content[0].text == expected.text  # type: ignore[union-attr]
    assert final.usage.output_tokens == expected.completion_tokens


def test_tool_use_is_returned_as_a_tool_use_block(server: ServerProcess) -> None:
    tool = {"name": "get_weather", "description": "weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    msg = client(server).messages.create(model="starter", messages=[{"role": "user", "content": "Weather in Rome?"}],  # type: ignore[list-item]
                                         tools=[tool], tool_choice={"type": "tool", "name": "get_weather"},  # type: ignore[list-item]
                                         max_tokens=40, extra_body={"temperature": 0})
    assert msg.stop_reason == "tool_use"
    block = msg.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and isinstance(block.input, dict)
    follow = client(server).messages.create(model="starter", max_tokens=16, extra_body={"temperature": 0}, tools=[tool], messages=[  # type: ignore[list-item]
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny, 25 C"}]},
    ])
    assert follow.content and follow.content[0].type == "text"


def test_errors_come_in_anthropics_shape(server: ServerProcess, keyed_server: ServerProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client(server).messages.create(model="nope", messages=QUESTION, max_tokens=5)  # type: ignore[arg-type]
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(server).messages.create(model="starter", messages=QUESTION, max_tokens=0)  # type: ignore[arg-type]
    assert "max_tokens" in bad.value.message
    with pytest.raises(anthropic.AuthenticationError):
        client(keyed_server, "wrong").messages.create(model="starter", messages=QUESTION, max_tokens=5)  # type: ignore[arg-type]
    ok = client(keyed_server, KEY).messages.create(model="starter", messages=QUESTION, max_tokens=3)  # type: ignore[arg-type]
    assert ok.usage.output_tokens <= 3
