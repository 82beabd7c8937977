"""Settings → Workers, against a real worker process on loopback: a worker added shows its status
and the memory it offers (its --mem); an unreachable one, one of another protocol version and a busy
one show why; a bad or repeated address is refused with why; Remove drops a row; the dialog saves
the list when accepted."""

from __future__ import annotations

import socket
import struct
from typing import Iterator

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QLabel

from app.core import settings as app_settings
from app.core.rpc.client import MAX_WORKERS, probe, split_address
from app.core.rpc.serve import RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE
from app.core.rpc.status import WorkerDevice, WorkerStatus
from app.core.rpc.worker import Worker, free_port
from app.ui.dialogs.settings import SettingsDialog
from app.ui.dialogs.workers import CHECKING, SECURITY_NOTE, WorkersPanel, status_line
from app.ui.tasks import TaskRunner
from tests.core.rpc.conftest import WORKER_MEM, status_server
from tests.ui.test_no_elision import elided_texts

WAIT_MS = 15_000


@pytest.fixture
def newer_protocol(worker: Worker) -> Iterator[str]:
    """The address of a status server answering the real worker's status, but for RPC 8.0.0."""
    with status_server({**probe(worker.address).to_dict(), "protocol": "8.0.0"}) as address:
        yield address


@pytest.fixture
def runner() -> Iterator[TaskRunner]:
    r = TaskRunner()
    yield r
    r.wait_idle()


@pytest.fixture(autouse=True)
def _hf_files(hf_token_files: None) -> None:
    """The Settings dialog checks the Hugging Face account: no token, in a temp folder (tests/conftest.py)."""


def panel_with(qtbot, runner: TaskRunner, addresses: list[str] | None = None) -> WorkersPanel:  # type: ignore[no-untyped-def]
    panel = WorkersPanel(runner, addresses or [])
    qtbot.addWidget(panel)
    return panel


def add(qtbot, panel: WorkersPanel, address: str, saved_as: str | None = None) -> None:  # type: ignore[no-untyped-def]
    panel.address.setText(address)
    with qtbot.waitSignal(panel.worker_probed, timeout=WAIT_MS, check_params_cb=lambda a: a == (saved_as or address)):
        panel.add_button.click()


def status_texts(panel: WorkersPanel) -> list[tuple[str, str]]:
    return [(panel.table.item(i, 0).text(), panel.table.item(i, 1).text()) for i in range(panel.table.rowCount())]


def test_a_running_worker_added_shows_its_protocol_device_and_offered_memory(qtbot, runner: TaskRunner, worker: Worker) -> None:  # type: ignore[no-untyped-def]
    panel = panel_with(qtbot, runner)
    add(qtbot, panel, worker.address)
    [(address, text)] = status_texts(panel)
    assert address == worker.address and panel.address.text() == ""
    assert text.startswith("reachable · RPC 7.0.0 · CPU")
    assert text.endswith(" · offers 256.0 MiB free")  # its --mem, not the machine's free memory
    row = panel.row(worker.address)
    assert row is not None and row.reachable and row.status is not None and row.status.offered_bytes == WORKER_MEM
    assert "<p" in panel.table.item(0, 1).toolTip()  # the whole line, as escaped plain text
    assert all(label.textFormat() == Qt.TextFormat.PlainText for label in panel.findChildren(QLabel))


def test_an_unreachable_worker_is_added_marked_with_the_reason(qtbot, runner: TaskRunner) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    panel = panel_with(qtbot, runner)
    add(qtbot, panel, f"127.0.0.1:{port}")
    [(address, text)] = status_texts(panel)
    assert address == f"127.0.0.1:{port}"
    assert text.startswith(f"unreachable (no worker status on port {port + 1}")
    assert panel.addresses() == [address] and panel.row(address).reachable is False  # type: ignore[union-attr]


def test_a_worker_of_another_protocol_version_shows_the_mismatch(qtbot, runner: TaskRunner, newer_protocol: str) -> None:  # type: ignore[no-untyped-def]
    panel = panel_with(qtbot, runner)
    add(qtbot, panel, newer_protocol)
    [(_, text)] = status_texts(panel)
    assert text.startswith("protocol version mismatch: the worker speaks RPC 8.0.0, this engine 7.0.0")
    assert panel.row(newer_protocol).reachable is False  # type: ignore[union-attr]


def test_a_worker_serving_another_client_shows_busy(qtbot, runner: TaskRunner, worker: Worker) -> None:  # type: ignore[no-untyped-def]
    host, port = split_address(worker.address)
    panel = panel_with(qtbot, runner, [worker.address])
    qtbot.waitUntil(lambda: status_texts(panel)[0][1].startswith("reachable"), timeout=WAIT_MS)
    with socket.create_connection((host, port), timeout=5) as held:  # a client: llama.cpp's HELLO, answered
        held.sendall(struct.pack("<BQ", RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE) + bytes(RPC_CONN_CAPS_SIZE))
        assert held.recv(64)  # its answer has begun (it may come in more than one piece)
        qtbot.waitUntil(lambda: probe(worker.address).busy, timeout=WAIT_MS)
        with qtbot.waitSignal(panel.worker_probed, timeout=WAIT_MS):
            panel.refresh_button.click()
        assert status_texts(panel)[0][1].startswith("busy: serving another client (a worker serves one at a time) · RPC 7.0.0")
    qtbot.waitUntil(lambda: not probe(worker.address).busy, timeout=WAIT_MS)  # free again for the next test


def test_a_bad_or_repeated_address_is_refused_with_why(qtbot, runner: TaskRunner, worker: Worker) -> None:  # type: ignore[no-untyped-def]
    panel = panel_with(qtbot, runner, [worker.address])
    panel.show()
    panel.address.setText("host:port:x")
    panel.add_button.click()
    assert panel.error.isVisible() and panel.error.text().startswith("'host:port:x': give a worker as HOST:PORT")
    panel.address.setText(f" {worker.address} ")
    panel.add_button.click()
    assert panel.error.text() == f"{worker.address}: already in the list"
    assert panel.addresses() == [worker.address] and panel.address.text().strip() == worker.address  # kept, to correct
    qtbot.waitUntil(lambda: panel.row(worker.address).text != CHECKING, timeout=WAIT_MS)  # type: ignore[union-attr]


def test_no_more_workers_than_llama_cpp_takes(qtbot, runner: TaskRunner) -> None:  # type: ignore[no-untyped-def]
    free: set[str] = set()
    while len(free) < MAX_WORKERS + 1:
        free.add(f"127.0.0.1:{free_port()}")  # nothing listens there
    *full, extra = sorted(free)
    panel = panel_with(qtbot, runner, full)
    panel.address.setText(extra)
    panel.add_button.click()
    assert panel.error.text() == f"{extra}: not added; llama.cpp takes at most {MAX_WORKERS} workers (remove one first)"
    assert len(panel.addresses()) == MAX_WORKERS
    qtbot.waitUntil(lambda: all(r.reachable is False for r in panel.rows), timeout=WAIT_MS)


def test_a_host_alone_gets_the_default_port(qtbot, runner: TaskRunner) -> None:  # type: ignore[no-untyped-def]
    panel = panel_with(qtbot, runner)
    add(qtbot, panel, "127.0.0.1", saved_as="127.0.0.1:50052")
    assert panel.addresses() == ["127.0.0.1:50052"]


def test_remove_drops_the_selected_worker(qtbot, runner: TaskRunner, worker: Worker) -> None:  # type: ignore[no-untyped-def]
    gone = f"127.0.0.1:{free_port()}"
    panel = panel_with(qtbot, runner, [worker.address, gone])
    assert not panel.remove_button.isEnabled()  # nothing selected
    panel.table.selectRow(1)
    assert panel.remove_button.isEnabled()
    panel.remove_button.click()
    assert panel.addresses() == [worker.address] and panel.table.rowCount() == 1
    with qtbot.waitSignal(panel.worker_probed, timeout=WAIT_MS, check_params_cb=lambda a: a == worker.address):
        panel.refresh_button.click()
    assert status_texts(panel)[0][1].startswith("reachable")


def test_the_settings_page_saves_the_workers_when_accepted_and_probes_them_when_opened(  # type: ignore[no-untyped-def]
        qtbot, runner: TaskRunner, worker: Worker) -> None:
    dialog = SettingsDialog(runner)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.workers.addresses() == [] and SECURITY_NOTE.startswith("Workers are unauthenticated")
    dialog.workers.address.setText(worker.address)
    with qtbot.waitSignal(dialog.workers.worker_probed, timeout=WAIT_MS):
        qtbot.keyClick(dialog.workers.address, Qt.Key.Key_Return)  # Enter in the field adds; it does not press OK
    assert dialog.isVisible() and app_settings.load().workers == []
    assert elided_texts(dialog) == []  # the Workers group's headers and buttons fit
    assert dialog.minimumSizeHint().height() < 800  # the groups scroll; OK and Cancel stay on a laptop's screen
    with qtbot.waitSignal(dialog.saved):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert app_settings.load().workers == [worker.address]

    again = SettingsDialog(runner)
    qtbot.addWidget(again)
    with qtbot.waitSignal(again.workers.worker_probed, timeout=WAIT_MS):
        pass  # the saved worker is probed as the page opens
    assert again.workers.addresses() == [worker.address]
    assert status_texts(again.workers)[0][1].endswith("offers 256.0 MiB free")
    again.reject()
    assert app_settings.load().workers == [worker.address]  # cancelled: unchanged


def test_a_busy_worker_says_so() -> None:
    cpu = WorkerDevice(name="CPU", description="Some CPU", type="cpu", free_bytes=8 << 30, total_bytes=16 << 30, offered_bytes=2 << 30)
    status = WorkerStatus(address="box:50052", protocol=(7, 0, 0), devices=(cpu,), mem_limit=2 << 30, busy=False, quantdesk="1")
    assert status_line(status) == "reachable · RPC 7.0.0 · CPU (Some CPU) · offers 2.0 GiB free"
    busy = WorkerStatus(address="box:50052", protocol=(7, 0, 0), devices=(cpu,), mem_limit=None, busy=True, quantdesk="1")
    assert status_line(busy).startswith("busy: serving another client")
