"""The app as a desktop citizen: name, icon, Settings / About / logs actions and shortcuts,
window geometry and the last page remembered. ``add_desktop_actions`` is the one call the main
window makes; everything else happens here, so the window's own code stays about its pages."""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QEvent, QObject
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import QApplication, QMainWindow, QMenu, QTabWidget

from app.core import paths
from app.core import settings as app_settings
from app.ui.icons import set_action_icon

if TYPE_CHECKING:
    from app.ui.dialogs.settings import SettingsDialog

log = logging.getLogger(__name__)

DESKTOP_FILE_NAME = "quantdesk"  # resources/quantdesk.desktop; the Wayland app id
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)


def app_icon() -> QIcon:
    icon = QIcon()
    hicolor = paths.resources_dir() / "icons" / "hicolor"
    for size in ICON_SIZES:
        png = hicolor / f"{size}x{size}" / "apps" / "quantdesk.png"
        if png.exists():
            icon.addFile(str(png))
    svg = paths.resources_dir() / "quantdesk.svg"
    if icon.isNull() and svg.exists():
        icon.addFile(str(svg))
    return icon


def _menu(window: QMainWindow, title: str) -> QMenu:
    for action in window.menuBar().actions():
        if action.text() == title and action.menu() is not None:
            return action.menu()  # type: ignore[return-value]
    return window.menuBar().addMenu(title)


def add_desktop_actions(window: QMainWindow) -> None:
    """File → Settings… (Ctrl+,), Chat → Send (Ctrl+Enter), Help → Open logs folder; and the window
    state kept across runs. The other shortcuts (Ctrl+N new chat, Esc stop, Ctrl+F search, Ctrl+Q
    quit, Ctrl+O open, Ctrl+1…4 pages) are the window's own."""
    file_menu = _menu(window, "&File")
    quit_action = next((a for a in file_menu.actions() if a.text() == "&Quit"), None)
    window.settings_action = QAction("&Settings…", window, shortcut=QKeySequence("Ctrl+,"),  # type: ignore[attr-defined]
                                     triggered=lambda: open_settings(window))
    window.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)  # type: ignore[attr-defined]
    set_action_icon(window.settings_action, "settings")  # type: ignore[attr-defined]
    file_menu.insertAction(quit_action, window.settings_action)  # type: ignore[arg-type, attr-defined]
    if quit_action is not None:
        file_menu.insertSeparator(quit_action)
    chat = getattr(window, "chat", None)
    if chat is not None:
        window.send_action = QAction("Se&nd", window, triggered=chat.composer.send_button.click)  # type: ignore[attr-defined]
        window.send_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])  # type: ignore[attr-defined]
        chat_menu = _menu(window, "&Chat")
        chat_menu.insertAction(chat_menu.actions()[0] if chat_menu.actions() else None, window.send_action)  # type: ignore[arg-type, attr-defined]
    help_menu = _menu(window, "&Help")
    window.logs_action = QAction("Open &logs folder", window, triggered=open_logs_folder)  # type: ignore[attr-defined]
    help_menu.insertAction(help_menu.actions()[-1] if help_menu.actions() else None, window.logs_action)  # type: ignore[arg-type, attr-defined]
    window.state_keeper = _StateKeeper(window)  # type: ignore[attr-defined]
    window.installEventFilter(window.state_keeper)  # type: ignore[attr-defined]


def open_logs_folder() -> bool:
    from app.ui.dialogs.crash import open_logs_folder as open_folder

    ok = open_folder()
    if not ok:
        log.warning("could not open the logs folder %s", paths.logs_dir())
    return ok


def open_settings(window: QMainWindow) -> "SettingsDialog":
    from app.ui.dialogs.settings import SettingsDialog

    hub_page = getattr(window, "hub_page", None)
    dialog = SettingsDialog(window.runner, endpoint=getattr(hub_page, "endpoint", None), parent=window)  # type: ignore[attr-defined]
    window.settings_dialog = dialog  # type: ignore[attr-defined]
    dialog.open()
    return dialog


# -- window state -------------------------------------------------------------------------------
def _pages(window: QMainWindow) -> QTabWidget | None:
    pages = getattr(window, "pages", None)
    return pages if isinstance(pages, QTabWidget) else None


def save_window_state(window: QMainWindow) -> None:
    changes: dict[str, str] = {"window_geometry": base64.b64encode(bytes(window.saveGeometry().data())).decode("ascii")}
    pages = _pages(window)
    if pages is not None and pages.currentWidget() is not None:
        changes["last_page"] = type(pages.currentWidget()).__name__
    app_settings.update(**changes)


def restore_window_state(window: QMainWindow) -> None:
    """Geometry and page from the last run (call before ``show``)."""
    s = app_settings.load()
    if s.window_geometry:
        try:
            window.restoreGeometry(QByteArray(base64.b64decode(s.window_geometry)))
        except ValueError:
            log.info("window geometry in the settings is unreadable; using the default size")
    pages = _pages(window)
    if pages is not None and s.last_page:
        for index in range(pages.count()):
            if type(pages.widget(index)).__name__ == s.last_page:
                pages.setCurrentIndex(index)
                break


class _StateKeeper(QObject):
    """Saves geometry and page when the window closes (before its own closeEvent runs)."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self.window = window

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if watched is self.window and event.type() == QEvent.Type.Close:
            try:
                save_window_state(self.window)
            except OSError as exc:
                log.warning("window state not saved: %s", exc)
        return False


def set_desktop_identity(app: QApplication) -> None:
    """Name, icon and .desktop file name (the X11 WM_CLASS is the application name, "QuantDesk",
    matching StartupWMClass; on Wayland the app id is the desktop file name)."""
    from app import APP_NAME

    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName(DESKTOP_FILE_NAME)
    icon = app_icon()
    if not icon.isNull():
        app.setWindowIcon(icon)
