"""Load parameters for the engine: the one place that decides how a model is loaded.

``plan_load`` asks the memory planner (app.core.planner.memory) for them: context 4096 or the model's
trained context if smaller, as many layers on the GPU as fit, a q8_0 KV cache when that is what
makes it fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import psutil

from app.core.errors import BadValueError
from app.core.gguf.header import GGUFHeader

DEFAULT_CTX = 4096
# KV cache types as names (what users and JSON see) -> ggml_type values (what llama.cpp takes)
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
MAX_CTX = 1 << 24  # no llama.cpp model trains beyond this; larger values are typos


@dataclass(frozen=True)
class LoadParams:
    n_ctx: int = DEFAULT_CTX
    n_gpu_layers: int = 0
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int | None = None
    flash_attn: bool = False
    type_k: str = "f16"
    type_v: str = "f16"
    swa_full: bool = False
    reasons: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def preferences(header: GGUFHeader) -> tuple[int | None, int | None]:
    """The Settings page's default context (capped at the model's trained context) and engine
    threads; None where the planner decides."""
    from app.core import settings

    prefs = settings.load()
    ctx = min(prefs.default_ctx, header.context_length or prefs.default_ctx) if prefs.default_ctx else None
    return ctx, prefs.engine_threads or None


def plan_load(
    header: GGUFHeader,
    *,
    ctx: int | None = None,
    gpu_layers: int | None = None,
    gpu_offload_supported: bool = False,
) -> LoadParams:
    """The load parameters the engine uses by default ("Auto"), from the memory planner; every
    caller (CLI, GUI) comes through this function. ``ctx`` and ``gpu_layers`` are the user's;
    without ``ctx``, the Settings page's default context applies (capped at the trained one)."""
    from app.core import hardware
    from app.core.planner import memory as planner

    if ctx is not None and not 0 < ctx <= MAX_CTX:
        raise BadValueError(f"context size {ctx}: must be between 1 and {MAX_CTX:,} tokens")
    if gpu_layers is not None and gpu_layers < -1:
        raise BadValueError(f"GPU layers {gpu_layers}: use -1 (all), 0 (CPU only) or a positive count")
    pref_ctx, threads = preferences(header)
    plan = planner.plan(header, hardware.detect(), ctx=ctx if ctx is not None else pref_ctx,
                        gpu_offload=gpu_offload_supported, n_threads=threads)
    if not plan.fits:
        raise BadValueError(f"{header.path.name}: {plan.reasons[-1]}")
    params = plan.params
    if gpu_layers is not None:
        chosen = gpu_layers if gpu_offload_supported else 0
        params = replace(params, n_gpu_layers=chosen, reasons=params.reasons + (f"{gpu_layers} GPU layers: chosen by the user",))
    return params
