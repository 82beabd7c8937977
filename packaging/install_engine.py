"""Build and install llama-cpp-python for this machine (stdlib only; run by `make`).

Backend: QUANTDESK_ENGINE=cpu|cuda|metal|auto (default auto): Apple arm64 -> Metal; an NVIDIA
GPU (nvidia-smi lists one) and nvcc -> CUDA for the GPUs present; otherwise CPU. The choice is
recorded in the venv so a later `make` does not rebuild.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "0.3.36"  # keep in step with pyproject.toml


def detect() -> str:
    wanted = os.environ.get("QUANTDESK_ENGINE", "auto").lower()
    if wanted in ("cpu", "cuda", "metal"):
        return wanted
    if wanted != "auto":
        sys.exit(f"QUANTDESK_ENGINE={wanted!r}: use cpu, cuda, metal or auto")
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "metal"
    if shutil.which("nvcc") and shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if probe.returncode == 0 and "GPU" in probe.stdout:
            return "cuda"
    return "cpu"


def main() -> None:
    backend = detect()
    stamp = Path(sys.prefix) / "quantdesk-engine.json"
    want = {"version": VERSION, "backend": backend}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        print(f"llama-cpp-python {VERSION} ({backend}) already installed")
        return
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "pip", "install", f"llama-cpp-python=={VERSION}"]
    if backend == "cuda":
        env["CMAKE_ARGS"] = "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native " + env.get("CMAKE_ARGS", "")
        cmd += ["--no-cache-dir", "--force-reinstall", "--no-deps"]  # never reuse a cached CPU wheel
    elif backend == "metal":
        env["CMAKE_ARGS"] = "-DGGML_METAL=on " + env.get("CMAKE_ARGS", "")
    print(f"building llama-cpp-python {VERSION} for {backend} (a few minutes the first time)", flush=True)
    subprocess.run(cmd, check=True, env=env)
    if backend == "cuda":
        subprocess.run([sys.executable, "-m", "pip", "install", f"llama-cpp-python=={VERSION}"], check=True)
    stamp.write_text(json.dumps(want))


if __name__ == "__main__":
    main()
