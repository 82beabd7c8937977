"""The library: every local model in place, deduplicated by sha256, other apps' files never deleted."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from app.core.errors import ModelFileError, QuantDeskError
from app.core.library.catalog import Library
from app.core.settings import models_dir
from tests.support.hub_server import HubServer


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def ollama_store(root: Path, model: Path, name: str = "tinyllama", tag: str = "latest") -> Path:
    digest = sha(model)
    (root / "blobs").mkdir(parents=True)
    shutil.copy(model, root / "blobs" / f"sha256-{digest}")
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": model.stat().st_size},
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 10},
    ]}))
    return root


def test_sources_are_listed_in_place_and_deduplicated(tmp_path: Path, tiny_ggufs: dict[str, Path], starter_model: Path) -> None:
    lms = tmp_path / "lmstudio"
    (lms / "pub" / "tiny").mkdir(parents=True)
    shutil.copy(tiny_ggufs["q8_0"], lms / "pub" / "tiny" / "tiny-Q8_0.gguf")
    shutil.copy(tiny_ggufs["f16"], lms / "pub" / "tiny" / "tiny-F16.gguf")
    (lms / "pub" / "tiny" / "mmproj-F16.gguf").write_bytes(b"GGUF")  # projectors are not models
    ollama = ollama_store(tmp_path / "ollama", tiny_ggufs["q8_0"])  # the same bytes as LM Studio's Q8_0
    lib = Library()
    off = lib.refresh(hf_cache=False)
    assert [e.origin for e in off] == ["starter"]  # other apps only when the user opts in
    entries = lib.refresh(lmstudio=True, ollama=True, lmstudio_dirs=[lms], ollama_dir=ollama, hf_cache=False)
    by_origin = {e.origin: e for e in entries}
    assert set(by_origin) == {"starter", "lmstudio", "ollama"} and len(entries) == 3
    q8 = [e for e in entries if e.sha256 == sha(tiny_ggufs["q8_0"])]
    assert len(q8) == 1 and len(q8[0].also_at) == 1  # one row, the other place remembered
    assert len(lib.entries(dedupe=False)) == 4
    assert not any(e.owned for e in entries)
    ollama_entry = next(e for e in lib.entries(dedupe=False) if e.origin == "ollama")
    assert ollama_entry.name == "tinyllama:latest" and ollama_entry.quant == "Q8_0" and ollama_entry.arch == "llama"
    for e in lib.entries(dedupe=False):
        with pytest.raises(QuantDeskError, match="never deletes another app's files"):
            lib.delete(e.id)
    assert (lms / "pub" / "tiny" / "tiny-Q8_0.gguf").exists() and starter_model.exists()


def test_huggingface_cache_files_are_found(hub: HubServer, tmp_path: Path, tiny_ggufs: dict[str, Path]) -> None:
    from huggingface_hub import hf_hub_download

    cache = tmp_path / "hf-cache"
    hf_hub_download("qd/tiny-GGUF", "tiny-F16.gguf", endpoint=hub.url, cache_dir=cache)
    lib = Library()
    entries = lib.refresh(hf_cache=True, hf_cache_dir=cache)
    [cached] = [e for e in entries if e.origin == "hf-cache"]
    assert cached.source_repo == "qd/tiny-GGUF" and cached.sha256 == sha(tiny_ggufs["f16"])
    assert cached.revision == hub.repos["qd/tiny-GGUF"].sha and not cached.owned


def test_owned_files_delete_every_shard(tmp_path: Path, tiny_ggufs: dict[str, Path]) -> None:
    folder = models_dir() / "me" / "tiny"
    folder.mkdir(parents=True)
    for key in ("split1", "split2"):
        shutil.copy(tiny_ggufs[key], folder / tiny_ggufs[key].name)
    lib = Library()
    entry = lib.register(folder / tiny_ggufs["split1"].name, origin="quantized", source_repo="me/src", quant="Q8_0",
                         imatrix="calibration.txt", parent="/x/model-F16.gguf")
    assert entry.owned and entry.size == sum(tiny_ggufs[k].stat().st_size for k in ("split1", "split2"))
    assert (entry.source_repo, entry.imatrix, entry.parent) == ("me/src", "calibration.txt", "/x/model-F16.gguf")
    again = lib.refresh(hf_cache=False)  # the scan keeps what only the registration knew
    kept = next(e for e in again if e.id == entry.id)
    assert (kept.origin, kept.source_repo, kept.imatrix) == ("quantized", "me/src", "calibration.txt")
    removed = lib.delete(entry.id)
    assert len(removed) == 2 and not any(folder.iterdir())
    assert lib.find(folder / tiny_ggufs["split1"].name) is None


def test_a_partial_file_is_never_a_model(tmp_path: Path, tiny_ggufs: dict[str, Path]) -> None:
    cut = models_dir() / "cut.gguf"
    cut.write_bytes(tiny_ggufs["q8_0"].read_bytes()[: 200_000])
    (models_dir() / "next.gguf.part").write_bytes(tiny_ggufs["q8_0"].read_bytes())
    lib = Library()
    with pytest.raises(ModelFileError, match="cut.gguf"):
        lib.register(cut)
    assert [e.origin for e in lib.refresh(hf_cache=False)] == ["starter"]


def test_last_used_orders_the_list(tiny_ggufs: dict[str, Path]) -> None:
    lib = Library()
    a = lib.register(tiny_ggufs["f16"], origin="added")
    b = lib.register(tiny_ggufs["q8_0"], origin="added")
    lib.mark_used(a.path)
    assert [e.id for e in lib.entries()][0] == a.id
    lib.mark_used(b.path)
    assert [e.id for e in lib.entries()][0] == b.id


def test_libraries_that_scan_at_the_same_moment_each_list_every_file_once(tiny_ggufs: dict[str, Path]) -> None:
    """The window, the API server and the CLI each open the library; two scans that find a new file at
    the same moment used to both insert it, and the second failed on the unique path."""
    import threading

    folder = models_dir() / "local"
    folder.mkdir(parents=True)
    for i in range(12):
        shutil.copy(tiny_ggufs["q8_0"], folder / f"copy{i}-Q8_0.gguf")
    libraries = [Library() for _ in range(4)]
    start = threading.Barrier(len(libraries))
    errors: list[BaseException] = []

    def scan(lib: Library) -> None:
        start.wait()
        try:
            lib.refresh(hf_cache=False)
        except BaseException as exc:  # noqa: BLE001 — the failure is the result
            errors.append(exc)

    threads = [threading.Thread(target=scan, args=(lib,)) for lib in libraries]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    paths = [e.path for e in libraries[0].entries(dedupe=False)]
    assert len(paths) == len(set(paths)) == 13  # twelve copies and the starter, each once


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "lib.sqlite3"
    sqlite3.connect(db).execute("PRAGMA user_version=99")
    with pytest.raises(QuantDeskError, match="newer QuantDesk"):
        Library(db)


def test_vision_projectors_are_never_models_and_pair_with_the_model_they_fit(tmp_path: Path) -> None:
    from tests.support.tiny_vision import tiny_vision_pair

    pair64, pair96 = tiny_vision_pair(), tiny_vision_pair(text_embd=96)
    fits = models_dir() / "qd" / "vision"
    fits.mkdir(parents=True)
    model = Path(shutil.copy(pair64.model, fits / "tiny-vision-F16.gguf"))
    encoder = Path(shutil.copy(pair64.projector, fits / "vision-encoder-F16.gguf"))  # a projector not named mmproj
    shutil.copy(pair96.projector, fits / "mmproj-other-F16.gguf")  # for a 96-wide model
    lonely = models_dir() / "qd" / "mismatched"
    lonely.mkdir(parents=True)
    other = Path(shutil.copy(pair64.model, lonely / "tiny-vision-Q.gguf"))
    shutil.copy(pair96.projector, lonely / "mmproj-tiny-vision-F16.gguf")

    lib = Library()
    entries = {Path(e.path).name: e for e in lib.refresh(hf_cache=False)}
    assert set(entries) - {Path(e.path).name for e in entries.values() if e.origin == "starter"} == {model.name}
    vision = entries[model.name]
    assert vision.vision and vision.projector == str(encoder.resolve()) and vision.projector_note is None
    assert vision.n_embd == 64
    assert not next(e for e in entries.values() if e.origin == "starter").vision

    # the same bytes in another folder, beside a projector that does not fit: no projector, and why
    assert len(lib.entries(dedupe=False)) == len(entries) + 1
    refused = lib.find(other)
    assert refused is not None and refused.projector is None
    assert refused.projector_note == ("mmproj-tiny-vision-F16.gguf: made for a text model 96 wide, this model is 64 wide "
                                      "(llama.cpp refuses the pair)")

    with pytest.raises(ModelFileError, match="vision projector"):
        lib.register(encoder)
    assert lib.find(encoder) is None


def test_a_projector_listed_by_an_earlier_version_is_dropped(tmp_path: Path) -> None:
    from tests.support.tiny_vision import tiny_vision_pair

    folder = models_dir() / "old"
    folder.mkdir(parents=True)
    proj = Path(shutil.copy(tiny_vision_pair().projector, folder / "encoder.gguf"))
    lib = Library()
    lib.execute("INSERT INTO models (path, name, origin, owned, size, arch, added) VALUES (?,?,?,?,?,?,?)",
                (str(proj.resolve()), "encoder", "added", 1, proj.stat().st_size, "clip", 0.0))
    assert all(e.path != str(proj.resolve()) for e in lib.refresh(hf_cache=False))


def test_a_library_of_schema_1_gains_the_projector_columns(tmp_path: Path, tiny_ggufs: dict[str, Path]) -> None:
    import sqlite3

    from app.core.library.catalog import MIGRATIONS

    db_path = tmp_path / "library.sqlite3"
    db = sqlite3.connect(db_path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO models (path, name, origin, size, arch, added) VALUES (?,?,?,?,?,?)",
               (str(tiny_ggufs["f16"]), "tiny-F16", "added", 1, "llama", 0.0))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    lib = Library(db_path)
    [entry] = lib.entries()
    assert (entry.name, entry.n_embd, entry.projector, entry.projector_note, entry.vision) == ("tiny-F16", None, None, None, False)
    assert int(lib.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS) == 2
