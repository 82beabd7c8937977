"""Instant reopen: the KV cache of a conversation is saved when the engine goes idle and restored by
a later engine process, so continuing an old conversation does not re-read it; the saved caches
stay within their budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.core import paths
from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from tests.conftest import load_params

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, repeat_penalty=1.0)
HISTORY = [
    {"role": "system", "content": "You are a patient teacher. " * 40},
    {"role": "user", "content": "Explain how tides work, in detail. " * 12},
]


def saved(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.kv"))


def wait_saved(root: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(saved(root)) < count:
        assert time.monotonic() < deadline, "the engine saved no KV cache after going idle"
        time.sleep(0.1)


def test_a_restarted_engine_continues_from_the_saved_cache(starter_model: Path, tmp_path: Path) -> None:
    root = paths.home() / "kv-cache"
    live = EngineClient(log_path=tmp_path / "a.log")
    try:
        live.load(starter_model, load_params())
        first = live.chat(HISTORY, GREEDY)
        wait_saved(root, 1)
        follow = HISTORY + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And the moon?"}]
        warm = live.chat(follow, GREEDY)
    finally:
        live.close()
    assert warm.cached_tokens > 0.8 * warm.prompt_tokens  # a live follow-up reuses its cache
    reopened = EngineClient(log_path=tmp_path / "b.log")
    try:
        reopened.load(starter_model, load_params())
        again = reopened.chat(follow, GREEDY)
    finally:
        reopened.close()
    assert again.cached_tokens >= first.prompt_tokens  # restored from disk, not re-read
    assert again.text == warm.text  # the same continuation as in the live engine
    # another context size shapes another cache: nothing to restore
    other = EngineClient(log_path=tmp_path / "c.log")
    try:
        other.load(starter_model, load_params(n_ctx=1024))
        assert other.chat(follow, GREEDY).cached_tokens == 0
    finally:
        other.close()


def test_the_saved_caches_stay_within_their_budget(starter_model: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = paths.home() / "kv-cache"
    client = EngineClient(log_path=tmp_path / "a.log")
    try:
        client.load(starter_model, load_params())
        client.chat(HISTORY, GREEDY)
        wait_saved(root, 1)
        one = saved(root)[0].stat().st_size
    finally:
        client.close()
    monkeypatch.setenv("QUANTDESK_KV_CACHE_BUDGET", str(int(one * 1.5)))
    client = EngineClient(log_path=tmp_path / "b.log")
    try:
        client.load(starter_model, load_params())
        for topic in ("volcanoes", "glaciers", "deserts"):
            client.chat([HISTORY[0], {"role": "user", "content": f"Explain {topic} in detail. " * 12}], GREEDY)
            time.sleep(1.5)  # idle: saved
    finally:
        client.close()
    files = saved(root)
    assert len(files) == 1 and sum(f.stat().st_size for f in files) <= one * 1.5
    assert not list(root.glob("*/*.partial"))
    assert os.access(files[0], os.R_OK)
