"""Importance matrices: llama.cpp's file formats, and computing one from a calibration text.

Files: the GGUF format that llama-imatrix writes (``<tensor>.in_sum2`` raw sums of squared
activations per input column and ``<tensor>.counts`` per matrix, keys ``imatrix.datasets``,
``imatrix.chunk_count``, ``imatrix.chunk_size``) and the legacy ``.dat`` format; both load as
llama.cpp's common/imatrix-loader.cpp does, and are normalised for the quantizer as
tools/quantize/quantize.cpp does (sums / count; 1 where a matrix saw no data).

Computing: ``compute_imatrix`` runs ``app.core.quant.children.imatrix`` (llama.cpp's tools/imatrix algorithm
through the context's eval callback) in a child process, with progress per chunk and cancel.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.errors import ModelFileError, QuantizeError
from app.core.jobs import CancelToken, Progress, ProgressFn, no_progress
from app.core.proc.launch import python_command
from app.core.proc.runner import output_file, run_child

DEFAULT_CHUNK = 512  # llama-imatrix's default context


@dataclass
class Imatrix:
    sums: dict[str, np.ndarray]  # name -> float32 (n_mat, ne0): raw sums of squares (legacy: already averaged x ncall)
    counts: dict[str, np.ndarray]  # name -> int64 (n_mat,)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False
    has_metadata: bool = True

    def normalized(self) -> dict[str, np.ndarray]:
        """The per-tensor importance the quantizer takes (quantize.cpp ``load_imatrix``)."""
        out = {}
        for name, sums in self.sums.items():
            counts = self.counts[name]
            if self.legacy:
                ncall = int(counts[0]) if len(counts) else 0
                out[name] = (sums.reshape(-1) / ncall if ncall > 0 else sums.reshape(-1)).astype(np.float32)
                continue
            rows = sums.reshape(len(counts), -1).astype(np.float32)
            c = counts.astype(np.float32)[:, None]
            out[name] = np.where(c > 0, rows / np.where(c > 0, c, 1), np.float32(1)).astype(np.float32).reshape(-1)
        return out


def load_imatrix(path: str | Path) -> Imatrix:
    """Read an imatrix file (GGUF or legacy .dat); ModelFileError names the file and the fault."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelFileError(f"{p}: no such imatrix file")
    with p.open("rb") as fh:
        magic = fh.read(4)
    try:
        return _load_gguf(p) if magic == b"GGUF" else _load_legacy(p)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{p}: not a readable imatrix file ({type(exc).__name__}: {exc})") from None


def _load_gguf(p: Path) -> Imatrix:
    import gguf

    reader = gguf.GGUFReader(p, "r")

    def value(key: str) -> object:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    datasets = value("imatrix.datasets")
    m = Imatrix({}, {}, datasets=list(datasets) if isinstance(datasets, list) else [],
                chunk_count=int(value("imatrix.chunk_count") or 0),  # type: ignore[call-overload]
                chunk_size=int(value("imatrix.chunk_size") or 0))  # type: ignore[call-overload]
    m.has_metadata = all(k in reader.fields for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name.removesuffix(".in_sum2")] = np.array(t.data, dtype=np.float32)
        elif t.name.endswith(".counts"):
            counts[t.name.removesuffix(".counts")] = np.rint(np.array(t.data, dtype=np.float32).reshape(-1)).astype(np.int64)
    if not sums:
        raise ModelFileError(f"{p}: a GGUF file without imatrix data (no .in_sum2 tensors)")
    for name in sums.keys() | counts.keys():
        if name not in sums or name not in counts:
            raise ModelFileError(f"{p}: mismatched sums and counts for {name}")
        m.sums[name] = sums[name].reshape(len(counts[name]), -1)
        m.counts[name] = counts[name]
    if not m.has_metadata:
        raise ModelFileError(f"{p}: missing imatrix metadata (imatrix.datasets, chunk_count, chunk_size)")
    return m


def _load_legacy(p: Path) -> Imatrix:
    data = p.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ModelFileError(f"{p}: not an imatrix file (neither GGUF nor a complete legacy .dat file)")
        out = struct.unpack_from(fmt, data, pos)
        pos += size
        return out

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise ModelFileError(f"{p}: not an imatrix file (neither GGUF nor legacy .dat: {n_entries} entries)")
    m = Imatrix({}, {}, legacy=True, has_metadata=False)
    for _ in range(n_entries):
        (length,) = take("<i")
        if length <= 0 or length > 4096:
            raise ModelFileError(f"{p}: corrupt legacy imatrix (a tensor name of {length} bytes)")
        name = take(f"<{length}s")[0].decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise ModelFileError(f"{p}: corrupt legacy imatrix (no values for {name})")
        m.sums[name] = np.array(take(f"<{nval}f"), dtype=np.float32).reshape(1, nval)
        m.counts[name] = np.array([ncall], dtype=np.int64)
    if pos + 4 <= len(data):
        (m.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if 0 < length <= len(data) - pos:
                m.datasets.append(take(f"<{length}s")[0].decode("utf-8", "replace"))
    return m


def save_imatrix(path: Path, m: Imatrix) -> None:
    """Write ``m`` in llama-imatrix's GGUF format (sorted names, no general.architecture)."""
    import gguf

    writer = gguf.GGUFWriter(path, arch="imatrix")
    writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes none
    writer.add_string(gguf.Keys.General.TYPE, "imatrix")
    writer.add_array("imatrix.datasets", list(m.datasets))
    writer.add_uint32("imatrix.chunk_count", m.chunk_count)
    writer.add_uint32("imatrix.chunk_size", m.chunk_size)
    for name in sorted(m.sums):
        counts = m.counts[name]
        writer.add_tensor(f"{name}.in_sum2", m.sums[name].reshape(len(counts), -1).astype(np.float32))
        writer.add_tensor(f"{name}.counts", counts.astype(np.float32).reshape(len(counts), 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass
class ImatrixResult:
    path: Path
    entries: int
    chunks: int
    tokens: int
    seconds: float


def compute_imatrix(model: str | Path, text: str | Path, out: str | Path, *, chunk: int = DEFAULT_CHUNK,
                    n_threads: int | None = None, n_gpu_layers: int = 0, max_chunks: int = 0,
                    progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> ImatrixResult:
    """Compute an importance matrix of ``model`` over the calibration ``text`` into ``out`` (GGUF)."""
    from app.core.gguf.header import read_header
    from app.core.planner.params import physical_cores

    cancel = cancel or CancelToken()
    # absolute: children run in the data folder
    model, text, out = (Path(p).expanduser().absolute() for p in (model, text, out))
    h = read_header(model)
    if not text.is_file():
        raise ModelFileError(f"{text}: no such calibration text file")
    if chunk < 16:
        raise QuantizeError(f"chunk {chunk}: llama.cpp ignores batches under 16 tokens; use at least 16")
    state: dict[str, int] = {}

    def on_event(ev: dict[str, object]) -> None:
        if ev["ev"] == "chunk":
            progress(Progress("imatrix", float(ev["done"]), float(ev["total"]), "chunk",  # type: ignore[arg-type]
                              f"importance matrix of {model.name}: chunk {ev['done']} of {ev['total']}"))
        elif ev["ev"] == "done":
            state.update(entries=int(ev["entries"]), chunks=int(ev["chunks"]), tokens=int(ev["tokens"]))  # type: ignore[call-overload]

    progress(Progress("imatrix", 0, 0, "chunk", f"loading {model.name}"))
    t0 = time.perf_counter()
    with output_file(out, 8 * h.n_params // max(h.embedding_length or 1, 1) + (64 << 20), "the importance matrix") as tmp:
        cmd = python_command("app.core.quant.children.imatrix", str(model), str(text), str(tmp), str(chunk),
                             str(n_threads or physical_cores()), str(n_gpu_layers), str(max_chunks), text.name)
        result = run_child(cmd, cancel=cancel, what=f"importance matrix of {model.name}", on_event=on_event)
        if result.returncode != 0 or not tmp.is_file() or "entries" not in state:
            raise QuantizeError(f"{model}: computing the importance matrix failed: {result.reason()}", failure=result.failure)
    return ImatrixResult(out, state["entries"], state["chunks"], state["tokens"], time.perf_counter() - t0)
