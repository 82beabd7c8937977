"""A vision model in the real window against the local Hub: the Hub page shows each model with its
projector and counts the projector's size; one click downloads both; My models shows the model with a
vision badge and never lists the projector."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import Qt

from app.core.planner.memory import human_bytes
from app.ui.library.page import VISION_BADGE
from app.ui.main_window import MainWindow
from tests.conftest import VISION_REPO, window_on_hub
from tests.support.hub_server import HubServer
from tests.support.tiny_vision import tiny_vision_pair
from tests.ui.hub.test_hub_window import WAIT_MS, download_button, open_model, search


@pytest.fixture
def vision_window(qtbot, vision_hub: HubServer) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    yield from window_on_hub(qtbot, vision_hub)  # type: ignore[misc]


def test_a_vision_model_is_shown_and_downloaded_with_its_projector(qtbot, vision_window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    pair = tiny_vision_pair()
    model_bytes, proj_bytes = pair.model.stat().st_size, pair.projector.stat().st_size
    search(qtbot, vision_window, "vision")
    open_model(qtbot, vision_window, VISION_REPO)
    panel = vision_window.hub_page.model
    row = panel.row_of("tiny-vision-Q8_0.gguf")
    assert "+ mmproj-tiny-vision-F16.gguf (vision)" in panel.files.item(row, 1).text()
    assert panel.files.item(row, 2).text() == f"{human_bytes(model_bytes + proj_bytes)} with projector"
    assert download_button(vision_window, "tiny-vision-Q8_0.gguf").text() == "Download both"
    qtbot.waitUntil(lambda: bool(panel.verdicts), timeout=WAIT_MS)
    assert "with its projector" in panel.files.item(row, 3).text()

    qtbot.mouseClick(download_button(vision_window, "tiny-vision-Q8_0.gguf"), Qt.MouseButton.LeftButton)
    manager = vision_window.downloads.manager
    qtbot.waitUntil(lambda: len(manager.downloads()) == 2 and all(d.state == "done" for d in manager.downloads()),
                    timeout=WAIT_MS)
    assert sorted(d.filename for d in manager.downloads()) == ["mmproj-tiny-vision-F16.gguf", "tiny-vision-Q8_0.gguf"]

    vision_window.pages.setCurrentWidget(vision_window.library_page)
    library = vision_window.library_page
    model = next(d.dest for d in manager.downloads() if d.filename == "tiny-vision-Q8_0.gguf")
    library.refresh()
    qtbot.waitUntil(lambda: library.select_path(model) and library.selected() is not None
                    and library.selected().vision, timeout=WAIT_MS)
    names = [library.table.item(r, 0).text() for r in range(library.table.rowCount())]
    assert f"tiny-vision-Q8_0  {VISION_BADGE}" in names
    assert not any("mmproj" in library.table.item(r, 7).text() for r in range(library.table.rowCount()))
    starter = next(r for r, e in enumerate(library.entries) if e.origin == "starter")
    assert VISION_BADGE not in library.table.item(starter, 0).text()
    assert Path(library.entries[names.index(f"tiny-vision-Q8_0  {VISION_BADGE}")].projector or "").name == "mmproj-tiny-vision-F16.gguf"
