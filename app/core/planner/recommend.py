"""Which GGUF file of a Hub repo to take: a verdict for every file from its remote header, and
the recommended one: the best quality that fits fully at the wanted context, else the best
partial fit."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.errors import QuantDeskError
from app.core.gguf.header import GGUFHeader
from app.core.gguf.projector import Projector, is_projector_name, mismatch, pair_by_name
from app.core.gguf.remote import read_remote_header, read_remote_projector
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
    projector: str = ""  # the vision projector beside it, counted in the verdict ("" for none)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def gguf_files(repo_id: str, *, revision: str | None = None, token: str | None = None, endpoint: str | None = None) -> list[str]:
    """The model GGUF files of a repo: split models by their first shard, vision projectors left out."""
    return _repo_files(repo_id, revision=revision, token=token, endpoint=endpoint)[0]


def _repo_files(repo_id: str, *, revision: str | None, token: str | None,
                endpoint: str | None) -> tuple[list[str], list[str]]:
    """(model GGUF files, vision projector files) of a repo."""
    from huggingface_hub import HfApi

    names = HfApi(endpoint=endpoint, token=token).list_repo_files(repo_id, revision=revision)
    out, projectors = [], []
    for name in names:
        if not name.endswith(".gguf"):
            continue
        if is_projector_name(name):  # the Hub listing's rule (hub.api)
            projectors.append(name)
            continue
        shard = OTHER_SHARD.search(name)
        if shard and shard.group(1) != "00001":
            continue
        out.append(name)
    return sorted(out), sorted(projectors)


def plan_repo(repo_id: str, hw: Hardware, *, ctx: int | None = None, gpu_mem: int | None = None, ram: int | None = None,
              revision: str | None = None, token: str | None = None, endpoint: str | None = None,
              workers: list[str] | None = None) -> list[FileVerdict]:
    """A verdict per GGUF file of the repo; ``workers``: RPC workers a file that does not fit here
    may be split over (asked once, only when one does not fit; one that does not answer is left out)."""
    try:
        files, projector_files = _repo_files(repo_id, revision=revision, token=token, endpoint=endpoint)
    except Exception as exc:  # the Hub's typed errors become one sentence
        raise QuantDeskError(f"{repo_id}: cannot list the repository's files ({type(exc).__name__}: {exc})") from None
    if not files:
        raise QuantDeskError(f"{repo_id}: the repository has no GGUF files")
    offload = True if gpu_mem else None
    verdicts = []
    read: dict[str, Projector | None] = {}  # each projector's header read once
    offers: list[Any] | None = None
    for name in files:
        try:
            h = read_remote_header(repo_id, name, revision=revision, token=token, endpoint=endpoint)
        except QuantDeskError as exc:
            verdicts.append(FileVerdict(name, 0, "?", 0.0, "unreadable", 0, 0, False, False, error=str(exc)))
            continue
        proj = _projector_for(name, h, projector_files, read, repo_id=repo_id, revision=revision, token=token,
                              endpoint=endpoint)
        p = plan(h, hw, ctx=ctx, gpu_mem=gpu_mem, ram=ram, gpu_offload=offload, projector=proj)
        if not p.fits and workers:
            if offers is None:
                from app.core.planner.auto import worker_offers

                offers = worker_offers(workers, skipped=[])
            if offers:
                from app.core.planner.split import plan_with_workers

                p = plan_with_workers(h, hw, offers, ctx=ctx, gpu_mem=gpu_mem, ram=ram, projector=proj, gpu_offload=offload,
                                      local=p)
        n_layer = h.block_count or 0
        gpu = p.params.n_gpu_layers > 0
        full = p.fits and (p.params.n_gpu_layers > n_layer or (p.verdict == "CPU only" and not (hw.gpus or gpu_mem)))
        room = budget(hw, gpu_mem, ram)
        verdicts.append(FileVerdict(name, h.size_bytes, h.file_type_name, round(h.bits_per_weight, 3), p.verdict,
                                    p.params.n_gpu_layers if gpu else 0, p.max_ctx, p.fits, full,
                                    memory=p.memory.to_dict(), budget_gpu=room.gpu, budget_cpu=room.cpu,
                                    projector=proj.path.name.split(":", 1)[-1] if proj else ""))
    best = max((v for v in verdicts if v.full), key=lambda v: v.bits_per_weight, default=None)
    if best is None:  # no full fit: the most layers on the GPU, then the best quality
        best = max((v for v in verdicts if v.fits), key=lambda v: (v.n_gpu_layers, v.bits_per_weight), default=None)
    if best is not None:
        best.recommended = True
    return verdicts


def _projector_for(name: str, h: GGUFHeader, projectors: list[str], read: dict[str, Projector | None], **hub: Any) -> Projector | None:
    """The projector the Hub listing pairs with ``name`` (gguf.projector.pair_by_name), when its
    header says it fits the model: its memory goes into the verdict."""
    chosen = pair_by_name(name, projectors)
    if chosen is None:
        return None
    if chosen not in read:
        read[chosen] = read_remote_projector(filename=chosen, **hub)
    proj = read[chosen]
    if proj is None or mismatch(proj, architecture=h.architecture, n_embd=h.embedding_length):
        return None
    return proj
