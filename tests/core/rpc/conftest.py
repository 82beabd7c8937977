"""One real RPC worker on loopback (a CPU device, a --mem cap), shared by the module's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from app.core.rpc.worker import Worker, WorkerConfig, parse_size
from tests.conftest import THREADS

WORKER_MEM = parse_size("256M")


def start_worker(home: Path, **options: Any) -> Worker:
    """A started worker on free loopback ports (its working folder in ``home``, never the user's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTDESK_HOME", str(home))
        w = Worker(WorkerConfig(port=0, threads=THREADS, **options))
        w.start()
    return w


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = start_worker(tmp_path_factory.mktemp("worker-home"), mem=WORKER_MEM)
    yield w
    w.stop()
