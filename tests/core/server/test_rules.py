"""The API server's rules that need no model: tool-call formats, the Host guard, request fields,
model ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.errors import ApiError, BadValueError
from app.core.library.catalog import LibraryEntry
from app.core.server import toolcalls
from app.core.server.catalog import CHAT, EMBEDDING, served_models
from app.core.server.params import Fields, chat_messages, sampling
from app.core.server.service import ServerConfig, host_allowed

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("text, content, calls", [
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', "", [("get_weather", {"city": "Paris"})]),
    ('Let me look.\n<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>\n<tool_call>{"name": "get_weather", '
     '"arguments": {}}</tool_call>', "Let me look.", [("search", {"q": "x"}), ("get_weather", {})]),
    ('{"name": "get_weather", "parameters": {"city": "Rome"}}', "", [("get_weather", {"city": "Rome"})]),
    ('<|python_tag|>{"name": "search", "parameters": {"q": "a"}}; {"name": "search", "parameters": {"q": "b"}}', "",
     [("search", {"q": "a"}), ("search", {"q": "b"})]),
    ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]', "", [("get_weather", {"city": "Oslo"})]),
    ('[TOOL_CALLS]get_weather[ARGS]{"city": "Lima"}', "", [("get_weather", {"city": "Lima"})]),
    ('[{"name": "search", "arguments": "{\\"q\\": \\"z\\"}"}]', "", [("search", {"q": "z"})]),
    # gpt-oss, as the reasoning splitter leaves it in the answer
    ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Kyiv"}', "",
     [("get_weather", {"city": "Kyiv"})]),
])
def test_tool_call_formats_are_parsed(text: str, content: str, calls: list[tuple[str, dict[str, object]]]) -> None:
    got_content, got = toolcalls.parse(text, TOOLS)
    assert got_content == content
    assert [(c.name, json.loads(c.arguments)) for c in got] == calls
    assert all(c.id.startswith("call_") for c in got)


@pytest.mark.parametrize("text", ["Paris is sunny.", '{"name": "unknown_tool", "arguments": {}}', '{"answer": 42}',
                                  "<tool_call>not json</tool_call>"])
def test_text_that_is_not_a_call_to_a_given_tool_stays_content(text: str) -> None:
    assert toolcalls.parse(text, TOOLS) == (text, [])


def test_the_stream_filter_holds_back_only_what_may_be_a_call() -> None:
    f = toolcalls.StreamFilter()
    out = [f.feed(p) for p in ["Sure", ", let me check. <tool", "_call>{\"name\"", ": \"search\"}</tool_call>"]]
    assert "".join(out) == "Sure, let me check. "
    assert f.held().startswith("<tool_call>")
    g = toolcalls.StreamFilter()
    assert g.feed(' {"name"') == "" and g.holding


@pytest.mark.parametrize("header, allowed", [
    ("127.0.0.1:8080", True), ("localhost:8080", True), ("localhost", True), ("[::1]:8080", True),
    ("evil.example.com", False), ("evil.example.com:8080", False), ("192.168.1.5:8080", False), ("", False),
])
def test_a_loopback_server_answers_only_loopback_hosts(header: str, allowed: bool) -> None:
    assert host_allowed(header, ServerConfig()) is allowed


def test_a_public_server_needs_a_key_and_still_refuses_dns_names() -> None:
    with pytest.raises(BadValueError, match="API key"):
        ServerConfig(host="0.0.0.0")
    config = ServerConfig(host="0.0.0.0", api_key="k", allowed_hosts=("box.lan",))
    assert host_allowed("192.168.1.5:8080", config) and host_allowed("box.lan:8080", config)
    assert not host_allowed("rebind.attacker.example", config)


def test_serve_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    env = {"QUANTDESK_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--port", "0"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs an API key" in done.stderr and "--api-key" in done.stderr


def test_fields_name_the_field_at_fault() -> None:
    with pytest.raises(ApiError) as e:
        chat_messages(Fields({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}))
    assert e.value.status == 400 and e.value.param == "messages[1].role"
    with pytest.raises(ApiError) as e:  # images come as base64 data URLs; the server never fetches one
        chat_messages(Fields({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}))
    assert e.value.param == "messages[0].content[0].image_url.url" and "never fetches a URL" in e.value.message
    with pytest.raises(ApiError) as e:
        chat_messages(Fields({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}))
    assert e.value.param == "messages[0].content[0]" and "not supported" in e.value.message
    with pytest.raises(ApiError) as e:
        sampling(Fields({"top_p": 1.5}))
    assert e.value.param == "top_p"
    s = sampling(Fields({"temperature": 0, "max_tokens": 5, "seed": 3}))
    assert (s.temperature, s.top_k, s.min_p, s.repeat_penalty, s.max_tokens, s.seed) == (0, 0, 0.0, 1.0, 5, 3)


def _entry(i: int, path: str, name: str, arch: str = "llama", repo: str | None = None) -> LibraryEntry:
    return LibraryEntry(id=i, path=path, name=name, origin="added", owned=True, size=1, arch=arch, source_repo=repo)


def test_model_ids_are_readable_unique_and_aliased() -> None:
    models = served_models([
        _entry(1, "/m/a/Qwen3-0.6B-Q4_K_M.gguf", "Qwen3-0.6B-Q4_K_M", repo="unsloth/Qwen3-0.6B-GGUF"),
        _entry(2, "/m/b/Qwen3-0.6B-Q4_K_M.gguf", "Qwen3-0.6B-Q4_K_M", repo="Qwen/Qwen3-0.6B-GGUF"),
        _entry(3, "/m/nomic-embed-text-v1.5.Q8_0.gguf", "nomic-embed-text-v1.5.Q8_0", arch="nomic-bert"),
    ])
    assert [m.id for m in models] == ["unsloth/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q4_K_M", "Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q4_K_M",
                                      "nomic-embed-text-v1.5.Q8_0"]
    assert [m.kind for m in models] == [CHAT, CHAT, EMBEDDING]
    assert "nomic-embed-text-v1.5.Q8_0.gguf" in models[2].aliases


def test_serve_is_headless() -> None:
    """``quantdesk serve`` loads neither Qt nor llama.cpp in its own process (the engine does)."""
    root = Path(__file__).resolve().parents[3]
    code = ("import sys; from app.cli.main import build_parser; build_parser(); import app.core.server.run, app.core.server.http; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'llama_cpp', 'shiboken6'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
