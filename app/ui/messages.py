"""The one message funnel: every message for the user reaches the screen through ``Messages``,
which picks the channel from what the message is, never from its text:

- ``Cancelled``: the status bar (the user asked for it; nothing to acknowledge);
- a ``QuantDeskError`` (bad input, a file, the Hub, a crashed engine): the page's inline notice bar
  when the page has one, else a window-modal dialog that does not block the event loop;
- any other exception (a bug): the crash report dialog, with the traceback, versions and log tail;
- plain text: the status bar (``status``) or a notice (``notice``).

Core errors travel here as exception objects (``TaskRunner``'s ``failed`` and the engine bridge's
failure signals carry them), so the type decides, not a parsed string.
"""

from __future__ import annotations

import logging
from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from app.core.errors import Cancelled, QuantDeskError
from app.ui.chat.side_panels import NoticeBar

log = logging.getLogger(__name__)

STATUS_MS = 4000
ERROR_STATUS_MS = 8000


def user_text(error: BaseException | str) -> str:
    """The sentence the user reads: a QuantDesk error's own message (written for the user), else the
    exception's type and text (a bug: the traceback goes to the log and the crash report)."""
    if isinstance(error, str):
        return error
    if isinstance(error, QuantDeskError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def channel(error: BaseException | str, *, has_notice: bool) -> str:
    """Where ``error`` is shown: "status", "notice", "dialog" or "report"."""
    if isinstance(error, Cancelled):
        return "status"
    if isinstance(error, (QuantDeskError, str)):
        return "notice" if has_notice else "dialog"
    return "report"


class Messages:
    """One per window (the chat page makes its own when it stands alone, as in tests)."""

    def __init__(self, parent: QWidget, status: Callable[[str, int], None]) -> None:
        self.parent = parent
        self._status = status
        self.box: QMessageBox | None = None  # the last dialog (tests read it)
        self.shown: list[tuple[str, str]] = []  # (channel, text), newest last

    def status(self, text: str, ms: int = STATUS_MS) -> None:
        self.shown.append(("status", text))
        self._status(text, ms)

    def notice(self, bar: NoticeBar, text: str, *, error: bool = False, action: str = "",
               callback: Callable[[], None] | None = None) -> None:
        self.shown.append(("notice", text))
        bar.show_message(text, error=error, action=action, callback=callback)

    def dialog(self, title: str, text: str) -> QMessageBox:
        """A window-modal warning that does not block the event loop; the text is plain (file names,
        llama.cpp's lines and template errors are untrusted)."""
        self.shown.append(("dialog", text))
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self.parent)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.open()
        self.box = box
        return box

    def error(self, error: BaseException | str, *, title: str, notice: NoticeBar | None = None) -> str:
        """Show ``error`` on the channel its type calls for; returns the channel used."""
        where = channel(error, has_notice=notice is not None)
        text = user_text(error)
        if where == "status":
            self.status(text, ERROR_STATUS_MS)
        elif where == "notice":
            assert notice is not None
            self.notice(notice, text, error=True)
        elif where == "dialog":
            self.dialog(title, text)
        else:
            assert isinstance(error, BaseException)
            from app.ui.dialogs import crash

            log.error("%s: unexpected error", title, exc_info=(type(error), error, error.__traceback__))
            self.shown.append(("report", text))
            crash.show_report(crash.build_report(type(error), error, error.__traceback__))
        return where
