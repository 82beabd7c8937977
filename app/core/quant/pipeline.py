"""The one-click quantize flow, without Qt: source -> (convert) -> (imatrix) -> quantize each type ->
quality -> library. The wizard and the CLI drive it; every stage reports ``Progress`` and checks
the ``CancelToken``.

Also: which quant levels to propose for a model on this machine (the planner's verdict for each
type's estimated size: the best quality that fits fully at the wanted context is ticked), and the
disk-space preflight for the whole batch (intermediate F16 + imatrix + all outputs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import Cancelled, ModelFileError, QuantDeskError
from app.core.gguf.header import GGUFHeader, read_header
from app.core.gguf.quant_types import LADDER, QUANT_TYPES, UNQUANTIZED, QuantType, by_ftype, quant_type
from app.core.jobs import CancelToken, Progress, ProgressFn, no_progress
from app.core.planner.memory import human_bytes
from app.core.proc.runner import ensure_free_space

if TYPE_CHECKING:
    from app.core.hub.downloads import DownloadManager

log = logging.getLogger(__name__)


@dataclass
class LevelProposal:
    qtype: QuantType
    size_bytes: int
    verdict: str
    fits: bool
    full: bool
    proposed: bool = False


def scaled_header(h: GGUFHeader, t: QuantType) -> GGUFHeader:
    """``h`` as it would be after quantizing to ``t`` (sizes scaled by bits per weight)."""
    ratio = t.bits_per_weight / max(h.bits_per_weight, 1e-9)
    return replace(h, size_bytes=t.estimate_bytes(h), tensor_bytes=int(h.tensor_bytes * ratio),
                   layer_bytes=tuple(int(b * ratio) for b in h.layer_bytes), embd_bytes=int(h.embd_bytes * ratio),
                   output_bytes=int(h.output_bytes * ratio), file_type=t.ftype)


def source_bits(h: GGUFHeader) -> float | None:
    """The bits per weight of an already-quantized source (its type's nominal figure, else the
    measured one), or None for an unquantized (F32/F16/BF16) or unknown one."""
    if h.file_type is None or h.file_type in UNQUANTIZED:
        return None
    t = by_ftype(h.file_type)
    return t.bits_per_weight if t is not None and t.bits_per_weight else (h.bits_per_weight or None)


def below_source(h: GGUFHeader, names: tuple[str, ...] = LADDER) -> tuple[str, ...]:
    """The levels worth making from ``h``: for a quantized source only those below its precision
    (bits per weight), since requantizing upwards adds size and no quality."""
    bits = source_bits(h)
    if bits is None:
        return names
    return tuple(n for n in names if quant_type(n).bits_per_weight < bits - 1e-6)


def propose_levels(h: GGUFHeader, *, ctx: int | None = None, hw: object | None = None,
                   gpu_mem: int | None = None, ram: int | None = None, names: tuple[str, ...] = LADDER) -> list[LevelProposal]:
    """The planner's verdict for each quant level; the best quality that fits fully is proposed
    (else the best partial fit), as the Hub's file list recommends a download."""
    from app.core.hardware import detect
    from app.core.planner.memory import plan

    hw = hw or detect()
    out = []
    for name in below_source(h, names):
        t = quant_type(name)
        sh = scaled_header(h, t)
        p = plan(sh, hw, ctx=ctx, gpu_mem=gpu_mem, ram=ram, gpu_offload=True if gpu_mem else None)  # type: ignore[arg-type]
        n_layer = h.block_count or 0
        full = p.fits and (p.params.n_gpu_layers > n_layer or (p.verdict == "CPU only" and not (getattr(hw, "gpus", None) or gpu_mem)))
        out.append(LevelProposal(t, sh.size_bytes, p.verdict, p.fits, full))
    best = next((lp for lp in out if lp.full), None) or next((lp for lp in out if lp.fits), None)
    if best is not None:
        best.proposed = True
    return out


def propose_levels_by_size(n_params: int, *, hw: object | None = None, names: tuple[str, ...] = LADDER) -> list[LevelProposal]:
    """For a Hugging Face folder (no GGUF header yet): each level's weight size against this
    machine's budget (GPU, else RAM), with room for a 4096-token KV cache and compute buffers."""
    from app.core.hardware import detect
    from app.core.planner.memory import budget

    hw = hw or detect()
    room = budget(hw)  # type: ignore[arg-type]
    overhead = 0.15
    out = []
    for name in names:
        t = quant_type(name)
        size = int(n_params * t.bits_per_weight / 8)
        need = int(size * (1 + overhead)) + (256 << 20)
        if room.gpu and need <= room.gpu:
            verdict, fits, full = "full GPU (estimate)", True, True
        elif need <= room.gpu + room.cpu:
            gpu_part = "part on the GPU" if room.gpu else "CPU only"
            verdict, fits, full = f"{gpu_part} (estimate)", True, not room.gpu
        else:
            verdict, fits, full = "does not fit (estimate)", False, False
        out.append(LevelProposal(t, size, verdict, fits, full))
    best = next((lp for lp in out if lp.full), None) or next((lp for lp in out if lp.fits), None)
    if best is not None:
        best.proposed = True
    return out


@dataclass
class Source:
    """What the user picked: a Hugging Face folder (converted first) or a GGUF file."""

    path: Path
    source_repo: str | None = None
    revision: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.path.is_file() and self.path.suffix == ".gguf"


def fetch_repo(downloads: "DownloadManager", repo: str, revision: str | None, *, endpoint: str | None = None,
               progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> Source:
    """Every file the converter reads from Hub repo ``repo``, through the download manager (resume,
    sha256 check, files under the models folder only); then the folder as a conversion source.
    Cancelling pauses the downloads (they resume next time) and raises ``Cancelled``."""
    from app.core.hub.api import local_path, repo_details

    details = repo_details(repo, revision=revision, endpoint=endpoint)
    names = details.conversion_files()
    ids = [downloads.start(repo, name, revision=details.sha).id for name in names]
    for i, download_id in enumerate(ids):
        while True:
            d = downloads.wait(download_id, 0.2)
            progress(Progress("download", i + d.fraction, len(ids), "file",
                              f"{d.filename}: {human_bytes(d.done)} of {human_bytes(d.size)}"))
            if d.state in ("done", "failed", "cancelled", "paused"):
                break
            if cancel is not None and cancel.cancelled:
                downloads.pause(download_id)
        if d.state != "done":
            if cancel is not None:
                cancel.check("download")
            raise Cancelled(f"download of {d.filename} {d.state}: {d.error or ''}".strip())
    folder = local_path(downloads.models_dir, repo, names[0]).parent
    return Source(folder, source_repo=repo, revision=details.sha)


@dataclass
class PipelineOptions:
    types: list[str]
    out_dir: Path
    baseline_type: str = "f16"  # conversion output for a folder source
    imatrix: Path | None = None  # an existing file; else computed when a type wants one
    calibration: Path | None = None
    evaluate: bool = True
    eval_ctx: int = 256
    eval_max_chunks: int = 0
    imatrix_chunk: int = 512
    allow_requantize: bool = False
    allow_pickle: bool = False  # pickle .bin weights can run code when loaded: explicit opt-in only
    register: bool = True


@dataclass
class OutputRow:
    path: Path
    quant: str
    size_bytes: int
    bits_per_weight: float
    baseline: bool = False
    verdict: str = ""
    perplexity: float | None = None
    kl_divergence: float | None = None
    top1_agreement: float | None = None
    eval_seconds: float | None = None

    def to_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class PipelineResult:
    rows: list[OutputRow]
    baseline: Path
    imatrix: Path | None
    warnings: list[str] = field(default_factory=list)


def needed_bytes(source: Source, opts: PipelineOptions) -> int:
    """Disk needed in ``opts.out_dir``: the F16 intermediate (for a folder) plus every output."""
    from app.core.quant.convert import inspect_folder

    if source.is_gguf:
        h = read_header(source.path)
        intermediate = 0
    else:
        hf = inspect_folder(source.path, allow_pickle=opts.allow_pickle)
        intermediate = hf.output_bytes(opts.baseline_type)
        h = None
    outputs = 0
    for name in opts.types:
        t = quant_type(name)
        if h is not None:
            outputs += t.estimate_bytes(h)
        else:
            outputs += int(hf.n_params * t.bits_per_weight / 8) + (16 << 20)
    return intermediate + outputs + (64 << 20)


def run_pipeline(source: Source, opts: PipelineOptions, *, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None) -> PipelineResult:
    from app.core.quant.convert import convert
    from app.core.quant.evaluate import evaluate
    from app.core.quant.imatrix import compute_imatrix
    from app.core.quant.quantize import check_source, default_calibration, output_name, quantize

    cancel = cancel or CancelToken()
    if not opts.types:
        raise QuantDeskError("no quantization type chosen")
    types = [quant_type(n) for n in opts.types]
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    ensure_free_space(opts.out_dir, needed_bytes(source, opts), f"quantizing {source.path.name} to {len(types)} type(s)")
    warnings: list[str] = []
    if source.is_gguf:
        baseline = source.path
        warnings += check_source(baseline, allow_requantize=opts.allow_requantize)
    elif source.path.is_dir():
        name = f"{source.path.name}-{opts.baseline_type.upper()}.gguf"
        baseline = opts.out_dir / name
        convert(source.path, baseline, outtype=opts.baseline_type, allow_pickle=opts.allow_pickle, progress=progress,
                cancel=cancel)
        record_output(baseline, origin="converted", source=source, quant=opts.baseline_type.upper(), enabled=opts.register)
    else:
        raise ModelFileError(f"{source.path}: neither a GGUF file nor a Hugging Face model folder")
    imatrix = opts.imatrix
    if imatrix is None and any(t.imatrix for t in types):
        imatrix = opts.out_dir / f"{baseline.stem}.imatrix.gguf"
        compute_imatrix(baseline, opts.calibration or default_calibration(), imatrix, chunk=opts.imatrix_chunk,
                        progress=progress, cancel=cancel)
    rows = [OutputRow(baseline, read_header(baseline).file_type_name, baseline.stat().st_size,
                      round(read_header(baseline).bits_per_weight, 3), baseline=True)]
    for t in types:
        cancel.check("quantize")
        out = opts.out_dir / output_name(baseline, t.name)
        r = quantize(baseline, out, t.name, imatrix=imatrix if t.imatrix else None,
                     allow_requantize=opts.allow_requantize, progress=progress, cancel=cancel)
        record_output(out, origin="quantized", source=source, quant=t.name, imatrix=str(imatrix) if t.imatrix else None,
                      parent=str(baseline), enabled=opts.register)
        rows.append(OutputRow(out, t.name, r.size_bytes, round(read_header(out).bits_per_weight, 3)))
    if opts.evaluate:
        quality = evaluate([r.path for r in rows[1:]], baseline=baseline, n_ctx=opts.eval_ctx,
                           max_chunks=opts.eval_max_chunks, progress=progress, cancel=cancel)
        by_path = {Path(q.path): q for q in quality}
        for row in rows:
            q = by_path.get(row.path)
            if q is not None:
                row.perplexity, row.kl_divergence, row.top1_agreement, row.eval_seconds = (
                    q.perplexity, q.kl_divergence, q.top1_agreement, q.seconds)
    _fit_verdicts(rows)
    progress(Progress("done", 1, 1, "", f"{len(types)} file(s) written to {opts.out_dir}"))
    return PipelineResult(rows, baseline, imatrix, warnings)


def _fit_verdicts(rows: list[OutputRow]) -> None:
    from app.core.hardware import detect
    from app.core.planner.memory import plan

    hw = detect()
    for row in rows:
        try:
            row.verdict = plan(read_header(row.path), hw).verdict
        except QuantDeskError as exc:
            row.verdict = f"unknown ({exc})"


def record_output(path: Path, *, origin: str, source: Source | None = None, quant: str | None = None,
                  imatrix: str | None = None, parent: str | None = None, enabled: bool = True) -> None:
    """Register a converted or quantized file in the library with where it came from."""
    if not enabled:
        return
    from app.core.library.catalog import Library

    lib = Library()
    try:
        lib.register(path, origin=origin, source_repo=source.source_repo if source else None,
                     revision=source.revision if source else None, quant=quant, imatrix=imatrix, parent=parent)
    finally:
        lib.close()


__all__ = ["QUANT_TYPES", "LevelProposal", "OutputRow", "PipelineOptions", "PipelineResult", "Source",
           "below_source", "propose_levels", "record_output", "source_bits", "run_pipeline"]


def inspect_source(text: str, *, endpoint: str | None = None) -> tuple[str, Any]:
    """What a quantize source is, from what the user typed: ``("gguf", GGUFHeader)`` for a file,
    ``("folder", HFSource)`` for a Hugging Face folder, ``("hub", RepoDetails)`` for ``owner/name``
    on the Hub. Raises ModelFileError (no such source) or the reader's own error."""
    from app.core.gguf.header import read_header
    from app.core.quant.convert import inspect_folder

    path = Path(text).expanduser()
    if path.is_file():
        return "gguf", read_header(path)
    if path.is_dir():
        return "folder", inspect_folder(path, allow_pickle=True)
    if text.count("/") == 1 and not text.startswith(("/", ".", "~")):
        from app.core.hub.api import repo_details

        return "hub", repo_details(text, endpoint=endpoint)
    raise ModelFileError(f"{text}: no such file or folder (a Hub repo is written owner/name)")
