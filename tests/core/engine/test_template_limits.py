"""A chat template from a stranger's GGUF cannot hang or flood the engine: rendering has a time
limit and a size limit, Stop interrupts it, and the engine goes on serving."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from app.core.errors import EngineError
from tests.conftest import load_params

SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}"
FLOOD = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
HELLO = [{"role": "user", "content": "hi"}]


def with_template(starter: Path, out: Path, template: str) -> Path:
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--chat-template", template,
                    str(starter), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = EngineClient(log_path=tmp_path / "engine.log")
    yield c
    c.close()


def test_a_template_that_never_ends_is_refused_in_seconds(client: EngineClient, starter_model: Path, tmp_path: Path) -> None:
    client.load(with_template(starter_model, tmp_path / "spin.gguf", SPIN), load_params())
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="took more than 5 s"):
        client.chat(HELLO, SamplingParams(max_tokens=4))
    assert time.monotonic() - t0 < 15
    client.load(starter_model, load_params())  # the same engine process goes on
    assert client.chat(HELLO, SamplingParams(max_tokens=4)).completion_tokens > 0


def test_a_template_that_floods_is_refused(client: EngineClient, starter_model: Path, tmp_path: Path) -> None:
    client.load(with_template(starter_model, tmp_path / "flood.gguf", FLOOD), load_params())
    with pytest.raises(EngineError, match="more than 8 million characters"):
        client.chat(HELLO, SamplingParams(max_tokens=4))


def test_stop_interrupts_a_slow_template(client: EngineClient, starter_model: Path, tmp_path: Path) -> None:
    client.load(with_template(starter_model, tmp_path / "spin.gguf", SPIN), load_params())
    errors: list[str] = []

    def run() -> None:
        try:
            client.chat(HELLO, SamplingParams(max_tokens=4))
        except EngineError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    client.cancel()
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - t0 < 2
    assert errors and "stopped" in errors[0]
