"""A real API server process over a temporary library that holds the starter model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from app.core.engine.protocol import SamplingParams
from tests.conftest import THREADS
from tests.support.api_server import ServerProcess

API_CTX = 1024
KEY = "qd-test-key-0123456789"


def greedy(max_tokens: int) -> SamplingParams:
    """What a temperature-0 API request samples with: greedy, no other sampler (OpenAI's defaults)."""
    return SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, max_tokens=max_tokens)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, starter_model: Path) -> Iterator[ServerProcess]:
    """``quantdesk serve --model starter`` on a free loopback port, no API key."""
    proc = ServerProcess(tmp_path_factory.mktemp("serve-home"), "--model", "starter", "--ctx", str(API_CTX),
                         "--threads", str(THREADS))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory, starter_model: Path) -> Iterator[ServerProcess]:
    """The same with an API key and a queue of one request per model."""
    proc = ServerProcess(tmp_path_factory.mktemp("serve-home"), "--model", "starter", "--ctx", str(API_CTX),
                         "--threads", str(THREADS), "--api-key", KEY, "--queue", "1")
    yield proc
    proc.stop()
