"""Splitting one model over this computer and RPC workers (app.core.rpc): which layers go where.

llama.cpp's rule (src/llama-model.cpp, load_tensors): the output layer counts as one more layer
after the last; ``n_gpu_layers = k`` offloads the last ``k`` of these ``n_layer + 1`` units (so the
output layer goes first), and the token embeddings stay on the CPU. The offloaded units go to the
devices in their registry order (RPC devices first, then the local GPUs), each taking a consecutive
run in proportion to ``tensor_split``. So a split is a list of unit counts, one per device, and
``tensor_split`` is that list; the device with the output layer also computes the logits.

The planner keeps a model here when it fits here (``memory.plan``); otherwise it offloads as many
of the last layers as the workers (and local GPUs) hold, each device's share in proportion to the
memory it offers, never more than a device offers: per layer its weights and KV cache, per device
one compute buffer. The rest stays on the CPU, which must hold it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from app.core.gguf.header import GGUFHeader
from app.core.gguf.projector import Projector
from app.core.hardware import Hardware, human_bytes
from app.core.planner.memory import (
    GPU_MARGIN,
    MiB,
    Plan,
    add_projector,
    budget,
    compute_bytes,
    effective_ubatch,
    estimate,
    kv_layer_bytes,
    plan,
    projector_bytes,
)
from app.core.planner.params import first_offloaded

DEVICE_MARGIN = 8 * MiB  # per worker device: alignment and fragmentation of its buffers


@dataclass(frozen=True)
class Offer:
    """A worker's device as the planner sees it (from its status, app.core.rpc.client.probe)."""

    address: str  # HOST:PORT
    name: str  # the device's description on the worker
    offered_bytes: int  # what the worker offers (its --mem cap, else its free memory)


@dataclass(frozen=True)
class DeviceShare:
    kind: str  # "cpu", "gpu" or "rpc"
    address: str | None  # the worker, for "rpc"
    name: str
    layers: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    budget_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **({"address": self.address} if self.address else {}), "name": self.name,
                "layers": self.layers, "weights_bytes": self.weights_bytes, "kv_bytes": self.kv_bytes,
                "compute_bytes": self.compute_bytes, "budget_bytes": self.budget_bytes}


def plan_with_workers(h: GGUFHeader, hw: Hardware, offers: list[Offer], *, ctx: int | None = None,
                      gpu_mem: int | None = None, ram: int | None = None, n_threads: int | None = None,
                      projector: Projector | None = None, gpu_offload: bool | None = None,
                      local: Plan | None = None) -> Plan:
    """The local plan when the model fits here; else a split over the workers in ``offers`` and
    this CPU (the plan's ``extra["devices"]``: one DeviceShare per device), or the local plan's
    "does not fit" when even that is not enough. ``local``: the plan here for the same arguments,
    when the caller has made it already."""
    if local is None:
        local = plan(h, hw, ctx=ctx, gpu_mem=gpu_mem, ram=ram, n_threads=n_threads, gpu_offload=gpu_offload,
                     projector=projector)
    if not offers:
        return local
    if local.fits:
        return replace(local, reasons=(*local.reasons, f"fits here: the {len(offers)} worker(s) are not used"))
    can_offload = bool(hw.gpus) if gpu_offload is None else gpu_offload
    return _split(h, hw, offers, local, ram=ram, projector=projector, gpus=_local_gpus(hw, gpu_mem) if can_offload else [])


def _local_gpus(hw: Hardware, gpu_mem: int | None) -> list[Offer]:
    """This computer's GPUs as split devices (after the workers, in llama.cpp's order), each less
    its driver margin; ``gpu_mem`` replaces them with one GPU of that size."""
    if gpu_mem is not None:
        return [Offer("", "GPU", max(gpu_mem - GPU_MARGIN, 0))] if gpu_mem > 0 else []
    return [Offer("", g.name, max(g.free_bytes - GPU_MARGIN, 0)) for g in hw.gpus]


def _split(h: GGUFHeader, hw: Hardware, offers: list[Offer], local: Plan, *, ram: int | None,
           projector: Projector | None, gpus: list[Offer]) -> Plan:
    n_layer = h.block_count or 0
    params = replace(local.params, n_gpu_layers=0, flash_attn=False, type_k="f16", type_v="f16")
    n_ubatch = effective_ubatch(params)
    layer_w = list(h.layer_bytes) or [0] * n_layer
    layer_kv = kv_layer_bytes(h, params.n_ctx, n_ubatch=n_ubatch, swa_full=params.swa_full)
    stages = compute_bytes(h, params.n_ctx, n_ubatch=n_ubatch, swa_full=params.swa_full, logits=False)
    full = compute_bytes(h, params.n_ctx, n_ubatch=n_ubatch, swa_full=params.swa_full)
    # llama.cpp's units: the layers, then the output layer (its weights, and the logits' larger compute)
    output_w = h.output_bytes + h.embd_bytes * h.output_tied
    cost = [w + kv for w, kv in zip(layer_w, layer_kv)] + [output_w + full - stages]
    # llama.cpp's device order: the workers, then this computer's GPUs; the last device gets the output
    # layer (and the logits): a local GPU when there is one, else the worker offering most
    offers = sorted(offers, key=lambda o: o.offered_bytes)
    devices_in_order = offers + gpus
    room = [max(o.offered_bytes - stages - DEVICE_MARGIN, 0) for o in devices_in_order]
    cpu_room = budget(hw, 0, ram).cpu
    vision = sum(projector_bytes(projector)) if projector is not None else 0  # on the CPU: mtmd does not use RPC
    cpu_room -= vision

    best: list[int] | None = None
    for offloaded in range(1, n_layer + 2):  # the fewest units off this computer that make it fit
        shares = _shares(cost[n_layer + 1 - offloaded:], room)
        if shares is not None and estimate(h, replace(params, n_gpu_layers=offloaded), gpu_offload=True).cpu_bytes <= cpu_room:
            best = shares
            break
    if best is None:
        reason = (f"does not fit even with {len(offers)} worker(s): they offer "
                  f"{human_bytes(sum(o.offered_bytes for o in offers))}, and this computer's RAM holds the rest")
        return replace(local, reasons=(*local.reasons, reason), verdict="does not fit")
    offloaded = sum(best)
    p = replace(params, n_gpu_layers=offloaded, rpc=tuple(o.address for o in offers),
                tensor_split=tuple(float(n) for n in best))
    m = estimate(h, p, gpu_offload=True)
    here = first_offloaded(offloaded, n_layer)
    devices = [DeviceShare("cpu", None, "CPU", here, m.cpu_weights_bytes, m.kv_bytes - m.gpu_kv_bytes,
                           m.cpu_compute_bytes, cpu_room + vision)]
    start = here
    for offer, n in zip(devices_in_order, best):
        units = range(start, start + n)
        has_output = n_layer in units
        devices.append(DeviceShare("rpc" if offer.address else "gpu", offer.address or None, offer.name, n - has_output,
                                   sum(layer_w[i] for i in units if i < n_layer) + output_w * has_output,
                                   sum(layer_kv[i] for i in units if i < n_layer),
                                   (full if has_output else stages) if n else 0, offer.offered_bytes))
        start += n
    # the memory here: the local GPUs' shares (with their margin); the rest of gpu_* went to the workers
    on_gpus = sum(d.weights_bytes + d.kv_bytes + d.compute_bytes for d in devices if d.kind == "gpu" and d.layers + d.weights_bytes)
    cpu = replace(m, gpu_bytes=on_gpus + GPU_MARGIN * len(gpus) if on_gpus else 0, margin_bytes=GPU_MARGIN * len(gpus) if on_gpus else 0)
    where = ", ".join(f"{d.layers} on {d.address or 'this ' + d.name}" for d in devices[1:] if d.layers)
    last = next(d for d in reversed(devices) if d.weights_bytes)
    reasons = (*local.reasons[:-1], f"split: {here} layers on this CPU, {where}, the output layer on "
               f"{last.address or 'this ' + last.name} (each device's share in proportion to the memory it offers)")
    if projector is not None:
        p = replace(p, projector=str(projector.path), projector_gpu=False)
    p = replace(p, reasons=reasons)
    verdict = f"split over {len([d for d in devices if d.kind == 'rpc' and (d.layers or d.weights_bytes)])} worker(s)"
    return Plan(p, add_projector(cpu, vision, on_gpu=False), True, reasons, n_layer,
                params.n_ctx, verdict, extra={"devices": [d.to_dict() for d in devices]})


def _shares(costs: list[int], room: list[int]) -> list[int] | None:
    """Unit counts per device for the consecutive units ``costs`` (device 0 takes the first run, the
    last device the output layer), each device's count in proportion to ``room`` where that fits,
    else as many as it holds; None when they do not fit."""
    n = len(costs)
    total = sum(room)
    if not costs or sum(costs) > total:
        return None
    target = [int(n * r / total) for r in room]
    for i in sorted(range(len(room)), key=lambda i: n * room[i] / total - target[i], reverse=True)[: n - sum(target)]:
        target[i] += 1
    for limit in (target, [n] * len(room)):  # proportional first; else fill each device
        shares, end = [0] * len(room), n
        for d in reversed(range(len(room))):
            used = 0
            while shares[d] < limit[d] and end > 0 and used + costs[end - 1] <= room[d]:
                end -= 1
                used += costs[end]
                shares[d] += 1
        if end == 0:
            return shares
    return None
