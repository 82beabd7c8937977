"""Load parameters for the engine, as data: what ``app.core.planner.auto.plan_load`` decides and
the engine host applies. Nothing here imports the planner, the settings or the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

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
    projector: str | None = None  # the vision projector (mmproj) loaded beside the model
    projector_gpu: bool = False  # ... on the GPU (else in RAM), where the planner counted it
    rpc: tuple[str, ...] = ()  # RPC workers (HOST:PORT) the offloaded layers are split over (planner.split)
    tensor_split: tuple[float, ...] = ()  # layers per device, in llama.cpp's device order (the workers first)
    reasons: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


def offloaded_units(n_gpu_layers: int, n_layer: int) -> int:
    """llama.cpp's ``n_gpu_layers`` as the units it offloads (-1: all), at most the ``n_layer``
    layers and the output layer."""
    return n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)


def first_offloaded(n_gpu_layers: int, n_layer: int) -> int:
    """The first layer llama.cpp offloads (load_tensors): the output layer counts as layer
    ``n_layer`` and goes first, so ``n_gpu_layers = k`` offloads layers ``n_layer + 1 - k`` ..
    ``n_layer - 1`` and the output layer; the layers before it stay on the CPU (``n_layer``: all)."""
    ngl = offloaded_units(n_gpu_layers, n_layer)
    return max(n_layer + 1 - ngl, 0) if ngl > 0 else n_layer


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
