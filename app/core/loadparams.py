"""Load parameters for the engine: the one place that decides how a model is loaded.

The memory planner fills this in (``plan_load``); until a plan exists the defaults are: context
4096 or the model's trained context if smaller, every layer on the GPU when the engine can offload.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from app.core.errors import BadValueError
from app.core.gguf_info import GGUFHeader

DEFAULT_CTX = 4096
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
    reasons: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoadParams":
        data = dict(data)
        data["reasons"] = tuple(data.get("reasons", ()))
        return cls(**data)


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def _kv_bytes(header: GGUFHeader, n_ctx: int) -> int:
    """f16 K and V for every layer: a lower bound used to reject contexts that cannot fit."""
    layers = header.block_count or 0
    heads_kv = header.head_count_kv or header.head_count or 0
    head_k = header.key_length or ((header.embedding_length or 0) // max(header.head_count or 1, 1))
    head_v = header.value_length or head_k
    return 2 * layers * n_ctx * heads_kv * (head_k + head_v)


def default_load_params(
    header: GGUFHeader,
    *,
    ctx: int | None = None,
    gpu_layers: int | None = None,
    gpu_offload_supported: bool = False,
    n_threads: int | None = None,
) -> LoadParams:
    """Sensible defaults for ``header``; ``ctx`` and ``gpu_layers`` are the user's overrides."""
    reasons: list[str] = []
    trained = header.context_length or DEFAULT_CTX
    if ctx is None:
        n_ctx = min(DEFAULT_CTX, trained)
        reasons.append(f"context {n_ctx}: the default {DEFAULT_CTX} or the model's trained {trained}, whichever is smaller")
    else:
        if ctx <= 0 or ctx > MAX_CTX:
            raise BadValueError(f"context size {ctx}: must be between 1 and {MAX_CTX:,} tokens")
        need = _kv_bytes(header, ctx)
        avail = psutil.virtual_memory().available
        if need > avail:
            raise BadValueError(
                f"context size {ctx:,}: the KV cache alone needs {need / 2**30:.1f} GiB for "
                f"{header.path.name}, more than the {avail / 2**30:.1f} GiB of memory available"
            )
        n_ctx = ctx
        reasons.append(f"context {n_ctx}: chosen by the user (model trained for {trained})")
    if gpu_layers is None:
        n_gpu_layers = -1 if gpu_offload_supported else 0
        reasons.append("all layers on the GPU" if gpu_offload_supported else "CPU only: this engine build has no GPU offload")
    else:
        if gpu_layers < -1:
            raise BadValueError(f"GPU layers {gpu_layers}: use -1 (all), 0 (CPU only) or a positive count")
        n_gpu_layers = gpu_layers if gpu_offload_supported else 0
        reasons.append(f"{gpu_layers} GPU layers: chosen by the user")
    threads = n_threads or physical_cores()
    return LoadParams(n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=threads, reasons=tuple(reasons))


def plan_load(
    header: GGUFHeader,
    *,
    ctx: int | None = None,
    gpu_layers: int | None = None,
    gpu_offload_supported: bool = False,
) -> LoadParams:
    """The load parameters the engine uses by default ("Auto"). The memory planner replaces the
    defaults here; every caller (CLI, GUI, tests) comes through this function."""
    return default_load_params(header, ctx=ctx, gpu_layers=gpu_layers, gpu_offload_supported=gpu_offload_supported)
