"""Download rows: throughput of the download manager ÷ plain ``hf_hub_download`` from the same local
Hub server (run in its own process, so it does not share the client's GIL), and the bytes fetched
twice when the connection drops mid-file."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO, FILE = "bench/starter-GGUF", "starter-Q4_1.gguf"
ROUNDS = 3

SERVER = """
import sys, time
from pathlib import Path
from tests.support.hub_server import HubRepo, HubServer
srv = HubServer([HubRepo(sys.argv[1], {sys.argv[2]: Path(sys.argv[3])})])
print(srv.url, flush=True)
sys.stdin.read()
"""


def _server(model: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, REPO, FILE, str(model)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def throughput_ratio(model: Path) -> tuple[float, str]:
    from huggingface_hub import hf_hub_download

    from app.core.hub.downloads import DownloadManager
    from app.core.library.catalog import Library

    size = model.stat().st_size
    proc, url = _server(model)
    ours, theirs = [], []
    try:
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                hf_hub_download(REPO, FILE, endpoint=url, local_dir=tmp)
                theirs.append(size / (time.perf_counter() - t))
            with tempfile.TemporaryDirectory() as tmp:
                manager = DownloadManager(Library(Path(tmp) / "lib.sqlite3"), models_dir=Path(tmp), endpoint=url)
                t = time.perf_counter()
                d = manager.wait(manager.start(REPO, FILE).id)
                ours.append(size / (time.perf_counter() - t))
                manager.library.close()
                if d.state != "done":
                    raise RuntimeError(d.error)
    finally:
        proc.communicate("", timeout=10)
    a, b = statistics.median(ours), statistics.median(theirs)
    return a / b, (f"median of {ROUNDS}: {a / 2**20:.0f} MiB/s (incl. sha256 check) vs hf_hub_download "
                   f"{b / 2**20:.0f} MiB/s (size check only), {size / 2**20:.0f} MiB file")


def refetched_after_drop(model: Path) -> tuple[float, str]:
    """MiB fetched twice after a drop at 40% of the file (target: at most one 1 MiB chunk)."""
    sys.path.insert(0, str(ROOT))
    from app.core.hub.downloads import CHUNK, DownloadManager
    from app.core.library.catalog import Library
    from tests.support.hub_server import HubRepo, HubServer

    size = model.stat().st_size
    with HubServer([HubRepo(REPO, {FILE: model})]) as srv, tempfile.TemporaryDirectory() as tmp:
        srv.drop_after_bytes = int(size * 0.4)
        manager = DownloadManager(Library(Path(tmp) / "lib.sqlite3"), models_dir=Path(tmp), endpoint=srv.url)
        d = manager.wait(manager.start(REPO, FILE).id)
        manager.library.close()
        if d.state != "done":
            raise RuntimeError(d.error)
        srv.settle()
        sent = sum(n for m, p, status, n in srv.transfers if m == "GET" and FILE in p)
        requests = sum(1 for m, p, _ in srv.requests if m == "GET" and FILE in p)
    extra = sent - size
    return extra / 2**20, f"{requests} GET requests, {extra:,} bytes fetched twice (chunk {CHUNK // 2**20} MiB)"
