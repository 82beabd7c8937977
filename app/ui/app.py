"""Start the GUI: one QApplication, the store, the engine bridge, the main window."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from app import APP_NAME
from app.core import paths


def setup_logging() -> None:
    handler = logging.handlers.RotatingFileHandler(paths.logs_dir() / "quantdesk.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def create_window(*, hub_endpoint: str | None = None):  # type: ignore[no-untyped-def]
    """The main window with its store and engine; the caller shows it (tests use this too)."""
    from app.core.chats import ChatStore
    from app.ui.main_window import MainWindow
    from app.ui.worker import EngineBridge

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
    return window


def run_gui(argv: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    setup_logging()
    app = QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    window = create_window()
    window.show()
    window.open_initial_model()
    code = app.exec()
    window.bridge.shutdown()
    window.store.close()
    return code
