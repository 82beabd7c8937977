"""Vision projectors (llama.cpp's mtmd "mmproj" files): what they are and which model each one fits.

A projector is a GGUF whose ``general.type`` is ``mmproj`` or whose keys are ``clip.*``
(llama.cpp's converter writes ``general.architecture = clip``, ``clip.projector_type``,
``clip.vision.projection_dim`` ...). It is never a chat model by itself: llama.cpp's mtmd loads it
next to a text model and refuses the pair unless the projector's output width equals the text
model's embedding width ("mismatch between text model (n_embd = 64) and mmproj (n_embd = 96)",
tools/mtmd/mtmd.cpp). Where only names are known (a Hub listing) a projector is a file named
``mmproj-*.gguf`` or ``*mmproj*.gguf``.

Pairing a model with a projector: the same folder (or the same repo folder on the Hub), the same
embedding width where the projector records it, and, for the projector types made for one text
architecture, that architecture. Among those that fit, F16 first (what most repos ship), then
BF16, Q8_0, F32, then the name closest to the model's.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from app.core.errors import ModelFileError
from app.core.gguf.header import quant_label
from app.core.gguf.scan import Corrupt, Skipped, scan, scan_prefix

log = logging.getLogger(__name__)

MMPROJ = "mmproj"
# clip.projector_type -> the text architectures (general.architecture) that projector type feeds;
# types not listed (llava's mlp, ldp, internvl ...) are made for several and are not checked
PROJECTOR_ARCHS: dict[str, frozenset[str]] = {
    "gemma3": frozenset({"gemma3"}),
    "gemma3nv": frozenset({"gemma3n"}), "gemma3na": frozenset({"gemma3n"}),
    "gemma4v": frozenset({"gemma4"}), "gemma4a": frozenset({"gemma4"}),
    "qwen2vl_merger": frozenset({"qwen2vl"}), "qwen2.5vl_merger": frozenset({"qwen2vl"}),
    "qwen3vl_merger": frozenset({"qwen3vl", "qwen3vlmoe"}),
    "llama4": frozenset({"llama4"}),
}
QUANT_PREFERENCE = ("F16", "BF16", "Q8_0", "F32")


def is_projector_name(name: str) -> bool:
    """By file name alone (Hub listings): ``mmproj-*.gguf`` or ``*mmproj*.gguf``."""
    base = PurePosixPath(name.replace("\\", "/")).name.lower()
    return base.endswith(".gguf") and MMPROJ in base


def is_projector_fields(fields: dict[str, Any]) -> bool:
    """By header: ``general.type == "mmproj"``, ``general.architecture == "clip"`` or any ``clip.*`` key."""
    return (fields.get("general.type") == MMPROJ or fields.get("general.architecture") == "clip"
            or any(key.startswith("clip.") for key in fields))


def is_projector_file(path: str | Path) -> bool:
    """A local GGUF is a projector (its first keys, a bounded read) or, unreadable, named like one."""
    p = Path(path)
    try:
        st = p.stat()
        return _is_projector_cached(p.resolve(), st.st_size, st.st_mtime_ns)
    except (OSError, Corrupt):
        return is_projector_name(p.name)


@functools.lru_cache(maxsize=1024)
def _is_projector_cached(p: Path, _size: int, _mtime_ns: int) -> bool:
    return is_projector_fields(scan_prefix(p)) or is_projector_name(p.name)


@dataclass(frozen=True)
class Projector:
    path: Path
    size_bytes: int
    projector_type: str | None  # clip.projector_type (gemma3, idefics3, qwen2.5vl_merger ...)
    projection_dim: int | None  # clip.vision.projection_dim: the text model's embedding width it feeds
    vision: bool
    audio: bool
    name: str | None = None
    # the vision encoder's shape, for its compute buffer (planner.memory.projector_bytes)
    image_size: int | None = None  # clip.vision.image_size: pixels per side the encoder takes
    patch_size: int | None = None  # clip.vision.patch_size
    width: int | None = None  # clip.vision.embedding_length
    heads: int | None = None  # clip.vision.attention.head_count

    @property
    def architectures(self) -> frozenset[str] | None:
        """The text architectures this projector type is made for; None where it is not one."""
        return PROJECTOR_ARCHS.get(self.projector_type or "")


def read_projector(path: str | Path) -> Projector | None:
    """The projector facts of a local GGUF (bounded read), None when it is not a projector.
    Raises ModelFileError naming the file for a damaged one."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise ModelFileError(f"{p}: no such file") from None
    return _read_projector_cached(p.resolve(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read_projector_cached(p: Path, size: int, _mtime_ns: int) -> Projector | None:
    try:
        if not is_projector_fields(scan_prefix(p)) and not is_projector_name(p.name):
            return None
        fields = scan(p).fields
    except Corrupt as exc:
        raise ModelFileError(f"{p}: damaged or hostile GGUF header: {exc}") from None
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read the GGUF header ({exc})") from None
    if not is_projector_fields(fields):
        return None  # named mmproj but a text model inside

    def get(key: str) -> Any:
        value = fields.get(key)
        return None if isinstance(value, Skipped) else value

    dim = get("clip.vision.projection_dim")
    if not isinstance(dim, int) or isinstance(dim, bool):
        dim = get("clip.audio.projection_dim")
    ptype = get("clip.projector_type") or get("clip.vision.projector_type")
    name = get("general.name")
    return Projector(path=p, size_bytes=size, projector_type=ptype if isinstance(ptype, str) else None,
                     projection_dim=dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None,
                     vision=get("clip.has_vision_encoder") is True, audio=get("clip.has_audio_encoder") is True,
                     name=name if isinstance(name, str) else None,
                     image_size=_positive(get("clip.vision.image_size")), patch_size=_positive(get("clip.vision.patch_size")),
                     width=_positive(get("clip.vision.embedding_length")),
                     heads=_positive(get("clip.vision.attention.head_count")))


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 20 else None


def projectors_in(folder: Path) -> list[Projector]:
    """The vision projectors among the GGUF files of ``folder`` (a damaged one is logged and left out)."""
    out = []
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".gguf"))
    except OSError:
        return []
    for name in names:
        path = folder / name
        if not is_projector_file(path):
            continue
        try:
            proj = read_projector(path)
        except ModelFileError as exc:
            log.warning("skipping projector %s: %s", path, exc)
            continue
        if proj is not None:
            out.append(proj)
    return out


def for_model(model: Path, *, architecture: str | None, n_embd: int | None) -> Pairing:
    """The projector beside ``model`` (its folder) that fits it, with the refusals."""
    return pair(model, architecture=architecture, n_embd=n_embd, candidates=projectors_in(model.parent))


@dataclass(frozen=True)
class Pairing:
    """The projector chosen for a model, and why each other candidate was refused."""

    projector: Projector | None
    refused: tuple[tuple[Path, str], ...] = field(default=())

    @property
    def note(self) -> str | None:
        """Why the model has no projector although its folder holds some; None otherwise."""
        if self.projector is not None or not self.refused:
            return None
        return "; ".join(f"{path.name}: {why}" for path, why in self.refused)


def mismatch(projector: Projector, *, architecture: str | None, n_embd: int | None) -> str | None:
    """Why ``projector`` cannot serve a text model of this architecture and embedding width; None if it can."""
    if projector.projection_dim is not None and n_embd is not None and projector.projection_dim != n_embd:
        return (f"made for a text model {projector.projection_dim} wide, this model is {n_embd} wide "
                "(llama.cpp refuses the pair)")
    archs = projector.architectures
    if archs is not None and architecture and architecture not in archs:
        return f"a {projector.projector_type} projector, made for {'/'.join(sorted(archs))} models, not {architecture}"
    return None


def pair(model: Path, *, architecture: str | None, n_embd: int | None, candidates: list[Projector]) -> Pairing:
    """Choose ``model``'s projector among ``candidates`` (those in another folder are ignored)."""
    fits: list[Projector] = []
    refused: list[tuple[Path, str]] = []
    for proj in candidates:
        if proj.path.parent != model.parent:
            continue
        why = mismatch(proj, architecture=architecture, n_embd=n_embd)
        if why:
            refused.append((proj.path, why))
        else:
            fits.append(proj)
    chosen = min(fits, key=lambda p: _rank(model.name, p.path.name)) if fits else None
    return Pairing(chosen, tuple(refused))


def pair_by_name(model: str, projectors: list[str]) -> str | None:
    """A Hub listing: the projector file for ``model`` among repo paths, same folder, by name."""
    folder = PurePosixPath(model).parent
    same = [p for p in projectors if PurePosixPath(p).parent == folder]
    return min(same, key=lambda p: _rank(PurePosixPath(model).name, PurePosixPath(p).name)) if same else None


def _rank(model_name: str, projector_name: str) -> tuple[int, int, str]:
    quant = quant_label(projector_name) or ""
    pref = QUANT_PREFERENCE.index(quant) if quant in QUANT_PREFERENCE else len(QUANT_PREFERENCE)
    stem = projector_name.lower().replace("mmproj", "").strip("-_.")
    common = 0
    for a, b in zip(model_name.lower(), stem):
        if a != b:
            break
        common += 1
    return pref, -common, projector_name
