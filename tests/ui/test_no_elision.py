"""Every page of the real window at 1280×800 shows its column headers and button labels whole.

A header section narrower than its title, or a button narrower than its label, cuts the text
(``t on this machin``); the check measures each text with the widget's own font metrics against the
width the widget has. It runs on the real window against the local Hub, with the starter model
loaded, a model page open, a finished download, the library listed, the quantize wizard's proposal
and the Settings page."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QHeaderView,
    QPushButton,
    QStyle,
    QStyleOptionComboBox,
    QToolButton,
    QWidget,
)

from app.ui.desktop import open_settings
from app.ui.main_window import MainWindow
from tests.support.hub_server import HubServer

WAIT_MS = 120_000
SIZE = (1280, 800)
STARTER_REPO, STARTER_FILE = "qd/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"


def _shown(widget: QWidget) -> bool:
    """On screen: a page behind another tab, a closed panel or a hidden row's widget is not."""
    return widget.isVisible() and widget.width() > 0


def elided_texts(root: QWidget) -> list[str]:
    """Header titles and button labels under ``root`` that do not fit the width they are given."""
    cut: list[str] = []
    for header in root.findChildren(QHeaderView):
        if not _shown(header) or header.orientation() != Qt.Orientation.Horizontal or header.model() is None:
            continue
        margin = 2 * header.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMargin, None, header)
        metrics = header.fontMetrics()
        for section in range(header.count()):
            if header.isSectionHidden(section):
                continue
            text = str(header.model().headerData(section, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) or "")
            if text and metrics.horizontalAdvance(text) + margin > header.sectionSize(section):
                cut.append(f"column header {text!r}: {metrics.horizontalAdvance(text) + margin} px in {header.sectionSize(section)}")
    for button in root.findChildren(QAbstractButton):
        if not isinstance(button, (QPushButton, QToolButton)) or not _shown(button) or not button.text():
            continue
        text = button.text().replace("&&", "\0").replace("&", "").replace("\0", "&")
        needed = button.fontMetrics().horizontalAdvance(text)
        if not button.icon().isNull():
            needed += button.iconSize().width() + 4
        available = button.width() - 2 * button.style().pixelMetric(QStyle.PixelMetric.PM_ButtonMargin, None, button)
        if needed > available:
            cut.append(f"button {text!r}: {needed} px in {available}")
    for combo in root.findChildren(QComboBox):
        if not _shown(combo) or not combo.currentText():
            continue
        option = QStyleOptionComboBox()
        combo.initStyleOption(option)
        field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, combo)
        if combo.fontMetrics().horizontalAdvance(combo.currentText()) > field.width():
            cut.append(f"list {combo.currentText()!r}: {combo.fontMetrics().horizontalAdvance(combo.currentText())} px in {field.width()}")
    return cut


def settle(qtbot) -> None:  # type: ignore[no-untyped-def]
    QApplication.processEvents()
    qtbot.wait(50)  # a layout pass after a page switch


def test_no_header_or_button_is_elided_at_1280x800(qtbot, hub_window: MainWindow, hub: HubServer, tiny_f16: Path) -> None:  # type: ignore[no-untyped-def]
    win = hub_window
    win.resize(*SIZE)
    with qtbot.waitSignal(win.bridge.model_loaded, timeout=WAIT_MS):
        win.open_initial_model()
    win.jobs.hide()
    problems: dict[str, list[str]] = {}
    settle(qtbot)
    problems["Chat"] = elided_texts(win)

    win.pages.setCurrentWidget(win.hub_page)
    qtbot.waitUntil(lambda: not win.hub_page._fetching and win.hub_page.results.rowCount() > 0, timeout=WAIT_MS)
    win.hub_page.results.selectRow([r.id for r in win.hub_page.rows].index(STARTER_REPO))
    panel = win.hub_page.model
    qtbot.waitUntil(lambda: panel.details is not None and bool(panel.verdicts), timeout=WAIT_MS)
    settle(qtbot)
    problems["Discover"] = elided_texts(win)

    win.start_download(STARTER_REPO, STARTER_FILE)
    qtbot.waitUntil(lambda: all(d.state == "done" for d in win.downloads.manager.downloads()), timeout=WAIT_MS)
    win.pages.setCurrentWidget(win.downloads_page)
    win.jobs.hide()
    settle(qtbot)
    problems["Downloads"] = elided_texts(win)

    win.pages.setCurrentWidget(win.library_page)
    qtbot.waitUntil(lambda: bool(win.library_page.entries) and win.library_page.refresh_button.isEnabled(), timeout=WAIT_MS)
    win.library_page.table.selectRow(0)
    settle(qtbot)
    problems["My models"] = elided_texts(win)

    win.jobs.show()
    settle(qtbot)
    problems["Jobs panel"] = elided_texts(win.jobs)
    win.jobs.hide()

    wizard = win.quantize_source(str(tiny_f16))
    wizard.resize(*SIZE)
    qtbot.waitUntil(lambda: wizard.levels.rowCount() > 0, timeout=WAIT_MS)
    settle(qtbot)
    problems["Quantize wizard"] = elided_texts(wizard)
    wizard.close()

    dialog = open_settings(win)
    settle(qtbot)
    problems["Settings"] = elided_texts(dialog)
    dialog.close()

    assert {page: cut for page, cut in problems.items() if cut} == {}


def test_the_check_sees_a_cut_header_and_a_cut_button(qtbot, hub_window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    """The measure above catches what a user would see cut (so a clean result means something)."""
    win = hub_window
    win.resize(*SIZE)
    with qtbot.waitSignal(win.library_page.entries_changed, timeout=WAIT_MS):  # the first visit lists the library
        win.pages.setCurrentWidget(win.library_page)
    settle(qtbot)
    assert elided_texts(win) == []
    win.library_page.table.horizontalHeader().resizeSection(2, 30)  # "Architecture" in 30 px
    win.library_page.refresh_button.setFixedWidth(30)
    settle(qtbot)
    cut = elided_texts(win)
    assert any(c.startswith("column header 'Architecture'") for c in cut)
    assert any(c.startswith("button 'Refresh'") for c in cut)
