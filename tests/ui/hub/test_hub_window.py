"""The real window against the local Hub: search, a model page, downloads with pause / resume /
cancel, the library, and opening a downloaded model in chat."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from app.core.settings import models_dir
from app.ui.main_window import MainWindow
from tests.support.hub_server import HubServer

WAIT_MS = 60_000
STARTER_REPO, STARTER_FILE = "qd/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"



def search(qtbot, win: MainWindow, text: str) -> None:  # type: ignore[no-untyped-def]
    win.pages.setCurrentWidget(win.hub_page)
    qtbot.waitUntil(lambda: not win.hub_page._fetching, timeout=WAIT_MS)
    win.hub_page.query.setText(text)
    qtbot.mouseClick(win.hub_page.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.hub_page._fetching and win.hub_page.results.rowCount() > 0, timeout=WAIT_MS)


def open_model(qtbot, win: MainWindow, repo: str) -> None:  # type: ignore[no-untyped-def]
    row = [r.id for r in win.hub_page.rows].index(repo)
    win.hub_page.results.selectRow(row)
    panel = win.hub_page.model
    qtbot.waitUntil(lambda: panel.details is not None and panel.details.repo_id == repo, timeout=WAIT_MS)


def download_button(win: MainWindow, path: str):  # type: ignore[no-untyped-def]
    panel = win.hub_page.model
    return panel.files.cellWidget(panel.row_of(path), 5)


def test_search_and_model_page_with_fit_verdicts(qtbot, hub_window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    search(qtbot, hub_window, "")
    assert [r.id for r in hub_window.hub_page.rows] == [STARTER_REPO, "qd/tiny-GGUF", "qd/gated-GGUF"]
    assert hub_window.hub_page.results.item(2, 5).text() == "gated"
    search(qtbot, hub_window, "tiny")
    open_model(qtbot, hub_window, "qd/tiny-GGUF")
    panel = hub_window.hub_page.model
    qtbot.waitUntil(lambda: bool(panel.verdicts), timeout=WAIT_MS)
    fits = [panel.files.item(r, 3).text() for r in range(panel.files.rowCount())]
    assert sum("★ recommended" in f for f in fits) == 1
    assert panel.cpu_bar.isVisible() and "RAM:" in panel.cpu_bar.text()  # the recommended file's memory plan
    assert not panel.cpu_bar.over
    assert any("2 parts" in panel.files.item(r, 1).text() for r in range(panel.files.rowCount()))
    assert "vision projector" in panel.files.item(panel.files.rowCount() - 1, 1).text()
    hub_window.hub_page.gguf_only.setChecked(False)
    search(qtbot, hub_window, "GPTQ")
    open_model(qtbot, hub_window, "qd/tiny-GPTQ")
    assert "GPTQ" in panel.explanation.text() and not panel.convert_button.isVisible()
    search(qtbot, hub_window, "safetensors")
    open_model(qtbot, hub_window, "qd/tiny-safetensors")
    assert panel.convert_button.isVisible() and "Convert" in panel.explanation.text()
    qtbot.waitUntil(lambda: "no model card" in panel.card.toPlainText(), timeout=WAIT_MS)


def test_download_pause_resume_library_and_chat(qtbot, hub_window: MainWindow, hub: HubServer, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    hub.bytes_per_second = 40_000_000  # a ~2.5 s download: time to pause it
    search(qtbot, hub_window, "smol")
    open_model(qtbot, hub_window, STARTER_REPO)
    qtbot.waitUntil(lambda: "Ready" not in hub_window.statusBar().currentMessage(), timeout=1000)
    qtbot.mouseClick(download_button(hub_window, STARTER_FILE), Qt.MouseButton.LeftButton)
    manager = hub_window.downloads.manager
    page = hub_window.downloads_page
    qtbot.waitUntil(lambda: bool(page.rows), timeout=WAIT_MS)
    [download_id] = page.rows
    qtbot.waitUntil(lambda: manager.get(download_id).done > 5_000_000, timeout=WAIT_MS)
    assert hub_window.pages.tabText(3) == "Downloads (1)"
    toggle, cancel = page.buttons(download_id)
    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)  # pause
    qtbot.waitUntil(lambda: manager.get(download_id).state == "paused" and toggle.text() == "Resume", timeout=WAIT_MS)
    kept = manager.get(download_id).done
    assert 0 < kept < starter_model.stat().st_size
    hub.bytes_per_second = None
    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)  # resume
    with qtbot.waitSignal(page.download_ready, timeout=WAIT_MS) as ready:
        pass
    path = Path(ready.args[0])
    assert path.read_bytes() == starter_model.read_bytes() and path.is_relative_to(models_dir())
    hub_window.pages.setCurrentWidget(hub_window.library_page)
    library = hub_window.library_page
    qtbot.waitUntil(lambda: library.select_path(path), timeout=WAIT_MS)
    assert library.delete_button.isEnabled() and library.open_button.isEnabled()
    with qtbot.waitSignal(hub_window.bridge.model_loaded, timeout=120_000):
        qtbot.mouseClick(library.open_button, Qt.MouseButton.LeftButton)
    assert hub_window.pages.currentWidget() is hub_window.chat
    assert path.name in hub_window.model_label.text()
    assert hub_window.library.find(path).last_used is not None


def test_cancel_leaves_nothing(qtbot, hub_window: MainWindow, hub: HubServer) -> None:  # type: ignore[no-untyped-def]
    hub.bytes_per_second = 20_000_000
    hub_window.start_download(STARTER_REPO, STARTER_FILE)
    page, manager = hub_window.downloads_page, hub_window.downloads.manager
    qtbot.waitUntil(lambda: bool(page.rows) and manager.get(next(iter(page.rows))).done > 1_000_000, timeout=WAIT_MS)
    [download_id] = page.rows
    qtbot.mouseClick(page.buttons(download_id)[1], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "cancelled" in page.table.item(page.rows[download_id], 4).text(), timeout=WAIT_MS)
    assert manager.get(download_id).state == "cancelled"
    assert [p for p in models_dir().rglob("*") if p.is_file()] == []


def test_gated_download_failure_is_shown_inline(qtbot, hub_window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    hub_window.start_download("qd/gated-GGUF", "tiny-Q8_0.gguf")
    page = hub_window.downloads_page
    qtbot.waitUntil(lambda: bool(page.rows) and "failed" in page.table.item(0, 4).text(), timeout=WAIT_MS)
    assert "accept its license" in page.table.item(0, 4).text()


def test_library_delete_asks_first_and_other_apps_files_cannot_be_deleted(qtbot, hub_window: MainWindow, tiny_ggufs: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from PySide6.QtWidgets import QMessageBox

    mine = models_dir() / "me" / "tiny-Q8_0.gguf"
    mine.parent.mkdir(parents=True)
    shutil.copy(tiny_ggufs["q8_0"], mine)
    hub_window.pages.setCurrentWidget(hub_window.library_page)
    library = hub_window.library_page
    qtbot.waitUntil(lambda: library.select_path(mine), timeout=WAIT_MS)
    qtbot.mouseClick(library.delete_button, Qt.MouseButton.LeftButton)
    box = library.delete_box
    assert box is not None and mine.name in box.text() and mine.exists()
    box.button(QMessageBox.StandardButton.Yes).click()
    qtbot.waitUntil(lambda: not mine.exists(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: library.status.text() == f"Deleted {mine.name}", timeout=WAIT_MS)  # off the GUI thread
    assert all(Path(e.path) != mine for e in library.entries)
    starter_row = next(i for i, e in enumerate(library.entries) if e.origin == "starter")
    library.table.selectRow(starter_row)
    assert not library.delete_button.isEnabled() and "never deletes" in library.delete_button.toolTip()


def test_jobs_panel_shows_downloads_and_loads_and_quitting_asks_first(qtbot, hub_window: MainWindow, hub: HubServer, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtWidgets import QMessageBox

    hub.bytes_per_second = 10_000_000
    hub_window.start_download(STARTER_REPO, STARTER_FILE)
    jobs = hub_window.jobs
    qtbot.waitUntil(lambda: jobs.active_count() == 1 and jobs.isVisible(), timeout=WAIT_MS)
    [key] = [k for k in jobs.jobs if k.startswith("download-")]
    assert "1 job running" in hub_window.jobs_label.text()
    hub_window.close()  # a job is running: the window asks instead of closing
    assert hub_window.isVisible() and hub_window.quit_box is not None and "Download " in hub_window.quit_box.text()
    hub_window.quit_box.button(QMessageBox.StandardButton.Cancel).click()
    assert hub_window.isVisible()
    qtbot.mouseClick(jobs.cancel_button(key), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: jobs.jobs[key].state == "cancelled", timeout=WAIT_MS)
    assert jobs.active_count() == 0 and not jobs.cancel_button(key).isEnabled()

    with qtbot.waitSignal(hub_window.bridge.model_loaded, timeout=120_000):
        hub_window.load_model(str(starter_model))
    assert jobs.jobs["engine-load"].state == "done"


def test_cancel_a_model_load_from_the_jobs_panel(qtbot, hub_window: MainWindow, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    hub_window.bridge.client.start()
    hub_window.load_model(str(starter_model))
    jobs = hub_window.jobs
    qtbot.waitUntil(lambda: "engine-load" in jobs.jobs and jobs.jobs["engine-load"].active, timeout=WAIT_MS)
    qtbot.mouseClick(jobs.cancel_button("engine-load"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: jobs.jobs["engine-load"].state == "cancelled", timeout=WAIT_MS)
    assert hub_window.error_box is None and hub_window.model_label.text() == "No model loaded"
    assert hub_window.bridge.client.model is None
    with qtbot.waitSignal(hub_window.bridge.model_loaded, timeout=120_000):  # the next load starts a fresh engine
        hub_window.load_model(str(starter_model))
