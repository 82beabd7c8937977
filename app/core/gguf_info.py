"""Facts from a GGUF file's header, read with the ``gguf`` package's reader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import ModelFileError

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

    @property
    def display_name(self) -> str:
        return self.name or self.path.stem


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:  # a malformed field is treated as absent
        return None


def read_header(path: str | Path) -> GGUFHeader:
    """Read a local GGUF file's header; raise ModelFileError naming the file and the cause."""
    import gguf  # imported lazily: numpy import is not free and the GUI starts without it

    p = Path(path).expanduser()
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
        reader = gguf.GGUFReader(p, "r")
    except Exception as exc:
        raise ModelFileError(f"{p}: damaged or truncated GGUF header ({type(exc).__name__}: {exc})") from None
    data_end = 0
    for tensor in reader.tensors:
        data_end = max(data_end, int(tensor.data_offset) + int(tensor.n_bytes))
    if data_end > size:
        raise ModelFileError(
            f"{p}: truncated GGUF file: its tensors need {data_end:,} bytes but the file has {size:,} "
            "(an incomplete download?)"
        )
    arch = _field_value(reader, "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelFileError(f"{p}: GGUF header has no general.architecture, so it is not a model llama.cpp can load")

    def arch_int(key: str) -> int | None:
        value = _field_value(reader, f"{arch}.{key}")
        if isinstance(value, list):  # per-layer arrays: the largest value bounds the memory
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) else None

    template = _field_value(reader, "tokenizer.chat_template")
    file_type = _field_value(reader, "general.file_type")
    name = _field_value(reader, "general.name")
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
    )
