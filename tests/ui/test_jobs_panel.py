"""The jobs panel: hidden until a job runs, a status-bar indicator opens it, a finished job clears
itself after a while and an empty panel hides again."""

from __future__ import annotations

from PySide6.QtWidgets import QMainWindow

from app.ui.jobs_panel import JobsPanel


def test_panel_follows_its_jobs(qtbot) -> None:  # type: ignore[no-untyped-def]
    window = QMainWindow()
    qtbot.addWidget(window)
    panel = JobsPanel(window)
    panel.finished_clear_ms = 200
    window.show()
    panel.hide()
    counts: list[int] = []
    panel.active_changed.connect(counts.append)
    panel.upsert("a", "Download a", "downloading", fraction=0.5)
    panel.upsert("b", "Quantize b", "quantizing")
    assert counts == [1, 2] and panel.table.rowCount() == 2
    panel.show()
    panel.upsert("a", "Download a", "done", fraction=1.0)
    assert counts[-1] == 1
    qtbot.waitUntil(lambda: "a" not in panel.jobs, timeout=5000)
    assert panel.table.rowCount() == 1 and panel.table.item(0, 0).text() == "Quantize b" and panel.isVisible()
    panel.upsert("b", "Quantize b", "failed", detail="no room")
    qtbot.waitUntil(lambda: not panel.jobs, timeout=5000)
    assert panel.table.rowCount() == 0 and not panel.isVisible()


def test_status_bar_indicator_opens_the_panel(qtbot, hub_window) -> None:  # type: ignore[no-untyped-def]
    hub_window.jobs.hide()
    hub_window.report_job("test-job", "A test job", "running", fraction=0.1)
    assert hub_window.jobs_label.isVisible() and "1 job running" in hub_window.jobs_label.text()
    hub_window.jobs.hide()
    hub_window.jobs_label.click()
    assert hub_window.jobs.isVisible()
    hub_window.report_job("test-job", "A test job", "done", fraction=1.0)
    assert not hub_window.jobs_label.isVisible()
