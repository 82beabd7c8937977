"""RPC workers as the engine will meet them: a real worker process on loopback, its status, the
probe's one-line reasons, and a clean stop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from app import __version__
from app.core.errors import WorkerError
from app.core.rpc import PROTOCOL, status_port
from app.core.rpc.client import probe, split_address
from app.core.rpc.worker import Worker, WorkerConfig, free_port, parse_size
from tests.core.rpc.conftest import WORKER_MEM, start_worker, status_server


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_worker_serves_its_status_beside_the_rpc_port(worker: Worker) -> None:
    code, doc = _get(f"http://127.0.0.1:{status_port(worker.config.port)}/status")
    assert code == 200
    assert doc["kind"] == "quantdesk-rpc-worker" and doc["address"] == worker.address
    assert doc["protocol"] == "7.0.0"  # what the library's own server answered to HELLO
    assert doc["quantdesk"] == __version__ and doc["build"]["llama_cpp_python"] == "0.3.36" and doc["build"]["ggml"]
    [device] = doc["devices"]
    assert device["type"] == "cpu" and device["name"] and device["description"]
    assert device["free_bytes"] > WORKER_MEM  # the test machine has more than 256 MiB free
    assert device["offered_bytes"] == doc["offered_bytes"] == doc["mem_limit"] == WORKER_MEM
    assert doc["busy"] is False


def test_the_probe_reads_the_status_and_the_protocol_matches_ours(worker: Worker) -> None:
    status = probe(worker.address)
    assert status.protocol == PROTOCOL and status.offered_bytes == WORKER_MEM and status.threads == 2


def test_the_status_endpoint_is_read_only(worker: Worker) -> None:
    base = f"http://127.0.0.1:{status_port(worker.config.port)}"
    assert _get(base + "/anything")[0] == 404
    post = urllib.request.Request(base + "/status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(post, timeout=5)
    assert err.value.code == 501


def test_an_unreachable_worker_is_named_with_its_reason() -> None:
    port = free_port()
    with pytest.raises(WorkerError, match=rf"^127\.0\.0\.1:{port}: unreachable \(no worker status on port {port + 1}"):
        probe(f"127.0.0.1:{port}", timeout=2)


def test_a_bad_address_is_named() -> None:
    with pytest.raises(WorkerError, match="'host:port:x': give a worker as HOST:PORT"):
        split_address("host:port:x")
    assert split_address("box") == ("box", 50052)


@pytest.fixture
def fake_status(worker: Worker) -> Iterator[tuple[str, dict[str, Any]]]:
    """A status server that answers what the test puts in ``doc`` (another version, not a worker)."""
    doc: dict[str, Any] = {}
    with status_server(doc) as address:
        yield address, doc


def test_a_worker_of_another_protocol_version_is_refused_before_any_load(worker: Worker, fake_status: tuple[str, dict[str, Any]]) -> None:
    address, doc = fake_status
    doc.update(probe(worker.address).to_dict(), protocol="8.0.0")
    with pytest.raises(WorkerError, match=rf"^{address}: protocol version mismatch: the worker speaks RPC 8\.0\.0, this engine 7\.0\.0"):
        probe(address)
    doc.update(protocol="7.1.0")  # a newer minor version: llama.cpp's client refuses it too
    with pytest.raises(WorkerError, match="protocol version mismatch"):
        probe(address)


def test_something_else_on_the_status_port_is_not_a_worker(fake_status: tuple[str, dict[str, Any]]) -> None:
    address, doc = fake_status
    doc.update(status="ok")
    with pytest.raises(WorkerError, match=rf"^{address}: not a QuantDesk worker"):
        probe(address)


def test_sizes_take_units() -> None:
    assert parse_size("2G") == 2 << 30 and parse_size("512M") == 512 << 20 and parse_size("1.5GiB") == 3 << 29
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError, match="'lots' is not a size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="more than 0"):
        parse_size("0")


def test_listening_beyond_loopback_needs_allow_network() -> None:
    with pytest.raises(WorkerError, match=r"--host 0\.0\.0\.0: not a loopback address.*--allow-network"):
        WorkerConfig(host="0.0.0.0").check()
    allowed = WorkerConfig(host="0.0.0.0", allow_network=True)
    allowed.check()
    warning = allowed.warning() or ""
    assert "Never expose the RPC server to an open network" in warning and "ssh -N -L 50052:localhost:50052" in warning
    assert WorkerConfig(host="localhost").warning() is None


def test_an_unknown_device_is_named_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match=r"--device tpu:9: no such device here; this machine has: CPU"):
        start_worker(tmp_path, device="tpu:9")


def test_a_busy_port_is_named(worker: Worker, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTDESK_HOME", str(tmp_path))
        second = Worker(WorkerConfig(port=worker.config.port))
        with pytest.raises(WorkerError, match=rf"127\.0\.0\.1:{worker.config.port}: cannot listen there"):
            second.start()


def test_stop_ends_the_worker_process(tmp_path: Path) -> None:
    w = start_worker(tmp_path)
    assert w.proc is not None
    pid = w.proc.pid
    assert w.stop() == 0  # SIGTERM: its own handler ends it with status 0
    assert not psutil.pid_exists(pid)
    with pytest.raises(WorkerError, match="unreachable"):
        probe(w.address, timeout=2)


def test_a_worker_serving_a_client_is_busy_and_is_not_registered_twice(worker: Worker) -> None:
    """llama.cpp's RPC server serves one client at a time: a second would wait forever in HELLO."""
    import socket
    import struct
    import time

    from app.core.rpc.client import register
    from app.core.rpc.serve import RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE

    host, port = split_address(worker.address)
    with socket.create_connection((host, port), timeout=5) as held:
        held.sendall(struct.pack("<BQ", RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE) + bytes(RPC_CONN_CAPS_SIZE))
        assert held.recv(64)  # the HELLO answer has begun (it may come in more than one piece): this client is served
        deadline = time.monotonic() + 5
        while not probe(worker.address).busy and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe(worker.address).busy
        with pytest.raises(WorkerError, match=rf"^{worker.address}: busy: the worker is serving another client"):
            register([worker.address])
    deadline = time.monotonic() + 5
    while probe(worker.address).busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not probe(worker.address).busy


def test_devices_are_chosen_by_kind_name_or_index() -> None:
    """--device on a machine with GPUs (ggml's names; this test machine has a CPU only)."""
    from app.core.rpc.ggml import Device
    from app.core.rpc.serve import choose_device

    devices = [Device(0, "CUDA0", "NVIDIA RTX 4090", "gpu", 20 << 30, 24 << 30), Device(1, "CUDA1", "NVIDIA RTX 3060", "gpu", 10 << 30, 12 << 30),
               Device(2, "CPU", "AMD Ryzen 9", "cpu", 60 << 30, 64 << 30)]
    assert [choose_device(spec, devices).name for spec in ("cpu", "cuda:0", "CUDA1", "gpu:1", "2", "Cuda0")] == \
        ["CPU", "CUDA0", "CUDA1", "CUDA1", "CPU", "CUDA0"]
    with pytest.raises(ValueError, match=r"--device cuda:2: no such device here; this machine has: CUDA0 \(NVIDIA RTX 4090\), CUDA1"):
        choose_device("cuda:2", devices)
    with pytest.raises(ValueError, match="--device gpu:5: no such device"):
        choose_device("gpu:5", devices)
