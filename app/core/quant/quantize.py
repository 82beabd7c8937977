"""GGUF -> quantized GGUF with llama.cpp's quantizer (``llama_model_quantize``) in a child process.

Progress per tensor comes from llama.cpp's log; cancel terminates the child. The output is written
under a temporary name next to the destination and renamed only on success; the source is only
read. Sources: F32, F16 and BF16 files; Q8_0 can be requantized with a warning (quality is lost a
second time); other quantized files only with ``allow_requantize``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.core.errors import QuantDeskError, QuantizeError
from app.core.gguf.header import read_header
from app.core.gguf.quant_types import UNQUANTIZED, QuantType, by_ftype, quant_type
from app.core.jobs import CancelToken, Progress, ProgressFn, no_progress
from app.core.proc.launch import python_command
from app.core.proc.runner import output_file, run_child

REQUANT_WARNING = "{name} is already quantized ({quant}); quantizing it again loses quality compared to quantizing from F16/BF16"
QUANT_SUFFIX = re.compile(r"[-.](F32|F16|BF16|Q8_0|Q\d_K(_[SML])?|Q\d_[01]|IQ\d_\w+|TQ\d_0)$", re.IGNORECASE)


def default_calibration() -> Path:
    from app.core.paths import resources_dir

    return resources_dir() / "calibration.txt"


def output_name(source: Path, qtype: str) -> str:
    """'SmolLM2-135M-F16.gguf' + Q4_K_M -> 'SmolLM2-135M-Q4_K_M.gguf'."""
    stem = QUANT_SUFFIX.sub("", source.stem)
    return f"{stem}-{quant_type(qtype).name}.gguf"


@dataclass
class QuantizeResult:
    path: Path
    qtype: QuantType
    size_bytes: int
    seconds: float
    imatrix: Path | None
    warnings: list[str] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        return read_header(self.path).bits_per_weight

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "type": self.qtype.name, "size_bytes": self.size_bytes,
                "bits_per_weight": round(self.bits_per_weight, 3), "seconds": round(self.seconds, 2),
                "imatrix": str(self.imatrix) if self.imatrix else None, "warnings": self.warnings}


def check_source(src: Path, *, allow_requantize: bool) -> list[str]:
    """Warnings for a quantization source; QuantizeError when it is quantized and not allowed."""
    h = read_header(src)
    if h.file_type in UNQUANTIZED or h.file_type is None:
        return []
    t = by_ftype(h.file_type)
    message = REQUANT_WARNING.format(name=src.name, quant=t.name if t else h.file_type_name)
    if h.file_type == 7 or allow_requantize:  # Q8_0: allowed with the warning
        return [message]
    raise QuantizeError(f"{message}; pass --allow-requantize to do it anyway, or start from the F16/BF16 model")


def quantize(src: str | Path, dst: str | Path, qtype: str, *, imatrix: str | Path | None = None,
             allow_requantize: bool = False, nthread: int | None = None,
             progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> QuantizeResult:
    """Quantize ``src`` to ``dst`` as ``qtype`` (a llama.cpp type name such as Q4_K_M)."""
    from app.core.planner.params import physical_cores
    from app.core.quant.imatrix import load_imatrix

    cancel = cancel or CancelToken()
    src, dst = Path(src).expanduser().absolute(), Path(dst).expanduser().absolute()  # children run in the data folder
    t = quant_type(qtype)
    h = read_header(src)
    warnings = check_source(src, allow_requantize=allow_requantize)
    if dst.suffix != ".gguf":
        raise QuantDeskError(f"{dst}: the output name must end in .gguf")
    if dst.exists() and dst.resolve() == src.resolve():
        raise QuantDeskError(f"{dst}: the output would overwrite the source; the source is never modified")
    imatrix_path = Path(imatrix).expanduser().absolute() if imatrix else None
    if imatrix_path is not None:
        load_imatrix(imatrix_path)  # a bad file fails here, named, before the child starts
    elif t.imatrix == "required":
        raise QuantizeError(f"{t.name} needs an importance matrix (llama.cpp refuses without one): "
                            "give --imatrix FILE or --calibration TEXT")
    def on_event(ev: dict[str, object]) -> None:
        if ev["ev"] == "tensor":
            progress(Progress("quantize", float(ev["done"]), float(ev["total"]), "tensor",  # type: ignore[arg-type]
                              f"{t.name}: {ev['name']}"))

    t0 = time.perf_counter()
    what = f"quantizing {src.name} to {t.name}"
    with output_file(dst, t.estimate_bytes(h), what) as tmp:
        progress(Progress("quantize", 0, 0, "tensor", f"{t.name}: loading {src.name}"))
        args = {"src": str(src), "dst": str(tmp), "ftype": t.ftype, "nthread": nthread or physical_cores(),
                "allow_requantize": bool(warnings), "imatrix": str(imatrix_path) if imatrix_path else None,
                "imatrix_label": imatrix_path.name if imatrix_path else None}
        result = run_child(python_command("app.core.quant.children.quantize", json.dumps(args)), cancel=cancel,
                           what=what, on_event=on_event)
        if result.returncode != 0 or not tmp.is_file():
            reason = result.reason()
            if "requires an imatrix" in " ".join(result.tail):
                reason = f"{t.name} needs an importance matrix for some tensors: give --imatrix FILE or --calibration TEXT"
            raise QuantizeError(f"{src}: quantizing to {t.name} failed: {reason}", failure=result.failure)
    return QuantizeResult(dst, t, dst.stat().st_size, time.perf_counter() - t0, imatrix_path, warnings)
