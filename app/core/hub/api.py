"""The Hugging Face Hub through huggingface_hub: search, a model's page (card, files grouped by
quant, what kind of repo it is), and the safe local path for a Hub file name.

Endpoint, token, proxies and offline mode are huggingface_hub's own (HF_ENDPOINT, HF_TOKEN /
``hf auth login``, HTTP(S)_PROXY, HF_HUB_OFFLINE); ``endpoint=`` exists for tests and in-process
use, since huggingface_hub reads HF_ENDPOINT once at import.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from app.core.errors import GatedError, HubError, QuantDeskError
from app.core.gguf.header import SPLIT_NAME, quant_label
from app.core.gguf.projector import is_projector_name, pair_by_name

log = logging.getLogger(__name__)

SORTS = {"downloads": "downloads", "likes": "likes", "trending": "trending_score", "updated": "last_modified"}
SIZE_FILTERS = {"any": None, "<3B": "max:3B", "3-10B": "min:3B,max:10B", "10-40B": "min:10B,max:40B", ">40B": "min:40B"}
EXPAND = ["downloads", "likes", "lastModified", "gated", "tags", "pipeline_tag", "library_name", "cardData", "private"]

# quant levels, best quality first, for grouping and sorting a repo's files
QUANT_ORDER = ["F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1",
               "IQ4_NL", "IQ4_XS", "Q4_0", "MXFP4", "Q3_K_L", "Q3_K_M", "IQ3_M", "IQ3_S", "Q3_K_S", "IQ3_XS", "IQ3_XXS",
               "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "TQ2_0", "TQ1_0", "IQ1_M", "IQ1_S"]

CONVERSION_SUFFIXES = (".safetensors", ".json", ".tiktoken")
CONVERSION_NAMES = ("tokenizer.model", "vocab.txt", "merges.txt", "vocab.json")

# repos llama.cpp cannot run, recognized by their quantization_config or tags
FOREIGN_QUANTS = {
    "gptq": "GPTQ", "awq": "AWQ", "exl2": "EXL2", "exl3": "EXL3", "bitsandbytes": "bitsandbytes",
    "fp8": "FP8", "compressed-tensors": "compressed-tensors", "hqq": "HQQ", "aqlm": "AQLM",
}


def hub_error(exc: BaseException, what: str) -> HubError:
    """One sentence for the Hub's typed errors: never a raw stack trace."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, GatedRepoError):
        return GatedError(f"{what}: this model is gated: accept its license on the model page and log in "
                          "(Settings → Hugging Face token, HF_TOKEN, or 'hf auth login')")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"{what}: no such repository (if it is private, log in with a token that can read it)")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{what}: no such revision")
    if isinstance(exc, (EntryNotFoundError,)) or type(exc).__name__ == "RemoteEntryNotFoundError":
        return HubError(f"{what}: no such file in the repository")
    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return HubError(f"{what}: offline mode is on (HF_HUB_OFFLINE) or the Hub cannot be reached")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return GatedError(f"{what}: access denied ({status}): accept the license on the model page and log in")
        return HubError(f"{what}: the Hub answered {status or ''} {str(exc).splitlines()[0]}".replace("  ", " "))
    return HubError(f"{what}: cannot reach the Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


def api(endpoint: str | None = None, token: str | None = None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


# ---- search ---------------------------------------------------------------------------------


@dataclass
class ModelRow:
    id: str
    downloads: int = 0
    likes: int = 0
    updated: str = ""
    gated: bool = False
    private: bool = False
    license: str | None = None
    pipeline_tag: str | None = None
    library: str | None = None
    tags: list[str] = field(default_factory=list)
    gguf: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(info: Any) -> ModelRow:
    tags = list(info.tags or [])
    card = info.card_data.to_dict() if getattr(info, "card_data", None) is not None else {}
    lic = card.get("license") or next((t.removeprefix("license:") for t in tags if t.startswith("license:")), None)
    updated = info.last_modified
    return ModelRow(
        id=info.id, downloads=int(info.downloads or 0), likes=int(info.likes or 0),
        updated=updated.strftime("%Y-%m-%d") if isinstance(updated, datetime) else str(updated or "")[:10],
        gated=bool(info.gated), private=bool(info.private), license=str(lic) if lic else None,
        pipeline_tag=info.pipeline_tag, library=info.library_name, tags=tags,
        gguf="gguf" in tags or info.library_name == "gguf",
    )


def search(query: str = "", *, gguf_only: bool = True, sort: str = "downloads", author: str | None = None,
           size: str = "any", architecture: str | None = None, limit: int | None = None,
           endpoint: str | None = None, token: str | None = None) -> Iterator[ModelRow]:
    """Rows from HfApi.list_models, lazily: the client fetches the next page when the caller asks."""
    if sort not in SORTS:
        raise QuantDeskError(f"sort {sort!r}: use one of {', '.join(SORTS)}")
    if size not in SIZE_FILTERS:
        raise QuantDeskError(f"size {size!r}: use one of {', '.join(SIZE_FILTERS)}")
    filters = [f for f in ("gguf" if gguf_only else None, architecture.lower() if architecture else None) if f]
    try:
        models = api(endpoint, token).list_models(
            search=query or None, filter=filters or None, author=author or None, sort=SORTS[sort],
            num_parameters=SIZE_FILTERS[size], limit=limit, expand=EXPAND,
        )
        for info in models:
            yield _row(info)
    except QuantDeskError:
        raise
    except Exception as exc:
        raise hub_error(exc, f"search {query!r}") from None


# ---- a model's page -------------------------------------------------------------------------


@dataclass
class HubFile:
    """One entry of a repo's GGUF list: a single file, or a split model as one entry."""

    path: str  # the first shard for split models
    size_bytes: int
    quant: str
    shards: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)  # one per shard, from the Hub's LFS metadata
    mmproj: bool = False  # a vision projector (by name: the Hub lists names only)
    projector: str | None = None  # a model's vision projector in the same repo folder (gguf.projector.pair_by_name)
    projector_bytes: int = 0

    @property
    def download_bytes(self) -> int:
        """The model and its projector: what a download fetches and what the fit column shows."""
        return self.size_bytes + self.projector_bytes

    @property
    def split(self) -> bool:
        return len(self.shards) > 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "split": self.split, "download_bytes": self.download_bytes}


@dataclass
class RepoDetails:
    repo_id: str
    sha: str | None
    gated: bool
    private: bool
    license: str | None
    downloads: int
    likes: int
    tags: list[str]
    gguf_files: list[HubFile]
    kind: str  # "gguf", "safetensors", "foreign", "pickle", "empty"
    explanation: str  # one sentence for kinds other than gguf
    safetensors_bytes: int = 0
    base_model: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def conversion_files(self) -> list[str]:
        """What llama.cpp's converter reads from a repo: top-level safetensors, JSON configs and
        tokenizer files (never code, never pickles)."""
        return [f for f in self.files if "/" not in f and (f.endswith(CONVERSION_SUFFIXES) or f in CONVERSION_NAMES)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gguf_files": [f.to_dict() for f in self.gguf_files]}


def quant_rank(quant: str) -> int:
    """0 for the best quality; unknown labels sort last."""
    return QUANT_ORDER.index(quant) if quant in QUANT_ORDER else len(QUANT_ORDER)


def group_gguf(siblings: list[tuple[str, int, str | None]]) -> list[HubFile]:
    """(path, size, sha256) of every file -> GGUF entries: split shards merged into one entry with the
    total size, vision projectors flagged and each model given the projector of its folder, sorted
    best quality first, projectors last."""
    splits: dict[str, HubFile] = {}
    out: list[HubFile] = []
    for path, size, sha in sorted(siblings):
        if not path.endswith(".gguf"):
            continue
        name = PurePosixPath(path).name
        quant = quant_label(name) or "?"
        m = SPLIT_NAME.search(path)
        if m:
            key = SPLIT_NAME.sub("", path)
            entry = splits.get(key)
            if entry is None:
                entry = splits[key] = HubFile(path=path, size_bytes=0, quant=quant, mmproj=is_projector_name(name))
                out.append(entry)
            if m.group(1) == "00001":
                entry.path = path
            entry.shards.append(path)
            entry.sha256.append(sha or "")
            entry.size_bytes += size
        else:
            out.append(HubFile(path=path, size_bytes=size, quant=quant, shards=[path], sha256=[sha or ""],
                               mmproj=is_projector_name(name)))
    projectors = {f.path: f for f in out if f.mmproj}
    for f in out:
        if not f.mmproj and (chosen := pair_by_name(f.path, list(projectors))):
            f.projector, f.projector_bytes = chosen, projectors[chosen].size_bytes
    return sorted(out, key=lambda f: (f.mmproj, quant_rank(f.quant), f.path))


def classify(files: list[str], config: dict[str, Any] | None, tags: list[str]) -> tuple[str, str]:
    """What kind of repo this is, and a sentence for the ones llama.cpp cannot run as they are."""
    qcfg = (config or {}).get("quantization_config") or {}
    method = str(qcfg.get("quant_method", "")).lower() if isinstance(qcfg, dict) else ""
    if not method:
        method = next((t for t in (x.lower() for x in tags) if t in FOREIGN_QUANTS), "")
    if any(f.endswith(".gguf") for f in files):
        return "gguf", ""
    if method in FOREIGN_QUANTS:
        name = FOREIGN_QUANTS[method]
        return "foreign", (f"This repo holds {name}-quantized weights, which llama.cpp cannot run or convert. "
                           "Open its base model (see 'Base model') to convert it, or search for a GGUF repo of the same model.")
    if any(f.endswith(".safetensors") for f in files):
        return "safetensors", "No GGUF files: use 'Convert & quantize' to make one from the safetensors weights."
    if any(f.endswith((".bin", ".pt", ".pth")) for f in files):
        return "pickle", ("Only pickle (.bin/.pt) weights: loading them can run code, so conversion needs an explicit "
                          "opt-in in the quantize wizard. Prefer a repo with safetensors or GGUF files.")
    return "empty", "No model weights that QuantDesk can use in this repo."


def repo_details(repo_id: str, *, revision: str | None = None, endpoint: str | None = None,
                 token: str | None = None) -> RepoDetails:
    """model_info with file metadata, the config (for quantization_config), grouped GGUF files."""
    try:
        info = api(endpoint, token).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise hub_error(exc, repo_id) from None
    siblings = [(s.rfilename, int(s.size or 0), (s.lfs.sha256 if s.lfs else None)) for s in info.siblings or []]
    clash = case_collisions([s[0] for s in siblings])
    if clash:
        log.warning("%s: files that differ only by case are not offered: %s", repo_id, sorted(clash))
        siblings = [s for s in siblings if s[0] not in clash]
    names = [s[0] for s in siblings]
    config = None
    if "config.json" in names and not any(n.endswith(".gguf") for n in names):
        config = _small_json(repo_id, "config.json", revision=info.sha, endpoint=endpoint, token=token)
    tags = list(info.tags or [])
    kind, why = classify(names, config, tags)
    card = info.card_data.to_dict() if info.card_data is not None else {}
    base = card.get("base_model") or []
    return RepoDetails(
        repo_id=info.id, sha=info.sha, gated=bool(info.gated), private=bool(info.private),
        license=card.get("license"), downloads=int(info.downloads or 0), likes=int(info.likes or 0), tags=tags,
        gguf_files=group_gguf(siblings), kind=kind, explanation=why,
        safetensors_bytes=sum(s[1] for s in siblings if s[0].endswith(".safetensors")),
        base_model=[base] if isinstance(base, str) else [str(b) for b in base], files=names,
    )


def _small_json(repo_id: str, filename: str, **kw: Any) -> dict[str, Any] | None:
    try:
        from huggingface_hub import hf_hub_download

        with open(hf_hub_download(repo_id, filename, **kw), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except Exception as exc:  # a missing or odd config only means we cannot classify by it
        log.info("%s/%s unreadable: %s", repo_id, filename, exc)
        return None


def model_card(repo_id: str, *, revision: str | None = None, endpoint: str | None = None, token: str | None = None) -> str:
    """The README as Markdown, front matter removed; '' when the repo has none."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, "README.md", revision=revision, endpoint=endpoint, token=token)
    except Exception as exc:
        from huggingface_hub.errors import EntryNotFoundError

        if isinstance(exc, EntryNotFoundError) or type(exc).__name__ == "RemoteEntryNotFoundError":
            return ""
        raise hub_error(exc, f"{repo_id}: README.md") from None
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return strip_front_matter(text)


def strip_front_matter(text: str) -> str:
    """The card without its YAML front matter (``---`` lines around it at the top), in one linear
    pass: a card whose front matter never closes is returned whole."""
    first, sep, rest = text.partition("\n")
    if not sep or first.strip() != "---":
        return text
    pos = len(first) + 1
    while pos <= len(text):
        end = text.find("\n", pos)
        line = text[pos:] if end < 0 else text[pos:end]
        if line.strip() == "---":
            return "" if end < 0 else text[end + 1:]
        if end < 0:
            break
        pos = end + 1
    return text


# ---- where a Hub file goes ------------------------------------------------------------------

SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-=@ ()\[\],]*")  # fullmatch: '$' would let a newline end it
# Windows reserves these device names, with any extension ('COM1.gguf' opens the serial port)
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
MAX_RELPATH = 240  # owner/name/path stays under Windows' 260-character MAX_PATH in a short models folder


def safe_relpath(repo_id: str, filename: str) -> PurePosixPath:
    """``owner/name/path/in/repo``, refusing anything that could leave the models folder: absolute
    paths, '..', backslashes, drive letters, control characters, hidden or empty parts."""
    parts = [*repo_id.split("/"), *filename.split("/")]
    if len(repo_id.split("/")) != 2:
        raise QuantDeskError(f"{repo_id!r}: a repository id looks like owner/name")
    for part in parts:
        if part in ("", ".", "..") or not SAFE_PART.fullmatch(part) or part.endswith((".", " ")) or len(part) > 200:
            raise QuantDeskError(f"{repo_id}/{filename}: unsafe file name from the Hub ({part!r}); not downloaded")
        if part.split(".")[0].rstrip(" ").upper() in RESERVED:
            raise QuantDeskError(f"{repo_id}/{filename}: {part!r} is a reserved device name on Windows; not downloaded")
    if len("/".join(parts)) > MAX_RELPATH:
        raise QuantDeskError(f"{repo_id}/{filename}: the path is {len('/'.join(parts))} characters long "
                             f"(at most {MAX_RELPATH}); not downloaded")
    return PurePosixPath(*parts)


def case_collisions(names: list[str]) -> set[str]:
    """Names that differ from another name only by case: on a case-insensitive disk (Windows,
    macOS) one would overwrite the other, so neither is offered."""
    seen: dict[str, str] = {}
    clash: set[str] = set()
    for name in names:
        key = name.casefold()
        if key in seen and seen[key] != name:
            clash.update((name, seen[key]))
        seen.setdefault(key, name)
    return clash


def check_no_case_collision(dest: Path, repo_id: str, filename: str) -> None:
    """Refuse to write ``dest`` when a file in its folder has the same name but for case."""
    try:
        siblings = [p.name for p in dest.parent.iterdir()] if dest.parent.is_dir() else []
    except OSError:
        return
    for name in siblings:
        base = name.removesuffix(".part")
        if base != dest.name and base.casefold() == dest.name.casefold():
            raise QuantDeskError(f"{repo_id}/{filename}: {dest.parent / name} differs from it only by case; "
                                 "one would overwrite the other on a case-insensitive disk; not downloaded")


def local_path(models_dir: Path, repo_id: str, filename: str) -> Path:
    dest = (models_dir / safe_relpath(repo_id, filename)).resolve()
    if not dest.is_relative_to(models_dir.resolve()):
        raise QuantDeskError(f"{repo_id}/{filename}: the path leaves the models folder; not downloaded")
    check_no_case_collision(dest, repo_id, filename)
    return dest
