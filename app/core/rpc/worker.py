"""Run an RPC worker: ``Worker(WorkerConfig(...)).start()`` starts the worker child
(app.core.rpc.serve) and returns its status once it serves; ``stop()`` ends it. The child also
ends when this process dies (the parent-death pipe of app.core.proc.launch).

    with Worker(WorkerConfig(port=50052, mem=parse_size("2G"))) as worker:
        print(worker.status.address, worker.status.offered_bytes)
        worker.wait()
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable

from app.core.errors import WorkerError
from app.core.proc.launch import child_env, popen_options, python_command
from app.core.rpc import DEFAULT_HOST, DEFAULT_PORT, status_port
from app.core.rpc.status import WorkerStatus

EVENT_PREFIX = "@qd "
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
SECURITY_WARNING = (  # after llama.cpp's rpc-server (tools/rpc/rpc-server.cpp)
    "WARNING: host {host} is not loopback. Never expose the RPC server to an open network! It is an "
    "experimental feature of llama.cpp and is not secure: no authentication, no encryption; anyone who can "
    "reach {endpoint} can use this device and its memory. Prefer 127.0.0.1 and an SSH tunnel from the "
    "computer that runs the model: ssh -N -L {port}:localhost:{port} -L {status}:localhost:{status} THIS-HOST"
)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``2G``, ``512M``, ``1.5GiB`` or a plain number (binary units: 1K = 1024)."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a size: give bytes, or a number with K, M, G or T (e.g. 2G, 512M)")
    unit = m.group(2)
    size = int(float(m.group(1)) * (1024 ** ("kmgt".index(unit.lower()) + 1) if unit else 1))
    if size <= 0:
        raise ValueError(f"{text!r}: the memory offered must be more than 0 bytes")
    return size


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port whose successor is free too (the worker's RPC and status ports)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind((host, 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind((host, status_port(port)))
                except OSError:
                    continue
            return port
    raise WorkerError(f"{host}: found no two free ports side by side")


@dataclass(frozen=True)
class WorkerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: a free one
    device: str = "cpu"  # cpu, cuda:0, gpu:1, a ggml device name or registry index
    mem: int | None = None  # bytes offered at most; None: the device's free memory
    cache_dir: str | None = None  # llama.cpp's RPC tensor cache (--cache)
    threads: int | None = None  # CPU threads of the device (default: half the cores, as llama.cpp's rpc-server)
    allow_network: bool = False

    def check(self) -> None:
        """Raises WorkerError on a value that cannot work, naming it."""
        if not 0 <= self.port < 65535:
            raise WorkerError(f"--port {self.port}: must be 1 to 65534 (the status is on the next port), or 0 for a free one")
        if ":" in self.host:
            raise WorkerError(f"--host {self.host}: llama.cpp's RPC server takes an IPv4 address or a host name")
        if self.threads is not None and self.threads < 1:
            raise WorkerError(f"--threads {self.threads}: must be at least 1")
        if self.mem is not None and self.mem <= 0:
            raise WorkerError(f"--mem {self.mem}: must be more than 0 bytes")
        if not self.allow_network and not is_loopback(self.host):
            raise WorkerError(f"--host {self.host}: not a loopback address; llama.cpp's RPC is unauthenticated, so "
                              "listening beyond this machine needs --allow-network (better: keep 127.0.0.1 and use an SSH tunnel)")

    def warning(self) -> str | None:
        """The security warning to print, for a worker reachable beyond this machine."""
        if is_loopback(self.host):
            return None
        return SECURITY_WARNING.format(host=self.host, endpoint=f"{self.host}:{self.port}", port=self.port,
                                       status=status_port(self.port))

    def child_config(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "device": self.device, "mem": self.mem, "cache_dir": self.cache_dir,
                "threads": self.threads or max(1, (os.cpu_count() or 2) // 2)}


class Worker:
    """One worker child. ``on_log`` gets llama.cpp's lines (connections, errors) as they come."""

    def __init__(self, config: WorkerConfig, *, on_log: Callable[[str], None] | None = None) -> None:
        config.check()
        if config.port == 0:
            config = replace(config, port=free_port(config.host))
        self.config = config
        self.on_log = on_log
        self.proc: subprocess.Popen[str] | None = None
        self.status: WorkerStatus | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._events: list[dict[str, Any]] = []
        self._event = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> WorkerStatus:
        env = child_env()
        options = popen_options(env)
        self.proc = subprocess.Popen(python_command("app.core.rpc.serve", json.dumps(self.config.child_config())), env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", errors="replace", **options)  # type: ignore[call-overload]
        self._reader = threading.Thread(target=self._read_events, name="worker-events", daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_log, name="worker-log", daemon=True).start()
        with self._event:
            self._event.wait_for(lambda: any(e["ev"] in ("ready", "error", "exit") for e in self._events), timeout)
        first = next((e for e in self._events if e["ev"] in ("ready", "error", "exit")), None)
        if first is not None and first["ev"] == "ready":
            self.status = WorkerStatus.from_dict(first["status"])
            return self.status
        self.stop()
        if first is None:
            raise WorkerError(f"worker {self.address}: did not start within {timeout:.0f} s")
        if first["ev"] == "error":
            raise WorkerError(f"worker {self.address}: {first['message']}")
        lines = [line for line in self.tail if line.strip()]
        raise WorkerError(f"worker {self.address}: the worker process ended (exit status {self.proc.returncode})"
                          + (f": {lines[-1]}" if lines else ""))

    def _read_events(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(EVENT_PREFIX):
                with self._event:
                    self._events.append(json.loads(line[len(EVENT_PREFIX):]))
                    self._event.notify_all()
        self.proc.wait()
        with self._event:
            self._events.append({"ev": "exit", "code": self.proc.returncode})
            self._event.notify_all()

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.tail.append(line)
            if self.on_log is not None:
                self.on_log(line)

    @property
    def stopped(self) -> bool:
        """The child stopped as asked (a signal), rather than by itself."""
        if self._reader is not None and not self.running():
            self._reader.join(5)  # its last lines may still be on their way
        return any(e["ev"] == "stopped" for e in self._events)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """The child's exit status once it ended (None: still running after ``timeout``)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the child's exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the child ends at once (app.core.rpc.serve)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "Worker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
