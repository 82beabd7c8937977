"""Server → Requests…: the API server's recent requests (model, tokens, tok/s, status), newest
first, filled from the server's record as requests end, and its log (loads, unloads, requests)."""

from __future__ import annotations

import time
from typing import Any, Iterable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QDialog, QLabel, QPlainTextEdit, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

COLUMNS = ("Time", "Client", "Request", "Status", "Model", "Prompt", "Completion", "tok/s", "ms", "Note")
MAX_ROWS = 200


class RequestsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("API server: recent requests")
        self.resize(900, 420)
        self.url = QLabel("")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.log = QPlainTextEdit()  # plain text: model names and paths come from files and requests
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setPlaceholderText("The server's log: models loaded and unloaded, one line per request")
        layout = QVBoxLayout(self)
        layout.addWidget(self.url)
        layout.addWidget(self.table, 3)
        layout.addWidget(QLabel("Log"))
        layout.addWidget(self.log, 2)
        self.source: Any = None  # a callable giving the log's lines (the server's LogTail.lines)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh_log)

    def follow_log(self, source: Any) -> None:
        self.source = source
        self.refresh_log()
        self.timer.start()

    def refresh_log(self) -> None:
        if not self.isVisible() and self.log.blockCount() > 1:
            return
        lines = self.source() if self.source is not None else []
        text = "\n".join(lines)
        if text != self.log.toPlainText():
            self.log.setPlainText(text)
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())

    def set_url(self, url: str | None) -> None:
        self.url.setText(f"Serving on {url}" if url else "The API server is off (Server → Run API server)")

    def fill(self, records: Iterable[Any]) -> None:
        self.table.setRowCount(0)
        for rec in records:
            self.add(rec)

    def add(self, rec: Any) -> None:
        """One request record (app.core.server.service.RequestRecord), at the top."""
        cells = [time.strftime("%H:%M:%S", time.localtime(rec.at)), rec.client, f"{rec.method} {rec.path}", str(rec.status),
                 rec.model or "", "" if rec.prompt_tokens is None else str(rec.prompt_tokens),
                 "" if rec.completion_tokens is None else str(rec.completion_tokens),
                 f"{rec.tokens_per_s:.1f}" if rec.tokens_per_s else "", f"{rec.duration_s * 1000:.0f}", rec.note]
        self.table.insertRow(0)
        for col, text in enumerate(cells):
            self.table.setItem(0, col, QTableWidgetItem(text))  # plain text items: nothing from a request is markup
        while self.table.rowCount() > MAX_ROWS:
            self.table.removeRow(self.table.rowCount() - 1)
