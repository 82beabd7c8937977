"""Hugging Face model folder -> GGUF with llama.cpp's own converter, in a child process.

The converter comes from the llama-cpp-python sdist of the installed engine version
(``packaging/fetch_converter.py``); a converter from another llama.cpp version is refused. Before
the child starts, the folder is checked so that common faults get a message naming the file:
missing or unreadable config.json, an architecture the converter does not know, no tokenizer, no
weights, pickle weights without the opt-in, a corrupt or truncated safetensors file, too little
disk space. The output is written under a temporary name next to the destination and renamed
only when the converter succeeded; cancel or failure leaves nothing. The source is only read.
"""

from __future__ import annotations

import ast
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from app.core.errors import ConversionError, ConverterMissing, ModelFileError, QuantDeskError
from app.core.jobs import CancelToken, Progress, ProgressFn, no_progress
from app.core.proc.launch import python_command, require_modules
from app.core.proc.runner import ChildResult, output_file, run_child

ENV_CONVERTER_DIR = "QUANTDESK_CONVERTER_DIR"
STAMP = "quantdesk-converter.json"
OUTTYPES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}  # bytes per weight
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "qwen.tiktoken")
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E8M0": 1}
PICKLE_GLOBS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")
PICKLE_WARNING = ("pickle .bin weights can run arbitrary code when they are loaded, so a malicious "
                  "model file could take over this computer")


def engine_version() -> str:
    return metadata.version("llama_cpp_python")


def converter_dir() -> Path:
    """The converter folder matching the installed engine; raises ConverterMissing otherwise."""
    version = engine_version()
    env = os.environ.get(ENV_CONVERTER_DIR)
    base = Path(env).expanduser() if env else Path(sys.prefix) / "share" / "quantdesk" / "llama.cpp-converter" / version
    stamp = base / STAMP
    if not (base / "convert_hf_to_gguf.py").is_file() or not stamp.is_file():
        raise ConverterMissing(f"{base}: llama.cpp's converter is not installed there; run 'make install' "
                               f"(or '{sys.executable} packaging/fetch_converter.py')")
    try:
        found = json.loads(stamp.read_text()).get("llama_cpp_python")
    except (OSError, json.JSONDecodeError):
        found = None
    if found != version:
        raise ConverterMissing(f"{base}: the converter is from llama-cpp-python {found}, but the engine is {version}; "
                               "a converter from another llama.cpp version can write files the engine loads wrongly. "
                               "Run 'make install' to fetch the matching one")
    return base


@dataclass
class HFSource:
    """What the pre-flight check learned about a Hugging Face model folder."""

    path: Path
    architecture: str
    weight_files: list[Path]
    weight_bytes: int
    n_tensors: int
    n_params: int
    largest_tensor_bytes: int
    pickle: bool = False
    warnings: list[str] = field(default_factory=list)

    def output_bytes(self, outtype: str) -> int:
        return int(self.n_params * OUTTYPES[outtype]) + (16 << 20)  # + metadata and vocabulary


def supported_architectures(conv_dir: Path) -> set[str] | None:
    """The converter's architecture names (its TEXT_MODEL_MAP), read without importing it."""
    try:
        tree = ast.parse((conv_dir / "conversion" / "__init__.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(value, ast.Dict):
            return {k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return None


def inspect_folder(src: str | Path, *, allow_pickle: bool = False, conv_dir: Path | None = None) -> HFSource:
    """Check a Hugging Face model folder before converting; raises ModelFileError naming the cause."""
    src = Path(src).expanduser().absolute()  # children run in the data folder
    if not src.exists():
        raise ModelFileError(f"{src}: no such folder")
    if not src.is_dir():
        raise ModelFileError(f"{src}: not a folder; give the folder of a Hugging Face model (config.json, *.safetensors, tokenizer)")
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ModelFileError(f"{config_path}: missing; a Hugging Face model folder needs its config.json")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{config_path}: not a model configuration (expected a JSON object)")
    arches = config.get("architectures") or (config.get("text_config") or {}).get("architectures")
    if not isinstance(arches, list) or not arches or not isinstance(arches[0], str):
        raise ModelFileError(f"{config_path}: has no 'architectures' entry, so the model type is unknown")
    arch = arches[0]
    known = supported_architectures(conv_dir) if conv_dir else None
    text_arch = (config.get("text_config") or {}).get("architectures")
    if known is not None and arch not in known and not (isinstance(text_arch, list) and text_arch and text_arch[0] in known):
        raise ModelFileError(f"{config_path}: architecture {arch!r} is not supported by llama.cpp's converter "
                             f"(llama-cpp-python {engine_version()}): Model {arch} is not supported")
    if not any((src / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFileError(f"{src}: no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                             "the converter needs the model's tokenizer files")
    weights = sorted(p for p in src.glob("*.safetensors") if p.name.startswith(("model", "consolidated")))
    # every pickle in the folder counts, not only when there are no safetensors: the converter reads
    # pytorch_model*.bin whenever it finds no model*.safetensors (a 'consolidated' file, a missing index)
    bins = sorted(p for pattern in PICKLE_GLOBS for p in src.glob(pattern) if p.is_file())
    if not weights and not bins:
        raise ModelFileError(f"{src}: no model weights (no model*.safetensors or pytorch_model*.bin files)")
    if bins and not allow_pickle:
        beside = f", beside the safetensors weights ({weights[0].name})" if weights else ""
        raise ModelFileError(f"{src}: the folder holds pickle files ({', '.join(b.name for b in bins[:3])}){beside}; "
                             f"{PICKLE_WARNING}. Remove them, or convert only if you trust the source, with --allow-pickle")
    from_pickle = not weights
    if from_pickle:
        weights = bins
    pickle = bool(bins)  # the wizard shows its opt-in box for this
    n_tensors = n_params = largest = 0
    if not from_pickle:
        for path in weights:
            for shape, nbytes in _safetensors_tensors(path):
                n_tensors += 1
                n_params += _prod(shape)
                largest = max(largest, nbytes)
    else:
        n_params = sum(p.stat().st_size for p in weights) // 2  # assume 16-bit weights
    total = sum(p.stat().st_size for p in weights)
    warnings = [f"pickle weights: {PICKLE_WARNING}"] if bins else []
    return HFSource(src, arch, weights, total, n_tensors, n_params, largest, pickle, warnings)


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _safetensors_tensors(path: Path) -> list[tuple[list[int], int]]:
    """(shape, bytes) of every tensor of a safetensors file, after checking that the header is sane
    and every tensor's data lies inside the file."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path}: corrupt safetensors file: only {size} bytes, too short for a header")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > min(size - 8, 100 << 20):
            raise ModelFileError(f"{path}: corrupt safetensors file: its header claims {n:,} bytes in a file of {size:,}")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: corrupt safetensors file: unreadable header ({exc})") from None
    data_size = size - 8 - n
    out = []
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, stop) = info["dtype"], info["shape"], info["data_offsets"]
            nbytes = _prod(shape) * SAFETENSORS_DTYPES[dtype]
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{path}: corrupt safetensors file: bad entry for tensor {name!r}") from None
        if not (0 <= begin <= stop) or stop - begin != nbytes:
            raise ModelFileError(f"{path}: corrupt safetensors file: tensor {name!r} has inconsistent offsets")
        end = max(end, stop)
        out.append((shape, nbytes))
    if end > data_size:
        raise ModelFileError(f"{path}: truncated safetensors file: its tensors need {end + 8 + n:,} bytes "
                             f"but the file has {size:,} (an incomplete download?)")
    return out


@dataclass
class ConvertResult:
    path: Path
    outtype: str
    source: HFSource
    seconds: float
    peak_rss_bytes: int
    size_bytes: int


def convert(src: str | Path, out: str | Path, *, outtype: str = "f16", allow_pickle: bool = False,
            progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> ConvertResult:
    """Convert the Hugging Face folder ``src`` to the GGUF file ``out`` (``outtype``: f16, bf16,
    q8_0 or f32). Raises ModelFileError, ConversionError, DiskSpaceError or Cancelled."""
    import time

    cancel = cancel or CancelToken()
    if outtype not in OUTTYPES:
        raise QuantDeskError(f"--outtype {outtype}: use one of {', '.join(OUTTYPES)}")
    out = Path(out).expanduser().absolute()
    if out.suffix != ".gguf":
        raise QuantDeskError(f"{out}: the output name must end in .gguf")
    conv_dir = converter_dir()
    require_modules("Converting a Hugging Face model to GGUF", "torch", "transformers")
    source = inspect_folder(src, allow_pickle=allow_pickle, conv_dir=conv_dir)
    if out.resolve().is_relative_to(source.path.resolve()):
        raise QuantDeskError(f"{out}: write the output outside the source folder {source.path}; the source is never modified")
    state = {"prepared": 0, "rss": 0}
    total = max(source.n_tensors, 1)
    progress(Progress("convert", 0, total, "tensor", f"loading {source.path.name} ({source.architecture})"))

    def on_line(line: str) -> None:
        if "-->" in line and line.startswith("INFO:hf-to-gguf:"):
            state["prepared"] += 1
            name = line.removeprefix("INFO:hf-to-gguf:").split(",", 1)[0]
            progress(Progress("convert", min(state["prepared"], total), total, "tensor", f"converting {name}"))

    def on_event(event: dict[str, object]) -> None:
        if event["ev"] == "write":
            progress(Progress("convert", float(event["done"]), float(event["total"]), "B", "writing GGUF"))  # type: ignore[arg-type]
        elif event["ev"] == "peak_rss":
            state["rss"] = int(event["bytes"])  # type: ignore[call-overload]

    t0 = time.perf_counter()
    with output_file(out, source.output_bytes(outtype), f"converting {source.path.name} to {outtype.upper()}") as tmp:
        cmd = python_command("app.core.quant.children.convert", str(conv_dir), str(source.path), "--outtype", outtype,
                             "--outfile", str(tmp))
        result: ChildResult = run_child(cmd, cancel=cancel, what=f"converting {source.path.name}", on_line=on_line,
                                        on_event=on_event)
        if result.returncode != 0 or not tmp.is_file():
            raise ConversionError(f"{source.path}: llama.cpp's converter failed: {result.reason()}", failure=result.failure)
    return ConvertResult(out, outtype, source, time.perf_counter() - t0, state["rss"], out.stat().st_size)
