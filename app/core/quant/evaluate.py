"""Quality of GGUF models: perplexity on a held-out text, and against a baseline (the F16/BF16
model) the KL divergence and how often the top token agrees, on the same tokens.

The work runs in ``app.core.quant.children.evaluate`` (llama.cpp's perplexity method: chunks of ``n_ctx``
tokens, the second half of each scored). Each model's run time is reported with its result.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from app.core.errors import EvalError, ModelFileError, QuantDeskError
from app.core.gguf.header import read_header
from app.core.jobs import CancelToken, Progress, ProgressFn, no_progress
from app.core.proc.launch import python_command
from app.core.proc.runner import run_child

DEFAULT_CTX = 256  # the bundled held-out text gives a few chunks at this size


def held_out_text() -> Path:
    from app.core.paths import resources_dir

    return resources_dir() / "held_out.txt"


@dataclass
class ModelQuality:
    path: str
    perplexity: float
    perplexity_error: float
    tokens: int
    chunks: int
    n_ctx: int
    seconds: float
    baseline: bool = False
    kl_divergence: float | None = None
    top1_agreement: float | None = None
    size_bytes: int = 0
    bits_per_weight: float = 0.0
    n_params: int = 0
    quant: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def evaluate(models: list[str | Path], *, baseline: str | Path | None = None, text: str | Path | None = None,
             n_ctx: int = DEFAULT_CTX, n_threads: int | None = None, n_gpu_layers: int = 0, max_chunks: int = 0,
             progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> list[ModelQuality]:
    """Perplexity of every model (and the baseline first, when given) with KL / top-1 agreement
    against the baseline. Raises ModelFileError for a bad file, EvalError, or Cancelled."""
    from app.core.planner.params import physical_cores

    cancel = cancel or CancelToken()
    paths = [Path(m).expanduser().absolute() for m in models]  # children run in the data folder
    base = Path(baseline).expanduser().absolute() if baseline else None
    headers = {p: read_header(p) for p in ([base] if base else []) + paths}  # named errors for bad files
    text_path = Path(text).expanduser().absolute() if text else held_out_text()
    if not text_path.is_file():
        raise ModelFileError(f"{text_path}: no such text file")
    if n_ctx < 16:
        raise QuantDeskError(f"--ctx {n_ctx}: use at least 16 tokens")
    results: list[ModelQuality] = []
    n_models = len(paths) + (1 if base else 0)

    def on_event(ev: dict[str, object]) -> None:
        if ev["ev"] == "chunk":
            mi, done, total = int(ev["model"]), int(ev["done"]), int(ev["total"])  # type: ignore[call-overload]
            progress(Progress("eval", mi * total + done, n_models * total, "chunk",
                              f"perplexity of {Path(str(ev['path'])).name}: chunk {done} of {total}"))
        elif ev["ev"] == "result":
            fields = {k: v for k, v in ev.items() if k != "ev"}
            h = headers[Path(str(ev["path"]))]
            results.append(ModelQuality(**fields, size_bytes=h.size_bytes, bits_per_weight=round(h.bits_per_weight, 3),  # type: ignore[arg-type]
                                        n_params=h.n_params, quant=h.file_type_name))

    progress(Progress("eval", 0, 0, "chunk", "loading"))
    with tempfile.TemporaryDirectory(prefix="quantdesk-eval-") as scratch:
        args = {"models": [str(p) for p in paths], "baseline": str(base) if base else None, "text": str(text_path),
                "n_ctx": n_ctx, "threads": n_threads or physical_cores(), "n_gpu_layers": n_gpu_layers,
                "max_chunks": max_chunks, "scratch": str(Path(scratch) / "baseline-logprobs.npy")}
        result = run_child(python_command("app.core.quant.children.evaluate", json.dumps(args)), cancel=cancel,
                           what="quality measurement", on_event=on_event)
    if result.returncode != 0:
        raise EvalError(f"measuring quality failed: {result.reason().removeprefix('error: ')}", failure=result.failure)
    return results
