"""Auto: how a model is loaded when the user does not say, the one place that decides it.

``plan_load`` asks the memory planner (app.core.planner.memory) for the parameters: context 4096 or
the model's trained context if smaller, as many layers on the GPU as fit, a q8_0 KV cache when that
is what makes it fit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from app.core import hardware, settings
from app.core.errors import BadValueError, WorkerError
from app.core.gguf.header import GGUFHeader
from app.core.gguf.projector import Projector, for_model
from app.core.planner import memory as planner
from app.core.planner.params import MAX_CTX, LoadParams

if TYPE_CHECKING:
    from app.core.planner.split import Offer


def preferences(header: GGUFHeader) -> tuple[int | None, int | None]:
    """The Settings page's default context (capped at the model's trained context) and engine
    threads; None where the planner decides."""
    prefs = settings.load()
    ctx = min(prefs.default_ctx, header.context_length or prefs.default_ctx) if prefs.default_ctx else None
    return ctx, prefs.engine_threads or None


def vision_projector(header: GGUFHeader) -> tuple[Projector | None, str | None]:
    """The projector beside the model that fits it (gguf.projector.for_model), or None and why
    not (None when its folder has no projector at all)."""
    pairing = for_model(header.path, architecture=header.architecture, n_embd=header.embedding_length)
    return pairing.projector, pairing.note


def worker_offers(addresses: list[str], *, skipped: list[str] | None = None) -> list["Offer"]:
    """What each worker offers the planner, from its status: a WorkerError with the one-line reason
    for one that cannot be used (before any load is tried), or, given ``skipped``, that reason
    appended there and the worker left out (the app's saved workers: one switched off must not stop
    a load)."""
    from app.core.planner.split import Offer
    from app.core.rpc.client import probe

    offers = []
    for address in dict.fromkeys(addresses):
        try:
            status = probe(address)
            if not status.devices:
                raise WorkerError(f"{address}: the worker offers no device")
        except WorkerError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            continue
        device = status.devices[0]
        offers.append(Offer(address, device.description or device.name, device.offered_bytes))
    return offers


def auto_plan(header: GGUFHeader, hw: hardware.Hardware, *, ctx: int | None = None,
              gpu_offload: bool = False, gpu_mem: int | None = None, ram: int | None = None,
              projector: Projector | None | str = "auto", workers: list[str] | None = None,
              strict: bool = True) -> planner.Plan:
    """The planner's choice ("Auto") with the Settings page's default context and threads: what
    ``plan_load`` loads and what the load dialog shows as Auto. ``gpu_mem``/``ram``: plan within
    these instead of the detected free memory (the API server's share beside its loaded models).
    ``projector``: the vision projector to load beside it; "auto": the one beside it that fits.
    ``workers``: RPC workers (HOST:PORT) to split the model over when it does not fit here
    (planner.split), probed only then; one that cannot be used raises WorkerError, or with
    ``strict=False`` is left out and the plan's reasons say why."""
    pref_ctx, threads = preferences(header)
    note = None
    if projector == "auto":
        projector, note = vision_projector(header)
    elif isinstance(projector, str):
        raise TypeError("projector: a Projector, None or 'auto'")
    skipped: list[str] = []
    offers = worker_offers(workers) if workers and strict else None  # asked for by name: each must answer, now
    plan = planner.plan(header, hw, ctx=ctx if ctx is not None else pref_ctx, gpu_offload=gpu_offload, n_threads=threads,
                        gpu_mem=gpu_mem, ram=ram, projector=projector)
    if workers and not plan.fits:
        from app.core.planner.split import plan_with_workers

        if offers is None:
            offers = worker_offers(workers, skipped=skipped)
        plan = plan_with_workers(header, hw, offers, ctx=ctx if ctx is not None else pref_ctx,
                                 gpu_mem=gpu_mem, ram=ram, n_threads=threads, projector=projector,
                                 gpu_offload=gpu_offload, local=plan)
        plan = replace(plan, reasons=(*plan.reasons, *(f"worker left out: {why}" for why in skipped)))
    if note and plan.fits:
        plan = replace(plan, reasons=(*plan.reasons, f"no vision: {note}"))
    return plan


def plan_load(
    header: GGUFHeader,
    *,
    ctx: int | None = None,
    gpu_layers: int | None = None,
    gpu_offload_supported: bool = False,
    gpu_mem: int | None = None,
    ram: int | None = None,
    projector: Projector | None | str = "auto",
    workers: list[str] | None = None,
    strict: bool = True,
) -> LoadParams:
    """The load parameters the engine uses by default ("Auto"), from the memory planner; every
    caller (CLI, GUI) comes through this function. ``ctx`` and ``gpu_layers`` are the user's;
    without ``ctx``, the Settings page's default context applies (capped at the trained one)."""
    if ctx is not None and not 0 < ctx <= MAX_CTX:
        raise BadValueError(f"context size {ctx}: must be between 1 and {MAX_CTX:,} tokens")
    if gpu_layers is not None and gpu_layers < -1:
        raise BadValueError(f"GPU layers {gpu_layers}: use -1 (all), 0 (CPU only) or a positive count")
    plan = auto_plan(header, hardware.detect(), ctx=ctx, gpu_offload=gpu_offload_supported, gpu_mem=gpu_mem, ram=ram,
                     projector=projector, workers=workers, strict=strict)
    if not plan.fits:
        raise BadValueError(f"{header.path.name}: {plan.reasons[-1]}")
    params = plan.params
    if gpu_layers is not None:
        chosen = gpu_layers if gpu_offload_supported else 0
        params = replace(params, n_gpu_layers=chosen, reasons=params.reasons + (f"{gpu_layers} GPU layers: chosen by the user",))
    return params
