"""Which GGUF file of a Hub repo to take: a verdict for every file from its remote header, and
the recommended one: the best quality that fits fully at the wanted context, else the best
partial fit."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from app.core.errors import QuantDeskError
from app.core.gguf.projector import is_projector_name
from app.core.gguf.remote import read_remote_header
from app.core.hardware import Hardware
from app.core.planner.memory import budget, plan

FIRST_SHARD = re.compile(r"-00001-of-\d{5}\.gguf$")
OTHER_SHARD = re.compile(r"-(\d{5})-of-\d{5}\.gguf$")


@dataclass
class FileVerdict:
    path: str
    size_bytes: int
    quant: str
    bits_per_weight: float
    verdict: str  # "full GPU", "N of M layers", "CPU only", "does not fit", or "unreadable"
    n_gpu_layers: int
    max_ctx: int
    fits: bool
    full: bool  # every layer where it runs best: all on the GPU, or in RAM when there is no GPU
    recommended: bool = False
    error: str = ""
    memory: dict[str, int] = field(default_factory=dict)  # the plan's MemoryEstimate, per device
    budget_gpu: int = 0  # what the planner may use on this machine
    budget_cpu: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def gguf_files(repo_id: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None) -> list[str]:
    """The model GGUF files of a repo: split models by their first shard, vision projectors left out."""
    from huggingface_hub import HfApi

    names = HfApi(endpoint=endpoint, token=token).list_repo_files(repo_id, revision=revision)
    out = []
    for name in names:
        if not name.endswith(".gguf") or is_projector_name(name):  # the Hub listing's rule (hub.api)
            continue
        shard = OTHER_SHARD.search(name)
        if shard and shard.group(1) != "00001":
            continue
        out.append(name)
    return sorted(out)


def plan_repo(repo_id: str, hw: Hardware, *, ctx: int | None = None, gpu_mem: int | None = None, ram: int | None = None,
              revision: str | None = None, token: str | None = None, endpoint: str | None = None) -> list[FileVerdict]:
    try:
        files = gguf_files(repo_id, revision=revision, token=token, endpoint=endpoint)
    except Exception as exc:  # the Hub's typed errors become one sentence
        raise QuantDeskError(f"{repo_id}: cannot list the repository's files ({type(exc).__name__}: {exc})") from None
    if not files:
        raise QuantDeskError(f"{repo_id}: the repository has no GGUF files")
    offload = True if gpu_mem else None
    verdicts = []
    for name in files:
        try:
            h = read_remote_header(repo_id, name, revision=revision, token=token, endpoint=endpoint)
        except QuantDeskError as exc:
            verdicts.append(FileVerdict(name, 0, "?", 0.0, "unreadable", 0, 0, False, False, error=str(exc)))
            continue
        p = plan(h, hw, ctx=ctx, gpu_mem=gpu_mem, ram=ram, gpu_offload=offload)
        n_layer = h.block_count or 0
        gpu = p.params.n_gpu_layers > 0
        full = p.fits and (p.params.n_gpu_layers > n_layer or (p.verdict == "CPU only" and not (hw.gpus or gpu_mem)))
        room = budget(hw, gpu_mem, ram)
        verdicts.append(FileVerdict(name, h.size_bytes, h.file_type_name, round(h.bits_per_weight, 3), p.verdict,
                                    p.params.n_gpu_layers if gpu else 0, p.max_ctx, p.fits, full,
                                    memory=p.memory.to_dict(), budget_gpu=room.gpu, budget_cpu=room.cpu))
    best = max((v for v in verdicts if v.full), key=lambda v: v.bits_per_weight, default=None)
    if best is None:  # no full fit: the most layers on the GPU, then the best quality
        best = max((v for v in verdicts if v.fits), key=lambda v: (v.n_gpu_layers, v.bits_per_weight), default=None)
    if best is not None:
        best.recommended = True
    return verdicts
