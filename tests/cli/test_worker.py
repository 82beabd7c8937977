"""``quantdesk worker`` as a user runs it: a real process on loopback, what it prints, its status,
bad values refused with exit status 2, and a stop that leaves no process behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from app.core.rpc.client import probe
from app.core.rpc.worker import free_port
from tests.cli.test_main import quantdesk

READY = "QuantDesk RPC worker on"


class CliWorker:
    """``python -m app worker ARGS``, its output collected as it comes."""

    def __init__(self, *args: str, timeout: float = 120, session: bool = False) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "worker", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=session)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError("the worker did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if " offers " in line:  # the device lines come last at the start
                self.ready.set()
        self.ready.set()

    def child(self) -> psutil.Process:
        [child] = [p for p in psutil.Process(self.proc.pid).children() if "app.core.rpc.serve" in p.cmdline()]
        return child


def _gone(pid: int, timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_the_worker_command_serves_its_device_and_stops_on_sigterm() -> None:
    port = free_port()
    w = CliWorker("--port", str(port), "--mem", "512M", "--threads", "2", "--cache")
    child = w.child()
    try:
        assert any(f"{READY} 127.0.0.1:{port} (protocol 7.0.0; status: http://127.0.0.1:{port + 1}/status)" in line for line in w.lines)
        assert any("offers 512.0 MiB of" in line and "capped by --mem 512.0 MiB" in line for line in w.lines), w.lines
        status = probe(f"127.0.0.1:{port}")
        assert status.offered_bytes == 512 << 20 and status.mem_limit == 512 << 20 and status.cache
        assert any(line.strip().startswith("local cache") and "rpc-cache" in line for line in w.lines), w.lines
    finally:
        w.proc.send_signal(signal.SIGTERM)
        code = w.proc.wait(timeout=30)
    assert code == 0, w.lines
    assert _gone(child.pid), "the worker child outlived the command"
    assert "Traceback" not in "\n".join(w.lines)


def test_ctrl_c_stops_the_command_and_its_child() -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole process group: the command and its child."""
    import os

    w = CliWorker("--port", str(free_port()), session=True)
    child = w.child()
    os.killpg(w.proc.pid, signal.SIGINT)
    assert w.proc.wait(timeout=30) == 0, w.lines
    assert _gone(child.pid)
    time.sleep(0.2)  # the last lines
    assert w.lines[-1] == "stopped" and "Traceback" not in "\n".join(w.lines)


def test_a_killed_worker_command_leaves_no_orphan() -> None:
    w = CliWorker("--port", str(free_port()))
    child = w.child()
    w.proc.kill()  # SIGKILL: no handler runs; the parent-death pipe ends the child
    w.proc.wait(timeout=30)
    assert _gone(child.pid), "the worker child outlived a killed command"


@pytest.mark.parametrize(("args", "message"), [
    (["--mem", "lots"], "argument --mem: 'lots' is not a size"),
    (["--mem", "0"], "argument --mem: '0': the memory offered must be more than 0 bytes"),
    (["--port", "70000"], "argument --port: '70000': give a port from 1 to 65534"),
    (["--threads", "0"], "argument --threads: '0': give a number of threads, at least 1"),
    (["--host", "0.0.0.0"], "quantdesk: error: --host 0.0.0.0: not a loopback address"),
])
def test_bad_values_are_named_and_exit_2(args: list[str], message: str) -> None:
    result = quantdesk("worker", *args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_allow_network_warns_and_an_unknown_device_is_named(tmp_path: Path) -> None:
    result = quantdesk("worker", "--host", "0.0.0.0", "--allow-network", "--port", str(free_port()), "--device", "tpu:9", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "WARNING: host 0.0.0.0 is not loopback. Never expose the RPC server to an open network!" in result.stderr
    assert "--device tpu:9: no such device here; this machine has: CPU" in result.stderr
    assert "Traceback" not in result.stderr
