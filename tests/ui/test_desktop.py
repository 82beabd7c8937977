"""The app as a desktop citizen (pytest-qt, offscreen): shortcuts, window state, the Settings page,
Hugging Face login, About, the crash dialog, logs, theme, and one instance per data folder."""

from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import QSize, Qt, QUrl, qVersion
from PySide6.QtGui import QDesktopServices, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QPushButton

from app import __version__
from app.core import paths
from app.core import settings as app_settings
from app.core.engine.protocol import PRESETS
from app.core.proc.launch import child_env
from app.core.settings import models_dir
from app.ui.app import create_window, setup_logging
from app.ui.dialogs import crash as crash_dialog
from app.ui.dialogs.settings import SettingsDialog
from app.ui.main_window import MainWindow
from app.ui.theme import apply_theme, system_is_dark
from tests.conftest import HUB_TOKEN

WAIT_MS = 60_000
TOKEN = "hf_" + "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210"


@pytest.fixture(autouse=True)
def _hf_files(hf_token_files: None) -> None:
    """huggingface_hub's token files in a temp folder (tests/conftest.py)."""


def close_window(window: MainWindow) -> None:
    window.close()
    window.bridge.shutdown()
    window.store.close()


def open_window(qtbot, **kwargs: object) -> MainWindow:  # type: ignore[no-untyped-def]
    win = create_window(**kwargs)  # type: ignore[arg-type]
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


@pytest.fixture
def window(qtbot) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    win = open_window(qtbot)
    yield win
    close_window(win)


# -- shortcuts --------------------------------------------------------------------------------
def test_common_actions_have_shortcuts(window: MainWindow) -> None:
    keys = {
        "new chat": (window.new_action, "Ctrl+N"),
        "send": (window.send_action, "Ctrl+Return"),
        "stop": (window.stop_action, "Esc"),
        "search": (window.search_action, "Ctrl+F"),
        "settings": (window.settings_action, "Ctrl+,"),
        "open model": (window.open_action, "Ctrl+O"),
    }
    for name, (action, key) in keys.items():
        assert QKeySequence(key) in action.shortcuts(), name
    quit_action = next(a for a in window.findChildren(type(window.new_action)) if a.text() == "&Quit")
    assert quit_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Quit)


def test_shortcuts_work_from_the_keyboard(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    before = len(window.store.list_conversations())
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert len(window.store.list_conversations()) == before + 1
    qtbot.keyClick(window.chat.composer.input, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.chat.conversations.search.hasFocus())
    qtbot.keyClick(window, Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: getattr(window, "settings_dialog", None) is not None and window.settings_dialog.isVisible())
    window.settings_dialog.reject()


# -- window state -----------------------------------------------------------------------------
def test_window_size_and_page_come_back(qtbot) -> None:  # type: ignore[no-untyped-def]
    first = open_window(qtbot)
    first.resize(780, 560)  # inside the offscreen screen (800x600): restoreGeometry keeps windows on screen
    first.pages.setCurrentWidget(first.downloads_page)
    size = first.size()
    assert size != QSize(1200, 780)  # not the default
    close_window(first)
    saved = app_settings.load()
    assert saved.window_geometry and saved.last_page == "DownloadsPage"
    second = open_window(qtbot)
    try:
        assert second.size() == size
        assert second.pages.currentWidget() is second.downloads_page
    finally:
        close_window(second)


def test_unreadable_window_state_is_ignored(qtbot) -> None:  # type: ignore[no-untyped-def]
    app_settings.update(window_geometry="not base64!", last_page="NoSuchPage")
    win = open_window(qtbot)
    try:
        assert win.pages.currentWidget() is win.chat
    finally:
        close_window(win)


# -- settings ---------------------------------------------------------------------------------
def test_settings_page_saves_and_applies(qtbot, window: MainWindow, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window.settings_action.trigger()
    dialog: SettingsDialog = window.settings_dialog
    assert dialog.default_ctx.value() == 0 and dialog.threads.value() == 0  # "Auto"
    dialog.models_dir.setText(str(tmp_path / "models here"))
    dialog.default_ctx.setValue(2048)
    dialog.threads.setValue(1)
    dialog.chat_defaults.system.setPlainText("Be brief.")
    dialog.chat_defaults.preset.setCurrentText("Precise")
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    from app.core.engine import cpu_policy
    from app.core.engine import cpu_variants as cv

    assert dialog.cpu_variant.currentData() == "auto"
    dialog.cpu_variant.setCurrentIndex(dialog.cpu_variant.findData(cv.baseline().name))
    assert dialog.speculation.currentData() == "auto"
    dialog.speculation.setCurrentIndex(dialog.speculation.findData("off"))
    assert (dialog.server_host.text(), dialog.server_port.value(), dialog.server_key.text()) == ("127.0.0.1", 8080, "")
    dialog.server_host.setText("0.0.0.0")
    dialog.server_port.setValue(8111)
    dialog.server_key.setText("sk-local")
    try:
        with qtbot.waitSignal(dialog.saved):
            dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
        s = app_settings.load()
        assert (s.models_dir, s.default_ctx, s.engine_threads, s.theme) == (str(tmp_path / "models here"), 2048, 1, "dark")
        assert s.default_sampling == PRESETS["Precise"].to_dict()
        assert s.cpu_variant == cv.baseline().name  # the engine's next start runs it
        assert s.speculation == "off"  # read by the engine client at each reply
        assert (s.server_host, s.server_port, s.server_api_key) == ("0.0.0.0", 8111, "sk-local")  # the next server start
        assert cpu_policy.current() == cv.Choice(cv.baseline(), "forced by the setting")
        assert models_dir() == tmp_path / "models here"
        assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 100  # dark now
        window.new_action.trigger()
        conv = window.chat.conversation
        assert conv is not None and (conv.system_prompt, conv.preset, conv.sampling) == ("Be brief.", "Precise", PRESETS["Precise"])
        again = SettingsDialog(window.runner, parent=window)  # the page shows what was saved
        assert (again.default_ctx.value(), again.threads.value(), again.theme.currentData()) == (2048, 1, "dark")
        again.deleteLater()
    finally:
        apply_theme("system")


def test_hugging_face_login_from_the_settings_page(qtbot, hub, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import huggingface_hub.hf_api

    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub.url)  # login() validates with this client
    caplog.set_level(logging.DEBUG)
    win = open_window(qtbot, hub_endpoint=hub.url)
    try:
        win.settings_action.trigger()
        dialog: SettingsDialog = win.settings_dialog
        assert "Not logged in" in dialog.hf_status.text() and not dialog.logout_button.isEnabled()
        dialog.token.setText("hf_wrongwrongwrongwrongwrong")
        dialog.login_button.click()
        qtbot.waitUntil(lambda: "refused" in dialog.hf_status.text(), timeout=WAIT_MS)
        dialog.token.setText(HUB_TOKEN)
        dialog.login_button.click()
        assert dialog.token.text() == ""  # not kept in the widget
        qtbot.waitUntil(lambda: dialog.hf_status.text() == "Logged in as qd-tester", timeout=WAIT_MS)
        assert huggingface_hub.get_token() == HUB_TOKEN and dialog.logout_button.isEnabled()
        dialog.logout_button.click()
        qtbot.waitUntil(lambda: dialog.hf_status.text().startswith("Not logged in"), timeout=WAIT_MS)
        assert huggingface_hub.get_token() is None
        dialog.reject()
    finally:
        close_window(win)
    assert HUB_TOKEN not in caplog.text


# -- about, logs, theme -----------------------------------------------------------------------
def test_about_names_versions_and_the_engine_build(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    import llama_cpp

    window.about()
    dialog = window.about_dialog
    qtbot.waitUntil(lambda: "llama-cpp-python" in dialog.text(), timeout=WAIT_MS)  # the engine reports its build
    text = dialog.text()
    for expected in (f"QuantDesk: {__version__}", f"Python: {platform.python_version()}", qVersion(),
                     f"llama-cpp-python: {llama_cpp.__version__}", "GPU offload: ", "llama.cpp backends: CPU"):
        assert expected in text
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == text
    dialog.reject()


def test_open_logs_folder(window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    assert window.logs_action in help_menu.actions()
    window.logs_action.trigger()
    assert [Path(u.toLocalFile()) for u in opened] == [paths.logs_dir()]


def test_log_file_masks_tokens() -> None:
    handler = setup_logging()
    try:
        logging.getLogger("app.core.hub.api").warning("request with token %s failed", TOKEN)
        handler.flush()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    text = (paths.logs_dir() / "quantdesk.log").read_text()
    assert "request with token hf_*** failed" in text and TOKEN not in text


def test_theme_light_dark_and_system(qapp) -> None:  # type: ignore[no-untyped-def]
    try:
        apply_theme("dark")
        assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 100
        apply_theme("light")
        assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() > 150
        apply_theme("system")
        dark = QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 100
        assert dark == system_is_dark()
    finally:
        apply_theme("system")


# -- crash dialog -----------------------------------------------------------------------------
@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_slot_shows_a_copyable_report(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "excepthook", crash_dialog.excepthook)
    button = QPushButton("boom")
    qtbot.addWidget(button)

    def broken_slot() -> None:
        raise ValueError(f"unexpected state with {TOKEN}")

    button.clicked.connect(broken_slot)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    dialog = crash_dialog._state["dialog"]
    assert dialog is not None and dialog.isVisible()
    report = dialog.report.toPlainText()
    assert "Traceback" in report and "broken_slot" in report and "ValueError: unexpected state with hf_***" in report
    assert f"Python: {platform.python_version()}" in report and TOKEN not in report
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == report
    dialog.reject()
    assert crash_dialog._state["dialog"] is None


def test_an_exception_in_a_worker_thread_reaches_the_dialog(qtbot, qapp) -> None:  # type: ignore[no-untyped-def]
    dispatch = crash_dialog.start_dispatch(qapp)

    def work() -> None:
        try:
            raise RuntimeError("worker failed")
        except RuntimeError:
            crash_dialog.thread_excepthook(threading.ExceptHookArgs([*sys.exc_info(), threading.current_thread()]))

    try:
        thread = threading.Thread(target=work, name="qd-worker")
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: crash_dialog._state["dialog"] is not None and crash_dialog._state["dialog"].isVisible())
        report = crash_dialog._state["dialog"].report.toPlainText()
        assert "thread qd-worker" in report and "RuntimeError: worker failed" in report
        crash_dialog._state["dialog"].reject()
    finally:
        dispatch.stop()
        crash_dialog._state["dispatch"] = None
        dispatch.deleteLater()


# -- one instance per user and data folder (two real processes) -------------------------------
def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll another process's observable state (a log line, an exit)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_second_launch_brings_the_first_to_the_front(tmp_path: Path) -> None:
    env = child_env({**os.environ, "QT_QPA_PLATFORM": "offscreen", "QUANTDESK_HOME": str(tmp_path / "home")})
    log = tmp_path / "home" / "logs" / "quantdesk.log"
    first = subprocess.Popen([sys.executable, "-m", "app"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: log.exists() and "main window shown" in log.read_text() or first.poll() is not None, 60, "the first window")
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        second = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        _wait_for(lambda: "a second launch asked this window to come to the front" in log.read_text(), 30, "the activation")
        other_home = child_env({**env, "QUANTDESK_HOME": str(tmp_path / "other")})  # another data folder: its own instance
        third = subprocess.Popen([sys.executable, "-m", "app"], env=other_home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        other_log = tmp_path / "other" / "logs" / "quantdesk.log"
        _wait_for(lambda: other_log.exists() and "main window shown" in other_log.read_text(), 60, "the other folder's window")
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)  # closes the window the normal way
        code = first.wait(timeout=60)
    assert code == 0
    assert "closed" in log.read_text()
    assert app_settings.load(tmp_path / "home" / "settings.json").window_geometry  # saved on the way out


RACE = """
import os, signal, sys
from app.ui import app as ui_app

make = ui_app.create_window

def create():
    window = make()
    open_model = window.open_initial_model

    def term_then_open():
        os.kill(os.getpid(), signal.SIGTERM)  # after window.show(), before app.exec()
        open_model()

    window.open_initial_model = term_then_open
    return window

ui_app.create_window = create
sys.exit(ui_app.run_gui([]))
"""


def test_a_sigterm_before_the_event_loop_runs_still_closes_the_app(tmp_path: Path) -> None:
    """A SIGTERM between the window's show() and app.exec() (logout right after launch; the timing
    the second-launch test once hit): the app closes the normal way, it does not run on forever."""
    script = tmp_path / "term_at_start.py"
    script.write_text(RACE)
    env = child_env({**os.environ, "QT_QPA_PLATFORM": "offscreen", "QUANTDESK_HOME": str(tmp_path / "home")})
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "home" / "logs" / "quantdesk.log").read_text()
    assert "SIGTERM: closing" in text and "app.ui.app: closed" in text
