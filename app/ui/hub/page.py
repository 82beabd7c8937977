"""Discover: search the Hub, open a model page (card, GGUF files by quant with a fit verdict for
this machine), start downloads. Every Hub call runs on a TaskRunner thread."""

from __future__ import annotations

import itertools
import logging
from typing import Any, Iterator

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.hub import api as hubmod
from app.core.planner.memory import MemoryEstimate, human_bytes
from app.ui.dialogs.load import MemoryBar, show_memory
from app.ui.icons import set_icon
from app.ui.messages import user_text
from app.ui.safe_text import MarkdownView, card_html, plain_label, plain_tooltip
from app.ui.tables import make_table, read_only_item
from app.ui.tasks import TaskRunner

log = logging.getLogger(__name__)

PAGE_SIZE = 30
RESULT_COLUMNS = ["Model", "Downloads", "Likes", "Updated", "License", "Access"]
FILE_COLUMNS = ["Quant", "File", "Size", "Fit on this machine", "Max context", ""]



class ModelPanel(QWidget):
    download_requested = Signal(str, str, str)  # repo, file, its vision projector ("" for none)
    convert_requested = Signal(str)  # repo

    def __init__(self, runner: TaskRunner, endpoint: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.endpoint = endpoint
        self.details: hubmod.RepoDetails | None = None
        self.verdicts: dict[str, Any] = {}
        self.title = plain_label("Pick a model on the left")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.meta = plain_label("")
        self.explanation = plain_label("")
        self.explanation.setWordWrap(True)
        self.convert_button = QPushButton("Convert && quantize…")
        set_icon(self.convert_button, "quantize")
        self.convert_button.clicked.connect(lambda: self.details and self.convert_requested.emit(self.details.repo_id))
        self.convert_button.hide()
        self.files = make_table(FILE_COLUMNS)
        self.files.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.files.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.files.itemSelectionChanged.connect(self._on_file_selected)
        self.fit_note = plain_label("")
        self.fit_note.setWordWrap(True)
        self.gpu_bar = MemoryBar("GPU")
        self.cpu_bar = MemoryBar("RAM")
        for bar in (self.gpu_bar, self.cpu_bar):
            bar.hide()
        self.card = MarkdownView()
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.meta)
        row = QHBoxLayout()
        row.addWidget(self.explanation, 1)
        row.addWidget(self.convert_button)
        layout.addLayout(row)
        layout.addWidget(self.files, 2)
        layout.addWidget(self.fit_note)
        layout.addWidget(self.gpu_bar)
        layout.addWidget(self.cpu_bar)
        layout.addWidget(self.card, 3)

    def open_repo(self, repo_id: str) -> None:
        for key in ("hub-card", "hub-fit"):  # the previous repository's answers are dropped
            self.runner.invalidate(key)
        self.details, self.verdicts = None, {}
        self.title.setText(repo_id)
        self.meta.setText("Loading…")
        self.explanation.setText("")
        self.convert_button.hide()
        self.files.setRowCount(0)
        self.card.setPlainText("")
        self.fit_note.setText("")
        self.gpu_bar.hide()
        self.cpu_bar.hide()

        def shown(details: hubmod.RepoDetails) -> None:
            self._show(details)
            self._load_card(repo_id, details.sha)
            if details.gguf_files:
                self._load_fit(details)

        self.runner.run("hub-model", lambda: hubmod.repo_details(repo_id, endpoint=self.endpoint), shown,
                        lambda exc: self.meta.setText(user_text(exc)), key="hub-model")

    def _show(self, d: hubmod.RepoDetails) -> None:
        self.details = d
        bits = [f"{d.downloads:,} downloads", f"{d.likes:,} likes"]
        if d.license:
            bits.append(f"license: {d.license}")
        if d.gated:
            bits.append("gated: accept the license on the Hub and log in to download")
        if d.base_model:
            bits.append("base model: " + ", ".join(d.base_model))
        self.meta.setText(" · ".join(bits))
        self.explanation.setText(d.explanation)
        self.convert_button.setVisible(d.kind in ("safetensors", "pickle"))
        self.files.setRowCount(len(d.gguf_files))
        for row, f in enumerate(d.gguf_files):
            label = f.path + (f"  ({len(f.shards)} parts)" if f.split else "") + ("  · vision projector" if f.mmproj else "")
            if f.projector:
                label += f"  + {f.projector} (vision)"
            size = human_bytes(f.download_bytes) + (" with projector" if f.projector else "")
            self.files.setItem(row, 0, read_only_item(f.quant))
            self.files.setItem(row, 1, read_only_item(label))
            self.files.setItem(row, 2, read_only_item(size, f.download_bytes))
            if f.projector:
                self.files.item(row, 2).setToolTip(f"model {human_bytes(f.size_bytes)} + vision projector {human_bytes(f.projector_bytes)}")
            self.files.setItem(row, 3, read_only_item("…" if not f.mmproj else "—"))
            self.files.setItem(row, 4, read_only_item(""))
            button = QPushButton("Download" if not f.projector else "Download both")
            set_icon(button, "download")
            button.clicked.connect(lambda _=False, path=f.path, proj=f.projector or "":
                                   self.download_requested.emit(d.repo_id, path, proj))
            self.files.setCellWidget(row, 5, button)
        self.files.resizeColumnsToContents()
        self.files.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)

    def _load_card(self, repo_id: str, sha: str | None) -> None:
        def fetch() -> str:  # fetched and rendered off the GUI thread, bounded by the renderer
            text = hubmod.model_card(repo_id, revision=sha, endpoint=self.endpoint)
            return card_html(text or "*This repository has no model card.*")

        self.runner.run("hub-card", fetch, self.card.setHtml, lambda exc: self.card.setPlainText(user_text(exc)), key="hub-card")

    def _load_fit(self, d: hubmod.RepoDetails) -> None:
        from app.core import settings as app_settings
        from app.core.hardware import detect
        from app.core.planner.recommend import plan_repo

        self.fit_note.setText("Reading each file's header to check what fits this machine…")

        def shown(verdicts: list[Any]) -> None:
            self.verdicts = {v.path: v for v in verdicts}
            bold = QFont(self.files.font())
            bold.setBold(True)
            for row, f in enumerate(d.gguf_files):
                v = self.verdicts.get(f.path)
                if v is None:
                    continue
                self.files.item(row, 3).setText(("★ recommended · " if v.recommended else "") + v.verdict
                                                 + (f" ({v.error})" if v.error else "")
                                                 + (f" · {human_bytes(f.download_bytes)} with its projector" if f.projector else ""))
                self.files.item(row, 4).setText(f"{v.max_ctx:,}" if v.max_ctx else "")
                if v.recommended:
                    for col in range(5):
                        self.files.item(row, col).setFont(bold)
                    self.files.selectRow(row)
            self.files.resizeColumnsToContents()  # the verdicts (bold where recommended) are wider than the placeholders
            self.files.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
            self._on_file_selected()
            self.fit_note.setText("Fit: full GPU / N of M layers on the GPU / CPU only / does not fit, at 4096 tokens "
                                  "of context or the trained one; ★ the best quality that fits fully.")

        workers = app_settings.load().workers  # a file that does not fit here may fit split over them
        self.runner.run("hub-fit", lambda: plan_repo(d.repo_id, detect(), revision=d.sha, endpoint=self.endpoint,
                                                     workers=workers), shown,
                        lambda exc: self.fit_note.setText(user_text(exc)), key="hub-fit")

    def _on_file_selected(self) -> None:
        """The selected file's memory plan on this machine, as in the load dialog."""
        rows = self.files.selectionModel().selectedRows()
        if not rows or self.details is None:
            return
        v = self.verdicts.get(self.details.gguf_files[rows[0].row()].path)
        if v is None or not v.memory:
            self.gpu_bar.hide()
            self.cpu_bar.hide()
            return
        show_memory(self.gpu_bar, self.cpu_bar, MemoryEstimate(**v.memory), v.budget_gpu, v.budget_cpu)
        self.gpu_bar.setVisible(v.budget_gpu > 0)
        self.cpu_bar.show()

    def row_of(self, path: str) -> int:
        return next(i for i, f in enumerate(self.details.gguf_files if self.details else []) if f.path == path)


class HubPage(QWidget):
    download_requested = Signal(str, str, str)  # repo, file, its vision projector ("" for none)
    convert_requested = Signal(str)

    def __init__(self, runner: TaskRunner, endpoint: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.endpoint = endpoint
        self._pages: Iterator[hubmod.ModelRow] | None = None
        self._fetching = False
        self._exhausted = True
        self.rows: list[hubmod.ModelRow] = []

        self.query = QLineEdit(placeholderText="Search models on Hugging Face (e.g. qwen, llama 3, gemma)")
        self.query.returnPressed.connect(self.search)
        self.gguf_only = QCheckBox("GGUF only")
        self.gguf_only.setChecked(True)
        self.sort = QComboBox()
        self.sort.addItems(list(hubmod.SORTS))
        self.size = QComboBox()
        self.size.addItems(list(hubmod.SIZE_FILTERS))
        self.size.setToolTip("parameter count")
        self.author = QLineEdit(placeholderText="author")
        self.author.setMaximumWidth(140)
        self.arch = QLineEdit(placeholderText="architecture")
        self.arch.setMaximumWidth(140)
        for w in (self.author, self.arch):
            w.returnPressed.connect(self.search)
        self.search_button = QPushButton("Search")
        set_icon(self.search_button, "search")
        self.search_button.clicked.connect(self.search)
        bar = QHBoxLayout()
        bar.addWidget(self.query, 1)
        for w in (self.gguf_only, plain_label("sort"), self.sort, plain_label("size"), self.size, self.author, self.arch, self.search_button):
            bar.addWidget(w)

        self.results = make_table(RESULT_COLUMNS)
        self.results.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.results.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.results.itemSelectionChanged.connect(self._on_selected)
        self.results.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        self.status = plain_label("")
        self.more_button = QPushButton("Load more")
        self.more_button.clicked.connect(self.load_more)
        self.more_button.setEnabled(False)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.results)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.more_button)
        lv.addLayout(row)

        self.model = ModelPanel(runner, endpoint)
        self.model.download_requested.connect(self.download_requested)
        self.model.convert_requested.connect(self.convert_requested)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.model)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([580, 720])
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(split, 1)

    def search(self) -> None:
        self.runner.invalidate("hub-search")  # a page of the previous search is dropped
        self.rows = []
        self.results.setRowCount(0)
        self._pages = iter(hubmod.search(
            self.query.text().strip(), gguf_only=self.gguf_only.isChecked(), sort=self.sort.currentText(),
            author=self.author.text().strip() or None, size=self.size.currentText(),
            architecture=self.arch.text().strip() or None, endpoint=self.endpoint))
        self._exhausted = False
        self._fetching = False
        self.load_more()

    def load_more(self) -> None:
        if self._fetching or self._exhausted or self._pages is None:
            return
        self._fetching = True
        self.more_button.setEnabled(False)
        self.status.setText("Searching…")
        pages = self._pages

        def shown(rows: list[hubmod.ModelRow]) -> None:
            self._fetching = False
            self._exhausted = len(rows) < PAGE_SIZE
            self._append(rows)
            self.more_button.setEnabled(not self._exhausted)
            self.status.setText(f"{len(self.rows)} models" + ("" if self._exhausted else ", more below"))

        def failed(error: BaseException) -> None:
            self._fetching = False
            self.status.setText(user_text(error))

        self.runner.run("hub-search", lambda: list(itertools.islice(pages, PAGE_SIZE)), shown, failed, key="hub-search")

    def _append(self, rows: list[hubmod.ModelRow]) -> None:
        start = self.results.rowCount()
        self.results.setRowCount(start + len(rows))
        for i, r in enumerate(rows, start):
            self.results.setItem(i, 0, read_only_item(r.id))
            self.results.item(i, 0).setToolTip(plain_tooltip(r.id))  # the column may elide a long repo id
            self.results.setItem(i, 1, read_only_item(f"{r.downloads:,}", r.downloads))
            self.results.setItem(i, 2, read_only_item(f"{r.likes:,}", r.likes))
            self.results.setItem(i, 3, read_only_item(r.updated))
            self.results.setItem(i, 4, read_only_item(r.license or ""))
            self.results.setItem(i, 5, read_only_item("gated" if r.gated else ("private" if r.private else "open")))
        self.rows.extend(rows)

    def _on_scrolled(self, value: int) -> None:
        bar = self.results.verticalScrollBar()
        if value >= bar.maximum() - 2:
            self.load_more()

    def _on_selected(self) -> None:
        rows = self.results.selectionModel().selectedRows()
        if rows:
            self.model.open_repo(self.rows[rows[0].row()].id)
