"""Start the GUI: one QApplication, the store, the engine bridge, the main window.

``run_gui`` also makes it a desktop app: one instance per user and data folder (a second launch
brings the first to the front), name and icon, the theme, the crash dialog, a rotating log with
secrets masked, and SIGTERM (logout, ``kill``) closing the window the normal way.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys

from app.core import paths
from app.core.redact import RedactFilter

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SCREENSHOT_ENV = "QUANTDESK_SCREENSHOT"  # a PNG path: the window grabs itself once the model loaded


def setup_logging() -> logging.Handler:
    """The rotating log ``logs/quantdesk.log`` (2 MB x 4); tokens are masked by the handler's filter."""
    handler = logging.handlers.RotatingFileHandler(paths.logs_dir() / "quantdesk.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def create_window(*, hub_endpoint: str | None = None):  # type: ignore[no-untyped-def]
    """The main window with its store and engine, its size and page from the last run; the caller
    shows it (tests use this too)."""
    from app.core.chat.store import ChatStore
    from app.ui.desktop import restore_window_state
    from app.ui.main_window import MainWindow
    from app.ui.tasks import EngineBridge

    store = ChatStore(paths.database_path())
    bridge = EngineBridge()
    window = MainWindow(store, bridge, hub_endpoint=hub_endpoint)
    window.chat.refresh_list()
    conversations = store.list_conversations()
    last = window.settings.last_conversation
    if conversations:
        ids = [c.id for c in conversations]
        window.chat.open_conversation(last if last in ids else ids[0])
    else:
        window.chat.new_conversation()  # first run: an empty chat, ready to type in
    restore_window_state(window)
    window.server_switch.restore()  # the API server, when it was on last time
    from app.core.proc.runner import sweep_stale_partials
    from app.core.settings import models_dir

    # half-written outputs of a crashed or killed job, never shown as models; a live writer's stay
    window.runner.run("sweep-partials", lambda: sweep_stale_partials(models_dir()),
                      lambda removed: removed and log.info("removed %d stale partial outputs", len(removed)),
                      lambda exc: log.info("partial-output sweep: %s", exc))
    from app.core.db import take_notices

    window.startup_notices = take_notices()  # data files moved aside at start: the user is told
    if window.startup_notices:
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, lambda: window.funnel.dialog("Some data could not be read", "\n\n".join(window.startup_notices)))
    return window


def _qt_messages_to_log() -> None:
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    levels = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO, QtMsgType.QtWarningMsg: logging.WARNING,
              QtMsgType.QtCriticalMsg: logging.ERROR, QtMsgType.QtFatalMsg: logging.CRITICAL}
    qt_log = logging.getLogger("qt")
    qInstallMessageHandler(lambda kind, _context, message: qt_log.log(levels.get(kind, logging.INFO), "%s", message))


def _quit_on_sigterm(app) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM closes the window as the Quit menu does (settings and window state saved). Python
    runs signal handlers only between bytecodes, so a timer lets it in now and then."""
    from PySide6.QtCore import QTimer

    if not hasattr(signal, "SIGTERM"):
        return

    def close_all() -> None:
        for widget in app.topLevelWidgets():
            if hasattr(widget, "_quit_confirmed"):
                widget._quit_confirmed = True  # logout or kill: no question; downloads pause, other jobs stop
            if widget.isWindow() and widget.isVisible():
                widget.close()
        app.quit()

    def on_term(_signum: int, _frame: object) -> None:
        log.info("SIGTERM: closing")
        # from inside the event loop: a SIGTERM between window.show() and app.exec() would otherwise
        # close the window and quit a loop that is not running yet, and exec() would then run forever
        QTimer.singleShot(0, close_all)

    signal.signal(signal.SIGTERM, on_term)
    tick = QTimer(app)
    tick.setInterval(300)
    tick.timeout.connect(lambda: None)
    tick.start()


def _screenshot_when_loaded(window) -> None:  # type: ignore[no-untyped-def]
    """With QUANTDESK_SCREENSHOT=file.png the window saves a picture of itself once the first
    model has loaded (or failed): a check of a bundle where no X server is at hand."""
    path = os.environ.get(SCREENSHOT_ENV)
    if not path:
        return
    done: list[bool] = []

    def grab(*_args: object) -> None:
        if not done:
            done.append(True)
            partial = path + ".part.png"  # whole or not at all: whoever waits for the file never reads half of it
            ok = window.grab().save(partial, "PNG")
            if ok:
                os.replace(partial, path)
            log.info("screenshot %s: %s", path, "saved" if ok else "failed")

    window.bridge.model_loaded.connect(grab)
    window.bridge.load_failed.connect(grab)


def run_gui(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    from app.core import settings as app_settings
    from app.ui.desktop import set_desktop_identity
    from app.ui.dialogs import crash as crash_dialog
    from app.ui.single_instance import SingleInstance, bring_to_front
    from app.ui.theme import apply_theme

    setup_logging()
    app = QApplication(argv if argv is not None else sys.argv)
    set_desktop_identity(app)
    instance = SingleInstance()
    if instance.notify_running():
        return 0
    instance.listen()
    _qt_messages_to_log()
    crash_dialog.install(app)
    apply_theme(app_settings.load().theme, app)
    _quit_on_sigterm(app)
    window = create_window()
    instance.activation_requested.connect(lambda: bring_to_front(window))
    window.bridge.model_loaded.connect(lambda _info: crash_dialog.set_build_info(window.bridge.client.build_info))
    window.bridge.model_loaded.connect(lambda info: log.info("model loaded: %s on %s, context %s, %s", info.path, info.device, info.n_ctx, info.threads))
    _screenshot_when_loaded(window)
    window.show()
    log.info("main window shown")
    window.open_initial_model()
    code = app.exec()
    instance.close()
    window.bridge.shutdown()
    window.store.close()
    log.info("closed")
    return code
