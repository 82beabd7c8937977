"""Measure, don't only model: a llama.cpp dry-run load (``no_alloc``), as llama.cpp's own ``--fit``
does in common/fit.cpp, in a child process so that a bad file cannot take the caller down.

With ``no_alloc`` llama.cpp reads the header, builds the context and reserves its compute graph
without allocating the weights or the KV cache; the compute and output buffer sizes it logs are
the real ones for these parameters. Weights and KV cache are exact sums the planner computes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.core.jobs import CancelToken
from app.core.planner.params import GGML_TYPES, LoadParams
from app.core.proc.launch import python_command
from app.core.proc.runner import emit, run_child


def measure_compute(path: str | Path, params: LoadParams, *, timeout: float = 120) -> dict[str, int] | None:
    """Compute and output buffer bytes per device (``"compute:CPU"``, ``"compute:CUDA0"``, ...)
    for loading ``path`` with ``params``; None when the dry run fails (the estimate stands)."""
    cmd = python_command("app.core.planner.dry_run", str(path), json.dumps(params.to_dict()), json.dumps(GGML_TYPES))
    try:
        result = run_child(cmd, cancel=CancelToken(), what=f"dry run of {Path(path).name}", timeout=timeout)
    except (OSError, TimeoutError):
        return None
    sizes = next((e["sizes"] for e in result.events if e.get("ev") == "buffers"), None)
    if result.returncode != 0 or not isinstance(sizes, dict):
        return None
    return {k: int(v) for k, v in sizes.items()} or None


def _child(argv: list[str]) -> int:
    """In the child process: the dry-run load of ``argv`` = [path, params JSON, ggml types JSON];
    sends one ``buffers`` event with the buffer sizes."""
    import ctypes
    import re

    from app.core.engine import cpu_variants

    cpu_variants.activate()  # the CPU build the parent chose, before llama_cpp loads
    import llama_cpp

    path, p, types = argv[0], json.loads(argv[1]), json.loads(argv[2])
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(level, text, data):  # type: ignore[no-untyped-def]
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.n_gpu_layers = p["n_gpu_layers"]
    mp.no_alloc = True
    mp.load_mode = 0
    model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
    if not model:
        return 3
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = p["n_ctx"], p["n_batch"], p["n_ubatch"]
    cp.n_threads = cp.n_threads_batch = 1
    cp.flash_attn_type = 1 if p["flash_attn"] else 0
    cp.type_k, cp.type_v = types[p["type_k"]], types[p["type_v"]]
    cp.swa_full = p["swa_full"]
    ctx = llama_cpp.llama_init_from_model(model, cp)
    if not ctx:
        return 4
    out: dict[str, int] = {}
    for dev, kind, mib in re.findall(r"(\S+)\s+(compute|output) buffer size =\s+([\d.]+) MiB", "".join(lines)):
        key = f"{kind}:{dev}"
        out[key] = out.get(key, 0) + int(float(mib) * 2**20)
    emit("buffers", sizes=out)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
