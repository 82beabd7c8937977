"""Shared table habits: a long value is elided in the middle and its tooltip holds all of it, as
plain text; a short one has no tooltip."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.ui.tables import make_table, read_only_item


def test_long_values_carry_their_full_text_as_a_plain_tooltip(qtbot) -> None:  # type: ignore[no-untyped-def]
    table = make_table(["Path"])
    qtbot.addWidget(table)
    path = "/models/<b>owner</b>/" + "a-very-long-folder-name/" * 3 + "model.Q4_K_M.gguf"
    long_item, short_item = read_only_item(path), read_only_item("Q4_K_M")
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle
    assert "model.Q4_K_M.gguf" in long_item.toolTip() and "<b>" not in long_item.toolTip()
    assert short_item.toolTip() == ""
