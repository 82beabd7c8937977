"""All local models in one list, registered in place (never copied) and deduplicated by sha256.

Sources: QuantDesk's models folder (downloads, conversions, quantizations), the bundled starter
model, GGUF files in the huggingface_hub cache, and, when the user opts in, LM Studio's models
folder and Ollama's blob store (its manifests name the GGUF blobs). Only files QuantDesk wrote
(``owned``) can be deleted; another app's file is never touched.

Vision projectors (mmproj files, recognised by their header or their name: gguf/projector.py) are
never listed as models: each model records the projector of its folder that fits it (same
embedding width and architecture) in ``projector``, or in ``projector_note`` why the projectors
beside it do not fit.

Kept in its own SQLite file (``library.sqlite3``) with ``user_version`` migrations; the downloads
table there lets the download manager resume after an app restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from app.core import paths
from app.core.db import open_database
from app.core.errors import ModelFileError, QuantDeskError, SchemaTooNewError
from app.core.gguf.header import SPLIT_NAME, quant_label, read_header, shard_name
from app.core.gguf.projector import is_projector_file, pair, projectors_in
from app.core.settings import models_dir

log = logging.getLogger(__name__)

# where an entry came from
DOWNLOADED, CONVERTED, QUANTIZED, STARTER, ADDED = "downloaded", "converted", "quantized", "starter", "added"
HF_CACHE, LMSTUDIO, OLLAMA = "hf-cache", "lmstudio", "ollama"
OWNER_APP = {HF_CACHE: "the huggingface_hub cache", LMSTUDIO: "LM Studio", OLLAMA: "Ollama", STARTER: "the starter model package"}

SHA256 = re.compile(r"^[0-9a-f]{64}$")
HASH_BLOCK = 8 * 1024 * 1024

MIGRATIONS: list[str] = [
    # 1: models and downloads
    """
    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        origin TEXT NOT NULL,
        owned INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL DEFAULT 0,
        mtime_ns INTEGER NOT NULL DEFAULT 0,
        sha256 TEXT,
        quant TEXT,
        arch TEXT,
        n_params INTEGER,
        source_repo TEXT,
        revision TEXT,
        imatrix TEXT,
        parent TEXT,
        added REAL NOT NULL,
        last_used REAL,
        extra TEXT NOT NULL DEFAULT '{}',
        error TEXT
    );
    CREATE INDEX models_by_sha ON models(sha256);
    CREATE TABLE downloads (
        id INTEGER PRIMARY KEY,
        repo_id TEXT NOT NULL,
        filename TEXT NOT NULL,
        revision TEXT,
        commit_hash TEXT,
        dest TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        error TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    """,
    # 2: the vision projector paired with each model, and the embedding width pairing compares
    """
    ALTER TABLE models ADD COLUMN n_embd INTEGER;
    ALTER TABLE models ADD COLUMN projector TEXT;
    ALTER TABLE models ADD COLUMN projector_note TEXT;
    """,
]


@dataclass
class LibraryEntry:
    id: int
    path: str
    name: str
    origin: str
    owned: bool
    size: int
    sha256: str | None = None
    quant: str | None = None
    arch: str | None = None
    n_params: int | None = None
    source_repo: str | None = None
    revision: str | None = None
    imatrix: str | None = None
    parent: str | None = None
    added: float = 0.0
    last_used: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    also_at: list[str] = field(default_factory=list)  # the same file (by sha256) elsewhere
    n_embd: int | None = None  # the text model's embedding width (from its header)
    projector: str | None = None  # the vision projector paired with this model (same folder, fits)
    projector_note: str | None = None  # why the projectors in its folder do not fit, when none does

    @property
    def vision(self) -> bool:
        return self.projector is not None

    @property
    def owner(self) -> str:
        return "QuantDesk" if self.owned else OWNER_APP.get(self.origin, "you (added in place)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path, *, cancel: Any = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            if cancel is not None:
                cancel.check("hashing")
            h.update(block)
    return h.hexdigest()


def shard_paths(path: Path) -> list[Path]:
    """All files of a model: the shards of a split model, else the file itself."""
    m = SPLIT_NAME.search(path.name)
    if not m:
        return [path]
    count = int(m.group(2))
    return [path.with_name(shard_name(path.name, no, count)) for no in range(1, count + 1)]


def _first_shard_or_single(path: Path) -> bool:
    m = SPLIT_NAME.search(path.name)
    return m is None or m.group(1) == "00001"


class Library:
    def __init__(self, db_path: str | Path | None = None) -> None:
        self.path = Path(db_path) if db_path else paths.home() / "library.sqlite3"
        self._lock = threading.RLock()

        def setup(db: sqlite3.Connection) -> None:
            self.db = db
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()

        self.db = open_database(self.path, "library database", setup, isolation_level=None, check_same_thread=False)

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise SchemaTooNewError(f"{self.path}: written by a newer QuantDesk (schema {version}); update QuantDesk to open it")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._lock, self.db:
                self.db.execute("BEGIN")
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")

    def execute(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, tuple(args))

    # ---- registering -------------------------------------------------------------------------

    def register(self, path: str | Path, *, origin: str = ADDED, owned: bool | None = None, source_repo: str | None = None,
                 revision: str | None = None, quant: str | None = None, imatrix: str | None = None,
                 parent: str | None = None, sha256: str | None = None, extra: dict[str, Any] | None = None,
                 hash_file: bool = True, read: bool = True) -> LibraryEntry:
        """Add (or update) a GGUF file in place. The header is read first, so a file that is not a
        complete GGUF is refused (ModelFileError) and never listed as a model. ``read=False`` is for
        a file whose sha256 was just checked against its source (a download): the header facts are
        filled in by the next ``refresh``."""
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise ModelFileError(f"{p}: no such file")
        if is_projector_file(p):
            raise ModelFileError(f"{p}: a vision projector (mmproj), not a chat model; it is used with the model "
                                 "in its folder that it fits")
        header = read_header(p) if read else None  # raises ModelFileError naming the file and the cause
        files = shard_paths(p)
        size = sum(f.stat().st_size for f in files)
        if owned is None:
            owned = origin in (DOWNLOADED, CONVERTED, QUANTIZED) or _inside(p, models_dir())
        if sha256 is None and hash_file and len(files) == 1:
            sha256 = sha256_file(p)
        now = time.time()
        values = {
            "path": str(p), "name": (extra or {}).get("display_name") or _display_name(p), "origin": origin, "owned": int(owned), "size": size,
            "mtime_ns": p.stat().st_mtime_ns, "sha256": sha256, "quant": quant or quant_label(p.name) or (header.file_type_name if header else None),
            "arch": header.architecture if header else None, "n_params": header.n_params if header else None, "source_repo": source_repo, "revision": revision,
            "imatrix": imatrix, "parent": parent, "extra": json.dumps(extra or {}), "error": None,
            "n_embd": header.embedding_length if header else None,
        }
        # One write transaction from the check to the write: the window, the API server and the CLI
        # each hold their own connection and may register the same file at the same moment.
        with self._lock, self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT id FROM models WHERE path=?", (str(p),)).fetchone()
            if row:
                sets = ", ".join(f"{k}=?" for k in values)
                keep = ("source_repo", "revision", "imatrix", "parent", "sha256")  # facts the scan cannot see are kept
                vals = [values[k] if not (k in keep and values[k] is None) else _current(self.db, row["id"], k) for k in values]
                self.db.execute(f"UPDATE models SET {sets} WHERE id=?", (*vals, row["id"]))
                entry_id = row["id"]
            else:
                cols = ", ".join(values)
                entry_id = self.db.execute(f"INSERT INTO models ({cols}, added) VALUES ({', '.join('?' * len(values))}, ?)",
                                           (*values.values(), now)).lastrowid
        log.info("library: %s %s (%s)", "updated" if row else "added", p, origin)
        if header is not None:
            self.pair_folder(p.parent)
        return self.get(int(entry_id))

    def get(self, entry_id: int) -> LibraryEntry:
        row = self.execute("SELECT * FROM models WHERE id=?", (entry_id,)).fetchone()
        if row is None:
            raise QuantDeskError(f"library entry {entry_id}: no such model")
        return _entry(row)

    def find(self, path: str | Path) -> LibraryEntry | None:
        row = self.execute("SELECT * FROM models WHERE path=?", (str(Path(path).expanduser().resolve()),)).fetchone()
        return _entry(row) if row else None

    def mark_used(self, path: str | Path) -> None:
        self.execute("UPDATE models SET last_used=? WHERE path=?", (time.time(), str(Path(path).expanduser().resolve())))

    def entries(self, *, dedupe: bool = True) -> list[LibraryEntry]:
        """Every model, most recently used first; files with the same sha256 shown once (QuantDesk's
        own copy first) with the other places in ``also_at``."""
        rows = [_entry(r) for r in self.execute("SELECT * FROM models ORDER BY COALESCE(last_used, 0) DESC, added DESC")]
        if not dedupe:
            return rows
        out: list[LibraryEntry] = []
        by_sha: dict[str, LibraryEntry] = {}
        for entry in sorted(rows, key=lambda e: (not e.owned, e.origin != DOWNLOADED)):
            first = by_sha.get(entry.sha256 or "")
            if entry.sha256 and first is not None:
                first.also_at.append(entry.path)
                continue
            if entry.sha256:
                by_sha[entry.sha256] = entry
            out.append(entry)
        order = {e.id: i for i, e in enumerate(rows)}
        return sorted(out, key=lambda e: order[e.id])

    # ---- deleting ----------------------------------------------------------------------------

    def delete(self, entry_id: int) -> list[Path]:
        """Delete an owned model's files (every shard) and its row. Another app's file is refused."""
        entry = self.get(entry_id)
        if not entry.owned:
            raise QuantDeskError(f"{entry.path}: this file belongs to {entry.owner}; QuantDesk never deletes another app's files")
        files = [f for f in shard_paths(Path(entry.path)) if f.exists() or f.is_symlink()]
        models = models_dir().resolve()
        for f in files:  # check all before deleting any
            logical = Path(os.path.abspath(f.parent))
            real = f.parent.resolve()
            if real != logical and not real.is_relative_to(models):
                raise QuantDeskError(f"{f}: its folder is a link to {real}, outside the models folder {models}; "
                                     "QuantDesk does not delete through it")
        removed = []
        for f in files:
            f.unlink()  # a link itself is removed, never the file it points to
            removed.append(f)
        self.execute("DELETE FROM models WHERE id=?", (entry_id,))
        log.info("library: deleted %s", entry.path)
        return removed

    # ---- scanning ----------------------------------------------------------------------------

    def refresh(self, *, lmstudio: bool = False, ollama: bool = False, lmstudio_dirs: Iterable[Path] | None = None,
                ollama_dir: Path | None = None, hf_cache: bool = True, hf_cache_dir: Path | None = None) -> list[LibraryEntry]:
        """Find models in every source, register new or changed files, drop rows whose file is gone."""
        from app.core.starter import starter_model_path

        seen: set[str] = set()
        found: list[tuple[Path, dict[str, Any]]] = []
        for path in _gguf_files(models_dir()):
            found.append((path, {"origin": ADDED, "owned": True}))
        starter = starter_model_path()
        if starter is not None:
            found.append((starter, {"origin": STARTER, "owned": False}))
        if hf_cache:
            found.extend(_hf_cache_files(hf_cache_dir))
        if lmstudio:
            for root in lmstudio_dirs or lmstudio_default_dirs():
                found.extend((p, {"origin": LMSTUDIO, "owned": False}) for p in _gguf_files(root))
        if ollama:
            found.extend(_ollama_files(ollama_dir or ollama_default_dir()))
        for path, info in found:
            p = path.resolve()
            seen.add(str(p))
            current = self.find(p)
            try:
                stat = p.stat()
            except OSError:
                continue
            if current and current.arch is not None and _row_mtime(self, p) == stat.st_mtime_ns:
                continue  # unchanged since the last scan, header facts known
            try:
                origin = current.origin if current and current.origin in (DOWNLOADED, CONVERTED, QUANTIZED) else info["origin"]
                self.register(p, origin=origin, owned=info["owned"] or (current.owned if current else False),
                              source_repo=info.get("source_repo"), revision=info.get("revision"), sha256=info.get("sha256"),
                              extra=info.get("extra"), hash_file=False)
            except ModelFileError as exc:
                log.warning("library: skipping %s: %s", p, exc)
        for row in self.execute("SELECT id, path, arch FROM models").fetchall():
            gone = row["path"] not in seen and not Path(row["path"]).exists()
            if gone or row["arch"] == "clip":  # a projector registered by an earlier version
                self.execute("DELETE FROM models WHERE id=?", (row["id"],))
        for folder in sorted({str(Path(r["path"]).parent) for r in self.execute("SELECT path FROM models").fetchall()}):
            self.pair_folder(Path(folder))
        self._hash_same_size()
        return self.entries()

    def pair_folder(self, folder: Path) -> None:
        """Pair each model of ``folder`` whose header facts are known with the projector beside it
        that fits (gguf.projector.pair); a projector is only read, never registered."""
        rows = [r for r in self.execute("SELECT id, path, arch, n_embd, projector, projector_note FROM models "
                                        "WHERE arch IS NOT NULL").fetchall() if Path(r["path"]).parent == folder]
        if not rows:
            return
        projectors = projectors_in(folder)
        for row in rows:
            n_embd = row["n_embd"]
            if n_embd is None and projectors:  # registered before projectors were paired: read it once
                try:
                    n_embd = read_header(row["path"]).embedding_length
                except ModelFileError:
                    continue
                self.execute("UPDATE models SET n_embd=? WHERE id=?", (n_embd, row["id"]))
            result = pair(Path(row["path"]), architecture=row["arch"], n_embd=n_embd, candidates=projectors)
            chosen = str(result.projector.path) if result.projector else None
            if (chosen, result.note) != (row["projector"], row["projector_note"]):
                self.execute("UPDATE models SET projector=?, projector_note=? WHERE id=?", (chosen, result.note, row["id"]))
                log.info("library: %s: projector %s%s", row["path"], chosen, f" ({result.note})" if result.note else "")

    def _hash_same_size(self) -> None:
        """Dedup without hashing everything: only files whose size matches another file get hashed."""
        rows = self.execute("SELECT id, path, size FROM models WHERE sha256 IS NULL AND size IN "
                            "(SELECT size FROM models GROUP BY size HAVING COUNT(*) > 1)").fetchall()
        for row in rows:
            p = Path(row["path"])
            if len(shard_paths(p)) == 1 and p.exists():
                self.execute("UPDATE models SET sha256=? WHERE id=?", (sha256_file(p), row["id"]))


def _current(db: sqlite3.Connection, entry_id: int, column: str) -> Any:
    return db.execute(f"SELECT {column} FROM models WHERE id=?", (entry_id,)).fetchone()[0]


def _row_mtime(lib: Library, p: Path) -> int | None:
    row = lib.execute("SELECT mtime_ns FROM models WHERE path=?", (str(p),)).fetchone()
    return row["mtime_ns"] if row else None


def _entry(row: sqlite3.Row) -> LibraryEntry:
    data = dict(row)
    data.pop("mtime_ns", None)
    data["owned"] = bool(data["owned"])
    data["extra"] = json.loads(data.get("extra") or "{}")
    return LibraryEntry(**data)


def _display_name(p: Path) -> str:
    return SPLIT_NAME.sub("", p.name).removesuffix(".gguf")


def _inside(p: Path, root: Path) -> bool:
    try:
        return p.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _gguf_files(root: Path) -> Iterator[Path]:
    """Model GGUF files under ``root``: first shards only, vision projectors (by header or name) and
    partial files skipped."""
    if not root.is_dir():
        return
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in sorted(files):
            path = Path(dirpath) / name
            if name.endswith(".gguf") and _first_shard_or_single(path) and not is_projector_file(path):
                yield path


def _hf_cache_files(cache_dir: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """GGUF files in the huggingface_hub cache (HF_HUB_CACHE): the blob name is the sha256."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    except Exception as exc:  # a broken cache must not break the library
        log.warning("library: cannot scan the huggingface_hub cache: %s", exc)
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            for f in rev.files:
                name = f.file_name
                if not name.endswith(".gguf") or not _first_shard_or_single(Path(name)) or is_projector_file(f.file_path):
                    continue
                blob = f.blob_path.name
                out.append((f.file_path, {"origin": HF_CACHE, "owned": False, "source_repo": repo.repo_id,
                                          "revision": rev.commit_hash, "sha256": blob if SHA256.match(blob) else None}))
    return out


def lmstudio_default_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def ollama_default_dir() -> Path:
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def _ollama_files(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Ollama: manifests/<registry>/<namespace>/<model>/<tag> list layers; the model layer is a GGUF blob."""
    manifests = root / "manifests"
    out: list[tuple[Path, dict[str, Any]]] = []
    if not manifests.is_dir():
        return out
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            layers = data.get("layers", [])
        except (OSError, ValueError, AttributeError):
            continue
        for layer in layers if isinstance(layers, list) else []:
            if not isinstance(layer, dict) or layer.get("mediaType") != "application/vnd.ollama.image.model":
                continue
            digest = str(layer.get("digest", ""))
            hexdigest = digest.removeprefix("sha256:")
            if not SHA256.match(hexdigest):
                continue
            blob = root / "blobs" / f"sha256-{hexdigest}"
            if blob.is_file():
                rel = manifest.relative_to(manifests).parts
                name = f"{'/'.join(rel[-3:-1]) if len(rel) >= 3 else rel[0]}:{rel[-1]}".removeprefix("library/")
                out.append((blob, {"origin": OLLAMA, "owned": False, "sha256": hexdigest, "extra": {"display_name": name}}))
    return out
