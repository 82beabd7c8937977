"""The models the API server offers: the library's models under stable, readable ids.

An id is the model's display name in the library (the file name without ``.gguf``; an Ollama model's
``name:tag``), made unique with its source repository (or, failing that, its file's folder) when two
files share a name. A request may also name a model by an alias: its file name, the id in lower
case, ``starter`` for the starter model, or the file's full path. Chat and embedding models are told
apart by architecture (and, for embedding models built on a chat architecture, by their name).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from app.core import settings
from app.core.library.catalog import STARTER, Library, LibraryEntry

CHAT, EMBEDDING = "chat", "embedding"
# llama.cpp architectures that only embed (no causal language model head)
EMBEDDING_ARCHS = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "neo-bert",
                             "modern-bert", "t5encoder", "gemma-embedding", "roberta", "xlm-roberta"})
REFRESH_S = 5.0  # an unknown name rescans the library at most this often


@dataclass(frozen=True)
class ServedModel:
    id: str
    path: Path
    kind: str  # CHAT or EMBEDDING
    aliases: tuple[str, ...] = ()
    created: int = 0
    owned_by: str = "quantdesk"
    arch: str | None = None
    quant: str | None = None
    size: int = 0

    def to_openai(self) -> dict[str, object]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by,
                "aliases": list(self.aliases), "kind": self.kind, "architecture": self.arch, "quant": self.quant,
                "size_bytes": self.size}


def kind_of(entry: LibraryEntry) -> str:
    arch = (entry.arch or "").lower()
    if arch in EMBEDDING_ARCHS or "embed" in Path(entry.path).name.lower() or "embed" in entry.name.lower():
        return EMBEDDING
    return CHAT


def served_models(entries: Iterable[LibraryEntry]) -> list[ServedModel]:
    """Ids and aliases for library entries (most recently used first, as the library lists them)."""
    entries = [e for e in entries if not e.error]
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name.lower()] = counts.get(e.name.lower(), 0) + 1
    from app.core.starter import starter_model_path

    starter = starter_model_path()
    out: list[ServedModel] = []
    taken: set[str] = set()
    for e in entries:
        path = Path(e.path)
        base = e.name
        if counts[base.lower()] > 1:
            base = f"{e.source_repo or path.parent.name}/{e.name}"
        mid, n = base, 2
        while mid.lower() in taken:  # still a clash (two copies in one repo): number them
            mid, n = f"{base}-{n}", n + 1
        taken.add(mid.lower())
        aliases = [path.name, mid.lower(), str(path)] + (["starter"] if e.origin == STARTER or path == starter else [])
        out.append(ServedModel(id=mid, path=path, kind=kind_of(e), aliases=tuple(dict.fromkeys(a for a in aliases if a != mid)),
                               created=int(e.added), owned_by=e.source_repo.split("/")[0] if e.source_repo else "local",
                               arch=e.arch, quant=e.quant, size=e.size))
    return out


@dataclass
class ModelCatalog:
    """The library as the server sees it. ``only``: the models the user named (``serve --model``);
    None serves every library model. Thread-safe."""

    library: Library
    only: list[Path] | None = None
    _models: list[ServedModel] = field(default_factory=list)
    _scanned: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> list[ServedModel]:
        s = settings.load()
        entries = self.library.refresh(lmstudio=s.scan_lmstudio, ollama=s.scan_ollama)
        models = served_models(entries)
        if self.only is not None:
            wanted = [p.resolve() for p in self.only]
            by_path = {m.path.resolve(): m for m in models}
            models = [by_path[p] for p in wanted if p in by_path]
        with self._lock:
            self._models, self._scanned = models, time.monotonic()
        return models

    def models(self, kind: str | None = None) -> list[ServedModel]:
        with self._lock:
            models = list(self._models)
        return [m for m in models if kind is None or m.kind == kind]

    def find(self, name: str) -> ServedModel | None:
        """The model a request names (id or alias), rescanning the library once when unknown."""
        found = self._match(name)
        if found is None and time.monotonic() - self._scanned > REFRESH_S:
            self.refresh()
            found = self._match(name)
        return found

    def _match(self, name: str) -> ServedModel | None:
        models = self.models()
        for m in models:
            if m.id == name:
                return m
        low = name.lower()
        for m in models:
            if low == m.id.lower() or name in m.aliases or low in (a.lower() for a in m.aliases):
                return m
        return None
