"""My models (the library) and Downloads: two pages over the core's Library and DownloadManager."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QCheckBox, QHBoxLayout, QHeaderView, QMessageBox, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.core import settings as app_settings
from app.core.hub.downloads import ACTIVE, DONE, PAUSED, Download
from app.core.library.catalog import Library, LibraryEntry
from app.core.planner.memory import human_bytes
from app.ui.icons import set_icon
from app.ui.messages import user_text
from app.ui.safe_text import plain_label, plain_tooltip
from app.ui.tables import make_table, read_only_item
from app.ui.tasks import DownloadsBridge, TaskRunner

log = logging.getLogger(__name__)

LIBRARY_COLUMNS = ["Name", "Quant", "Architecture", "Size", "Source", "Revision", "Last used", "Path"]
DOWNLOAD_COLUMNS = ["File", "Repository", "Progress", "Speed", "State", "", ""]
VISION_BADGE = "[vision]"  # after the name of a model with a paired projector (projectors are never listed)



def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = time.time() - ts
    if s >= 86400:
        return time.strftime("%Y-%m-%d", time.localtime(ts))
    return "just now" if s < 60 else f"{s / 60:.0f} min ago" if s < 3600 else f"{s / 3600:.0f} h ago"


class LibraryPage(QWidget):
    open_requested = Signal(str)  # path: open in chat
    quantize_requested = Signal(str)  # path
    entries_changed = Signal(list)  # the models listed (LibraryEntry), after each refresh

    def __init__(self, library: Library, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.runner = runner
        self.entries: list[LibraryEntry] = []
        self.settings = app_settings.load()
        self.table = make_table(LIBRARY_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.horizontalHeader().setSectionResizeMode(7, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._sync_buttons)
        self.table.doubleClicked.connect(lambda _: self.open_selected())
        self.open_button = QPushButton("Open in chat")
        set_icon(self.open_button, "chat")
        self.open_button.clicked.connect(self.open_selected)
        self.quantize_button = QPushButton("Quantize…")
        set_icon(self.quantize_button, "quantize")
        self.quantize_button.clicked.connect(lambda: (e := self.selected()) and self.quantize_requested.emit(e.path))
        self.delete_button = QPushButton("Delete…")
        set_icon(self.delete_button, "delete")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = QPushButton("Refresh")
        set_icon(self.refresh_button, "refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.lmstudio = QCheckBox("Include LM Studio's models")
        self.lmstudio.setChecked(self.settings.scan_lmstudio)
        self.ollama = QCheckBox("Include Ollama's models")
        self.ollama.setChecked(self.settings.scan_ollama)
        for box in (self.lmstudio, self.ollama):
            box.setToolTip("Listed in place, never copied; QuantDesk never deletes another app's files")
            box.toggled.connect(self._on_sources_changed)
        self.status = plain_label("")
        self.delete_box: QMessageBox | None = None
        top = QHBoxLayout()
        for w in (self.open_button, self.quantize_button, self.delete_button, self.refresh_button):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.lmstudio)
        top.addWidget(self.ollama)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self._sync_buttons()

    def _on_sources_changed(self) -> None:
        self.settings = app_settings.load()
        self.settings.scan_lmstudio = self.lmstudio.isChecked()
        self.settings.scan_ollama = self.ollama.isChecked()
        app_settings.save(self.settings)
        self.refresh()

    def refresh(self) -> None:
        """Scan every source off the GUI thread (new files' headers are read once and remembered)."""
        self.status.setText("Looking for models…")
        self.refresh_button.setEnabled(False)
        lm, ol = self.lmstudio.isChecked(), self.ollama.isChecked()

        def done(entries: list[LibraryEntry]) -> None:
            self.refresh_button.setEnabled(True)
            self.show_entries(entries)

        def failed(error: BaseException) -> None:
            self.refresh_button.setEnabled(True)
            self.status.setText(user_text(error))

        self.runner.run("library-refresh", lambda: self.library.refresh(lmstudio=lm, ollama=ol), done, failed)

    def show_entries(self, entries: list[LibraryEntry]) -> None:
        self.entries = entries
        self.table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            source = e.source_repo or {"starter": "starter model", "added": "models folder"}.get(e.origin, e.origin)
            if e.origin in ("lmstudio", "ollama", "hf-cache"):
                source = f"{e.owner}" + (f" · {e.source_repo}" if e.source_repo else "")
            if e.also_at:
                source += f" (+{len(e.also_at)} copy elsewhere)"
            name = e.name + (f"  {VISION_BADGE}" if e.vision else "")
            values = [name, e.quant or "?", e.arch or "?", human_bytes(e.size), source, (e.revision or "")[:10],
                      _ago(e.last_used), e.path]
            for col, text in enumerate(values):
                self.table.setItem(row, col, read_only_item(text))
            if e.projector:
                self.table.item(row, 0).setToolTip(plain_tooltip(f"Sees images with its vision projector {e.projector}"))
            elif e.projector_note:
                self.table.item(row, 0).setToolTip(plain_tooltip(f"No vision projector fits this model: {e.projector_note}"))
            self.table.item(row, 7).setToolTip(plain_tooltip(e.path + ("\nAlso at:\n" + "\n".join(e.also_at) if e.also_at else "")))
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(7, QHeaderView.ResizeMode.Stretch)
        self.status.setText(f"{len(entries)} models · {human_bytes(sum(e.size for e in entries))}")
        self._sync_buttons()
        self.entries_changed.emit(entries)

    def selected(self) -> LibraryEntry | None:
        rows = self.table.selectionModel().selectedRows()
        return self.entries[rows[0].row()] if rows else None

    def select_path(self, path: str | Path) -> bool:
        for row, e in enumerate(self.entries):
            if Path(e.path) == Path(path).resolve():
                self.table.selectRow(row)
                return True
        return False

    def _sync_buttons(self) -> None:
        e = self.selected()
        self.open_button.setEnabled(e is not None)
        self.quantize_button.setEnabled(e is not None)
        self.delete_button.setEnabled(e is not None and e.owned)
        self.delete_button.setToolTip("" if e is None or e.owned else plain_tooltip(f"This file belongs to {e.owner}; QuantDesk never deletes it"))

    def open_selected(self) -> None:
        e = self.selected()
        if e is not None:
            self.library.mark_used(e.path)
            self.open_requested.emit(e.path)

    def delete_selected(self) -> None:
        e = self.selected()
        if e is None or not e.owned:
            return
        box = QMessageBox(QMessageBox.Icon.Question, "Delete model",
                          f"Delete {Path(e.path).name} ({human_bytes(e.size)}) from disk?\n{e.path}",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.finished.connect(lambda result, entry=e: result == QMessageBox.StandardButton.Yes and self._delete(entry))
        box.open()
        self.delete_box = box

    def _delete(self, e: LibraryEntry) -> None:
        """Off the GUI thread (a large file on a slow disk, a network share): the row stays until it is gone."""
        self.delete_button.setEnabled(False)
        self.status.setText(f"Deleting {Path(e.path).name}…")

        def done(entries: list[LibraryEntry]) -> None:
            self.show_entries(entries)
            self.status.setText(f"Deleted {Path(e.path).name}")

        def failed(error: BaseException) -> None:
            self._sync_buttons()
            self.status.setText(user_text(error))

        self.runner.run("library-delete", lambda: (self.library.delete(e.id), self.library.entries())[1], done, failed)


class DownloadsPage(QWidget):
    download_ready = Signal(str)  # path of a verified, registered file

    def __init__(self, bridge: DownloadsBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.manager = bridge.manager
        self.rows: dict[int, int] = {}
        self.table = make_table(DOWNLOAD_COLUMNS)
        header = self.table.horizontalHeader()
        for col, width in ((0, 300), (1, 260), (2, 200), (3, 150), (5, 90), (6, 90)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            self.table.setColumnWidth(col, width)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.summary = plain_label("No downloads")
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)
        bridge.download_changed.connect(self.update_download)
        for d in self.manager.downloads():
            self.update_download(d)

    def _row(self, d: Download) -> int:
        if d.id in self.rows:
            return self.rows[d.id]
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.rows[d.id] = row
        self.table.setItem(row, 0, read_only_item(d.filename))
        self.table.setItem(row, 1, read_only_item(d.repo_id))
        bar = QProgressBar()
        bar.setRange(0, 1000)
        self.table.setCellWidget(row, 2, bar)
        self.table.setItem(row, 3, read_only_item(""))
        self.table.setItem(row, 4, read_only_item(""))
        toggle = QPushButton("Pause")
        set_icon(toggle, "pause")
        toggle.clicked.connect(lambda _=False, i=d.id: self._toggle(i))
        cancel = QPushButton("Cancel")
        set_icon(cancel, "cancel")
        cancel.clicked.connect(lambda _=False, i=d.id: self.manager.cancel(i))
        self.table.setCellWidget(row, 5, toggle)
        self.table.setCellWidget(row, 6, cancel)
        return row

    def _toggle(self, download_id: int) -> None:
        d = self.manager.get(download_id)
        if d.state in ACTIVE:
            self.manager.pause(download_id)
        else:
            self.manager.resume(download_id)

    def buttons(self, download_id: int) -> tuple[QPushButton, QPushButton]:
        row = self.rows[download_id]
        return self.table.cellWidget(row, 5), self.table.cellWidget(row, 6)  # type: ignore[return-value]

    def update_download(self, d: Download) -> None:
        row = self._row(d)
        bar: QProgressBar = self.table.cellWidget(row, 2)  # type: ignore[assignment]
        bar.setValue(int(1000 * d.fraction))
        bar.setFormat(f"{human_bytes(d.done)} / {human_bytes(d.size)}" if d.size else "…")
        eta = f" · {d.eta_s:.0f} s left" if d.eta_s is not None else ""
        self.table.item(row, 3).setText(f"{human_bytes(int(d.speed))}/s{eta}" if d.speed else "")
        reason = d.error or ""
        if reason.startswith(f"{d.repo_id}/") and ": " in reason:
            reason = reason.split(": ", 1)[1]  # the row already names the file
        state = d.state + (f" — {reason}" if reason else "")
        self.table.item(row, 4).setText(state)
        self.table.item(row, 4).setToolTip(plain_tooltip(d.error or ""))
        toggle, cancel = self.buttons(d.id)
        resume = d.state in (PAUSED, "failed", "cancelled")
        if toggle.text() != ("Resume" if resume else "Pause"):
            toggle.setText("Resume" if resume else "Pause")
            set_icon(toggle, "resume" if resume else "pause")
        toggle.setEnabled(d.state != DONE)
        cancel.setEnabled(d.state not in (DONE, "cancelled"))
        if d.state == DONE and not getattr(bar, "_announced", False):
            bar._announced = True  # type: ignore[attr-defined]
            self.download_ready.emit(str(d.dest))
        active = [x for x in self.manager.downloads() if x.state in ACTIVE]
        self.summary.setText(f"{len(active)} downloading" if active else "No active downloads")

