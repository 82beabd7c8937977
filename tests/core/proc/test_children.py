"""Children can't outlive or be hijacked through the app: they die when the app dies (even by
SIGKILL), run with a safe module path from a fixed folder, never get the Hugging Face token, and
the engine log masks tokens like the app log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from app.core.proc.launch import ROOT, child_env

APP_DIES = r"""
import os, signal, sys, threading, time
from pathlib import Path
from app.core.engine.client import EngineClient
from app.core.planner.params import LoadParams
from app.core.quant.quantize import quantize
engine = EngineClient(log_path=Path(sys.argv[3]) / "engine.log")
engine.load(sys.argv[1], LoadParams(n_ctx=512, n_gpu_layers=0, n_threads=1))
threading.Thread(target=quantize, args=(sys.argv[1], sys.argv[2], "Q4_0"), kwargs={"allow_requantize": True,
                 "nthread": 1}, daemon=True).start()
import psutil
deadline = time.monotonic() + 60
while len(psutil.Process().children()) < 2 and time.monotonic() < deadline:  # the quantize child has started
    time.sleep(0.05)
print(engine.pid, flush=True)
time.sleep(60)
"""


def _gone(pids: list[int], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(os.name != "posix", reason="the parent-death pipe is POSIX")
def test_children_die_when_the_app_is_killed(starter_model: Path, tmp_path: Path) -> None:
    app = subprocess.Popen([sys.executable, "-c", APP_DIES, str(starter_model), str(tmp_path / "out.gguf"), str(tmp_path)],
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert app.stdout is not None
        engine_pid = int(app.stdout.readline())
        children = [c.pid for c in psutil.Process(app.pid).children()]
        assert engine_pid in children and len(children) >= 2, children  # the engine and the quantize child
        os.kill(app.pid, signal.SIGKILL)
        app.wait(timeout=10)
        assert _gone(children), "a child outlived the app"
    finally:
        if app.poll() is None:
            app.kill()
    assert not (tmp_path / "out.gguf").exists()  # nothing half-written presented as a model


def test_a_module_in_the_start_folder_never_runs_in_a_child(starter_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hijacked"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(9)\n")
    code = ("import sys; from app.core.quant.quantize import quantize; "
            "print(quantize(sys.argv[1], sys.argv[2], 'Q4_0', allow_requantize=True, nthread=1).path)")
    proc = subprocess.run([sys.executable, "-P", "-c", code, str(starter_model), str(tmp_path / "q.gguf")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists() and (tmp_path / "q.gguf").is_file()


def test_children_get_no_hub_token_and_the_engine_log_masks_tokens(starter_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.engine.client import EngineClient
    from tests.conftest import load_params

    token = "hf_" + "Ab3" * 10
    monkeypatch.setenv("HF_TOKEN", token)
    assert "HF_TOKEN" not in child_env() and child_env()["PYTHONSAFEPATH"] == "1"
    named = tmp_path / f"model-{token}.gguf"  # llama.cpp prints the path it loads
    named.symlink_to(starter_model)
    client = EngineClient(log_path=tmp_path / "engine.log")
    try:
        client.load(named, load_params())
        assert client.pid is not None
        environ = Path(f"/proc/{client.pid}/environ").read_bytes() if sys.platform.startswith("linux") else b""
        assert token.encode() not in environ
        assert Path(f"/proc/{client.pid}/cwd").resolve() != Path.cwd().resolve() or not sys.platform.startswith("linux")
    finally:
        client.close()
    log = (tmp_path / "engine.log").read_text()
    assert "model-hf_***" in log and token not in log


def test_stale_partial_outputs_are_swept_but_a_live_writers_stay(tmp_path: Path) -> None:
    from app.core.proc.runner import partial_path, sweep_stale_partials

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "m").mkdir()
    dead = tmp_path / "m" / f".crashed.gguf.{gone.pid}.partial"
    dead.write_bytes(b"half")
    live = partial_path(tmp_path / "m" / "writing.gguf")  # this process is writing it
    live.write_bytes(b"half")
    kept = tmp_path / "m" / "model.gguf"
    kept.write_bytes(b"GGUF")
    assert sweep_stale_partials(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and kept.exists()


def test_the_engine_ends_when_its_stdin_closes_mid_reply(starter_model: Path, tmp_path: Path) -> None:
    """The app's end of the pipe closes (a crash the parent-death pipe does not see, a hung parent
    thread): the engine stops the reply it is writing and exits, instead of decoding on."""
    from app.core.engine import SamplingParams
    from app.core.engine.client import EngineClient
    from app.core.planner.params import LoadParams

    engine = EngineClient(log_path=tmp_path / "engine.log")
    try:
        engine.load(str(starter_model), LoadParams(n_ctx=2048, n_gpu_layers=0, n_threads=1))
        stream = engine.stream([{"role": "user", "content": "Write a very long story about the sea."}],
                               SamplingParams(max_tokens=1500, temperature=0.0))
        next(e for e in stream if e["ev"] == "token")  # it is busy decoding now
        proc = engine._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=15) == 0  # a clean end (reply stopped, KV saved), long before 1,500 tokens
    finally:
        engine.close()
