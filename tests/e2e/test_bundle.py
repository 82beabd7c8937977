"""The desktop bundle (dist/QuantDesk, `make package`) as a user gets it: it opens its window on a
real X server (Xvfb), the window shows something (a screenshot that is not blank), and its own
engine answers a message with the starter model. `make test` builds the bundle first; run alone,
this test rebuilds it when a source file is newer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "dist" / "QuantDesk" / "QuantDesk"
SOURCES = ("app", "packaging", "resources")
WINDOW_TIMEOUT = 120

pytestmark = pytest.mark.slow


def _newest_source() -> float:
    return max(p.stat().st_mtime for d in SOURCES for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def bundle() -> Path:
    if not BUNDLE.exists() or BUNDLE.stat().st_mtime < _newest_source():
        if not (ROOT / ".venv" / "bin" / "pyinstaller").exists():
            pytest.fail("the bundle is missing or out of date and PyInstaller is not installed: run 'make package'")
        subprocess.run(["make", "-C", str(ROOT), str(BUNDLE.relative_to(ROOT))], check=True, timeout=1800)
    return BUNDLE


def _bundle_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "PYTHONPATH", "PYTHONHOME", "QUANTDESK_SCREENSHOT")}
    return {**env, "QUANTDESK_HOME": str(home), **extra}


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll the bundle's observable state (its log, the X server)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def xvfb() -> Iterator[str | None]:
    """A fresh X server on a free display (``-displayfd``), or None when Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        yield None
        return
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    try:
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _distinct_colours(png: Path) -> tuple[int, float]:
    """How many distinct colours a grid of samples has, and the share of the most common one."""
    from PySide6.QtGui import QImage

    image = QImage(str(png))
    assert not image.isNull(), f"{png}: not an image"
    counts: dict[int, int] = {}
    step = 4
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            rgb = image.pixel(x, y) & 0xFFFFFF
            counts[rgb] = counts.get(rgb, 0) + 1
    return len(counts), max(counts.values()) / sum(counts.values())


def _screenshot_x(display: str, out: Path) -> None:
    env = {**os.environ, "DISPLAY": display}
    if shutil.which("import"):
        subprocess.run(["import", "-window", "root", str(out)], env=env, check=True, timeout=60)
    elif shutil.which("xwd") and shutil.which("convert"):
        xwd = subprocess.run(["xwd", "-root", "-silent"], env=env, check=True, capture_output=True, timeout=60).stdout
        subprocess.run(["convert", "xwd:-", str(out)], input=xwd, check=True, timeout=60)
    else:
        pytest.skip("no screenshot tool (ImageMagick's import, or xwd + convert)")


def test_the_bundle_opens_its_window_with_the_starter_model(bundle: Path, xvfb: str | None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = home / "logs" / "quantdesk.log"
    shot = tmp_path / "bundle-window.png"
    if xvfb is not None:
        env = _bundle_env(home, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb")
    else:  # no X server to be had: the window grabs itself (app.ui.app SCREENSHOT_ENV)
        env = _bundle_env(home, QT_QPA_PLATFORM="offscreen", QUANTDESK_SCREENSHOT=str(shot))
    proc = subprocess.Popen([str(bundle)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: proc.poll() is not None or (log.exists() and "model loaded:" in log.read_text()),
                  WINDOW_TIMEOUT, "the window with the starter model loaded")
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        text = log.read_text()
        assert "main window shown" in text and "SmolLM2-135M-Instruct" in text
        if xvfb is not None:
            xenv = {**os.environ, "DISPLAY": xvfb}
            if shutil.which("xdotool"):
                found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--class", "QuantDesk"],
                                       env=xenv, capture_output=True, text=True, timeout=WINDOW_TIMEOUT)
                window_id = found.stdout.split()[0]
                if shutil.which("xprop"):  # the .desktop file's StartupWMClass matches this
                    wm_class = subprocess.run(["xprop", "-id", window_id, "WM_CLASS"], env=xenv, capture_output=True,
                                              text=True, timeout=30).stdout
                    assert '"QuantDesk", "QuantDesk"' in wm_class
            _screenshot_x(xvfb, shot)
        else:
            _wait_for(lambda: shot.exists(), 30, "the window's own screenshot")
        colours, dominant = _distinct_colours(shot)
        print(f"screenshot {shot}: {colours} distinct colours, the most common covers {dominant:.0%}")
        assert colours >= 8 and dominant < 0.95, f"{shot} looks blank"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the app closes its window the normal way
        code = proc.wait(timeout=60)
    assert code == 0
    keep = os.environ.get("QUANTDESK_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_the_bundled_engine_answers_with_the_starter_model(bundle: Path, tmp_path: Path) -> None:
    out = subprocess.run([str(bundle), "chat", "starter", "--prompt", "Say hi", "--temperature", "0", "--max-tokens", "8", "--json"],
                         env=_bundle_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["text"].strip() and reply["completion_tokens"] > 0


def test_the_bundle_answers_an_image_with_a_vision_model(bundle: Path, tmp_path: Path) -> None:
    """The multimodal library (libmtmd) and its bindings travel in the bundle: the tiny vision pair
    answers an image message, its image tokens counted."""
    from tests.support.tiny_vision import IMAGE_TOKENS, png_bytes, tiny_vision_pair

    pair = tiny_vision_pair()
    model = Path(shutil.copy(pair.model, tmp_path / pair.model.name))
    shutil.copy(pair.projector, tmp_path / pair.projector.name)
    picture = tmp_path / "picture.png"
    picture.write_bytes(png_bytes())
    out = subprocess.run([str(bundle), "chat", str(model), "--ctx", "256", "--prompt", "what is this?", "--image", str(picture),
                          "--temperature", "0", "--max-tokens", "4", "--json"],
                         env=_bundle_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["image_tokens"] == IMAGE_TOKENS


def test_the_bundle_serves_the_api(bundle: Path, tmp_path: Path) -> None:
    """``QuantDesk serve`` from the bundle (uvicorn and its protocol modules are frozen in): the
    model list, a chat completion, and a clean stop on SIGTERM."""
    import urllib.request

    from tests.support.api_server import ServerProcess

    server = ServerProcess(tmp_path / "home", "--model", "starter", "--ctx", "512", command=[str(bundle)])
    try:
        with urllib.request.urlopen(server.url + "/models", timeout=30) as r:
            assert json.loads(r.read())["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1"
        body = json.dumps({"model": "starter", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4,
                           "temperature": 0}).encode()
        request = urllib.request.Request(server.url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            assert json.loads(r.read())["usage"]["completion_tokens"] > 0
    finally:
        assert server.stop() == 0


def test_the_bundle_runs_its_own_child_processes(bundle: Path, tmp_path: Path) -> None:
    """`plan` measures compute buffers with a llama.cpp dry run in a child process: in the bundle
    that child is the bundle itself (--run-module), not a Python that may not exist."""
    out = subprocess.run([str(bundle), "plan", "starter", "--json"], env=_bundle_env(tmp_path / "home"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["memory"]["measured"] is True


def _bundle_json(bundle: Path, home: Path, *args: str) -> Any:
    """Run a subcommand of the bundle (no Python of ours on the path) and parse its --json output."""
    out = subprocess.run([str(bundle), *args, "--json"], env=_bundle_env(home), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)


def test_the_bundle_quantizes_with_and_without_an_imatrix_and_measures_quality(bundle: Path, tiny_f16: Path,
                                                                                tmp_path: Path) -> None:
    """Quantize, imatrix and eval each run in a child process: in the bundle, the bundle itself."""
    home = tmp_path / "home"
    k = _bundle_json(bundle, home, "quantize", str(tiny_f16), str(tmp_path / "tiny-Q4_K_M.gguf"), "--type", "Q4_K_M")
    assert k["type"] == "Q4_K_M" and Path(k["path"]).is_file()
    im = _bundle_json(bundle, home, "imatrix", str(tiny_f16), "--text", str(ROOT / "resources" / "calibration.txt"),
                      "-o", str(tmp_path / "tiny.imatrix.gguf"), "--chunk", "128", "--chunks", "2")
    assert im["chunks"] == 2
    iq = _bundle_json(bundle, home, "quantize", str(tiny_f16), str(tmp_path / "tiny-IQ2_XS.gguf"), "--type", "IQ2_XS",
                      "--imatrix", str(tmp_path / "tiny.imatrix.gguf"))
    assert iq["type"] == "IQ2_XS" and iq["imatrix"] and Path(iq["path"]).stat().st_size < Path(k["path"]).stat().st_size
    rows = _bundle_json(bundle, home, "eval", k["path"], iq["path"], "--baseline", str(tiny_f16), "--ctx", "64", "--chunks", "2")
    assert [r["baseline"] for r in rows] == [True, False, False]  # the bundled held-out text
    assert all(r["kl_divergence"] >= 0 for r in rows[1:])


def test_the_bundle_converts_a_hugging_face_folder(bundle: Path, tmp_path: Path) -> None:
    """The conversion stack (torch, transformers) travels unfrozen beside the app (packaging/convert_stack.py)."""
    from tests.support.hf_models import tiny_hf_folder

    folder = tiny_hf_folder("llama", tmp_path / "hf")
    out = _bundle_json(bundle, tmp_path / "home", "convert", str(folder), "--outtype", "q8_0", "-o", str(tmp_path / "tiny-Q8_0.gguf"))
    assert out["outtype"] == "q8_0" and (tmp_path / "tiny-Q8_0.gguf").is_file()
    chat = subprocess.run([str(bundle), "chat", str(tmp_path / "tiny-Q8_0.gguf"), "--prompt", "hi", "--max-tokens", "4",
                           "--temperature", "0", "--json"], env=_bundle_env(tmp_path / "home"), capture_output=True,
                          text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr


def test_the_bundle_runs_an_rpc_worker(bundle: Path, tmp_path: Path) -> None:
    """``QuantDesk worker`` from the bundle: its child is the bundle itself (--run-module
    app.core.rpc.serve), which finds llama.cpp's RPC backend among the bundled libraries and serves;
    its status is read over HTTP, and SIGTERM stops it without leaving the child behind."""
    import psutil

    from app.core.errors import WorkerError
    from app.core.rpc.client import probe
    from app.core.rpc.worker import free_port

    port = free_port()
    proc = subprocess.Popen([str(bundle), "worker", "--port", str(port), "--mem", "256M", "--threads", "2"],
                            env=_bundle_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[Any] = []

    def serving() -> bool:
        if proc.poll() is not None:
            return True
        try:
            found.append(probe(f"127.0.0.1:{port}", timeout=2))
        except WorkerError:
            return False
        return True

    try:
        _wait_for(serving, 120, "the bundled worker's status")
        assert proc.poll() is None and found, proc.stdout.read() if proc.stdout else ""
        status = found[-1]
        assert status.protocol_text == "7.0.0" and status.offered_bytes == 256 << 20 and status.devices[0].type == "cpu"
        children = psutil.Process(proc.pid).children()
        assert children, "the worker runs in a child process"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        output = proc.stdout.read() if proc.stdout else ""
    assert code == 0, output
    assert f"QuantDesk RPC worker on 127.0.0.1:{port}" in output and "Traceback" not in output
    assert all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)
