"""The worker child: ggml's RPC server on one device, and its status on the next port.

Started by ``app.core.rpc.worker.Worker`` as ``python -m app.core.rpc.serve CONFIG_JSON``. It
sends events to the parent on stdout (``@qd {"ev": "ready", "status": {...}}`` or ``"error"``);
llama.cpp's own output goes to stderr. The native server call never returns while it serves, so
it runs on a thread; SIGTERM or SIGINT ends the process at once (the kernel closes the sockets).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, TextIO

from app.core.rpc import PROTOCOL, protocol_text, status_port
from app.core.rpc.status import StatusServer, WorkerDevice, WorkerStatus

EVENT_PREFIX = "@qd "  # app.core.proc.runner's, whose module this child does not load
RPC_CMD_HELLO = 14  # ggml-rpc.cpp: "RPC_CMD_HELLO must be always 14"
RPC_CONN_CAPS_SIZE = 24  # ggml-rpc/transport.h: the HELLO request is these bytes (all zero: plain TCP)
START_TIMEOUT_S = 30.0


def choose_device(spec: str, devices: list[Any]) -> Any:
    """``cpu``, ``cuda:0`` (ggml's CUDA0), ``gpu:N`` (the N-th GPU), a registry index, or a ggml
    device name (case does not matter). Raises ValueError naming the choices."""
    want = spec.strip().lower()
    found = None
    if want == "cpu":
        found = next((d for d in devices if d.type == "cpu"), None)
    elif want.isdigit():
        found = next((d for d in devices if d.index == int(want)), None)
    elif want.startswith("gpu:") and want[4:].isdigit():
        gpus = [d for d in devices if d.type in ("gpu", "igpu")]
        found = gpus[int(want[4:])] if int(want[4:]) < len(gpus) else None
    else:
        found = next((d for d in devices if d.name.lower() in (want, want.replace(":", ""))), None)
    if found is None or found.type == "meta" or found.name.upper().startswith("RPC"):
        names = ", ".join(f"{d.name} ({d.description})" for d in devices if d.type != "meta") or "none"
        raise ValueError(f"--device {spec}: no such device here; this machine has: {names}")
    return found


def hello(host: str, port: int, timeout: float) -> tuple[int, int, int]:
    """The protocol version a ggml RPC server answers to HELLO (``| cmd u8 | size u64 | caps |``
    in, ``| size u64 | major minor patch pad | caps |`` out); raises OSError."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("<BQ", RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE) + bytes(RPC_CONN_CAPS_SIZE))
        data = b""
        while len(data) < 8 + 4:
            chunk = sock.recv(64)
            if not chunk:
                raise OSError("the RPC server closed the connection during HELLO")
            data += chunk
    return data[8], data[9], data[10]


class Native:
    """llama.cpp's stdout (fd 1) read through a pipe: copied to stderr, and watched for the
    connection lines, so the status can say whether a client is being served."""

    def __init__(self) -> None:
        self.accepted = self.closed = 0
        self.lines: list[str] = []
        read, write = os.pipe()
        os.dup2(write, 1)
        os.close(write)
        threading.Thread(target=self._read, args=(read,), name="native-stdout", daemon=True).start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                if line.startswith("Accepted client connection"):
                    self.accepted += 1
                elif line.startswith("Client connection closed"):
                    self.closed += 1
                self.lines.append(line.rstrip("\n"))
                del self.lines[:-50]
                sys.stderr.write(line)
                sys.stderr.flush()

    @property
    def busy(self) -> bool:
        return self.accepted > self.closed


def _cpu_free() -> int:
    """Free RAM: ggml's CPU device reports all of it as free on Linux (ggml-cpu.cpp)."""
    import psutil

    return int(psutil.virtual_memory().available)


def _route_llama_log() -> None:
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, _data: Any) -> None:
        sys.stderr.write(text.decode("utf-8", "replace"))

    _route_llama_log.keep = on_log  # type: ignore[attr-defined]
    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))


def serve(config: dict[str, Any], events: TextIO) -> int:
    def emit(event: str, **fields: Any) -> None:
        events.write(EVENT_PREFIX + json.dumps({"ev": event, **fields}) + "\n")
        events.flush()

    stop = threading.Event()  # set by SIGTERM and SIGINT, from the very start: a stop is never a crash
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from app.core.engine import cpu_variants

    cpu_variants.activate()  # the CPU build the parent chose, before llama_cpp loads
    native = Native()
    _route_llama_log()
    from app import __version__
    from app.core.errors import WorkerError
    from app.core.rpc import ggml

    host, port, limit = str(config["host"]), int(config["port"]), config.get("mem")
    try:
        handles = ggml.handles()
        device = choose_device(str(config["device"]), [ggml.describe(i, h) for i, h in enumerate(handles)])
        handle = handles[device.index]
        ggml.rpc_reg()
    except (ValueError, WorkerError) as exc:
        emit("error", message=str(exc))
        return 2
    build = ggml.build()
    protocol = PROTOCOL
    endpoint = f"{host}:{port}"

    def snapshot() -> WorkerStatus:
        free, total = ggml.memory(handle)
        if device.type == "cpu":
            free = min(free, _cpu_free())
        offered = free if limit is None else min(int(limit), free)
        dev = WorkerDevice(name=device.name, description=device.description, type=device.type, free_bytes=free,
                           total_bytes=total, offered_bytes=offered)
        return WorkerStatus(address=endpoint, protocol=protocol, devices=(dev,), mem_limit=limit, busy=native.busy,
                            quantdesk=__version__, build=build, threads=int(config["threads"]), cache=bool(config.get("cache_dir")))

    for p in (port, status_port(port)):  # llama.cpp only says "Failed to create server socket"
        try:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, p))
        except OSError as exc:
            emit("error", message=f"{host}:{p}: cannot listen there ({exc.strerror or exc})")
            return 2
    status = StatusServer(host, status_port(port), snapshot)
    server = threading.Thread(target=ggml.start_server, args=(endpoint, [handle]),
                              kwargs={"cache_dir": config.get("cache_dir"), "threads": int(config["threads"])},
                              name="rpc-server", daemon=True)
    server.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:  # the server listens once it answers HELLO, with the library's own version
        try:
            protocol = hello(host, port, timeout=5)
            break
        except OSError as exc:
            if stop.is_set():
                return 0
            if not server.is_alive() or time.monotonic() > deadline:
                detail = next((line for line in reversed(native.lines) if "ailed" in line), str(exc))
                emit("error", message=f"{endpoint}: llama.cpp's RPC server did not start ({detail})")
                return 1
            time.sleep(0.05)
    for _ in range(100):  # until the HELLO's own connection is seen closed: it is not a client being served
        if native.closed >= 1:
            break
        time.sleep(0.02)
    status.start()
    emit("ready", status=snapshot().to_dict(), pid=os.getpid())
    if protocol != PROTOCOL:
        print(f"note: this llama.cpp speaks RPC protocol {protocol_text(protocol)}, QuantDesk expects "
              f"{protocol_text(PROTOCOL)}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        if not server.is_alive():
            emit("error", message=f"{endpoint}: llama.cpp's RPC server stopped")
            return 1
    emit("stopped")
    return 0


def main() -> None:
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)  # fd 1 is llama.cpp's from here on
    code = serve(json.loads(sys.argv[1]), events)
    events.flush()
    sys.stderr.flush()
    os._exit(code)  # the server thread is inside native code that never returns


if __name__ == "__main__":
    main()
