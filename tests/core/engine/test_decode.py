"""The engine's decode loop on llama.cpp's C API: seeded sampling identical to llama-cpp-python's,
grammar-constrained replies, forced tokens, logit bias, token batching, and prompt-lookup
speculative decoding that drafts from the prompt and keeps the reply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from app.core.engine.host import _Batcher
from app.core.engine.protocol import Reply
from app.core.engine.reasoning import Split

CODE = "".join(f"def f{i}(a, b):\n    return a + b * {i}\n\n" for i in range(6))
EDIT = [{"role": "user", "content": "Rename the parameter b to y everywhere and return the whole code:\n\n" + CODE}]


def test_a_seeded_sampled_reply_matches_llama_cpp_python(engine: EngineClient, starter_model: Path) -> None:
    import llama_cpp

    prompt = [{"role": "user", "content": "Tell me about the sea."}]
    s = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, max_tokens=30, seed=1234)
    reply = engine.chat(prompt, s)
    llm = llama_cpp.Llama(model_path=str(starter_model), n_ctx=2048, n_threads=2, verbose=False, seed=1234)
    ref = llm.create_chat_completion(messages=prompt, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                                     repeat_penalty=1.1, max_tokens=30, seed=1234)
    llm.close()
    assert reply.text == ref["choices"][0]["message"]["content"]


def test_a_grammar_constrains_the_reply(engine: EngineClient) -> None:
    grammar = 'root ::= "{" ws "\\"colour\\":" ws "\\"" [a-z]+ "\\"" ws "}"\nws ::= [ ]?'
    reply = engine.chat([{"role": "user", "content": "Give a colour as JSON."}],
                        SamplingParams(temperature=0.0, max_tokens=30), grammar=grammar)
    data = json.loads(reply.text)
    assert list(data) == ["colour"] and data["colour"].isalpha()


def test_logit_bias_bans_a_token(engine: EngineClient) -> None:
    prompt = [{"role": "user", "content": "Say the word hello."}]
    plain = engine.chat(prompt, SamplingParams(temperature=0.0, max_tokens=8))
    word = plain.text.split()[0]
    banned = engine.chat(prompt, SamplingParams(temperature=0.0, max_tokens=8),
                         logit_bias={t: -100.0 for t in _tokens(word)})
    assert banned.text.split()[:1] != [word]


def test_plain_greedy_reads_the_argmax_in_place_and_picks_what_the_sampler_chain_picks(engine: EngineClient) -> None:
    """Plain greedy skips llama.cpp's chain (engine.decode._argmax); a bias of 0 changes no logit but
    sends the same reply through the chain: token for token the same. Both replies start from the
    same cache (another conversation in between): a prompt answered again from the cache evaluates
    its last token alone, through other kernels than the batch did, and a near tie far into the
    reply may then tip the other way (seen on an AVX2 machine)."""
    prompt = [{"role": "user", "content": "Write a long story about a dragon who learns to read."}]
    greedy = SamplingParams(temperature=0.0, max_tokens=120)

    def from_the_same_cache(**kwargs: Any) -> Reply:
        engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))
        return engine.chat(prompt, greedy, **kwargs)

    fast = from_the_same_cache()
    chained = from_the_same_cache(logit_bias={0: 0.0})
    assert fast.cached_tokens == chained.cached_tokens
    assert fast.completion_tokens == chained.completion_tokens and fast.text == chained.text


def _tokens(word: str) -> list[int]:
    import llama_cpp

    from app.core.starter import starter_model_path

    llm = llama_cpp.Llama(model_path=str(starter_model_path()), vocab_only=True, verbose=False)
    try:
        return llm.tokenize(word.encode(), add_bos=False) + llm.tokenize((" " + word).encode(), add_bos=False)
    finally:
        llm.close()


def test_tokens_reach_the_parent_in_time_batches(engine: EngineClient) -> None:
    events = list(engine.stream([{"role": "user", "content": "Count from one to forty in words."}],
                                SamplingParams(temperature=0.0, max_tokens=120)))
    tokens = [e for e in events if e["ev"] == "token"]
    done = events[-1]["reply"]
    assert "".join(e["text"] for e in tokens) == done.text
    assert 1 <= len(tokens) <= done.completion_tokens
    # the host's batcher: the first piece at once, then one message per FLUSH_S however fast they come
    sent: list[str] = []
    thoughts: list[str] = []
    batcher = _Batcher(lambda text, reasoning: (sent.append(text), thoughts.append(reasoning)))
    for i in range(500):
        batcher.add(Split(reasoning="r" if i < 100 else "", answer="" if i < 100 else str(i % 10)))
    batcher.flush()
    assert thoughts[0] == "r" and "".join(thoughts) == "r" * 100
    assert "".join(sent) == "".join(str(i % 10) for i in range(100, 500)) and len(sent) < 50


def test_prompt_lookup_drafts_from_the_prompt_and_keeps_the_reply(engine: EngineClient) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=160, repeat_penalty=1.0)
    engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))  # a cold prompt for both
    plain = engine.chat(EDIT, greedy)
    engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))
    fast = engine.chat(EDIT, greedy, lookup=8)
    assert fast.drafted_tokens > 0 and fast.accepted_tokens > 0.2 * fast.completion_tokens
    # drafts are checked with the batch kernels, whose rounding may turn a near tie: the reply agrees
    # with plain decoding for most of its length
    n = min(len(plain.text), len(fast.text))
    same = next((i for i in range(n) if plain.text[i] != fast.text[i]), n)
    assert same >= 0.8 * len(plain.text), (plain.text, fast.text)
    assert plain.drafted_tokens == 0


def test_the_incremental_lookup_index_drafts_what_a_full_scan_would() -> None:
    import random

    from app.core.engine.decode import PromptLookup, draft_from_context

    rng = random.Random(7)
    for _ in range(40):
        history = [rng.randrange(12) for _ in range(rng.randrange(1, 300))]
        index = PromptLookup(history[:5])
        for k in range(5, len(history)):
            assert index.draft(6) == draft_from_context(history[:k], 6), k
            index.extend([history[k]])


def test_lookup_backs_off_after_rejected_drafts() -> None:
    from app.core.engine.decode import PromptLookup

    index = PromptLookup([1, 2, 3, 1, 2])  # "1 2" was followed by 3: a draft is ready
    assert index.draft(4) == [3, 1, 2]
    index.verified(0)  # rejected: the next chance is passed up, then two, then four ...
    assert index.draft(4) == [] and index.draft(4) == [3, 1, 2]
    index.verified(0)
    assert [index.draft(4) for _ in range(3)] == [[], [], [3, 1, 2]]
    index.verified(2)  # accepted: drafting resumes at once
    assert index.draft(4) == [3, 1, 2]


def test_a_draft_model_of_the_same_vocabulary_speeds_the_reply(starter_model: Path, tmp_path: Path) -> None:
    import ctypes

    import llama_cpp

    draft = tmp_path / "starter-Q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = 2, True, 2
    assert llama_cpp.llama_model_quantize(str(starter_model).encode(), str(draft).encode(), ctypes.byref(params)) == 0
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        info = client.load_model(starter_model, ctx=2048, draft_model=draft)
        assert info.draft_model == str(draft)
        # the planner places the draft beside the model and counts its memory
        from app.core import hardware
        from app.core.gguf.header import read_header
        from app.core.planner import memory

        main = memory.plan(read_header(starter_model), hardware.detect(), ctx=2048)
        placed = memory.plan_draft(main, read_header(draft), hardware.detect())
        assert placed is not None and placed.n_gpu_layers == 0 and "in RAM" in placed.reason
        assert placed.memory.cpu_bytes > read_header(draft).tensor_bytes
        tight = memory.plan_draft(main, read_header(draft), hardware.detect(), ram=main.memory.cpu_bytes + 1)
        assert tight is None  # no room left beside the model: no draft
        reply = client.chat(EDIT, SamplingParams(temperature=0.0, max_tokens=80, repeat_penalty=1.0), draft_tokens=6)
        assert reply.drafted_tokens > 0 and reply.accepted_tokens > 0.5 * reply.drafted_tokens  # near-identical model
        assert reply.text.strip()
    finally:
        client.close()


def test_a_draft_model_of_another_vocabulary_is_refused_by_name(starter_model: Path, tiny_f16: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from app.core.errors import ModelFileError

    other = tmp_path / "other-eos.gguf"  # the tiny model (the starter's tokenizer) with another end token
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--special-token-by-id", "eos", "7",
                    str(tiny_f16), str(other)], check=True, capture_output=True)
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        with pytest.raises(ModelFileError, match="cannot draft for .*special tokens differ"):
            client.load_model(starter_model, ctx=2048, draft_model=other)
        assert client.load_model(starter_model, ctx=2048, draft_model=tiny_f16).draft_model == str(tiny_f16)
    finally:
        client.close()
