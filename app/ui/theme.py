"""Light, dark, or the desktop's choice: one palette for the whole app.

"system" follows ``QStyleHints.colorScheme()`` (Qt 6.5+) and changes with the desktop; "light" and
"dark" are fixed. The Fusion style draws the same on every platform and takes a palette fully.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

_state: dict[str, object] = {"theme": "system", "connected": False, "default": None}


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text, mid = QColor(30, 31, 34), QColor(43, 45, 48), QColor(223, 225, 229), QColor(60, 63, 66)
    roles = {
        QPalette.ColorRole.Window: window, QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base, QPalette.ColorRole.AlternateBase: window,
        QPalette.ColorRole.ToolTipBase: window, QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: QColor(140, 143, 148),
        QPalette.ColorRole.Text: text, QPalette.ColorRole.Button: mid, QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor(255, 107, 107), QPalette.ColorRole.Link: QColor(100, 160, 255),
        QPalette.ColorRole.Highlight: QColor(53, 116, 240), QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Light: QColor(75, 78, 82), QPalette.ColorRole.Midlight: QColor(66, 69, 73),
        QPalette.ColorRole.Mid: mid, QPalette.ColorRole.Dark: QColor(20, 21, 23), QPalette.ColorRole.Shadow: QColor(0, 0, 0),
    }
    for role, color in roles.items():
        p.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 123, 128))
    return p


def system_is_dark() -> bool:
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def is_dark(theme: str) -> bool:
    return theme == "dark" or (theme == "system" and system_is_dark())


def apply_theme(theme: str, app: QApplication | None = None) -> None:
    """Apply ``theme`` ("system", "light" or "dark") to the running app."""
    app = app or QApplication.instance()  # type: ignore[assignment]
    assert isinstance(app, QApplication)
    if _state["default"] is None:
        app.setStyle("Fusion")
        _state["default"] = app.style().standardPalette()
    _state["theme"] = theme
    if not _state["connected"]:  # "system" follows the desktop when it switches
        QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(str(_state["theme"])))
        _state["connected"] = True
    app.setPalette(dark_palette() if is_dark(theme) else _state["default"])  # type: ignore[arg-type]
    from app.ui.icons import retint  # icons are drawn in the palette's colours: again in the new ones

    retint()


def current_theme() -> str:
    return str(_state["theme"])
