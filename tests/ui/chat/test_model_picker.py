"""The chat header's model picker on the real window and the real engine: it shows the loaded model
with its state, fit and context, and switches to another library model without leaving the chat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import Qt

from app.core.engine import SamplingParams
from app.core.settings import models_dir
from app.ui.app import create_window
from app.ui.chat.model_picker import PATH_ROLE
from app.ui.main_window import MainWindow
from tests.ui.chat.test_chat_window import WAIT_MS, close_window

SHORT = SamplingParams(temperature=0.0, max_tokens=12, repeat_penalty=1.0)


@pytest.fixture
def second_model(starter_model: Path) -> Path:
    """A second real model in the models folder: the starter under another name (its metadata
    changed, so the library does not fold it into the starter as a duplicate)."""
    out = models_dir() / "SmolLM2-second-Q4_1.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--general-name", "SmolLM2 second",
                    str(starter_model), str(out)], check=True, capture_output=True)
    return out.resolve()


@pytest.fixture
def window(qtbot, second_model: Path) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    win = create_window()
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.bridge.model_loaded, timeout=WAIT_MS):
        win.open_initial_model()
    yield win
    close_window(win)


def pick(win: MainWindow, path: Path) -> None:
    """Choose ``path`` in the picker's list as a click on its row does (the combo's activated signal)."""
    combo = win.chat.picker.combo
    index = next(i for i in range(combo.count()) if combo.itemData(i, PATH_ROLE) and Path(combo.itemData(i, PATH_ROLE)) == path)
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def chat_once(qtbot, win: MainWindow, text: str) -> None:  # type: ignore[no-untyped-def]
    win.chat.composer.input.setPlainText(text)
    qtbot.mouseClick(win.chat.composer.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.chat.stream_id is None and not win.bridge.busy, timeout=WAIT_MS)


def test_picker_switches_models_without_leaving_the_chat(qtbot, window: MainWindow, starter_model: Path,  # type: ignore[no-untyped-def]
                                                         second_model: Path) -> None:
    picker = window.chat.picker
    # the loaded model, its state, fit and context, in the chat's own header
    assert "starter model" in picker.combo.currentText()
    assert picker.status.text().startswith("Loaded · CPU only · context ")
    assert f"{window.chat.model.n_ctx:,}" in picker.status.text()  # type: ignore[union-attr]
    # the library's models are offered (the library is read after the first load, off the GUI thread)
    qtbot.waitUntil(lambda: second_model in [Path(p) for p in picker.paths()], timeout=WAIT_MS)

    conv = window.chat.new_conversation()
    window.chat.store.update_conversation(conv.id, sampling=SHORT)
    window.chat.open_conversation(conv.id)
    chat_once(qtbot, window, "Say hello.")
    first_reply = window.chat.messages.widgets[-1]
    assert first_reply.role_label.text() == starter_model.stem

    with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS) as loaded:
        pick(window, second_model)
        assert picker.status.text() == f"Loading {second_model.name}…"
    assert Path(loaded.args[0].path) == second_model
    assert Path(window.bridge.client.model.path) == second_model  # type: ignore[union-attr]
    assert window.pages.currentWidget() is window.chat and window.chat.conversation is not None
    assert window.chat.conversation.id == conv.id and len(window.chat.messages.widgets) == 2  # the chat stays
    assert picker.combo.currentText() == second_model.stem and picker.status.text().startswith("Loaded · ")
    assert second_model.name in window.model_label.text()

    chat_once(qtbot, window, "Say goodbye.")
    replies = [w for w in window.chat.messages.widgets if w.message.role == "assistant"]
    assert [w.role_label.text() for w in replies] == [starter_model.stem, second_model.stem]  # each reply names its model
    assert replies[-1].message.content

    with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS):
        pick(window, starter_model)
    assert Path(window.bridge.client.model.path) == starter_model  # type: ignore[union-attr]
    assert "starter model" in picker.combo.currentText()


def test_picker_shows_a_failed_load_and_keeps_the_model(qtbot, window: MainWindow, starter_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 64)
    with qtbot.waitSignal(window.bridge.load_failed, timeout=WAIT_MS):
        window.load_model(str(broken))
    assert window.error_box is not None and window.error_box.isVisible()  # the window says it too
    picker = window.chat.picker
    assert picker.status.text().startswith(f"Failed to load · still using {starter_model.name}: ")
    assert "starter model" in picker.combo.currentText()


def test_an_empty_chat_says_what_is_loaded_and_what_to_do(qtbot, hub_window: MainWindow, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    window = hub_window  # Discover talks to the local Hub
    page = window.chat
    assert page.empty_state.isVisible() and "No model is loaded yet" in page.empty_state.model_line.text()
    with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS):
        window.open_initial_model()
        assert page.empty_state.model_line.text() == f"Loading {starter_model.name}…"
    conv = page.new_conversation()
    assert page.empty_state.isVisible() and not page.messages.isVisible()
    assert page.empty_state.model_line.text().startswith(f"The starter model, {starter_model.stem}, is loaded")
    assert "press Enter" in page.empty_state.hint.text()
    page.store.update_conversation(conv.id, sampling=SHORT)
    page.open_conversation(conv.id)
    chat_once(qtbot, window, "Hi.")
    assert page.messages.isVisible() and not page.empty_state.isVisible()  # the messages take its place
    page.new_conversation()
    assert page.empty_state.isVisible()
    qtbot.mouseClick(page.empty_state.discover_button, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.hub_page
    qtbot.waitUntil(lambda: not window.hub_page._fetching and window.hub_page.results.rowCount() > 0, timeout=WAIT_MS)
