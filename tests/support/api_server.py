"""A real ``quantdesk serve`` process on a free loopback port (``--port 0``), for the API tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"API server on (http://\S+/v1)")


class ServerProcess:
    def __init__(self, home: Path, *args: str, timeout: float = 180.0, command: list[str] | None = None) -> None:
        """``command``: what runs ``serve`` (default: this Python, ``-m app``; the bundle: its executable)."""
        env = {**os.environ, "QUANTDESK_HOME": str(home), "HF_HOME": str(home / "hf-home"), "HF_HUB_OFFLINE": "1"}
        env.pop("QUANTDESK_API_KEY", None)
        if command is None:
            command, env["PYTHONPATH"] = [sys.executable, "-m", "app"], str(ROOT)
        else:
            for name in ("PYTHONPATH", "PYTHONHOME", "QT_QPA_PLATFORM"):
                env.pop(name, None)
        self.proc = subprocess.Popen([*command, "serve", "--port", "0", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.key = args[args.index("--api-key") + 1] if "--api-key" in args else None
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.url:
            self.proc.kill()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines[-30:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = READY.search(line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def health(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        with urllib.request.urlopen(urllib.request.Request(self.root + "/health", headers=headers), timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def log_since(self, n: int) -> list[str]:
        return self.lines[n:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return False
