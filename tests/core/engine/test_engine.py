"""The engine host on the real starter model: parity, streaming, stop, KV reuse, crashes, templates."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from app.core.errors import EngineCrashed, EngineError
from tests.conftest import LONG_PROMPT, TEST_CTX, THREADS, load_params

GREEDY = SamplingParams(temperature=0.0, max_tokens=48, repeat_penalty=1.0)


def direct_greedy(model: Path, messages: list[dict[str, str]], max_tokens: int) -> str:
    """llama-cpp-python called directly, in this process: the reference."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=TEST_CTX, n_threads=THREADS, n_gpu_layers=0, verbose=False)
    try:
        out = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=max_tokens, repeat_penalty=1.0)
        return out["choices"][0]["message"]["content"]
    finally:
        llm.close()


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You answer in one sentence."}, {"role": "user", "content": "Name three colors."}],
    ],
)
def test_greedy_reply_matches_llama_cpp_python(engine: EngineClient, starter_model: Path, messages: list[dict[str, str]]) -> None:
    reply = engine.chat(messages, GREEDY)
    assert reply.completion_tokens > 0
    assert reply.text == direct_greedy(starter_model, messages, GREEDY.max_tokens or 0)


def test_streamed_tokens_add_up_to_the_reply(engine: EngineClient) -> None:
    pieces: list[str] = []
    reply = engine.chat([{"role": "user", "content": "Count from one to ten in words."}], GREEDY, on_token=pieces.append)
    assert len(pieces) > 3
    assert "".join(pieces) == reply.text
    assert reply.ttft_s > 0 and reply.tokens_per_s > 0
    assert reply.prompt_tokens > 0 and reply.completion_tokens >= len(pieces)


def test_stop_ends_the_reply_and_keeps_the_text(engine: EngineClient) -> None:
    pieces: list[str] = []
    sampling = SamplingParams(temperature=0.7, max_tokens=2000, seed=1)
    reply = None
    for event in engine.stream([{"role": "user", "content": LONG_PROMPT}], sampling):
        if event["ev"] == "token":
            pieces.append(event["text"])
            if len(pieces) == 5:
                threading.Thread(target=engine.cancel).start()
        elif event["ev"] == "done":
            reply = event["reply"]
    assert reply is not None
    assert reply.finish_reason == "cancelled"
    assert 5 <= reply.completion_tokens < 2000
    assert reply.text == "".join(pieces)
    # the engine is usable right after a stop
    assert engine.chat([{"role": "user", "content": "Hi"}], GREEDY).finish_reason in ("stop", "length")


def test_follow_up_reuses_the_kv_cache(engine: EngineClient) -> None:
    history = [{"role": "user", "content": "Tell me one fact about the moon."}]
    first = engine.chat(history, GREEDY)
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And one about the sun?"}]
    second = engine.chat(history, GREEDY)
    assert second.prompt_tokens > first.prompt_tokens
    # only the new turn is processed: the first prompt (and most of the reply) comes from the cache
    assert second.cached_tokens >= first.prompt_tokens
    assert second.evaluated_prompt_tokens < 30 < second.prompt_tokens


def test_seeded_sampling_is_reproducible(engine: EngineClient) -> None:
    sampling = SamplingParams(temperature=0.9, max_tokens=24, seed=1234)
    messages = [{"role": "user", "content": "Invent a name for a cat."}]
    assert engine.chat(messages, sampling).text == engine.chat(messages, sampling).text


def test_engine_crash_keeps_partial_reply_and_restarts(starter_model: Path, tmp_path: Path) -> None:
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(starter_model, load_params())
        first_pid = client.pid
        pieces: list[str] = []
        with pytest.raises(EngineCrashed) as info:
            for event in client.stream([{"role": "user", "content": LONG_PROMPT}], SamplingParams(max_tokens=4000)):
                if event["ev"] == "token":
                    pieces.append(event["text"])
                    if len(pieces) == 3:
                        os.kill(first_pid, signal.SIGKILL)
        assert "SIGKILL" in str(info.value)
        assert info.value.partial_text == "".join(pieces)  # type: ignore[attr-defined]
        assert not client.alive
        # the next message starts a new engine and loads the same model again
        reply = client.chat([{"role": "user", "content": "Hello"}], GREEDY)
        assert reply.completion_tokens > 0
        assert client.pid != first_pid and client.restarts == 1
    finally:
        client.close()


def test_overlong_conversation_drops_oldest_turns_keeps_system(starter_model: Path, tmp_path: Path) -> None:
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(starter_model, load_params(n_ctx=256))
        filler = "The quick brown fox jumps over the lazy dog. " * 6
        messages = [{"role": "system", "content": "Reply with OK."}]
        for i in range(6):
            messages += [{"role": "user", "content": f"{i}: {filler}"}, {"role": "assistant", "content": "OK"}]
        messages.append({"role": "user", "content": "Last question: say OK."})
        reply = client.chat(messages, SamplingParams(temperature=0, max_tokens=16))
        assert reply.dropped_messages >= 2
        assert reply.prompt_tokens + 16 <= 256
        # a context llama.cpp pads (320 -> 512) still holds only what was asked for
        client.load(starter_model, load_params(n_ctx=320))
        assert client.model is not None and client.model.n_ctx == 320
        reply = client.chat(messages, SamplingParams(temperature=0, max_tokens=16))
        assert reply.dropped_messages >= 2 and reply.prompt_tokens + 16 <= 320
        # the system prompt survives the cut
        assert client.count_tokens(messages[:1]) > 0
    finally:
        client.close()


def test_model_without_template_uses_builtin_chatml(no_template_model: Path, tmp_path: Path) -> None:
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        info = client.load(no_template_model, load_params())
        assert info.template_source == "builtin"
        assert info.template_name == "chatml"
        assert "chatml" in info.template_note and "no chat template" in info.template_note
        reply = client.chat([{"role": "user", "content": "What is 2+2?"}], GREEDY)
        assert reply.completion_tokens > 0 and "<|im_end|>" not in reply.text
    finally:
        client.close()


def test_unload_frees_the_model_and_a_new_load_works(starter_model: Path, tmp_path: Path) -> None:
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(starter_model, load_params())
        client.unload()
        assert client.model is None and client.alive
        with pytest.raises(EngineError, match="no model is loaded"):
            client.chat([{"role": "user", "content": "hi"}], GREEDY)
        client.load(starter_model, load_params())
        assert client.chat([{"role": "user", "content": "hi"}], GREEDY).completion_tokens > 0
    finally:
        client.close()


def test_the_model_keeps_one_pool_of_compute_threads_that_sleeps_between_requests(starter_model: Path, tmp_path: Path) -> None:
    """The engine's ggml is built without OpenMP and the host keeps a pool of the load's threads
    with the model (engine.threadpool): a reload frees the old pool (no thread left behind), and
    once a request is done the pool sleeps instead of polling for the next graph."""
    import time

    import psutil

    client = EngineClient(log_path=tmp_path / "engine.log")
    hi = [{"role": "user", "content": "hi"}]
    try:
        client.load(starter_model, load_params())
        assert client.model is not None and client.model.threads == f"{THREADS} threads"
        assert client.pid is not None
        host = psutil.Process(client.pid)
        client.chat(hi, GREEDY)
        threads = host.num_threads()
        busy = sum(host.cpu_times()[:2])
        time.sleep(1.0)
        idle_cpu = sum(host.cpu_times()[:2]) - busy
        assert idle_cpu < 0.05, f"the idle engine host used {idle_cpu:.2f} s of CPU in a second"
        for _ in range(2):
            client.unload()
            client.load(starter_model, load_params())
            client.chat(hi, GREEDY)
        assert host.num_threads() == threads
    finally:
        client.close()


def test_model_with_template_reports_it(engine: EngineClient) -> None:
    assert engine.model is not None
    assert engine.model.template_source == "gguf"
    assert engine.model.n_ctx == TEST_CTX and engine.model.device == "CPU"


def test_hostile_chat_template_is_sandboxed(starter_model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    hostile = tmp_path / "hostile.gguf"
    template = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--chat-template", template,
         str(starter_model), str(hostile)],
        check=True, capture_output=True,
    )
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(hostile, load_params())
        with pytest.raises(EngineError, match="unsafe"):
            client.chat([{"role": "user", "content": "hi"}], GREEDY)
        assert client.alive  # the refusal is an error message, not a dead engine
    finally:
        client.close()
