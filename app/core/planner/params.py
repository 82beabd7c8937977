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


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
