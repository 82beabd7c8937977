"""The app's icons: Font Awesome 5 through qtawesome, drawn in the palette's text colours.

One name per action, so a page never picks its own glyph for "download" or "delete". An icon is
drawn when it is made, in the current palette's colours; ``retint`` redraws the icons this module
handed out after a theme switch.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, TypeVar

os.environ.setdefault("QT_API", "pyside6")  # qtawesome draws through qtpy: the binding the app runs

import qtawesome  # noqa: E402
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QPalette  # noqa: E402
from PySide6.QtWidgets import QAbstractButton, QTabWidget  # noqa: E402

ICONS = {
    "chat": "fa5s.comments", "discover": "fa5s.compass", "models": "fa5s.cubes", "downloads": "fa5s.download",
    "send": "fa5s.paper-plane", "stop": "fa5s.stop", "attach": "fa5s.paperclip", "download": "fa5s.download",
    "delete": "fa5s.trash-alt", "settings": "fa5s.cog", "copy": "fa5.copy", "edit": "fa5s.pen",
    "regenerate": "fa5s.redo", "refresh": "fa5s.sync-alt", "open": "fa5s.folder-open", "quantize": "fa5s.compress-arrows-alt",
    "new": "fa5s.plus", "pause": "fa5s.pause", "resume": "fa5s.play", "cancel": "fa5s.times", "search": "fa5s.search",
    "load": "fa5s.sliders-h", "jobs": "fa5s.tasks", "start": "fa5s.play", "link": "fa5s.external-link-alt",
    "clear": "fa5s.broom",
}

B = TypeVar("B", bound=QAbstractButton)

_given: "weakref.WeakKeyDictionary[Any, tuple[str, int | None]]" = weakref.WeakKeyDictionary()


def icon(name: str) -> QIcon:
    """The icon for ``name`` (a key of ICONS, or a qtawesome name) in the palette's colours."""
    palette = QGuiApplication.palette()
    return qtawesome.icon(ICONS.get(name, name), color=palette.color(QPalette.ColorRole.ButtonText),
                          color_disabled=palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText))


def set_icon(button: B, name: str) -> B:
    """Give ``button`` the icon ``name``, redrawn by ``retint`` when the theme changes."""
    button.setIcon(icon(name))
    _given[button] = (name, None)
    return button


def set_action_icon(action: QAction, name: str) -> QAction:
    action.setIcon(icon(name))
    _given[action] = (name, None)
    return action


def set_tab_icon(tabs: QTabWidget, index: int, name: str) -> None:
    tabs.setTabIcon(index, icon(name))
    _given[tabs.widget(index)] = (name, index)


def retint() -> None:
    """Draw the icons handed out again in the current palette's colours (after a theme switch)."""
    for widget, (name, index) in list(_given.items()):
        try:
            if index is None:
                widget.setIcon(icon(name))
            else:
                tabs = widget.parentWidget().parentWidget() if widget.parentWidget() else None
                if isinstance(tabs, QTabWidget):
                    tabs.setTabIcon(tabs.indexOf(widget), icon(name))
        except RuntimeError:  # a widget Qt already deleted
            continue
