"""The message funnel: the channel is chosen by the error's type, the typed error reaches it from a
worker thread through the TaskRunner, and untrusted text stays plain."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMainWindow

from app.core.errors import BadValueError, Cancelled, EngineCrashed, ModelFileError
from app.ui.chat.side_panels import NoticeBar
from app.ui.dialogs import crash as crash_dialog
from app.ui.messages import Messages, channel, user_text
from app.ui.tasks import TaskRunner


@pytest.fixture
def window(qtbot) -> QMainWindow:  # type: ignore[no-untyped-def]
    w = QMainWindow()
    qtbot.addWidget(w)
    w.show()
    return w


@pytest.fixture
def funnel(window: QMainWindow) -> Messages:
    return Messages(window, lambda text, ms: window.statusBar().showMessage(text, ms))


def test_the_channel_follows_the_type_not_the_text() -> None:
    assert channel(Cancelled("download"), has_notice=True) == "status"
    assert channel(BadValueError("ctx 0: must be at least 16"), has_notice=True) == "notice"
    assert channel(BadValueError("ctx 0: must be at least 16"), has_notice=False) == "dialog"
    assert channel(EngineCrashed("the engine stopped (SIGSEGV)"), has_notice=True) == "notice"
    assert channel(KeyError("x"), has_notice=True) == "report"
    assert user_text(ModelFileError("a.gguf: not a GGUF file")) == "a.gguf: not a GGUF file"
    assert user_text(KeyError("x")) == "KeyError: 'x'"


def test_each_channel_reaches_the_screen(qtbot, window: QMainWindow, funnel: Messages) -> None:  # type: ignore[no-untyped-def]
    funnel.error(Cancelled("quantize"), title="Quantize")
    assert window.statusBar().currentMessage() == "quantize cancelled"

    bar = NoticeBar(window)
    assert funnel.error(BadValueError("<b>ctx</b> 0: too small"), title="Bad value", notice=bar) == "notice"
    assert bar.isVisibleTo(window) and bar.label.text() == "<b>ctx</b> 0: too small"
    assert bar.label.textFormat() == Qt.TextFormat.PlainText  # untrusted text is never rendered

    assert funnel.error(ModelFileError("x.gguf: truncated at byte 12"), title="Cannot load model") == "dialog"
    assert funnel.box is not None and funnel.box.isVisible() and funnel.box.text() == "x.gguf: truncated at byte 12"
    assert funnel.box.textFormat() == Qt.TextFormat.PlainText
    funnel.box.accept()

    try:
        raise KeyError("stale row")
    except KeyError as exc:
        error = exc
    assert funnel.error(error, title="Library") == "report"
    dialog = crash_dialog._state["dialog"]
    assert dialog is not None and dialog.isVisible() and "KeyError: 'stale row'" in dialog.report.toPlainText()
    assert "Traceback" in dialog.report.toPlainText()  # the bug's traceback, for the report
    dialog.reject()
    assert [c for c, _ in funnel.shown] == ["status", "notice", "dialog", "report"]


def test_the_task_runner_hands_the_typed_error_to_the_gui_thread(qtbot) -> None:  # type: ignore[no-untyped-def]
    runner = TaskRunner()
    got: list[BaseException] = []

    def fail() -> None:
        raise ModelFileError("m.gguf: not a GGUF file (magic b'PK')")

    runner.run("check", fail, failed=got.append)
    qtbot.waitUntil(lambda: bool(got), timeout=5000)
    assert isinstance(got[0], ModelFileError) and "m.gguf" in str(got[0])
    assert channel(got[0], has_notice=False) == "dialog"
