"""Load options… with saved workers, for a model that does not fit here (pytest-qt, offscreen, real
workers on loopback): Auto is the planner's split, planned off the GUI thread, with a memory bar
per worker beside the RAM bar."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from app.core import hardware
from app.core import settings as app_settings
from app.core.planner.memory import RAM_MARGIN
from app.core.rpc.worker import Worker, parse_size
from app.ui.dialogs.load import LoadDialog
from tests.core.rpc.conftest import start_worker

WAIT_MS = 60_000


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[list[Worker]]:
    workers = [start_worker(tmp_path / "a", mem=parse_size("150M")), start_worker(tmp_path / "b", mem=parse_size("64M"))]
    yield workers
    for w in workers:
        w.stop()


def test_auto_is_a_split_with_a_bar_per_worker(qtbot, starter_model: Path, two_workers: list[Worker]) -> None:  # type: ignore[no-untyped-def]
    app_settings.update(workers=[w.address for w in two_workers], default_ctx=512)
    small = replace(hardware.detect(), ram_available_bytes=RAM_MARGIN + 80_000_000, gpus=())
    dialog = LoadDialog(str(starter_model), gpu_offload=False, hw=small)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.header is not None, timeout=WAIT_MS)
    assert dialog.auto_plan is not None and dialog.auto_plan.params.rpc
    titles = sorted(bar.title for bar in dialog.worker_bars)
    assert len(titles) == 2 and all(any(w.address in t for t in titles) for w in two_workers)
    assert all("layers" in t for t in titles) and not any(bar.over for bar in dialog.worker_bars)
    assert "split:" in dialog.reasons.text() and not dialog.cpu_bar.over
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    assert ok.isEnabled()
    ok.click()
    assert dialog.params is not None and dialog.params.rpc == dialog.auto_plan.params.rpc
