"""The OpenAI API of ``quantdesk serve``, through the official ``openai`` client, against a real
server process and the real engine on the starter model."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import jsonschema
import openai
import pytest

from app.core.engine.client import EngineClient
from tests.core.server.conftest import API_CTX, KEY, greedy
from tests.support.api_server import ServerProcess

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
NO_EOS = {"0": -100, "2": -100}  # <|endoftext|>, <|im_end|>: the reply runs until max_tokens
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]},
}}


def client(server: ServerProcess, key: str = "unused", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120, **kw)


def raw(server: ServerProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    host, port = server.root.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def test_models_lists_the_library_chat_models_with_readable_ids_and_aliases(server: ServerProcess) -> None:
    models = client(server).models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct.Q4_1"]
    extra = models[0].model_extra or {}
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in extra["aliases"] and "starter" in extra["aliases"]
    assert client(server).models.retrieve("starter").id == "SmolLM2-135M-Instruct.Q4_1"


def test_chat_at_temperature_0_is_the_engines_greedy_reply_with_its_usage(server: ServerProcess, engine: EngineClient) -> None:
    expected = engine.chat(QUESTION, greedy(24))
    reply = client(server).chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1.gguf", messages=QUESTION,  # type: ignore[arg-type]
                                                   temperature=0, max_tokens=24)
    choice = reply.choices[0]
    assert choice.message.content == expected.text
    assert choice.finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert reply.model == "SmolLM2-135M-Instruct.Q4_1"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (expected.prompt_tokens, expected.completion_tokens)
    assert reply.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens


def test_a_streamed_chat_is_the_same_text_and_ends_with_usage(server: ServerProcess, engine: EngineClient) -> None:
    expected = engine.chat(QUESTION, greedy(24))
    chunks = list(client(server).chat.completions.create(model="starter", messages=QUESTION, temperature=0,  # type: ignore[arg-type]
                                                         max_completion_tokens=24, stream=True,
                                                         stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens


def test_stop_seed_and_penalties_are_honoured(server: ServerProcess) -> None:
    c = client(server)
    full = c.chat.completions.create(model="starter", messages=QUESTION, temperature=0, max_tokens=24).choices[0].message.content  # type: ignore[arg-type]
    assert full and " " in full.strip()
    word = full.strip().split()[1]
    cut = c.chat.completions.create(model="starter", messages=QUESTION, temperature=0, max_tokens=24, stop=[word])  # type: ignore[arg-type]
    assert cut.choices[0].message.content == full[:full.index(word)]
    assert cut.choices[0].finish_reason == "stop"
    seeded = [c.chat.completions.create(model="starter", messages=QUESTION, temperature=1.0, top_p=0.9, seed=7, max_tokens=16,  # type: ignore[arg-type]
                                        presence_penalty=0.5, frequency_penalty=0.5).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_json_schema_output_follows_the_schema(server: ServerProcess) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    reply = client(server).chat.completions.create(
        model="starter", messages=[{"role": "user", "content": "Name a large city and its population as JSON."}],
        temperature=0, max_tokens=80, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    data = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(data, schema)
    anything = client(server).chat.completions.create(model="starter", messages=QUESTION, temperature=0, max_tokens=60,  # type: ignore[arg-type]
                                                      response_format={"type": "json_object"})
    assert isinstance(json.loads(anything.choices[0].message.content or ""), dict)


def test_a_tool_call_round_trip(server: ServerProcess) -> None:
    c = client(server)
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = c.chat.completions.create(model="starter", messages=messages, tools=[WEATHER], temperature=0, max_tokens=60,  # type: ignore[list-item]
                                      tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.type == "function" and call.function.name == "get_weather" and call.id  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])  # type: ignore[union-attr, index]
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
    second = c.chat.completions.create(model="starter", messages=messages, tools=[WEATHER], temperature=0, max_tokens=30)  # type: ignore[list-item]
    assert second.choices[0].message.content and second.choices[0].finish_reason in ("stop", "length")

    streamed = list(c.chat.completions.create(model="starter", messages=messages[:1], tools=[WEATHER], temperature=0,  # type: ignore[list-item]
                                              max_tokens=60, tool_choice="required", stream=True))
    deltas = [tc for ch in streamed if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert [ch.choices[0].finish_reason for ch in streamed if ch.choices][-1] == "tool_calls"


def test_raw_completions(server: ServerProcess) -> None:
    reply = client(server).completions.create(model="starter", prompt="The capital of France is", temperature=0, max_tokens=8)
    assert reply.choices[0].text.strip() and reply.usage is not None and reply.usage.completion_tokens == 8


def test_errors_come_in_openais_shape(server: ServerProcess) -> None:
    c = client(server)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="no-such-model", messages=QUESTION)  # type: ignore[arg-type]
    assert nf.value.code == "model_not_found" and "no-such-model" in nf.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        c.chat.completions.create(model="starter", messages=QUESTION, temperature=5)  # type: ignore[arg-type]
    assert bad.value.status_code == 400 and bad.value.param == "temperature"
    status, _, body = raw(server, "POST", "/v1/chat/completions", {"model": "starter", "messages": "hi"})
    assert status == 400 and body["error"]["param"] == "messages"
    status, _, body = raw(server, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and "JSON" in body["error"]["message"]
    status, _, body = raw(server, "POST", "/v1/chat/completions",
                          {"model": "starter", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "lots"})
    assert status == 400 and body["error"]["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as overflow:
        c.chat.completions.create(model="starter", messages=[{"role": "user", "content": "word " * 1500}], max_tokens=10)  # type: ignore[arg-type]
    assert overflow.value.code == "context_length_exceeded"
    assert f"{API_CTX:,}" in overflow.value.message and "in the messages" in overflow.value.message
    with pytest.raises(openai.BadRequestError) as emb:
        c.embeddings.create(model="starter", input="hello")
    assert emb.value.code == "model_not_supported" and "chat model" in emb.value.message
    status, _, body = raw(server, "GET", "/v1/nothing-here")
    assert status == 404 and "error" in body


def test_host_header_and_cors_guards(server: ServerProcess) -> None:
    status, _, body = raw(server, "GET", "/v1/models", headers={"Host": "attacker.example:8080"})
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    assert raw(server, "GET", "/v1/models", headers={"Host": "localhost:8080"})[0] == 200
    status, headers, _ = raw(server, "OPTIONS", "/v1/chat/completions",
                             headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in headers


def _busy(server: ServerProcess) -> bool:
    return any(s["busy"] for s in server.health()["loaded"])


def test_a_client_that_disconnects_mid_stream_frees_the_engine(server: ServerProcess) -> None:
    stream = client(server).chat.completions.create(model="starter", messages=QUESTION, max_tokens=900, stream=True,  # type: ignore[arg-type]
                                                    logit_bias=NO_EOS)
    got = 0
    for chunk in stream:
        got += bool(chunk.choices and chunk.choices[0].delta.content)
        if got >= 3:
            break
    assert _busy(server)
    t0 = time.monotonic()
    stream.close()
    assert server.wait_for(lambda: not _busy(server), timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert server.wait_for(lambda: any("client disconnected" in line for line in server.lines), timeout=5)
    reply = client(server).chat.completions.create(model="starter", messages=QUESTION, temperature=0, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content


def test_the_api_key_is_required_and_checked(keyed_server: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(keyed_server, "wrong-key").models.list()
    status, _, body = raw(keyed_server, "GET", "/v1/models")
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    assert [m.id for m in client(keyed_server, KEY).models.list().data] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_a_full_queue_answers_429_with_retry_after(keyed_server: ServerProcess) -> None:
    c = client(keyed_server, KEY)
    running = c.chat.completions.create(model="starter", messages=QUESTION, max_tokens=900, stream=True,  # type: ignore[arg-type]
                                        logit_bias=NO_EOS)
    next(iter(running))
    waited: list[Any] = []
    waiter = threading.Thread(target=lambda: waited.append(c.chat.completions.create(
        model="starter", messages=QUESTION, temperature=0, max_tokens=2)))  # type: ignore[arg-type]
    waiter.start()
    assert keyed_server.wait_for(lambda: any(s["queued"] for s in keyed_server.health()["loaded"]), timeout=10)
    status, headers, body = raw(keyed_server, "POST", "/v1/chat/completions",
                                {"model": "starter", "messages": QUESTION, "max_tokens": 2}, {"Authorization": f"Bearer {KEY}"})
    assert status == 429 and int(headers["retry-after"]) >= 1 and body["error"]["code"] == "queue_full"
    running.close()
    waiter.join(60)
    assert waited and waited[0].choices[0].message.content is not None


def test_sigterm_stops_the_server_and_its_engine(tmp_path: Any, starter_model: Any) -> None:
    proc = ServerProcess(tmp_path, "--model", "starter", "--ctx", "512", "--threads", "2")
    pid = proc.health()["loaded"][0]["pid"]
    assert proc.stop() == 0
    assert proc.lines[-1] == "stopped"
    import os

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert proc.wait_for(gone, timeout=10)


def test_a_follow_up_reuses_the_conversations_kv_cache(server: ServerProcess) -> None:
    c = client(server)
    first = c.chat.completions.create(model="starter", messages=QUESTION, temperature=0, max_tokens=8)  # type: ignore[arg-type]
    follow = [*QUESTION, {"role": "assistant", "content": first.choices[0].message.content or ""},
              {"role": "user", "content": "And of Italy?"}]
    second = c.chat.completions.create(model="starter", messages=follow, temperature=0, max_tokens=8)  # type: ignore[arg-type]
    assert first.usage is not None and second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
