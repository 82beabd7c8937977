"""Measure, don't only model: a llama.cpp dry-run load (``no_alloc``), as llama.cpp's own ``--fit``
does in common/fit.cpp, in a child process so that a bad file cannot take the caller down.

With ``no_alloc`` llama.cpp reads the header, builds the context and reserves its compute graph
without allocating the weights or the KV cache; the compute and output buffer sizes it logs are
the real ones for these parameters. Weights and KV cache are exact sums the planner computes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.core.loadparams import GGML_TYPES, LoadParams

SCRIPT = r"""
import ctypes, json, re, sys
import llama_cpp
path, p, types = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lines = []
@llama_cpp.llama_log_callback
def on_log(level, text, data):
    lines.append(text.decode("utf-8", "replace"))
llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()
mp = llama_cpp.llama_model_default_params()
mp.n_gpu_layers = p["n_gpu_layers"]
mp.no_alloc = True
mp.load_mode = 0
model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
if not model:
    sys.exit(3)
cp = llama_cpp.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch = p["n_ctx"], p["n_batch"], p["n_ubatch"]
cp.n_threads = cp.n_threads_batch = 1
cp.flash_attn_type = 1 if p["flash_attn"] else 0
cp.type_k, cp.type_v = types[p["type_k"]], types[p["type_v"]]
cp.swa_full = p["swa_full"]
ctx = llama_cpp.llama_init_from_model(model, cp)
if not ctx:
    sys.exit(4)
out = {}
for dev, kind, mib in re.findall(r"(\S+)\s+(compute|output) buffer size =\s+([\d.]+) MiB", "".join(lines)):
    key = f"{kind}:{dev}"
    out[key] = out.get(key, 0) + int(float(mib) * 2**20)
print(json.dumps(out))
"""


def measure_compute(path: str | Path, params: LoadParams, *, timeout: float = 120) -> dict[str, int] | None:
    """Compute and output buffer bytes per device (``"compute:CPU"``, ``"compute:CUDA0"``, ...)
    for loading ``path`` with ``params``; None when the dry run fails (the estimate stands)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(path), json.dumps(params.to_dict()), json.dumps(GGML_TYPES)],
            capture_output=True, text=True, timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return {k: int(v) for k, v in result.items()} or None
