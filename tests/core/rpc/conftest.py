"""One real RPC worker on loopback (a CPU device, a --mem cap), shared by the module's tests."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from app.core.rpc.worker import Worker, WorkerConfig, parse_size
from tests.conftest import THREADS

WORKER_MEM = parse_size("256M")


def start_worker(home: Path, **options: Any) -> Worker:
    """A started worker on free loopback ports (its working folder in ``home``, never the user's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTDESK_HOME", str(home))
        w = Worker(WorkerConfig(port=0, threads=THREADS, **options))
        w.start()
    return w




@contextlib.contextmanager
def status_server(doc: dict[str, Any]) -> Iterator[str]:
    """A stand-in worker status on loopback answering ``doc`` as it is when asked (the test may
    change it): the address HOST:PORT whose status port it serves."""
    from app.core.rpc import status_port
    from app.core.rpc.worker import free_port

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", status_port(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
