"""One QuantDesk per user and data folder: a second launch asks the first to come to the front,
then exits. A local socket (a Unix socket in /tmp, a named pipe on Windows) whose name is derived
from the user and QUANTDESK_HOME, so two data folders (and tests with temporary homes) never meet."""

from __future__ import annotations

import getpass
import hashlib
import logging

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

from app.core import paths

log = logging.getLogger(__name__)

ACTIVATE = b"activate\n"
CONNECT_MS = 500


def server_name() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name (containers): the home folder alone keeps instances apart
        user = "user"
    digest = hashlib.sha1(f"{user}\0{paths.home().resolve()}".encode()).hexdigest()[:12]
    return f"quantdesk-{digest}"


class SingleInstance(QObject):
    activation_requested = Signal()

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or server_name()
        self.server: QLocalServer | None = None

    def notify_running(self) -> bool:
        """True when another instance answers: it was asked to show itself, and this one should exit."""
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(CONNECT_MS):
            return False
        socket.write(ACTIVATE)
        socket.waitForBytesWritten(CONNECT_MS)
        socket.disconnectFromServer()
        log.info("another QuantDesk is running (%s): asked it to come to the front", self.name)
        return True

    def listen(self) -> bool:
        """Become the running instance. A socket left by a crashed instance is removed first
        (``notify_running`` found nobody answering it)."""
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not self.server.listen(self.name):
            QLocalServer.removeServer(self.name)
            if not self.server.listen(self.name):
                log.warning("single instance: cannot listen on %s: %s", self.name, self.server.errorString())
                return False
        self.server.newConnection.connect(self._on_connection)
        log.info("single instance: listening on %s", self.name)
        return True

    def _on_connection(self) -> None:
        assert self.server is not None
        while (socket := self.server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._on_ready(s))
            socket.disconnected.connect(socket.deleteLater)
            if socket.bytesAvailable():
                self._on_ready(socket)

    def _on_ready(self, socket: QLocalSocket) -> None:
        if bytes(socket.readAll().data()).strip() == ACTIVATE.strip():
            log.info("single instance: a second launch asked this window to come to the front")
            self.activation_requested.emit()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def bring_to_front(window: QWidget) -> None:
    window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
    window.show()
    window.raise_()
    window.activateWindow()
