"""Models under a memory budget: two models requested alternately where the budget holds one both
answer, and never both are loaded; requests for one model are served first come, first served."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from app.core import hardware
from app.core.gguf.header import read_header
from app.core.planner import memory
from tests.support.api_server import ServerProcess

CTX = 512


def need_bytes(model: Path) -> int:
    plan = memory.plan(read_header(model), hardware.detect(), ctx=CTX, gpu_mem=0, ram=1 << 40)
    return plan.memory.cpu_bytes


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, starter_model: Path, no_template_model: Path) -> Path:
    home = tmp_path_factory.mktemp("serve-home")
    (home / "models").mkdir()
    shutil.copy(no_template_model, home / "models" / "smollm2-plain.gguf")
    return home


def test_two_models_alternate_within_a_budget_that_holds_one(two_models: Path, starter_model: Path) -> None:
    budget = int(need_bytes(starter_model) * 1.5)
    server = ServerProcess(two_models, "--ctx", str(CTX), "--threads", "2", "--ram", str(budget))
    try:
        c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=120)
        ids = sorted(m.id for m in c.models.list().data)
        assert ids == ["SmolLM2-135M-Instruct.Q4_1", "smollm2-plain"]
        for model in ids * 2:
            reply = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0)
            assert reply.model == model and reply.choices[0].message.content is not None
            assert len(server.health()["loaded"]) == 1
        health = server.health()
        assert health["max_loaded"] == 1 and health["loads"] == 4 and health["unloads"] == 3
    finally:
        assert server.stop() == 0


def test_requests_for_one_model_are_served_in_arrival_order(tmp_path: Path, starter_model: Path) -> None:
    server = ServerProcess(tmp_path, "--model", "starter", "--ctx", str(CTX), "--threads", "2")
    try:
        c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=120)
        finished: list[int] = []
        lock = threading.Lock()

        def ask(i: int) -> None:
            c.chat.completions.create(model="starter", messages=[{"role": "user", "content": f"Count to {i}"}], max_tokens=30,
                                      temperature=0, logit_bias={"0": -100, "2": -100})
            with lock:
                finished.append(i)

        threads: list[Any] = []
        for i in range(5):
            t = threading.Thread(target=ask, args=(i,))
            t.start()
            threads.append(t)
            # the next one arrives after this one is running or queued
            assert server.wait_for(lambda n=i + 1: server.health()["active"] - 1 + len(finished) >= n, timeout=10)
            time.sleep(0.05)
        for t in threads:
            t.join(120)
        assert finished == [0, 1, 2, 3, 4]
    finally:
        server.stop()


def test_under_memory_pressure_models_take_turns(two_models: Path, starter_model: Path) -> None:
    """A request for the other model is not starved by a busy model's queue: it runs as soon as the
    running request ends, before the requests that queued behind it for the first model."""
    budget = int(need_bytes(starter_model) * 1.5)
    server = ServerProcess(two_models, "--ctx", str(CTX), "--threads", "2", "--ram", str(budget))
    try:
        c = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=120)
        a, b = "SmolLM2-135M-Instruct.Q4_1", "smollm2-plain"
        c.chat.completions.create(model=a, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)  # a is loaded
        order: list[str] = []
        lock = threading.Lock()

        def ask(name: str, model: str, tokens: int) -> None:
            c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tell a story"}], max_tokens=tokens,
                                      temperature=0, logit_bias={"0": -100, "2": -100})
            with lock:
                order.append(name)

        threads = []
        for n, (name, model, tokens) in enumerate((("a1", a, 60), ("a2", a, 4), ("b1", b, 4)), start=1):
            t = threading.Thread(target=ask, args=(name, model, tokens))
            t.start()
            threads.append(t)
            assert server.wait_for(lambda n=n: server.health()["active"] - 1 + len(order) >= n, timeout=10)
            time.sleep(0.1)
        for t in threads:
            t.join(120)
        assert order == ["a1", "b1", "a2"]
        assert server.health()["max_loaded"] == 1
    finally:
        server.stop()
