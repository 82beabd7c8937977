"""The engine's side of RPC workers: ``probe`` one (its status, over HTTP, before anything is
tried: llama.cpp aborts the whole process when a worker it connects to is gone or speaks another
protocol), and ``register`` workers in ggml's device registry of this process, after which
``llama_cpp.Llama(...)`` places layers on them (libllama lists RPC devices first).

    status = probe("192.168.1.7:50052")          # WorkerError: one line, why not
    devices = register(["192.168.1.7:50052"])    # then Llama(path, n_gpu_layers=-1, tensor_split=...)

A worker that goes away while a model computes on it makes llama.cpp abort the process (SIGABRT,
"Remote RPC server crashed"): it does not hang. Hence the engine's child process registers them.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from app.core.errors import WorkerError
from app.core.rpc import DEFAULT_PORT, PROTOCOL, STATUS_PATH, compatible, protocol_text, status_port
from app.core.rpc.status import MAX_STATUS_BYTES, WorkerStatus

PROBE_TIMEOUT_S = 3.0
MAX_WORKERS = 16  # GGML_RPC_MAX_SERVERS


@dataclass(frozen=True)
class RegisteredDevice:
    """A worker's device as this process's ggml registry holds it."""

    address: str  # HOST:PORT as given
    name: str  # ggml's name here: RPC0, RPC1 ...
    description: str  # the endpoint, as llama.cpp describes it
    registry_index: int  # position in ggml's device list (llama.cpp's order)
    free_bytes: int  # the device's real free memory, as the RPC protocol reports it
    total_bytes: int
    offered_bytes: int  # what the worker offers (its --mem cap): plan no more than this

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_registered: dict[str, list[RegisteredDevice]] = {}


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` (``HOST`` alone: port 50052)."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep:
        host, port_text = address.strip(), str(DEFAULT_PORT)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65535:
        raise WorkerError(f"{address!r}: give a worker as HOST:PORT, e.g. 192.168.1.7:{DEFAULT_PORT}")
    return host, int(port_text)


def probe(address: str, *, timeout: float = PROBE_TIMEOUT_S) -> WorkerStatus:
    """The worker's status; raises WorkerError (unreachable, not a QuantDesk worker, another
    protocol version) with a one-line reason."""
    host, port = split_address(address)
    sport = status_port(port)
    url = f"http://{host}:{sport}{STATUS_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(MAX_STATUS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise WorkerError(f"{address}: not a QuantDesk worker (its status port {sport} answered HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkerError(f"{address}: unreachable (no worker status on port {sport}: {reason}); is 'quantdesk worker' "
                          "running there, and are both ports forwarded?") from None
    try:
        if len(body) > MAX_STATUS_BYTES:
            raise ValueError("too long")
        status = WorkerStatus.from_dict(json.loads(body))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise WorkerError(f"{address}: not a QuantDesk worker (port {sport} answered something that is not a worker's status)") from None
    if not compatible(status.protocol):
        raise WorkerError(f"{address}: protocol version mismatch: the worker speaks RPC {status.protocol_text}, this engine "
                          f"{protocol_text(PROTOCOL)}; run the same QuantDesk version on both computers")
    return status


def register(addresses: list[str], *, timeout: float = PROBE_TIMEOUT_S) -> list[RegisteredDevice]:
    """Add the workers' devices to ggml's registry in this process (once per address) and
    describe them. Each is probed first, and its RPC port tried, so that a bad one is a
    WorkerError here rather than llama.cpp's abort (a worker that vanishes in between still
    aborts the process: keep this in the engine's child, never in the GUI).

    A model loaded afterwards uses, in order, the RPC devices as the registry lists them
    (``registry_index``), then the local GPUs: ``tensor_split`` follows that order, and
    ``n_gpu_layers`` counts the layers on all of them together."""
    from app.core.rpc import ggml

    if len(set(addresses) | set(_registered)) > MAX_WORKERS:
        raise WorkerError(f"{len(addresses)} workers: llama.cpp takes at most {MAX_WORKERS}")
    out: list[RegisteredDevice] = []
    for address in addresses:
        if address in _registered:
            out += _registered[address]
            continue
        status = probe(address, timeout=timeout)
        if status.busy:
            raise WorkerError(f"{address}: busy: the worker is serving another client (llama.cpp's RPC server serves one at a time)")
        host, port = split_address(address)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise WorkerError(f"{address}: unreachable (its status answers, its RPC port {port} does not: {exc})") from None
        reg = ggml.add_server(f"{host}:{port}")
        ggml.register(reg)
        mine = set(ggml.reg_devices(reg))
        devices: list[RegisteredDevice] = []
        for index, handle in enumerate(ggml.handles()):
            if handle not in mine:
                continue
            d = ggml.describe(index, handle)
            offer = status.devices[len(devices)].offered_bytes if len(devices) < len(status.devices) else 0
            devices.append(RegisteredDevice(address=address, name=d.name, description=d.description, registry_index=index,
                                            free_bytes=d.free_bytes, total_bytes=d.total_bytes, offered_bytes=min(offer, d.free_bytes)))
        _registered[address] = devices
        out += devices
    return out
