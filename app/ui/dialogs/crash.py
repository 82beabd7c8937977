"""The last resort: an unexpected exception shows a dialog with a copyable report (what happened,
versions, the last log lines; tokens masked) instead of the window vanishing or a traceback on a
terminal nobody sees. The app keeps running; the report is also in the log.

``install`` hooks ``sys.excepthook`` (exceptions in Qt slots and event handlers land there) and
``threading.excepthook`` (a worker thread's report is posted to the GUI thread through the same
``Dispatcher`` every other worker result takes).
"""

from __future__ import annotations

import datetime
import logging
import queue
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app import APP_NAME
from app.core import paths
from app.core.redact import redact
from app.ui.dialogs.about import rows_text, version_rows
from app.ui.safe_text import plain_label
from app.ui.tasks import Dispatcher

log = logging.getLogger(__name__)

LOG_LINES = 40
_early: queue.SimpleQueue[str] = queue.SimpleQueue()  # reports from threads before a dispatcher exists
_state: dict[str, Any] = {"dialog": None, "dispatch": None, "build_info": None}


def log_tail(n: int = LOG_LINES) -> list[str]:
    try:
        lines = (paths.logs_dir() / "quantdesk.log").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-n:]


def build_report(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None, *, thread: str | None = None) -> str:
    when = datetime.datetime.now().isoformat(timespec="seconds")
    trace = "".join(traceback.format_exception(exc_type, exc, tb))
    parts = [
        f"{APP_NAME} error report ({when}){f', thread {thread}' if thread else ''}",
        "",
        trace.rstrip(),
        "",
        rows_text(version_rows(_state["build_info"])),
        "",
        f"Last {LOG_LINES} log lines:",
        *log_tail(),
    ]
    return redact("\n".join(parts))


class CrashDialog(QDialog):
    def __init__(self, report: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{APP_NAME}: something went wrong")
        self.resize(720, 480)
        layout = QVBoxLayout(self)
        intro = plain_label(
            "QuantDesk ran into an unexpected error. Your conversations are saved and the app keeps running; "
            "if something looks wrong, restart it. Please copy this report into a bug report."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.report = QPlainTextEdit(report)
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout.addWidget(self.report, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy report")
        self.copy_button.clicked.connect(self.copy)
        logs = QPushButton("Open logs folder")
        logs.clicked.connect(open_logs_folder)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(logs, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def add_report(self, report: str) -> None:
        self.report.appendPlainText("\n" + "-" * 60 + "\n" + report)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.report.toPlainText())
        self.copy_button.setText("Copied")


def open_logs_folder() -> bool:
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths.logs_dir())))


def show_report(report: str) -> CrashDialog:
    """Show ``report`` (GUI thread only); a second error while the dialog is open is appended."""
    dialog: CrashDialog | None = _state["dialog"]
    if dialog is not None and dialog.isVisible():
        dialog.add_report(report)
        return dialog
    parent = QApplication.activeWindow()
    dialog = CrashDialog(report, parent)
    dialog.finished.connect(lambda _code: _state.update(dialog=None))
    _state["dialog"] = dialog
    dialog.open()
    return dialog


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook: log it, then show the dialog (never raise from here)."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    try:
        log.critical("unexpected error", exc_info=(exc_type, exc, tb))
        report = build_report(exc_type, exc, tb)
        if threading.current_thread() is threading.main_thread() and QApplication.instance() is not None:
            show_report(report)
        else:
            _post(report)
    except Exception:  # the hook itself failed: the standard hook still prints the original
        sys.__excepthook__(exc_type, exc, tb)


def thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    try:
        name = args.thread.name if args.thread else "?"
        log.critical("unexpected error in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        _post(build_report(args.exc_type, args.exc_value, args.exc_traceback, thread=name))
    except Exception:
        threading.__excepthook__(args)


def _post(report: str) -> None:
    """From any thread: show ``report`` on the GUI thread."""
    dispatch: Dispatcher | None = _state["dispatch"]
    if dispatch is None:
        _early.put(report)
    else:
        dispatch.post(lambda: show_report(report))


def start_dispatch(app: QApplication) -> Dispatcher:
    """The GUI-thread end of worker reports (a ``Dispatcher`` listening all the time)."""
    dispatch = Dispatcher(app, idle_ms=250)
    _state["dispatch"] = dispatch
    while not _early.empty():
        report = _early.get_nowait()
        dispatch.post(lambda r=report: show_report(r))  # type: ignore[misc]
    return dispatch


def install(app: QApplication, build_info: dict[str, str] | None = None) -> None:
    """Hook both excepthooks (the GUI's entry point calls this; tests call the hooks directly)."""
    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    start_dispatch(app)
    _state["build_info"] = build_info


def set_build_info(build_info: dict[str, str]) -> None:
    _state["build_info"] = build_info
