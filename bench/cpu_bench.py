"""CPU-build rows: decode speed of the engine's chosen CPU build and of the baseline, each against a
native build of the same llama.cpp minus AMX (-march=native -mno-amx-*), compiled once from the
installed version's sdist into .bench/ (outside .venv; never shipped). Each round runs every build in
its own process (a process holds one libggml-cpu), alternating, and the ratio is the median of the
paired rounds' ratios, which cancels this machine's drift between runs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.core.engine import cpu_variants as cv

ROOT = Path(__file__).resolve().parents[1]
ROUNDS, TOKENS, THREADS = 7, 128, 2
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

DECODE = r"""
import json, sys, time
from pathlib import Path
from app.core.engine import cpu_variants as cv
lib = Path(sys.argv[1])
cv.preload(lib, cv.llama_lib_dir())
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[2], n_ctx=512, n_threads=int(sys.argv[3]), verbose=False)
tokens = llm.tokenize(b"Once upon a time, in a small village by the sea, there lived")
stamps = []
for i, tok in enumerate(llm.generate(tokens, temp=0.0, top_k=1)):
    stamps.append(time.perf_counter())
    if len(stamps) >= int(sys.argv[4]):
        break
print(json.dumps({"tps": (len(stamps) - 1) / (stamps[-1] - stamps[0])}))
"""


def _install_engine():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "packaging"))
    import install_engine

    return install_engine


def engine_build() -> tuple[dict[str, Any], Path]:
    """The installed engine's build record (install_engine's identity) and its build cache folder."""
    ie = _install_engine()
    build: dict[str, Any] = json.loads((cv.llama_lib_dir() / cv.VARIANTS_DIR / "build.json").read_text())
    return build, ie.cache_root() / f"{ie.VERSION}-{build['backend']}-{build['key']}"


def native_library() -> Path:
    """The native-minus-AMX libggml-cpu, built once per engine identity into .bench/."""
    ie = _install_engine()
    build, cache = engine_build()
    out = ROOT / ".bench" / f"native-cpu-{build['key']}" / cv.LIB_NAME
    if out.is_file():
        return out
    src = ie.sdist(cache)
    env = {**os.environ, "CFLAGS": NO_AMX, "CXXFLAGS": NO_AMX}
    print("  building a native (minus AMX) libggml-cpu for the comparison (once)", file=sys.stderr, flush=True)
    ie.build_cpu_library(ie.source_tree(cache, src), out.parent / "build", ["-DGGML_NATIVE=ON", *ie.THREADING], out,
                         out.parent / "build.log", env=env)
    import shutil

    shutil.rmtree(cache / "src", ignore_errors=True)
    return out


def decode_tps(library: Path, model: Path) -> float:
    proc = subprocess.run([sys.executable, "-c", DECODE, str(library), str(model), str(THREADS), str(TOKENS)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["tps"])


def paired_ratio(a: Path, b: Path, model: Path, rounds: int = ROUNDS) -> tuple[float, list[float], list[float]]:
    ratios, tps_a, tps_b = [], [], []
    for i in range(rounds):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        x, y = decode_tps(first, model), decode_tps(second, model)
        ta, tb = (x, y) if first == a else (y, x)
        tps_a.append(ta)
        tps_b.append(tb)
        ratios.append(ta / tb)
    return statistics.median(ratios), tps_a, tps_b


def chosen_vs_native(model: Path) -> tuple[float, str]:
    chosen = cv.choose().variant
    lib = cv.library_path(chosen)
    assert lib is not None
    ratio, a, b = paired_ratio(lib, native_library(), model)
    return ratio, (f"{chosen.name} {statistics.median(a):.1f} tok/s vs native-minus-AMX {statistics.median(b):.1f}; "
                   f"median of {ROUNDS} paired rounds")


def baseline_vs_native(model: Path) -> tuple[float, str]:
    lib = cv.library_path(cv.baseline())
    assert lib is not None
    ratio, a, b = paired_ratio(lib, native_library(), model, rounds=3)
    return ratio, f"{cv.baseline().name} {statistics.median(a):.1f} tok/s vs native {statistics.median(b):.1f}; 3 rounds"


def cold_build_seconds() -> tuple[float, str]:
    build, _ = engine_build()
    t = build.get("build_seconds", {})
    if "wheel" not in t:
        raise RuntimeError("this install reused a cached build whose timings were not recorded")
    return float(sum(t.values())), ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) + f" ({os.cpu_count()} CPUs)"
