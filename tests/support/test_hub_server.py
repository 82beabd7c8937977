"""The local Hub (tests/support/hub_server.py) against the real huggingface_hub client, unpatched: every
call gets ``endpoint=server.url``, so nothing can reach huggingface.co."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Iterator

import pytest
from huggingface_hub import HfApi, HfFileSystem, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.support.hub_server import HubRepo, HubServer

TOKEN = "hf_test_token"
CARD = "---\nlicense: apache-2.0\nbase_model: qd/base\ntags: [gguf]\n---\n# Tiny\n"
SMALL = random.Random(1).randbytes(300_000)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Larger than two of huggingface_hub's 10 MiB download chunks, served from disk."""
    path = tmp_path_factory.mktemp("hub-files") / "tiny-Q8_0.gguf"
    path.write_bytes(random.Random(0).randbytes(2 * DOWNLOAD_CHUNK_SIZE + 4321))
    return path


@pytest.fixture(autouse=True)
def _hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # HF_HUB_OFFLINE, HF_HOME and HF_ENDPOINT are read once, when huggingface_hub is imported: these
    # only matter for subprocesses. In-process, endpoint= and cache_dir= arguments do the work.
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)  # read at each call: would open the gated repo
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture
def server(big: Path) -> Iterator[HubServer]:
    repos = [
        HubRepo("qd/tiny-GGUF", files={"tiny-Q8_0.gguf": big, "config.json": b'{"a": 1}', "sub/notes.txt": b"hello"},
                card=CARD, downloads=500, likes=7, tags=["gguf", "llama"], library_name="gguf",
                last_modified="2024-05-06T07:08:09.000Z"),
        HubRepo("qd/small-GGUF", files={"small.gguf": SMALL}, downloads=900, tags=["gguf"]),
        HubRepo("other/tiny-GGUF", files={"x.gguf": SMALL}, downloads=100, tags=["gguf", "llama"]),
        HubRepo("qd/gated-GGUF", files={"g.gguf": SMALL}, gated=True, downloads=50),
        HubRepo("qd/private-GGUF", files={"p.gguf": SMALL}, private=True, downloads=10_000),
        HubRepo("qd/safetensors-model", files={"model.safetensors": SMALL}, downloads=1),
    ]
    with HubServer(repos, token=TOKEN, page_size=2) as hub:
        yield hub


def api(server: HubServer, token: str | bool = False) -> HfApi:
    return HfApi(endpoint=server.url, token=token)  # token=False: never the machine's stored token


def resolve_gets(server: HubServer, name: str) -> list[dict[str, str]]:
    return [{k.lower(): v for k, v in h.items()} for m, p, h in server.requests if m == "GET" and p.endswith(f"/resolve/main/{name}")]


def test_list_models_searches_sorts_and_follows_pages(server: HubServer) -> None:
    found = [m.id for m in api(server).list_models(search="gguf", sort="downloads")]
    assert found == ["qd/small-GGUF", "qd/tiny-GGUF", "other/tiny-GGUF", "qd/gated-GGUF"]  # private one hidden
    pages = [p for m, p, _ in server.requests if p.startswith("/api/models?")]
    assert len(pages) == 2 and "cursor=2" in pages[1] and "search=gguf" in pages[1]  # the Link rel="next"
    assert [m.id for m in api(server).list_models(author="qd", filter="llama")] == ["qd/tiny-GGUF"]
    assert "qd/private-GGUF" in [m.id for m in api(server, TOKEN).list_models(search="private")]
    server.requests.clear()
    top = list(api(server).list_models(search="gguf", sort="downloads", limit=1))
    assert [m.id for m in top] == ["qd/small-GGUF"] and len(server.requests) == 1  # no second page fetched
    assert top[0].downloads == 900 and top[0].siblings is None
    full = next(iter(api(server).list_models(search="tiny-GGUF", author="qd", full=True)))
    assert {s.rfilename for s in full.siblings or []} == {"tiny-Q8_0.gguf", "config.json", "sub/notes.txt", "README.md"}


def test_model_info_with_files_metadata(server: HubServer, big: Path) -> None:
    info = api(server).model_info("qd/tiny-GGUF", files_metadata=True)
    files = {s.rfilename: s for s in info.siblings or []}
    assert files["tiny-Q8_0.gguf"].size == big.stat().st_size
    assert files["tiny-Q8_0.gguf"].lfs is not None
    assert files["tiny-Q8_0.gguf"].lfs.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert files["config.json"].lfs is None and files["config.json"].size == 8
    assert files["config.json"].blob_id == hashlib.sha1(b'blob 8\0{"a": 1}').hexdigest()  # git's blob id
    assert (info.downloads, info.likes, info.gated, info.private, info.library_name) == (500, 7, False, False, "gguf")
    assert info.sha is not None and len(info.sha) == 40 and info.last_modified is not None and info.last_modified.year == 2024
    assert info.card_data is not None and info.card_data.base_model == "qd/base"
    assert api(server).model_info("qd/tiny-GGUF", revision=info.sha).sha == info.sha
    with pytest.raises(RevisionNotFoundError):
        api(server).model_info("qd/tiny-GGUF", revision="v9")
    tree = {f.path: f for f in api(server).list_repo_tree("qd/tiny-GGUF", recursive=True)}
    assert set(tree) == {"sub", "sub/notes.txt", "tiny-Q8_0.gguf", "config.json", "README.md"}
    assert sorted(api(server).list_repo_files("qd/tiny-GGUF")) == ["README.md", "config.json", "sub/notes.txt", "tiny-Q8_0.gguf"]
    assert [p.path for p in api(server).get_paths_info("qd/tiny-GGUF", ["sub", "config.json", "nope"])] == ["sub", "config.json"]


def test_hf_hub_download_names_the_blob_by_its_sha256(server: HubServer, big: Path, tmp_path: Path) -> None:
    path = hf_hub_download("qd/tiny-GGUF", "tiny-Q8_0.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    data = Path(path).read_bytes()
    assert data == big.read_bytes()
    assert Path(path).resolve().name == hashlib.sha256(data).hexdigest()  # the blob is named by X-Linked-Etag
    check = api(server).verify_repo_checksums("qd/tiny-GGUF", cache_dir=tmp_path)
    assert check.checked_count == 1 and check.mismatches == []
    # huggingface_hub checks the size, not the content: a wrong advertised sha256 downloads fine and
    # only verify_repo_checksums (or the caller's own hash) catches it.
    server.corrupt_sha.add("small.gguf")
    path = hf_hub_download("qd/small-GGUF", "small.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == SMALL
    bad = api(server).verify_repo_checksums("qd/small-GGUF", cache_dir=tmp_path).mismatches
    assert [(m["path"], m["actual"]) for m in bad] == [("small.gguf", hashlib.sha256(SMALL).hexdigest())]


def test_hf_file_system_reads_with_small_range_requests(server: HubServer, big: Path) -> None:
    fs = HfFileSystem(endpoint=server.url, token=False, skip_instance_cache=True)
    content, block = big.read_bytes(), 64 * 1024
    assert fs.info("qd/tiny-GGUF/tiny-Q8_0.gguf")["size"] == len(content)
    with fs.open("qd/tiny-GGUF/tiny-Q8_0.gguf", "rb", block_size=block) as f:
        assert f.read(1000) == content[:1000]
        f.seek(15_000_000)
        assert f.read(5000) == content[15_000_000:15_005_000]
    gets = resolve_gets(server, "tiny-Q8_0.gguf")
    assert gets and all(g.get("range", "").startswith("bytes=") for g in gets)
    spans = [tuple(map(int, g["range"][6:].split("-"))) for g in gets]
    assert all(end - start + 1 <= 2 * block for start, end in spans)
    with fs.open("qd/tiny-GGUF/sub/notes.txt", "rb") as f:
        assert f.read() == b"hello"


def test_gated_repo_needs_the_token(server: HubServer, tmp_path: Path) -> None:
    assert api(server).model_info("qd/gated-GGUF").gated == "manual"  # metadata is public
    with pytest.raises(GatedRepoError) as no_token:
        hf_hub_download("qd/gated-GGUF", "g.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong:
        hf_hub_download("qd/gated-GGUF", "g.gguf", endpoint=server.url, cache_dir=tmp_path, token="hf_wrong")
    assert wrong.value.response.status_code == 403
    with pytest.raises(GatedRepoError):
        HfFileSystem(endpoint=server.url, token=False, skip_instance_cache=True).open("qd/gated-GGUF/g.gguf").read(10)
    path = hf_hub_download("qd/gated-GGUF", "g.gguf", endpoint=server.url, cache_dir=tmp_path, token=TOKEN)
    assert Path(path).read_bytes() == SMALL
    assert resolve_gets(server, "g.gguf")[-1]["authorization"] == f"Bearer {TOKEN}"
    with HfFileSystem(endpoint=server.url, token=TOKEN, skip_instance_cache=True).open("qd/gated-GGUF/g.gguf") as f:
        assert f.read(10) == SMALL[:10]


def test_missing_repo_file_and_private_repo(server: HubServer, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError) as repo:
        api(server).model_info("qd/nothing-here")
    assert not isinstance(repo.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("qd/nothing-here", "x.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("qd/tiny-GGUF", "missing.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    with pytest.raises(FileNotFoundError):
        HfFileSystem(endpoint=server.url, token=False, skip_instance_cache=True).info("qd/tiny-GGUF/missing.gguf")
    with pytest.raises(RepositoryNotFoundError):
        api(server).model_info("qd/private-GGUF")
    assert api(server, TOKEN).model_info("qd/private-GGUF").private is True


def test_a_503_on_the_metadata_call_is_retried_by_hf_hub_download(server: HubServer, tmp_path: Path) -> None:
    url = hf_hub_url("qd/small-GGUF", "small.gguf", endpoint=server.url)
    server.fail_next = [503]
    with pytest.raises(HfHubHTTPError) as err:  # get_hf_file_metadata alone does not retry
        get_hf_file_metadata(url, token=False)
    assert err.value.response.status_code == 503
    server.fail_next = [503]
    server.requests.clear()
    path = hf_hub_download("qd/small-GGUF", "small.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == SMALL
    assert [m for m, p, _ in server.requests] == ["HEAD", "HEAD", "GET"] and server.fail_next == []


def test_a_dropped_download_resumes_with_a_range_request(server: HubServer, big: Path, tmp_path: Path) -> None:
    server.drop_after_bytes = DOWNLOAD_CHUNK_SIZE + 5000
    path = hf_hub_download("qd/tiny-GGUF", "tiny-Q8_0.gguf", endpoint=server.url, cache_dir=tmp_path, token=False)
    assert Path(path).read_bytes() == big.read_bytes()
    # Within the same call: only whole 10 MiB chunks reach the disk, so it resumes at the first one.
    assert [g.get("range") for g in resolve_gets(server, "tiny-Q8_0.gguf")] == [None, f"bytes={DOWNLOAD_CHUNK_SIZE}-"]
    assert server.drop_after_bytes is None
    assert not [p for p in tmp_path.rglob("*.incomplete")]
    assert os.path.getsize(path) == big.stat().st_size
