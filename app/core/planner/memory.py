"""The memory planner: (model header, hardware, wanted context) -> llama.cpp load parameters,
the predicted memory per device, and the reasons for each choice.

The sizes follow llama.cpp's own allocation (src/llama-kv-cache.cpp, llama-context.cpp):
- weights: the tensors' bytes; layers are offloaded from the last one, the output layer counts;
  on the CPU, the backend also copies some weight types into an extra CPU_REPACK buffer, which
  ones depending on the CPU build (ggml-cpu/repack.cpp; ``repack_bytes``);
- KV cache: per attention layer, cells x (n_embd_k_gqa x size(type_k) + n_embd_v_gqa x size(type_v)),
  cells = the context padded to 256, or for sliding-window layers PAD256(min(ctx, n_swa + n_ubatch))
  unless ``swa_full``; recurrent layers hold a fixed state per sequence instead;
- compute: the largest of the graph's stages for one ubatch: the output logits
  (n_ubatch x n_vocab floats), or the attention scores (n_ubatch x n_kv x n_head floats, absent with
  flash attention) with the mask and the layer's activations; plus the output buffer (n_vocab floats).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from app.core.gguf.header import GGUFHeader
from app.core.gguf.projector import Projector
from app.core.hardware import Hardware, human_bytes
from app.core.planner.params import DEFAULT_CTX, GGML_TYPES, LoadParams, first_offloaded, offloaded_units, physical_cores

MiB = 1 << 20
GiB = 1 << 30
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
GPU_MARGIN = 512 * MiB  # driver, CUDA context and fragmentation headroom per GPU
RAM_MARGIN = 256 * MiB  # left to the OS and the app out of the detected available RAM
KV_PAD = 256


def pad(n: int, to: int = KV_PAD) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    gpu_bytes: int
    cpu_bytes: int
    margin_bytes: int
    gpu_compute_bytes: int = 0
    cpu_compute_bytes: int = 0
    gpu_weights_bytes: int = 0
    gpu_kv_bytes: int = 0
    cpu_weights_bytes: int = 0
    cpu_repack_bytes: int = 0  # part of cpu_weights_bytes: the CPU backend's repacked copies
    projector_bytes: int = 0  # part of gpu_bytes or cpu_bytes: the vision projector and its encoder's compute
    measured: bool = False  # compute buffers from a llama.cpp dry run, not the model

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    params: LoadParams
    memory: MemoryEstimate
    fits: bool
    reasons: tuple[str, ...]
    n_layer: int
    max_ctx: int = 0  # the largest context that fits with this offload
    verdict: str = ""  # "full GPU", "N of M layers", "CPU only", "does not fit"
    extra: dict[str, Any] = field(default_factory=dict)

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments ``llama_cpp.Llama(model_path=..., **kwargs)`` accepts as they are: the KV
        cache types as ggml type numbers (their names are in ``kv_cache_types``)."""
        p = self.params
        return {
            "n_ctx": p.n_ctx, "n_gpu_layers": p.n_gpu_layers, "n_batch": p.n_batch, "n_ubatch": p.n_ubatch,
            "n_threads": p.n_threads, "flash_attn": p.flash_attn, "type_k": GGML_TYPES[p.type_k],
            "type_v": GGML_TYPES[p.type_v], "swa_full": p.swa_full,
            **({"tensor_split": list(p.tensor_split)} if p.tensor_split else {}),
        }

    def devices(self) -> list[dict[str, Any]]:
        """One entry per device: kind (cpu, gpu, rpc), address (a worker's), layers, and its
        weights, KV cache and compute bytes (planner.split's shares when the model is split)."""
        if "devices" in self.extra:
            return list(self.extra["devices"])
        m, n = self.memory, self.n_layer
        on_gpu = n - first_offloaded(self.params.n_gpu_layers, n) if m.gpu_bytes else 0  # repeating layers (the output goes too)
        out = [{"kind": "cpu", "name": "CPU", "layers": n - on_gpu, "weights_bytes": m.cpu_weights_bytes,
                "kv_bytes": m.kv_bytes - m.gpu_kv_bytes, "compute_bytes": m.cpu_compute_bytes}]
        if m.gpu_bytes:
            out.append({"kind": "gpu", "name": "GPU", "layers": on_gpu, "weights_bytes": m.gpu_weights_bytes,
                        "kv_bytes": m.gpu_kv_bytes, "compute_bytes": m.gpu_compute_bytes})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.llama_kwargs(),
            "kv_cache_types": {"type_k": self.params.type_k, "type_v": self.params.type_v},
            "memory": self.memory.to_dict(),
            "fits": self.fits,
            "verdict": self.verdict,
            "max_ctx": self.max_ctx,
            "reasons": list(self.reasons),
            "devices": self.devices(),
            **({"workers": list(self.params.rpc)} if self.params.rpc else {}),
        }


def _head_dims(h: GGUFHeader) -> tuple[int, int]:
    head = (h.embedding_length or 0) // max(h.head_count or 1, 1)
    return h.key_length or head, h.value_length or head


def kv_layer_bytes(h: GGUFHeader, n_ctx: int, *, type_k: str = "f16", type_v: str = "f16",
                   n_ubatch: int = 512, swa_full: bool = False, n_seq: int = 1) -> list[int]:
    """Bytes of the KV cache (or recurrent state) of every layer."""
    n_layer = h.block_count or 0
    k_len, v_len = _head_dims(h)
    out = []
    cells_full = pad(n_ctx)
    for il in range(n_layer):
        if h.recurrent:
            conv = (h.ssm_d_conv - 1) * (h.ssm_d_inner + 2 * h.ssm_n_group * h.ssm_d_state) * 4  # Mamba-2 convolves B and C too
            ssm = h.ssm_d_state * h.ssm_d_inner * 4
            out.append((conv + ssm) * n_seq)
            continue
        n_kv_heads = h.head_count_kv_layers[il] if il < len(h.head_count_kv_layers) else (h.head_count_kv or 0)
        if n_kv_heads == 0:
            out.append(0)
            continue
        swa = il < len(h.swa_layers) and h.swa_layers[il] and not swa_full
        kl, vl = (h.key_length_swa or k_len, h.value_length_swa or v_len) if swa else (k_len, v_len)
        cells = min(cells_full, pad(min(n_ctx, (h.sliding_window or 0) * n_seq + n_ubatch))) if swa else cells_full
        out.append(int(cells * n_kv_heads * (kl * KV_TYPE_BYTES[type_k] + vl * KV_TYPE_BYTES[type_v])))
    return out


def compute_bytes(h: GGUFHeader, n_ctx: int, *, n_ubatch: int = 512, flash_attn: bool = False, swa_full: bool = False,
                  logits: bool = True) -> int:
    """llama.cpp's compute buffer for one ubatch on the CPU, plus the output buffer; ``logits=False``:
    a device that holds only layers (a worker of a split), without the output stage."""
    embd = h.embedding_length or 0
    vocab = h.n_vocab
    heads = h.head_count or 0
    logits_stage = n_ubatch * vocab * 4 + 3 * n_ubatch * embd * 4
    n_kv = pad(n_ctx)
    if h.swa_layers and all(h.swa_layers) and h.sliding_window and not swa_full:
        n_kv = min(n_kv, pad(h.sliding_window + n_ubatch))
    ff = max(h.ffn_length, 1) * max(h.expert_used_count, 1)
    activations = n_ubatch * (ff + 3 * embd) * 4
    swa_kv = 0
    if any(h.swa_layers) and not all(h.swa_layers):  # a second KQ mask for the sliding-window cache
        swa_kv = pad(n_ctx) if swa_full else min(pad(n_ctx), pad((h.sliding_window or 0) + n_ubatch))
    if flash_attn:
        attn_stage = n_ubatch * (n_kv + swa_kv) * 2 + activations
    else:
        attn_stage = n_ubatch * n_kv * heads * 4 + n_ubatch * (n_kv + swa_kv) * 4 + activations
    if h.recurrent:
        attn_stage = n_ubatch * (h.ssm_d_inner * 4 + embd * 3) * 4
    if not logits:
        return attn_stage
    return max(logits_stage, attn_stage) + vocab * 4


def effective_ubatch(params: LoadParams) -> int:
    """llama.cpp: n_batch = min(n_ctx, n_batch), n_ubatch = min(n_batch, n_ubatch)."""
    return min(params.n_ubatch, params.n_batch, params.n_ctx)


# ggml types each CPU build repacks, with the row interleave ne[1] must be a multiple of
# (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type); the checks there are compile-time
# (__AVX2__, __AVX512F__, __ARM_FEATURE_DOTPROD), so they follow the build, not the CPU.
_AVX2_REPACK = {2: 8, 12: 8, 20: 8, 39: 8}  # Q4_0, Q4_K, IQ4_NL, MXFP4
_AVX512_REPACK = {**_AVX2_REPACK, 10: 8}  # + Q2_K
_ARM_DOTPROD_REPACK = {2: 4, 12: 8, 13: 8, 14: 8, 20: 4, 39: 4, 8: 4, 41: 4}  # + Q5_K, Q6_K, Q8_0, Q1_0
REPACK_RULES: dict[str, dict[int, int]] = {
    "icelake": _AVX512_REPACK, "alderlake": _AVX2_REPACK, "haswell": _AVX2_REPACK, "sse42": {},
    # Apple silicon's baseline (apple-m1) has dot products; a plain armv8-a build has not
    "arm64": _ARM_DOTPROD_REPACK if sys.platform == "darwin" else {},
}


def current_cpu_variant() -> str | None:
    """The CPU build the engine will run here (app.core.engine.cpu_policy), or None if unknown."""
    try:
        from app.core.engine import cpu_policy

        return cpu_policy.current().variant.name
    except Exception:
        return None


def repack_bytes(h: GGUFHeader, cpu_variant: str | None, first_gpu: int, output_on_gpu: bool) -> int:
    """Bytes of the CPU_REPACK buffer: the CPU-resident weights the build repacks."""
    rules = REPACK_RULES.get(cpu_variant or "", {})
    if not rules:
        return 0
    total = 0
    for layer, ttype, ne1, nbytes in h.repack_tensors:
        interleave = rules.get(ttype)
        if not interleave or ne1 % interleave:
            continue
        if layer >= first_gpu or (layer == -1 and output_on_gpu):
            continue  # on the GPU
        total += nbytes
    return total


def projector_bytes(proj: Projector, *, flash_attn: bool = False) -> tuple[int, int]:
    """A vision projector's weights (its tensors: the file less a small header) and its encoder's
    compute buffer for one image at the encoder's size: the attention scores (patches² × heads
    floats, absent with flash attention) beside the layer's activations (patches × width floats,
    half a dozen alive at once) and a graph's fixed 1 MiB — clip.cpp's graph, checked on its log
    ("reserve_compute_meta: CPU compute buffer size"): 224 px in 14 px patches, width 256, 4 heads:
    2.5 MiB measured, 3.5 predicted; 448 px, width 512, 8 heads: 44 and 45 MiB."""
    weights = proj.size_bytes
    if not (proj.image_size and proj.patch_size and proj.width):
        return weights, 64 * MiB  # an encoder of unknown shape: a typical small one
    patches = (proj.image_size // proj.patch_size) ** 2
    scores = 0 if flash_attn else patches * patches * (proj.heads or 1) * 4
    activations = patches * proj.width * 4 * 6
    return weights, scores + activations + MiB


def with_projector(m: MemoryEstimate, params: LoadParams) -> MemoryEstimate:
    """``m`` with the vision projector that ``params`` load beside the model (where they place it)."""
    if not params.projector:
        return m
    from app.core.errors import ModelFileError
    from app.core.gguf.projector import read_projector

    try:
        proj = read_projector(params.projector)
    except ModelFileError:  # gone or damaged since it was paired: the load says so
        return m
    if proj is None:
        return m
    return add_projector(m, sum(projector_bytes(proj, flash_attn=params.flash_attn)), on_gpu=params.projector_gpu)


def add_projector(m: MemoryEstimate, vision: int, *, on_gpu: bool) -> MemoryEstimate:
    """``m`` with a projector's ``vision`` bytes counted on the GPU or in RAM."""
    return replace(m, projector_bytes=vision, gpu_bytes=m.gpu_bytes + vision * on_gpu,
                   cpu_bytes=m.cpu_bytes + vision * (not on_gpu))


def estimate(h: GGUFHeader, params: LoadParams, *, gpu_offload: bool, cpu_variant: str | None = None) -> MemoryEstimate:
    """Predicted memory of loading ``h`` with ``params``, split by device; ``cpu_variant`` is the
    CPU build that will run it (default: the one chosen here)."""
    n_layer = h.block_count or 0
    n_ubatch = effective_ubatch(params)
    kv_layers = kv_layer_bytes(h, params.n_ctx, type_k=params.type_k, type_v=params.type_v,
                               n_ubatch=n_ubatch, swa_full=params.swa_full)
    ngl = offloaded_units(params.n_gpu_layers, n_layer) if gpu_offload else 0
    first_gpu = first_offloaded(ngl, n_layer)  # the output layer is offloaded first
    layers = list(h.layer_bytes) or [0] * n_layer
    output_on_gpu = ngl > 0
    # a tied output layer is a GPU copy of the token embeddings, which stay on the CPU for input
    gpu_weights = sum(layers[first_gpu:]) + (h.output_bytes + h.embd_bytes * h.output_tied) * output_on_gpu
    repack = repack_bytes(h, cpu_variant or current_cpu_variant(), first_gpu, output_on_gpu)
    cpu_weights = h.tensor_bytes - sum(layers[first_gpu:]) - h.output_bytes * output_on_gpu + repack
    weights = h.tensor_bytes + repack
    kv = sum(kv_layers)
    gpu_kv = sum(kv_layers[first_gpu:])
    compute = compute_bytes(h, params.n_ctx, n_ubatch=n_ubatch, flash_attn=params.flash_attn, swa_full=params.swa_full)
    gpu_compute = compute if ngl > 0 else 0
    if ngl == 0:
        cpu_compute = compute
    elif first_gpu > 0:  # some layers stay: their stages, the output's is on the GPU
        cpu_compute = compute_bytes(h, params.n_ctx, n_ubatch=n_ubatch, flash_attn=params.flash_attn,
                                    swa_full=params.swa_full, logits=False)
    else:
        cpu_compute = n_ubatch_embd(h, params)
    margin = GPU_MARGIN if ngl > 0 else 0
    return MemoryEstimate(
        weights_bytes=weights,
        kv_bytes=kv,
        compute_bytes=compute,
        gpu_bytes=gpu_weights + gpu_kv + gpu_compute + margin if ngl > 0 else 0,
        cpu_bytes=cpu_weights + (kv - gpu_kv) + cpu_compute,
        margin_bytes=margin,
        gpu_compute_bytes=gpu_compute,
        cpu_compute_bytes=cpu_compute,
        gpu_weights_bytes=gpu_weights if ngl > 0 else 0,
        gpu_kv_bytes=gpu_kv if ngl > 0 else 0,
        cpu_weights_bytes=cpu_weights,
        cpu_repack_bytes=repack,
    )


def n_ubatch_embd(h: GGUFHeader, params: LoadParams) -> int:
    """The CPU-side staging buffer that remains when every layer is on the GPU."""
    return effective_ubatch(params) * (h.embedding_length or 0) * 4 + h.n_vocab * 4


@dataclass(frozen=True)
class Budget:
    """Memory a plan may use: GPU (less its margin) and RAM; on unified memory one pool."""

    gpu: int
    cpu: int
    unified: bool

    def holds(self, m: MemoryEstimate) -> bool:
        if self.unified:
            return m.gpu_bytes + m.cpu_bytes <= self.gpu + GPU_MARGIN
        return m.gpu_bytes <= self.gpu + (GPU_MARGIN if m.gpu_bytes else 0) and m.cpu_bytes <= self.cpu


def budget(hw: Hardware, gpu_mem: int | None = None, ram: int | None = None) -> Budget:
    """What the planner may use on ``hw``; ``gpu_mem``/``ram`` replace the detected sizes."""
    unified = hw.unified_memory and gpu_mem is None
    gpu = gpu_mem if gpu_mem is not None else sum(g.free_bytes for g in hw.gpus)
    cpu = ram if ram is not None else max(hw.ram_available_bytes - RAM_MARGIN, 0)
    return Budget(max(gpu - (GPU_MARGIN if gpu else 0), 0), cpu, unified)


def plan(h: GGUFHeader, hw: Hardware, *, ctx: int | None = None, gpu_mem: int | None = None,
         ram: int | None = None, gpu_offload: bool | None = None, n_threads: int | None = None,
         cpu_variant: str | None = None, projector: Projector | None = None) -> Plan:
    """Choose context, GPU layers and KV cache type for ``h`` on ``hw``; never a plan that exceeds
    VRAM + available RAM (the plan says it does not fit instead). ``cpu_variant``: the CPU build
    that will run it (default: the one chosen here), for its repacked weights; ``projector``: the
    vision projector loaded beside it, whose memory is set aside first (on the GPU when it fits
    there, as llama.cpp's mtmd places it)."""
    cpu_build = cpu_variant or current_cpu_variant()
    n_layer = h.block_count or 0
    trained = h.context_length or DEFAULT_CTX
    can_offload = bool(hw.gpus) if gpu_offload is None else gpu_offload
    room = budget(hw, gpu_mem, ram)
    if not can_offload or room.gpu <= 0:
        room, can_offload = replace(room, gpu=0), False
    reasons: list[str] = []
    vision = 0
    vision_gpu = False
    if projector is not None:
        weights, compute = projector_bytes(projector)
        vision = weights + compute
        vision_gpu = can_offload and room.gpu >= vision
        room = replace(room, gpu=room.gpu - vision) if vision_gpu else replace(room, cpu=room.cpu - vision)
        reasons.append(f"vision projector {projector.path.name}: {human_bytes(vision)} "
                       f"({human_bytes(weights)} of weights, {human_bytes(compute)} for its encoder) "
                       + ("on the GPU" if vision_gpu else "in RAM"))
    want_ctx = ctx if ctx is not None else min(DEFAULT_CTX, trained)
    if ctx is None:
        reasons.append(f"context {want_ctx}: the default {DEFAULT_CTX} or the model's trained {trained}, whichever is smaller")
    else:
        reasons.append(f"context {want_ctx}: asked for" + (f" (above the trained {trained}: quality may drop)" if ctx > trained else ""))

    has_swa = any(h.swa_layers)
    base = LoadParams(n_ctx=want_ctx, n_gpu_layers=0, n_threads=n_threads or physical_cores(), swa_full=has_swa)
    # most GPU layers first; llama.cpp's n_gpu_layers = n_layer + 1 puts the output layer there too
    candidates = [replace(base, n_gpu_layers=ngl) for ngl in range(n_layer + 1, -1, -1)] if can_offload else [base]

    def first_fit(variant: Callable[[LoadParams], LoadParams]) -> tuple[LoadParams, MemoryEstimate] | None:
        for p in candidates:
            v = variant(p)
            m = estimate(h, v, gpu_offload=can_offload, cpu_variant=cpu_build)
            if room.holds(m):
                return v, m
        return None

    def more_layers(option: tuple[LoadParams, MemoryEstimate] | None) -> bool:
        return option is not None and (chosen is None or option[0].n_gpu_layers > chosen[0].n_gpu_layers)

    chosen = first_fit(lambda p: p)
    if can_offload and (chosen is None or chosen[0].n_gpu_layers <= n_layer):
        # the weights may fit while the f16 KV cache does not: try q8_0 KV with flash attention
        q8 = first_fit(lambda p: replace(p, flash_attn=True, type_k="q8_0", type_v="q8_0"))
        if more_layers(q8):
            chosen = q8
            reasons.append("KV cache in q8_0 with flash attention: half the memory of f16, so more layers fit on the GPU")
    if has_swa and (chosen is None or (can_offload and chosen[0].n_gpu_layers <= n_layer)):
        # a full-size sliding-window cache lets follow-ups reuse the KV cache; trimmed, it saves memory
        start = chosen[0] if chosen else None
        trimmed = first_fit(lambda p: replace(start or p, n_gpu_layers=p.n_gpu_layers, swa_full=False))
        if more_layers(trimmed):
            chosen = trimmed
            reasons.append(
                f"sliding-window layers keep only the last {h.sliding_window} tokens (+ one batch): it fits, "
                "but a follow-up message re-reads the whole conversation"
            )
    elif has_swa:
        reasons.append("sliding-window layers keep the full context, so follow-up messages reuse the KV cache")
    if chosen is None:
        m = estimate(h, candidates[-1], gpu_offload=False, cpu_variant=cpu_build)
        reasons.append(
            f"does not fit: needs about {human_bytes(m.cpu_bytes + m.gpu_bytes)} at context {want_ctx:,}, "
            f"more than the {human_bytes(room.gpu + room.cpu)} of VRAM + RAM available"
        )
        return Plan(candidates[-1], m, False, tuple(reasons), n_layer, max_ctx(h, hw, 0, gpu_mem, ram, cpu_variant=cpu_build),
                    "does not fit")
    p, m = chosen
    if projector is not None:
        p = replace(p, projector=str(projector.path), projector_gpu=vision_gpu)
        m = add_projector(m, vision, on_gpu=vision_gpu)
    if not can_offload:
        verdict = "CPU only"
        reasons.append("CPU only: " + (hw.gpu_note or "no GPU") if gpu_mem is None else "CPU only: no GPU memory given")
    elif p.n_gpu_layers > n_layer:
        verdict = "full GPU"
        reasons.append(f"all {n_layer} layers and the output layer on the GPU: they fit in {human_bytes(room.gpu)}")
    elif p.n_gpu_layers == 0:
        verdict = "CPU only"
        reasons.append("CPU only: not even one layer fits in the GPU's free memory")
    else:
        verdict = f"{p.n_gpu_layers} of {n_layer + 1} layers"
        reasons.append(f"{p.n_gpu_layers} of {n_layer + 1} layers on the GPU (from the last): the most that fit in {human_bytes(room.gpu)}")
    p = replace(p, reasons=tuple(reasons))
    if m.cpu_repack_bytes:
        reasons.append(f"the {cpu_build} CPU build repacks {human_bytes(m.cpu_repack_bytes)} of weights for its kernels "
                       "(counted in RAM)")
    return Plan(p, m, True, tuple(reasons), n_layer, max_ctx(h, hw, p.n_gpu_layers, gpu_mem, ram, p, cpu_variant=cpu_build),
                verdict)


def with_dry_run(result: Plan, h: GGUFHeader) -> Plan:
    """Replace the modelled compute buffers with the ones a llama.cpp dry run reports for the
    plan's exact parameters (local files); the plan stands unchanged when the dry run fails."""
    from app.core.planner.dry_run import measure_compute

    measured = measure_compute(h.path, result.params) if result.fits else None
    if not measured:
        return result
    gpu_c = sum(v for k, v in measured.items() if not k.endswith(":CPU"))
    cpu_c = sum(v for k, v in measured.items() if k.endswith(":CPU"))
    m = result.memory
    memory = replace(
        m,
        compute_bytes=gpu_c + cpu_c,
        gpu_bytes=m.gpu_bytes - m.gpu_compute_bytes + gpu_c if m.gpu_bytes else 0,
        cpu_bytes=m.cpu_bytes - m.cpu_compute_bytes + cpu_c,
        gpu_compute_bytes=gpu_c,
        cpu_compute_bytes=cpu_c,
        measured=True,
    )
    note = (f"compute buffers measured by a llama.cpp dry run (no_alloc): {human_bytes(gpu_c + cpu_c)} "
            f"(modelled: {human_bytes(m.compute_bytes)})")
    return replace(result, memory=memory, reasons=(*result.reasons, note))


def max_ctx(h: GGUFHeader, hw: Hardware, n_gpu_layers: int, gpu_mem: int | None, ram: int | None,
            params: LoadParams | None = None, cpu_variant: str | None = None) -> int:
    """The largest context (a multiple of 256, at most the trained one) that fits with this offload."""
    variant = cpu_variant or current_cpu_variant()
    trained = h.context_length or DEFAULT_CTX
    room = budget(hw, gpu_mem, ram)
    base = params or LoadParams(n_gpu_layers=n_gpu_layers)
    offload = n_gpu_layers != 0 and room.gpu > 0

    def ok(n: int) -> bool:
        return room.holds(estimate(h, replace(base, n_ctx=n), gpu_offload=offload, cpu_variant=variant))

    lo, hi = 0, max(trained // KV_PAD, 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid * KV_PAD):
            lo = mid
        else:
            hi = mid - 1
    return lo * KV_PAD


@dataclass(frozen=True)
class DraftPlan:
    """Where a speculative-decoding draft model goes beside the main model's plan."""

    path: str
    n_gpu_layers: int  # -1: all on the GPU (the main model is fully there too), 0: CPU
    memory: MemoryEstimate
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "n_gpu_layers": self.n_gpu_layers}


def plan_draft(main: Plan, draft: GGUFHeader, hw: Hardware, *, gpu_mem: int | None = None,
               ram: int | None = None) -> DraftPlan | None:
    """The draft model at the main model's context, on the GPU when the main model is fully there
    and the rest of the GPU holds it, else in the RAM the main plan leaves; None when neither holds it."""
    room = budget(hw, gpu_mem, ram)
    n_layer = draft.block_count or 0
    used = main.memory
    on_gpu = main.params.n_gpu_layers > (main.n_layer or 0) and room.gpu > 0
    if on_gpu:
        p = replace(main.params, n_gpu_layers=n_layer + 1)
        m = estimate(draft, p, gpu_offload=True)
        if m.gpu_bytes - GPU_MARGIN <= room.gpu - used.gpu_bytes and m.cpu_bytes <= room.cpu - used.cpu_bytes:
            return DraftPlan(str(draft.path), -1, m, f"draft model {draft.display_name}: {human_bytes(m.gpu_bytes - GPU_MARGIN)} "
                             "on the GPU beside the model")
    p = replace(main.params, n_gpu_layers=0)
    m = estimate(draft, p, gpu_offload=False)
    if m.cpu_bytes <= room.cpu - used.cpu_bytes - (used.gpu_bytes if room.unified else 0):
        return DraftPlan(str(draft.path), 0, m, f"draft model {draft.display_name}: {human_bytes(m.cpu_bytes)} in RAM")
    return None
