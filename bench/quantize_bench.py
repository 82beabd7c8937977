"""Quantize rows: app quantize time over a direct llama_model_quantize call, conversion peak RSS
against 1.5 x the largest tensor + 500 MB, perplexity run time per model size.

The models come from the starter: its Hugging Face folder (built once with transformers, cached
under the temp folder, see tests/support/hf_models.py) is converted to F16, which is then quantized."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

THREADS = 2
QTYPE = "Q4_K_M"
DIRECT = """
import ctypes, sys, time
import llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = int(sys.argv[3]); p.nthread = int(sys.argv[4])
t = time.perf_counter()
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
print(time.perf_counter() - t)
sys.exit(rc)
"""


class Models:
    """The F16 baseline, made on first use and shared by the rows."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._f16: Path | None = None
        self.convert_result: object | None = None

    def hf_folder(self) -> Path:
        from app.core.starter import starter_model_path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.support.hf_models import starter_hf_folder

        starter = starter_model_path()
        assert starter is not None
        return starter_hf_folder(starter)

    def f16(self) -> Path:
        if self._f16 is None:
            from app.core.quant.convert import convert

            r = convert(self.hf_folder(), self.work / "SmolLM2-135M-F16.gguf", outtype="f16")
            self.convert_result, self._f16 = r, r.path
        return self._f16


def quantize_ratio(models: Models, runs: int = 5) -> tuple[float, str]:
    """Wall time of app.core.quant.quantize.quantize (child process, log parsing, rename) over the same
    llama_model_quantize call made directly in a fresh process and timed around the call itself."""
    from app.core.gguf.quant_types import quant_type
    from app.core.quant.quantize import quantize

    src = models.f16()
    ftype = quant_type(QTYPE).ftype
    app_s: list[float] = []
    ref_s: list[float] = []
    for i in range(runs):  # alternate so drift hits both sides alike
        out = models.work / f"app-{i}.gguf"
        t = time.perf_counter()
        quantize(src, out, QTYPE, nthread=THREADS)
        app_s.append(time.perf_counter() - t)
        out.unlink()
        ref = models.work / f"direct-{i}.gguf"
        done = subprocess.run([sys.executable, "-c", DIRECT, str(src), str(ref), str(ftype), str(THREADS)],
                              capture_output=True, text=True, check=True)
        ref_s.append(float(done.stdout.strip().splitlines()[-1]))
        ref.unlink()
    a, r = statistics.median(app_s), statistics.median(ref_s)
    return a / r, (f"{QTYPE} of {src.name}: app {a:.2f} s (runs {'/'.join(f'{x:.2f}' for x in app_s)}), "
                   f"direct call {r:.2f} s ({'/'.join(f'{x:.2f}' for x in ref_s)}); median of {runs}")


def convert_rss(models: Models) -> tuple[float, str]:
    """Peak RSS of the converter process over 1.5 x the largest source tensor + 500 MB (the target)."""
    models.f16()
    r = models.convert_result
    largest = r.source.largest_tensor_bytes  # type: ignore[attr-defined]
    budget = 1.5 * largest + 500e6
    rss = r.peak_rss_bytes  # type: ignore[attr-defined]
    return rss / budget, (f"peak RSS {rss / 1e6:.0f} MB, largest tensor {largest / 1e6:.0f} MB "
                          f"-> budget {budget / 1e6:.0f} MB; source {r.source.weight_bytes / 1e6:.0f} MB; "  # type: ignore[attr-defined]
                          f"conversion {r.seconds:.1f} s")  # type: ignore[attr-defined]


def perplexity_time(models: Models) -> tuple[float, str]:
    """Perplexity run time per model (the bundled held-out text, 256-token chunks), with sizes."""
    from app.core.quant.evaluate import evaluate
    from app.core.quant.quantize import quantize

    f16 = models.f16()
    q = quantize(f16, models.work / f"SmolLM2-135M-{QTYPE}.gguf", QTYPE, nthread=THREADS).path
    rows = evaluate([q], baseline=f16, n_threads=THREADS)
    per = "; ".join(f"{r.quant} {r.size_bytes / 1e6:.0f} MB ({r.n_params / 1e6:.0f} M weights): {r.seconds:.1f} s for "
                    f"{r.tokens} scored tokens, PPL {r.perplexity:.2f}" + (f", KL {r.kl_divergence:.4f}" if not r.baseline else "")
                    for r in rows)
    return max(r.seconds for r in rows), per
