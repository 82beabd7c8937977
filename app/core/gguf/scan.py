"""A bounded walk over a GGUF file's metadata and tensor list.

Every count and length in the file is checked against the bytes that remain before it is used,
so a hostile header is refused in time proportional to the file, with memory that does not
grow with what the header *claims*. Only what the header reader needs is kept: scalars, strings
up to ``MAX_KEPT_STRING``, numeric arrays up to ``MAX_KEPT_ARRAY`` elements. Longer arrays
(the vocabulary, merges, scores) are walked and skipped, never materialized.

The layout is gguf-py's (``GGUFValueType``, ``GGML_QUANT_SIZES``); the limits are llama.cpp's
(``GGML_MAX_DIMS``) or far beyond any real model.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_DEPTH = 4  # nested arrays: gguf-py writes one level; llama.cpp reads one
MAX_KEPT_STRING = 1 * 2**20  # a chat template is tens of KB
MAX_KEPT_ARRAY = 65_536  # per-layer arrays have hundreds of entries
MAX_ELEMENTS = 8_000_000  # array elements walked in all (a 262k vocabulary with merges is ~1M)
MAX_SECONDS = 10.0
MAX_NAME = 4096  # tensor names (llama.cpp's GGML_MAX_NAME is 64)
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32

# GGUFValueType -> (struct code, size); STRING = 8, ARRAY = 9
_SCALAR = {0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4), 6: ("f", 4),
           7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8)}
STRING, ARRAY = 8, 9
_MIN_SIZE = {**{t: s for t, (_, s) in _SCALAR.items()}, STRING: 8, ARRAY: 12}


class Incomplete(Exception):
    """The walk needs bytes past the valid prefix (a remote read fetches more and tries again)."""


class Corrupt(Exception):
    """The header contradicts itself or the file's size; the message says where and how."""


class Skipped:
    """A value the walk did not keep (too long, or a nested array); reads as absent."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __repr__(self) -> str:
        return f"Skipped({self.count})"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # file order: ne0, ne1, ...
    tensor_type: int
    n_elements: int
    n_bytes: int
    data_offset: int


@dataclass(frozen=True)
class Scan:
    version: int
    fields: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int  # where the tensor data starts (aligned)


class _Walker:
    def __init__(self, buf: Any, size: int, valid: int) -> None:
        self.buf, self.size, self.valid = buf, size, valid
        self.pos = 0
        self.elements = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise Corrupt(f"{what} at byte {self.pos:,} claims {n:,} bytes but only {self.size - self.pos:,} remain in the file")
        if self.pos + n > self.valid:
            raise Incomplete()

    def unpack(self, code: str, size: int, what: str) -> Any:
        self.need(size, what)
        value = struct.unpack_from("<" + code, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self, what: str, keep: int) -> str | Skipped:
        n = self.unpack("Q", 8, f"length of {what}")
        self.need(n, what)
        start = self.pos
        self.pos += n
        if n > keep:
            return Skipped(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="replace")

    def count(self, n: int, min_size: int, what: str) -> None:
        """A claimed element count must fit in the bytes that remain, and in the work budget."""
        self.need(n * min_size, f"{what} ({n:,} elements of at least {min_size} bytes)")
        self.elements += n
        if self.elements > MAX_ELEMENTS:
            raise Corrupt(f"{what}: the metadata holds more than {MAX_ELEMENTS:,} array elements in all")

    def tick(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise Corrupt(f"{what}: reading the header took longer than {MAX_SECONDS:.0f} s")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            code, size = _SCALAR[vtype]
            return self.unpack(code, size, what)
        if vtype == STRING:
            return self.string(what, MAX_KEPT_STRING)
        if vtype != ARRAY:
            raise Corrupt(f"{what}: unknown value type {vtype}")
        if depth >= MAX_DEPTH:
            raise Corrupt(f"{what}: arrays nested deeper than {MAX_DEPTH} levels")
        etype = self.unpack("I", 4, f"element type of {what}")
        if etype not in _MIN_SIZE:
            raise Corrupt(f"{what}: unknown array element type {etype}")
        n = self.unpack("Q", 8, f"length of {what}")
        self.count(n, _MIN_SIZE[etype], what)
        if etype in _SCALAR:
            code, size = _SCALAR[etype]
            start = self.pos
            self.pos += n * size
            if n > MAX_KEPT_ARRAY:
                return Skipped(n)
            return list(struct.unpack_from(f"<{n}{code}", self.buf, start))
        if etype == STRING:
            return self._strings(n, what)
        for i in range(n):  # nested arrays: walked, not kept
            if i % 4096 == 0:
                self.tick(what)
            self.value(ARRAY, what, depth + 1)
        return Skipped(n)

    def _strings(self, n: int, what: str) -> Skipped:
        buf, unpack_from, pos, size, valid = self.buf, struct.unpack_from, self.pos, self.size, self.valid
        for i in range(n):
            if i % 65536 == 0:
                self.pos = pos
                self.tick(what)
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"element {i:,} of {what}")
            length = unpack_from("<Q", buf, pos)[0] if pos + 8 <= valid else None
            if length is None:
                raise Incomplete()
            pos += 8 + length
            if pos > size:
                self.pos = pos - length
                self.need(length, f"element {i:,} of {what}")
        self.pos = pos
        self.need(0, what)
        return Skipped(n)


def scan(path: Path, *, valid_bytes: int | None = None) -> Scan:
    """Walk ``path``'s header. Raises Corrupt (with the cause) or Incomplete (past ``valid_bytes``)."""
    size = path.stat().st_size
    valid = size if valid_bytes is None else min(valid_bytes, size)
    if size == 0:
        raise Corrupt("the file is empty")
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return _scan(_Walker(mm, size, valid))


def _scan(w: _Walker) -> Scan:
    magic = bytes(w.buf[:4]) if w.size >= 4 else b""
    w.need(4, "magic")
    w.pos = 4
    if magic != b"GGUF":
        raise Corrupt(f"not a GGUF file (it starts with {magic!r})")
    version = w.unpack("I", 4, "version")
    if version not in (2, 3):
        raise Corrupt(f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
    n_tensors = w.unpack("Q", 8, "tensor count")
    n_kv = w.unpack("Q", 8, "metadata key count")
    w.need(n_kv * 13, f"metadata ({n_kv:,} keys)")  # key length, type, one byte of value at least
    fields: dict[str, Any] = {}
    for i in range(n_kv):
        w.tick("metadata")
        key = w.string(f"name of metadata key {i:,}", MAX_NAME)
        if isinstance(key, Skipped):
            raise Corrupt(f"metadata key {i:,} has a name of {key.count:,} bytes")
        vtype = w.unpack("I", 4, f"type of {key}")
        fields[key] = w.value(vtype, key)
    w.need(n_tensors * 24, f"tensor list ({n_tensors:,} tensors)")  # name length, dims, type, offset
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    sizes = {int(t): bs for t, bs in GGML_QUANT_SIZES.items()}
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        if i % 4096 == 0:
            w.tick("tensor list")
        name = w.string(f"name of tensor {i:,}", MAX_NAME)
        if isinstance(name, Skipped):
            raise Corrupt(f"tensor {i:,} has a name of {name.count:,} bytes")
        if name in seen:
            raise Corrupt(f"tensor {name!r} appears twice")
        seen.add(name)
        n_dims = w.unpack("I", 4, f"dimension count of {name}")
        if n_dims > MAX_DIMS:
            raise Corrupt(f"tensor {name!r} has {n_dims:,} dimensions (llama.cpp allows {MAX_DIMS})")
        w.need(8 * n_dims, f"shape of {name}")
        shape = struct.unpack_from(f"<{n_dims}Q", w.buf, w.pos)
        w.pos += 8 * n_dims
        ttype = w.unpack("I", 4, f"type of {name}")
        if ttype not in sizes:
            raise Corrupt(f"tensor {name!r} has unknown type {ttype}")
        offset = w.unpack("Q", 8, f"data offset of {name}")
        infos.append((name, shape, ttype, offset))
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise Corrupt(f"general.alignment is {alignment!r}, not a power of two")
    start = -(-w.pos // alignment) * alignment
    tensors = []
    for name, shape, ttype, offset in infos:
        n_elements = 1
        for dim in shape:
            n_elements *= dim
        block, type_size = sizes[ttype]
        if shape and shape[0] % block:
            raise Corrupt(f"tensor {name!r} of type {GGMLQuantizationType(ttype).name} has a row of {shape[0]:,}, not a multiple of {block}")
        tensors.append(TensorInfo(name, tuple(shape), ttype, n_elements, n_elements * type_size // block, start + offset))
    return Scan(version, fields, tensors, start)


PREFIX_BYTES = 64 * 1024


def scan_prefix(path: Path, *, max_keys: int = 8, max_bytes: int = PREFIX_BYTES) -> dict[str, Any]:
    """The first ``max_keys`` metadata keys that fit in the file's first ``max_bytes`` (what a GGUF
    writer puts first: ``general.architecture``, ``general.type``, ...), without walking the rest:
    a cheap look at what kind of file this is. Raises Corrupt for a file that is not a GGUF."""
    size = path.stat().st_size
    if size == 0:
        raise Corrupt("the file is empty")
    with path.open("rb") as fh:
        head = fh.read(min(size, max_bytes))
    w = _Walker(head, size, len(head))
    fields: dict[str, Any] = {}
    try:
        if head[:4] != b"GGUF":
            raise Corrupt(f"not a GGUF file (it starts with {head[:4]!r})")
        w.pos = 4
        version = w.unpack("I", 4, "version")
        if version not in (2, 3):
            raise Corrupt(f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
        w.unpack("Q", 8, "tensor count")
        n_kv = w.unpack("Q", 8, "metadata key count")
        for i in range(min(n_kv, max_keys)):
            key = w.string(f"name of metadata key {i:,}", MAX_NAME)
            if isinstance(key, Skipped):
                raise Corrupt(f"metadata key {i:,} has a name of {key.count:,} bytes")
            vtype = w.unpack("I", 4, f"type of {key}")
            fields[key] = w.value(vtype, key)
    except Incomplete:
        pass  # what was read so far is the answer
    return fields
