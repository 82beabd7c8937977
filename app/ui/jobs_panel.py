"""One panel for every long job (downloads, conversions, quantizations, engine loads): progress and
Cancel. Pages report their jobs here by key; the window asks before closing while any is active."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QDockWidget, QHBoxLayout, QHeaderView, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.ui.icons import set_icon
from app.ui.safe_text import plain_label, plain_tooltip
from app.ui.tables import make_table, read_only_item

ACTIVE_STATES = ("queued", "running", "downloading", "verifying", "loading", "converting", "quantizing", "imatrix",
                 "evaluating")
COLUMNS = ["Job", "Progress", "State", ""]


@dataclass
class JobInfo:
    key: str
    title: str
    state: str
    fraction: float | None = None
    detail: str = ""
    cancel: Callable[[], None] | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class JobsPanel(QDockWidget):
    active_changed = Signal(int)  # number of active jobs
    finished_clear_ms = 8000  # a finished job leaves the panel after this long; an empty panel hides

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Jobs", parent)
        self.setObjectName("jobs-panel")
        self.jobs: dict[str, JobInfo] = {}
        self._rows: dict[str, int] = {}
        self.table = make_table(COLUMNS)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(1, 220)
        self.summary = plain_label("No jobs")
        self.clear_button = set_icon(QPushButton("Clear finished"), "clear")
        self.clear_button.clicked.connect(self.clear_finished)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        row.addWidget(self.clear_button)
        layout.addLayout(row)
        self.setWidget(body)

    def upsert(self, key: str, title: str, state: str, *, fraction: float | None = None, detail: str = "",
               cancel: Callable[[], None] | None = None) -> JobInfo:
        before = self.active_count()
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = JobInfo(key, title, state, fraction, detail, cancel)
            self._add_row(job)
        else:
            job.title, job.state, job.fraction, job.detail = title, state, fraction, detail
            if cancel is not None:
                job.cancel = cancel
        self._show(job)
        if not job.active:
            QTimer.singleShot(self.finished_clear_ms, self, lambda key=key: self._expire(key))
        after = self.active_count()
        if after != before:
            self.active_changed.emit(after)
        self.summary.setText(f"{after} running" if after else "No jobs running")
        return job

    def _add_row(self, job: JobInfo) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        self._rows[job.key] = row
        for col in (0, 2):
            self.table.setItem(row, col, read_only_item(""))
        bar = QProgressBar()
        bar.setRange(0, 1000)
        self.table.setCellWidget(row, 1, bar)
        button = set_icon(QPushButton("Cancel"), "cancel")
        button.clicked.connect(lambda _=False, key=job.key: self.cancel(key))
        self.table.setCellWidget(row, 3, button)

    def _show(self, job: JobInfo) -> None:
        row = self._rows[job.key]
        self.table.item(row, 0).setText(job.title)
        text = job.state + (f" — {job.detail}" if job.detail else "")
        self.table.item(row, 2).setText(text)
        self.table.item(row, 2).setToolTip(plain_tooltip(text))
        bar: QProgressBar = self.table.cellWidget(row, 1)  # type: ignore[assignment]
        if job.fraction is None and job.active:
            bar.setRange(0, 0)  # busy, size unknown
        else:
            bar.setRange(0, 1000)
            bar.setValue(int(1000 * (job.fraction if job.fraction is not None else (1.0 if job.state == "done" else 0.0))))
        button: QPushButton = self.table.cellWidget(row, 3)  # type: ignore[assignment]
        button.setEnabled(job.active and job.cancel is not None)

    def cancel(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is not None and job.active and job.cancel is not None:
            job.cancel()

    def cancel_button(self, key: str) -> QPushButton:
        return self.table.cellWidget(self._rows[key], 3)  # type: ignore[return-value]

    def active_count(self) -> int:
        return sum(1 for j in self.jobs.values() if j.active)

    def active_titles(self) -> list[str]:
        return [j.title for j in self.jobs.values() if j.active]

    def _expire(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None or job.active:
            return  # cleared already, or restarted meanwhile
        self._remove(key)
        if not self.jobs:
            self.hide()

    def _remove(self, key: str) -> None:
        self.jobs.pop(key, None)
        row = self._rows.pop(key, None)
        if row is None:
            return
        self.table.removeRow(row)
        self._rows = {k: (r - 1 if r > row else r) for k, r in self._rows.items()}

    def clear_finished(self) -> None:
        keep = [j for j in self.jobs.values() if j.active]
        self.jobs, self._rows = {}, {}
        self.table.setRowCount(0)
        for job in keep:
            self.jobs[job.key] = job
            self._add_row(job)
            self._show(job)
