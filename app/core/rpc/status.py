"""A worker's status: what ``GET http://HOST:PORT+1/status`` answers (JSON), and the small
read-only HTTP server that answers it inside the worker child (stdlib http.server, GET only,
short timeouts, nothing but this one document).

The memory a worker offers is ``min(--mem, the device's free memory)``: llama.cpp's RPC protocol
reports the device's real free memory and knows no limit of its own, so the planner reads the
offer from here and never places more on the worker.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from app.core.rpc import KIND, STATUS_PATH, protocol_text

MAX_STATUS_BYTES = 64 * 1024  # what a client reads of a status document at most


@dataclass(frozen=True)
class WorkerDevice:
    name: str  # ggml's name on the worker (CPU, CUDA0 ...)
    description: str
    type: str  # cpu, gpu, igpu, accel
    free_bytes: int
    total_bytes: int
    offered_bytes: int  # min(--mem, free)


@dataclass(frozen=True)
class WorkerStatus:
    address: str  # HOST:PORT of the RPC server (the status is on PORT+1)
    protocol: tuple[int, int, int]
    devices: tuple[WorkerDevice, ...]
    mem_limit: int | None  # --mem, None: the device's free memory
    busy: bool  # serving a client now (llama.cpp's RPC server serves one at a time)
    quantdesk: str
    build: dict[str, str] = field(default_factory=dict)
    threads: int = 0
    cache: bool = False

    @property
    def offered_bytes(self) -> int:
        return sum(d.offered_bytes for d in self.devices)

    @property
    def protocol_text(self) -> str:
        return protocol_text(self.protocol)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["protocol"] = self.protocol_text
        data["offered_bytes"] = self.offered_bytes
        return {"kind": KIND, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkerStatus":
        """Raises KeyError, TypeError or ValueError on a document that is not a worker's status."""
        if data.get("kind") != KIND:
            raise ValueError(f"kind is {data.get('kind')!r}, not {KIND!r}")
        major, minor, patch = (int(n) for n in str(data["protocol"]).split("."))
        devices = tuple(WorkerDevice(name=str(d["name"]), description=str(d["description"]), type=str(d["type"]),
                                     free_bytes=int(d["free_bytes"]), total_bytes=int(d["total_bytes"]),
                                     offered_bytes=int(d["offered_bytes"])) for d in data["devices"])
        limit = data.get("mem_limit")
        return cls(address=str(data["address"]), protocol=(major, minor, patch), devices=devices,
                   mem_limit=None if limit is None else int(limit), busy=bool(data.get("busy", False)),
                   quantdesk=str(data.get("quantdesk", "")), build={str(k): str(v) for k, v in dict(data.get("build", {})).items()},
                   threads=int(data.get("threads", 0)), cache=bool(data.get("cache", False)))


class _Handler(BaseHTTPRequestHandler):
    server: "StatusServer"
    timeout = 5  # a client that sends nothing is dropped
    server_version = "QuantDesk-worker"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] not in ("/", STATUS_PATH):
            self._send(404, {"error": f"{self.path}: not found; the worker's status is at {STATUS_PATH}"})
            return
        try:
            self._send(200, self.server.snapshot().to_dict())
        except Exception as exc:  # a device that cannot be asked right now: say so, keep serving
            self._send(500, {"error": f"the worker's status could not be read: {exc}"})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass  # the worker's log is llama.cpp's; status reads are not news


class StatusServer(ThreadingHTTPServer):
    """Serves ``snapshot()`` on (host, port) from a daemon thread."""

    daemon_threads = True
    request_queue_size = 16

    def __init__(self, host: str, port: int, snapshot: Callable[[], WorkerStatus]) -> None:
        super().__init__((host, port), _Handler)
        self.snapshot = snapshot

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="worker-status", daemon=True).start()
