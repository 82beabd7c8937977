"""Settings → Workers: the RPC workers (app.core.rpc) a model may be split over, each with its
status as a background probe found it: reachable, its protocol version, devices and the memory
it offers, or the one-line reason it cannot be used. The list is saved by the Settings dialog
(``addresses()``); nothing here connects to a worker's RPC port, the probe reads only its status."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent, QPalette
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QHeaderView, QLineEdit, QPushButton, QVBoxLayout, QWidget

from app.core.errors import WorkerError
from app.core.hardware import human_bytes
from app.core.rpc import DEFAULT_PORT
from app.core.rpc.client import MAX_WORKERS, probe, split_address
from app.core.rpc.status import WorkerStatus
from app.ui.messages import user_text
from app.ui.safe_text import plain_label
from app.ui.tables import make_table, read_only_item
from app.ui.tasks import TaskRunner

log = logging.getLogger(__name__)

CHECKING = "checking…"
SECURITY_NOTE = ("Workers are unauthenticated: anyone who reaches a worker's port can use its device. Keep workers on "
                 "your own network, and reach one beyond it through an SSH tunnel (forward its port and the next one).")
TABLE_ROWS = 4  # rows shown before the table scrolls (the Settings page stays on one screen)


def normalized(address: str) -> str:
    """``HOST:PORT`` as saved (``HOST`` alone gets the default port); WorkerError on a bad one."""
    host, port = split_address(address)
    return f"{host}:{port}"


def status_line(status: WorkerStatus) -> str:
    """One line for a reachable worker: "reachable · RPC 7.0.0 · CPU (…) · offers 2.0 GiB free"."""
    devices = ", ".join(f"{d.name} ({d.description})" if d.description and d.description != d.name else d.name
                        for d in status.devices) or "no devices"
    parts = ["busy: serving another client (a worker serves one at a time)" if status.busy else "reachable",
             f"RPC {status.protocol_text}", devices, f"offers {human_bytes(status.offered_bytes)} free"]
    return " · ".join(parts)


class AddressField(QLineEdit):
    """Enter adds the address (``returnPressed``) and goes no further: a dialog would take it as OK."""

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        super().keyPressEvent(event)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            event.accept()


@dataclass
class WorkerRow:
    address: str
    text: str = CHECKING
    reachable: bool | None = None  # None: not probed yet
    status: WorkerStatus | None = None


class WorkersPanel(QWidget):
    """The saved workers, an address field with Add, Remove and Refresh. Probes run on the
    runner's threads; a newer probe of an address drops an older one's answer."""

    worker_probed = Signal(str)  # the address whose status (or reason) is now shown

    def __init__(self, runner: TaskRunner, addresses: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.rows: list[WorkerRow] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        self.table = make_table(["Worker", "Status"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        rows_height = TABLE_ROWS * self.table.verticalHeader().defaultSectionSize()
        self.table.setFixedHeight(rows_height + header.sizeHint().height() + 2 * self.table.frameWidth())
        self.table.itemSelectionChanged.connect(self._on_selection)
        layout.addWidget(self.table)

        row = QHBoxLayout()
        self.address = AddressField()
        self.address.setPlaceholderText(f"HOST:PORT of a 'quantdesk worker', e.g. 192.168.1.7:{DEFAULT_PORT}")
        self.address.returnPressed.connect(self.add)
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(self.add)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove)
        self.remove_button.setEnabled(False)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        row.addWidget(self.address, 1)
        for button in (self.add_button, self.remove_button, self.refresh_button):
            button.setAutoDefault(False)  # Enter is the dialog's OK, or Add in the address field
            row.addWidget(button)
        layout.addLayout(row)

        self.error = plain_label()  # a refused address: why
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        note = plain_label(SECURITY_NOTE)
        note.setWordWrap(True)
        note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(note)

        for address in addresses:
            self.rows.append(WorkerRow(address))
        self._show_rows()
        self.refresh()

    # -- what is saved --------------------------------------------------------------------------
    def addresses(self) -> list[str]:
        return [r.address for r in self.rows]

    def row(self, address: str) -> WorkerRow | None:
        return next((r for r in self.rows if r.address == address), None)

    # -- actions --------------------------------------------------------------------------------
    def add(self) -> None:
        """Add the address in the field (refused, with the reason, when it is not HOST:PORT, is
        listed already or would be one too many) and probe it; an unreachable worker is added all the same, marked so."""
        text = self.address.text().strip()
        if not text:
            self._refuse("Type a worker's address as HOST:PORT first.")
            return
        try:
            address = normalized(text)
        except WorkerError as exc:
            self._refuse(str(exc))
            return
        if any(r.address.lower() == address.lower() for r in self.rows):
            self._refuse(f"{address}: already in the list")
            return
        if len(self.rows) >= MAX_WORKERS:
            self._refuse(f"{address}: not added; llama.cpp takes at most {MAX_WORKERS} workers (remove one first)")
            return
        self._refuse("")
        self.address.clear()
        self.rows.append(WorkerRow(address))
        self._show_rows()
        self.table.selectRow(len(self.rows) - 1)
        self._probe(address)
        log.info("worker %s added", address)

    def remove(self) -> None:
        index = self.table.currentRow()
        if not 0 <= index < len(self.rows):
            return
        gone = self.rows.pop(index)
        self.runner.invalidate(self._key(gone.address))  # a probe still out is not shown
        self._show_rows()
        log.info("worker %s removed", gone.address)

    def refresh(self) -> None:
        for r in self.rows:
            r.text, r.reachable, r.status = CHECKING, None, None
            self._probe(r.address)
        self._show_rows()

    def stop(self) -> None:
        """The dialog closes: answers still out are dropped."""
        for r in self.rows:
            self.runner.invalidate(self._key(r.address))

    # -- probes (off the GUI thread) ------------------------------------------------------------
    @staticmethod
    def _key(address: str) -> str:
        return f"worker-probe:{address}"

    def _probe(self, address: str) -> None:
        self.runner.run("worker-probe", lambda: probe(address), key=self._key(address),
                        done=lambda status: self._on_status(address, status),
                        failed=lambda error: self._on_failed(address, error))

    def _on_status(self, address: str, status: WorkerStatus) -> None:
        r = self.row(address)
        if r is None:
            return
        r.text, r.reachable, r.status = status_line(status), True, status
        self._shown(address)

    def _on_failed(self, address: str, error: BaseException) -> None:
        r = self.row(address)
        if r is None:
            return
        reason = user_text(error)
        r.text, r.reachable, r.status = reason.removeprefix(f"{address}: "), False, None  # the address is in its own column
        self._shown(address)

    def _shown(self, address: str) -> None:
        self._show_rows()
        self.worker_probed.emit(address)

    # -- the view -------------------------------------------------------------------------------
    def _show_rows(self) -> None:
        selected = self.table.currentRow()
        self.table.setRowCount(len(self.rows))
        for index, r in enumerate(self.rows):
            self.table.setItem(index, 0, read_only_item(r.address))
            self.table.setItem(index, 1, read_only_item(r.text))  # device names come from the network: plain text, plain tooltip
        if 0 <= selected < len(self.rows):
            self.table.selectRow(selected)
        self._on_selection()

    def _on_selection(self) -> None:
        self.remove_button.setEnabled(bool(self.table.selectedItems()))

    def _refuse(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))
