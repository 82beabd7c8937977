"""The Server switch: Server → Run API server (checkable), Copy URL, and a status-bar label with the
URL and a live request count. The server (app.core.server.run.ApiServer) runs on its own thread;
starting and stopping happen off the GUI thread; the setting is remembered (off by default)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QLabel, QMainWindow, QMenu

from app.core import settings as app_settings
from app.core.errors import QuantDeskError
from app.ui.safe_text import plain_label
from app.ui.tasks import Dispatcher, TaskRunner

log = logging.getLogger(__name__)


class ServerSwitch:
    def __init__(self, window: QMainWindow, runner: TaskRunner, *, on_error: Callable[[BaseException], None],
                 bridge: Any = None) -> None:
        """``bridge``: the window's EngineBridge, whose engine the server shares (the window's
        model is served on it, never loaded twice)."""
        self.window, self.runner, self.on_error = window, runner, on_error
        self.bridge = bridge
        if bridge is not None:
            bridge.before_load.append(self._before_window_load)
        self.server: Any = None
        self.dispatch: Dispatcher | None = None  # request records, delivered on the GUI thread while serving
        self.requests = 0
        self.busy = False
        menu = QMenu("&Server", window)
        help_menu = next((a for a in window.menuBar().actions() if a.text() == "&Help"), None)
        if help_menu is not None:
            window.menuBar().insertMenu(help_menu, menu)
        else:
            window.menuBar().addMenu(menu)
        self.menu = menu
        self.action = QAction("&Run API server (OpenAI / Anthropic compatible)", window, checkable=True)
        self.action.toggled.connect(self._on_toggled)
        self.copy_action = QAction("&Copy API URL", window, triggered=self.copy_url, enabled=False)
        self.requests_action = QAction("&Requests…", window, triggered=self.show_requests)
        menu.addActions([self.action, self.copy_action, self.requests_action])
        self.requests_dialog: Any = None
        self.label: QLabel = plain_label("")
        self.label.setToolTip("The local API server: point OpenAI or Anthropic clients at this URL")
        window.statusBar().addPermanentWidget(self.label)

    @property
    def url(self) -> str | None:
        return self.server.url if self.server is not None else None

    def restore(self) -> None:
        """Start the server when it was on when the app last closed."""
        if app_settings.load().server_enabled:
            self.action.setChecked(True)

    def _on_toggled(self, on: bool) -> None:
        try:
            app_settings.update(server_enabled=on)
        except QuantDeskError as exc:
            self.on_error(exc)
        if on and self.server is None:
            self.start()
        elif not on and self.server is not None:
            self.stop()

    def start(self) -> None:
        from app.core.server.run import ApiServer
        from app.core.server.service import ServerConfig

        s = app_settings.load()
        self.busy = True
        self.label.setText("API server starting…")
        dispatch = self.dispatch = Dispatcher(self.window, idle_ms=200)

        def make() -> Any:
            config = ServerConfig(host=s.server_host, port=s.server_port, api_key=s.server_api_key or None)
            from app.core.server.pool import SharedEngine

            server = ApiServer(config, shared=SharedEngine(self.bridge.client) if self.bridge is not None else None)
            server.service.listeners.append(lambda rec: dispatch.post(lambda: self._on_record(rec)))
            server.start()
            server.started.wait(60)
            if server.error is not None:
                raise server.error
            return server

        self.runner.run("api-server-start", make, self._on_started, self._on_failed)

    def _on_started(self, server: Any) -> None:
        self.busy = False
        if not self.action.isChecked():  # switched off while starting
            self.server = server
            self.stop()
            return
        self.server = server
        self.requests = 0
        self.copy_action.setEnabled(True)
        self._show()

    def _on_failed(self, exc: BaseException) -> None:
        self.busy = False
        if self.dispatch is not None:
            self.dispatch.stop()
        self.label.setText("")
        self.action.blockSignals(True)
        self.action.setChecked(False)
        self.action.blockSignals(False)
        self.on_error(exc)

    def _before_window_load(self, path: str) -> None:
        server = self.server
        if server is not None:
            server.drop_copy(path)

    def stop(self) -> None:
        server, self.server = self.server, None
        self.copy_action.setEnabled(False)
        if self.dispatch is not None:
            self.dispatch.stop()
        if server is None:
            return
        self.busy = True
        self.label.setText("API server stopping…")

        def done(_: Any) -> None:
            self.busy = False
            if self.server is None:
                self.label.setText("")

        self.runner.run("api-server-stop", server.stop, done, self._on_failed)

    def shutdown(self) -> None:
        """The window is closing: stop the server and its engines now (blocking)."""
        server, self.server = self.server, None
        if server is not None:
            server.stop(timeout=5)

    def _on_record(self, rec: Any) -> None:
        self.requests += 1
        self._show()
        if self.requests_dialog is not None:
            self.requests_dialog.add(rec)

    def show_requests(self) -> None:
        from app.ui.server.requests import RequestsDialog

        if self.requests_dialog is None:
            self.requests_dialog = RequestsDialog(self.window)
        self.requests_dialog.set_url(self.url)
        self.requests_dialog.fill(list(self.server.service.recent) if self.server is not None else [])
        self.requests_dialog.follow_log(self.server.service.log_tail.lines if self.server is not None else None)
        self.requests_dialog.show()

    def _show(self) -> None:
        if self.server is not None:
            n = self.requests
            self.label.setText(f"API {self.server.url} · {n} request{'s' if n != 1 else ''}")

    def copy_url(self) -> None:
        if self.url:
            QGuiApplication.clipboard().setText(self.url)
