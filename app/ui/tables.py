"""The table habits every page shares: read-only cells, no row numbers, no wrapping, long values elided
in the middle with the full value as a (plain-text) tooltip."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidget, QTableWidgetItem

from app.ui.safe_text import plain_tooltip

LONG_TEXT = 40  # a cell longer than this may be elided (in the middle: a path keeps its file name); its tooltip holds it all


def make_table(columns: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.verticalHeader().hide()
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    return table


def read_only_item(text: str, sort_value: Any = None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if len(text) > LONG_TEXT:
        item.setToolTip(plain_tooltip(text))
    if sort_value is not None:
        item.setData(Qt.ItemDataRole.UserRole, sort_value)
    return item
