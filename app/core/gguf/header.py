"""Facts from a GGUF file's header, read by a bounded walk (scan.py) over gguf-py's layout."""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import HeaderIncomplete, ModelFileError
from app.core.gguf.scan import Corrupt, Incomplete, Skipped, scan

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    size_bytes: int
    architecture: str
    name: str | None
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    file_type: int | None
    chat_template: str | None
    # sizes, from the tensor list
    n_params: int = 0
    tensor_bytes: int = 0
    layer_bytes: tuple[int, ...] = ()  # bytes of each blk.N tensor group
    embd_bytes: int = 0  # token embeddings
    output_bytes: int = 0  # output norm + output projection (0 when tied to the embeddings)
    output_tied: bool = False
    n_vocab: int = 0
    # attention shape, per layer where the GGUF gives arrays
    head_count_kv_layers: tuple[int, ...] = ()
    key_length_swa: int | None = None
    value_length_swa: int | None = None
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] = ()  # True where layer i uses sliding-window attention
    # mixture of experts and recurrent state
    expert_count: int = 0
    expert_used_count: int = 0
    ffn_length: int = 0  # feed-forward width (an expert's width for MoE models)
    ssm_d_conv: int = 0
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_n_group: int = 0
    tokenizer_model: str | None = None
    split_count: int = 1
    # weights llama.cpp's CPU backend may repack into its CPU_REPACK buffer, depending on the CPU
    # build (planner.repack_bytes): (layer, ggml type, ne[1], bytes); layer -1 is the output layer
    repack_tensors: tuple[tuple[int, int, int, int], ...] = field(default=(), repr=False)

    @property
    def display_name(self) -> str:
        return self.name or self.path.stem

    @property
    def file_type_name(self) -> str:
        """The quant label (Q4_K_M, Q8_0, F16, ...) from general.file_type."""
        import gguf

        if self.file_type is None:
            return "unknown"
        try:
            return gguf.LlamaFileType(self.file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            return f"type {self.file_type}"

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.tensor_bytes / self.n_params if self.n_params else 0.0

    @property
    def recurrent(self) -> bool:
        return self.ssm_d_state > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("repack_tensors")  # per-tensor detail for the planner
        data["path"] = str(self.path)
        data["chat_template"] = bool(self.chat_template)
        data.update(file_type_name=self.file_type_name, bits_per_weight=round(self.bits_per_weight, 3))
        return data


def _field_value(scan: Any, key: str) -> Any:
    value = scan.fields.get(key)
    return None if isinstance(value, Skipped) else value  # a value too long to keep reads as absent


MAX_LAYERS = 65_536  # the largest models have ~100
LAYER = re.compile(r"^blk\.(\d+)\.")
SPLIT_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


_READ_LOCK = threading.Lock()  # two parses at once thrash the GIL; the second one then hits the cache


def read_header(path: str | Path) -> GGUFHeader:
    """Read a local GGUF file's header; raise ModelFileError naming the file and the cause."""
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except OSError:
        raise ModelFileError(f"{p}: no such file") from None
    with _READ_LOCK:
        header = _read_header_cached(p.resolve(), stat.st_size, stat.st_mtime_ns)
    if header.split_count > 1 and SPLIT_NAME.search(p.name):
        shards = [header]
        for no in range(2, header.split_count + 1):
            sibling = p.with_name(shard_name(p.name, no, header.split_count))
            if not sibling.exists():
                raise ModelFileError(f"{sibling}: missing shard {no} of {header.split_count} of {p.name}")
            st = sibling.stat()
            with _READ_LOCK:
                shards.append(_read_header_cached(sibling.resolve(), st.st_size, st.st_mtime_ns))
        header = merge_shards(shards)
    return header


def shard_name(first: str, number: int, count: int) -> str:
    """'m-00001-of-00003.gguf' -> the name of shard ``number`` (llama.cpp's gguf-split naming)."""
    return SPLIT_NAME.sub(f"-{number:05d}-of-{count:05d}.gguf", first)


def merge_shards(shards: list[GGUFHeader]) -> GGUFHeader:
    """One header for a split model: metadata of the first shard, tensors of all of them."""
    from dataclasses import replace

    first = shards[0]
    layers = [0] * len(first.layer_bytes)
    for shard in shards:
        for i, b in enumerate(shard.layer_bytes[: len(layers)]):
            layers[i] += b
    return replace(
        first,
        size_bytes=sum(s.size_bytes for s in shards),
        n_params=sum(s.n_params for s in shards),
        tensor_bytes=sum(s.tensor_bytes for s in shards),
        layer_bytes=tuple(layers),
        embd_bytes=sum(s.embd_bytes for s in shards),
        output_bytes=sum(s.output_bytes for s in shards),
        output_tied=all(s.output_tied for s in shards),
        n_vocab=max(s.n_vocab for s in shards),
        repack_tensors=tuple(t for s in shards for t in s.repack_tensors),
    )




@functools.lru_cache(maxsize=32)
def _read_header_cached(p: Path, _size: int, _mtime_ns: int) -> GGUFHeader:
    return parse_header(p)


def parse_header(p: Path, *, valid_bytes: int | None = None, label: str | None = None) -> GGUFHeader:
    """Parse ``p``; with ``valid_bytes``, only that prefix holds real data (a sparse file with a
    remote file's first bytes) and ``HeaderIncomplete`` says more are needed. ``label`` names the
    file in messages (a Hub path)."""
    name = label or str(p)
    try:
        return _parse(p, valid_bytes)
    except ModelFileError as exc:
        if label:
            raise ModelFileError(str(exc).replace(str(p), name, 1)) from None
        raise


def _parse(p: Path, valid_bytes: int | None) -> GGUFHeader:
    if not p.exists():
        raise ModelFileError(f"{p}: no such file")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a folder, not a GGUF model file")
    size = p.stat().st_size
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"{p}: not a GGUF file (it starts with {magic!r}, a GGUF file starts with b'GGUF')")
    try:
        reader = scan(p, valid_bytes=valid_bytes)
    except Incomplete:
        raise HeaderIncomplete() from None
    except Corrupt as exc:
        raise ModelFileError(f"{p}: damaged or hostile GGUF header: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{p}: cannot read the GGUF header ({type(exc).__name__}: {exc})") from None
    data_end = 0
    for tensor in reader.tensors:
        data_end = max(data_end, int(tensor.data_offset) + int(tensor.n_bytes))
    if data_end > size:
        raise ModelFileError(
            f"{p}: truncated GGUF file: its tensors need {data_end:,} bytes but the file has {size:,} "
            "(an incomplete download?)"
        )
    arch = _field_value(reader, "general.architecture")
    split_no = _field_value(reader, "split.no")
    if (not isinstance(arch, str) or not arch) and isinstance(split_no, int) and split_no > 0:
        arch = ""  # a later shard of a split model: tensors only, the metadata is in the first
    elif not isinstance(arch, str) or not arch:
        raise ModelFileError(f"{p}: GGUF header has no general.architecture, so it is not a model llama.cpp can load")

    def arch_int(key: str) -> int | None:
        value = _field_value(reader, f"{arch}.{key}")
        if isinstance(value, list):  # per-layer arrays: the largest value bounds the memory
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return _build(p, size, reader, arch, arch_int)


def _per_layer(value: Any, n_layer: int, default: int) -> tuple[int, ...]:
    if isinstance(value, list) and len(value) == n_layer:
        return tuple(int(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (int(value),) * n_layer
    return (default,) * n_layer


def _swa_layers(reader: Any, arch: str, n_layer: int, window: int | None) -> tuple[bool, ...]:
    """Which layers use sliding-window attention: the GGUF's pattern array when present, else
    llama.cpp's per-architecture default (src/llama-model.cpp ``set_swa_pattern``)."""
    if not window:
        return (False,) * n_layer
    pattern = _field_value(reader, f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layer:
        return tuple(bool(x) for x in pattern)
    period = pattern if isinstance(pattern, int) and not isinstance(pattern, bool) else SWA_PERIOD.get(arch)
    if not period:
        return (True,) * n_layer if arch in ALL_SWA else (False,) * n_layer
    # llama.cpp: layer il is SWA when il % period < period - 1 (the last of each period is global)
    return tuple(il % period < period - 1 for il in range(n_layer))


# ggml types that some CPU build repacks (ggml-cpu/repack.cpp): Q4_0, Q2_K, Q4_K, Q5_K, Q6_K, Q8_0,
# IQ4_NL, MXFP4, Q1_0
REPACKABLE_TYPES = frozenset({2, 10, 12, 13, 14, 8, 20, 39, 41})

SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "exaone4": 4, "llama4": 4, "gpt-oss": 2}
ALL_SWA = {"mistral3"}


def _build(p: Path, size: int, reader: Any, arch: str, arch_int: Any) -> GGUFHeader:
    template = _field_value(reader, "tokenizer.chat_template")
    file_type = _field_value(reader, "general.file_type")
    name = _field_value(reader, "general.name")
    n_layer = arch_int("block_count") or 0
    if not 0 <= n_layer <= MAX_LAYERS:
        raise ModelFileError(f"{p}: corrupt GGUF header: {arch}.block_count is {n_layer:,} (at most {MAX_LAYERS:,} layers are plausible)")
    layer_bytes = [0] * n_layer
    if not arch:  # a later shard: size the layer list by the blocks it holds
        n_layer = 1 + max((int(m.group(1)) for t in reader.tensors if (m := LAYER.match(t.name))), default=-1)
        if n_layer > MAX_LAYERS:
            raise ModelFileError(f"{p}: corrupt GGUF header: a tensor names layer {n_layer - 1:,} (at most {MAX_LAYERS:,} layers are plausible)")
        layer_bytes = [0] * n_layer
    n_params = tensor_bytes = embd_bytes = output_bytes = 0
    n_vocab = 0
    has_output = False
    repack: list[tuple[int, int, int, int]] = []
    for tensor in reader.tensors:
        n_params += int(tensor.n_elements)
        tensor_bytes += int(tensor.n_bytes)
        m = LAYER.match(tensor.name)
        ttype = int(tensor.tensor_type)
        if ttype in REPACKABLE_TYPES and len(tensor.shape) >= 2 and not tensor.name.startswith("token_embd."):
            layer = int(m.group(1)) if m else -1 if tensor.name.startswith("output.") else -2
            repack.append((layer, ttype, int(tensor.shape[1]), int(tensor.n_bytes)))
        if m and int(m.group(1)) < n_layer:
            layer_bytes[int(m.group(1))] += int(tensor.n_bytes)
        elif tensor.name.startswith("token_embd."):
            embd_bytes += int(tensor.n_bytes)
            if tensor.name == "token_embd.weight":
                n_vocab = int(tensor.shape[-1])
        elif tensor.name.startswith(("output.", "output_norm.")):
            output_bytes += int(tensor.n_bytes)
            has_output = has_output or tensor.name == "output.weight"
    heads = arch_int("attention.head_count") or 0
    head_kv_raw = _field_value(reader, f"{arch}.attention.head_count_kv")
    window = arch_int("attention.sliding_window")
    split = _field_value(reader, "split.count")
    tok_model = _field_value(reader, "tokenizer.ggml.model")
    return GGUFHeader(
        path=p,
        size_bytes=size,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=arch_int("attention.head_count_kv"),
        key_length=arch_int("attention.key_length"),
        value_length=arch_int("attention.value_length"),
        file_type=int(file_type) if isinstance(file_type, int) else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
        n_params=n_params,
        tensor_bytes=tensor_bytes,
        layer_bytes=tuple(layer_bytes),
        embd_bytes=embd_bytes,
        output_bytes=output_bytes,
        output_tied=not has_output,
        n_vocab=n_vocab or (arch_int("vocab_size") or 0),
        head_count_kv_layers=_per_layer(head_kv_raw, n_layer, heads),
        key_length_swa=arch_int("attention.key_length_swa"),
        value_length_swa=arch_int("attention.value_length_swa"),
        sliding_window=window,
        swa_layers=_swa_layers(reader, arch, n_layer, window),
        expert_count=arch_int("expert_count") or 0,
        expert_used_count=arch_int("expert_used_count") or 0,
        ffn_length=arch_int("expert_feed_forward_length") or arch_int("feed_forward_length") or 0,
        ssm_d_conv=arch_int("ssm.conv_kernel") or 0,
        ssm_d_inner=arch_int("ssm.inner_size") or 0,
        ssm_d_state=arch_int("ssm.state_size") or 0,
        ssm_n_group=arch_int("ssm.group_count") or 0,
        tokenizer_model=tok_model if isinstance(tok_model, str) else None,
        split_count=int(split) if isinstance(split, int) and not isinstance(split, bool) else 1,
        repack_tensors=tuple(repack),
    )


QUANT_LABEL = re.compile(
    r"(?i)(?<![A-Za-z0-9])(IQ[1-4]_(?:XXS|XS|NL|S|M)|TQ[12]_0|Q[2-8]_K(?:_(?:XL|S|M|L))?|Q4_0_(?:4_4|4_8|8_8)"
    r"|Q[4-8]_[01]|MXFP4(?:_MOE)?|BF16|FP16|F16|FP32|F32)(?![A-Za-z0-9])"
)


def quant_label(name: str) -> str | None:
    """The quant label in a file name ('Llama-3-8B.Q4_K_M.gguf' -> 'Q4_K_M'), upper-cased; None if absent."""
    matches = QUANT_LABEL.findall(Path(name).name)
    if not matches:
        return None
    label = matches[-1].upper()
    return {"FP16": "F16", "FP32": "F32"}.get(label, label)
