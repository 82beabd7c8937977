"""The download manager against the local Hub: resume, retries, checksums, gated repos, disk full,
pause / resume / cancel and an app restart. The real huggingface_hub client, unpatched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.core.hub.downloads import CHUNK, DONE, DownloadManager
from app.core.settings import models_dir
from tests.conftest import HUB_TOKEN
from tests.support.hub_server import HubServer

STARTER_REPO, STARTER_FILE = "qd/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"


def body_bytes(server: HubServer, name: str) -> int:
    server.settle()
    return sum(sent for method, path, status, sent in server.transfers if method == "GET" and name in path and "/resolve/" in path)


def ranges(server: HubServer, name: str) -> list[str]:
    return [{k.lower(): v for k, v in h.items()}.get("range", "") for m, p, h in server.requests
            if m == "GET" and name in p and "/resolve/" in p]


def leftovers() -> list[Path]:
    return [p for p in models_dir().rglob("*") if p.is_file()]


def test_download_checks_sha256_and_registers_in_the_library(hub: HubServer, starter_model: Path) -> None:
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start(STARTER_REPO, STARTER_FILE).id)
    assert d.state == DONE, d.error
    assert d.dest.read_bytes() == starter_model.read_bytes()
    assert d.dest.is_relative_to(models_dir()) and not d.dest.with_name(d.dest.name + ".part").exists()
    manager.library.refresh(hf_cache=False)  # reads the header facts off the download's path
    entry = manager.library.find(d.dest)
    assert entry is not None and entry.origin == "downloaded" and entry.owned
    assert entry.sha256 == hashlib.sha256(starter_model.read_bytes()).hexdigest()
    assert (entry.source_repo, entry.revision, entry.quant, entry.arch) == (STARTER_REPO, hub.repos[STARTER_REPO].sha, "Q4_1", "llama")


def test_dropped_connection_resumes_with_a_range_request(hub: HubServer, starter_model: Path) -> None:
    size = starter_model.stat().st_size
    hub.drop_after_bytes = 30_000_000
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start(STARTER_REPO, STARTER_FILE).id)
    assert d.state == DONE, d.error
    assert d.dest.read_bytes() == starter_model.read_bytes()
    got = ranges(hub, STARTER_FILE)
    assert got[0] == "" and got[1].startswith("bytes=") and int(got[1][6:].rstrip("-")) > 29_000_000
    assert body_bytes(hub, STARTER_FILE) - size <= CHUNK  # at most one chunk fetched twice


def test_server_errors_are_retried(hub: HubServer, tiny_ggufs: dict[str, Path]) -> None:
    hub.fail_next = [503, 500, 502]  # the metadata HEAD and the body GET both meet errors
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start("qd/tiny-GGUF", "tiny-Q8_0.gguf").id)
    assert d.state == DONE, d.error
    assert d.dest.read_bytes() == tiny_ggufs["q8_0"].read_bytes()
    assert not hub.fail_next


def test_gated_repo_says_accept_the_license_and_log_in(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start("qd/gated-GGUF", "tiny-Q8_0.gguf").id)
    assert d.state == "failed" and "gated" in d.error and "accept its license" in d.error and "log in" in d.error
    assert leftovers() == []
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)  # huggingface_hub's standard login opens it
    d = manager.wait(manager.start("qd/gated-GGUF", "tiny-Q8_0.gguf").id)
    assert d.state == DONE, d.error


def test_missing_file_and_repo(hub: HubServer) -> None:
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start("qd/tiny-GGUF", "nope.gguf").id)
    assert d.state == "failed" and "no such file" in d.error
    d = manager.wait(manager.start("qd/nope", "x.gguf").id)
    assert d.state == "failed" and "no such repository" in d.error
    assert leftovers() == []


def test_checksum_mismatch_rejects_the_file(hub: HubServer) -> None:
    hub.corrupt_sha.add("qd/tiny-GGUF/tiny-F16.gguf")
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start("qd/tiny-GGUF", "tiny-F16.gguf").id)
    assert d.state == "failed" and "checksum mismatch" in d.error
    assert leftovers() == [] and manager.library.entries() == []


def test_split_model_is_one_download(hub: HubServer, tiny_ggufs: dict[str, Path]) -> None:
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start("qd/tiny-GGUF", "split/tiny-split-00001-of-00002.gguf").id)
    assert d.state == DONE, d.error
    assert d.size == tiny_ggufs["split1"].stat().st_size + tiny_ggufs["split2"].stat().st_size
    assert d.dest.with_name("tiny-split-00002-of-00002.gguf").read_bytes() == tiny_ggufs["split2"].read_bytes()
    [entry] = manager.library.entries()
    assert entry.path == str(d.dest) and entry.size == d.size


def _pause_when(manager: DownloadManager, at_least: int) -> threading.Event:
    paused = threading.Event()

    def listener(d: object) -> None:
        if getattr(d, "state") == "downloading" and getattr(d, "done") >= at_least and not paused.is_set():
            paused.set()
            manager.pause(getattr(d, "id"))

    manager.listeners.append(listener)
    return paused


def test_pause_resume_and_restart_fetch_each_byte_once(hub: HubServer, starter_model: Path) -> None:
    size = starter_model.stat().st_size
    manager = DownloadManager(endpoint=hub.url)
    paused = _pause_when(manager, 10_000_000)
    d = manager.wait(manager.start(STARTER_REPO, STARTER_FILE).id)
    assert paused.is_set() and d.state == "paused" and 10_000_000 <= d.done < size
    part = d.dest.with_name(d.dest.name + ".part")
    assert part.stat().st_size == d.done and not d.dest.exists()
    manager.close()

    restarted = DownloadManager(endpoint=hub.url)  # an app restart: the same database, a new manager
    [again] = restarted.downloads()
    assert again.state == "paused" and again.done == d.done
    restarted.resume(again.id)
    done = restarted.wait(again.id)
    assert done.state == DONE, done.error
    assert done.dest.read_bytes() == starter_model.read_bytes()
    assert ranges(hub, STARTER_FILE)[-1] == f"bytes={d.done}-"
    hub.settle()
    resumed = [sent for m, p, status, sent in hub.transfers if m == "GET" and STARTER_FILE in p and status == 206]
    assert resumed == [size - d.done]  # every byte already on disk stayed; only the rest travelled


def test_cancel_deletes_the_partial_file(hub: HubServer, starter_model: Path) -> None:
    manager = DownloadManager(endpoint=hub.url)
    started = threading.Event()

    def listener(d: object) -> None:
        if getattr(d, "done") > 5_000_000 and not started.is_set():
            started.set()
            manager.cancel(getattr(d, "id"))

    manager.listeners.append(listener)
    d = manager.wait(manager.start(STARTER_REPO, STARTER_FILE).id)
    assert started.is_set() and d.state == "cancelled"
    assert leftovers() == [] and manager.library.entries() == []


def test_several_downloads_at_once(hub: HubServer, tiny_ggufs: dict[str, Path]) -> None:
    manager = DownloadManager(endpoint=hub.url, max_parallel=2)
    ids = [manager.start("qd/tiny-GGUF", name).id for name in ("tiny-F16.gguf", "tiny-Q8_0.gguf", "mmproj-tiny-F16.gguf")]
    states = [manager.wait(i).state for i in ids]
    assert states == [DONE, DONE, DONE]
    assert all(manager.get(i).dest.is_file() for i in ids)
    # mmproj-tiny-F16 is named as a vision projector: downloaded, never listed as a model
    assert sorted(Path(e.path).name for e in manager.library.entries(dedupe=False)) == ["tiny-F16.gguf", "tiny-Q8_0.gguf"]


def test_disk_full_is_a_clean_error_and_leaves_nothing(hub: HubServer, tmp_path: Path) -> None:
    """A quota on file size (RLIMIT_FSIZE) in a real `quantdesk pull` process: writes fail with EFBIG."""
    script = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, 5_000_000)); "
        "from app.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    proc = subprocess.run([sys.executable, "-c", script, "pull", STARTER_REPO, STARTER_FILE], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("quantdesk: error:") and "disk is full" in last and "Traceback" not in proc.stderr
    assert leftovers() == []


def test_disk_check_before_starting(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))  # the OS's answer, made small
    manager = DownloadManager(endpoint=hub.url)
    d = manager.wait(manager.start(STARTER_REPO, STARTER_FILE).id)
    assert d.state == "failed" and "not enough free disk space" in d.error and "nothing was downloaded" in d.error
    assert body_bytes(hub, STARTER_FILE) == 0 and leftovers() == []


def test_unsafe_name_is_refused_before_any_request(hub: HubServer) -> None:
    from app.core.errors import QuantDeskError

    manager = DownloadManager(endpoint=hub.url)
    with pytest.raises(QuantDeskError, match="unsafe"):
        manager.start("qd/tiny-GGUF", "../../outside.gguf")
    assert not any("/resolve/" in p for _, p, _ in hub.requests)


def test_a_failed_re_download_of_a_split_model_keeps_the_complete_copy(hub: HubServer, tiny_ggufs: dict[str, Path]) -> None:
    manager = DownloadManager(endpoint=hub.url)
    first = manager.wait(manager.start("qd/tiny-GGUF", "split/tiny-split-00001-of-00002.gguf").id)
    assert first.state == DONE, first.error
    shards = [first.dest, first.dest.with_name("tiny-split-00002-of-00002.gguf")]
    before = [p.read_bytes() for p in shards]
    manager.remove(first.id)  # forgotten by the download list; the files stay
    manager.library.execute("DELETE FROM models")  # and not (yet) in the library either
    hub.fail_next = [404] * 4
    again = manager.wait(manager.start("qd/tiny-GGUF", "split/tiny-split-00001-of-00002.gguf").id)
    assert again.state == "failed"
    manager.cancel(again.id)  # drops what this attempt wrote: nothing of the complete copy
    assert [p.read_bytes() for p in shards] == before
    manager.close()


def test_a_second_process_never_writes_the_same_part_file(hub: HubServer) -> None:
    from app.core.hub.api import local_path

    dest = local_path(models_dir(), "qd/tiny-GGUF", "tiny-F16.gguf")
    part = dest.with_name(dest.name + ".part")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from app.core.db import owner_lock; "
        "from app.core.hub.downloads import part_lock_path; "
        f"p = Path({str(part)!r}); lock = owner_lock(p, lock_path=part_lock_path(p)); "
        "print('held' if lock else 'refused', flush=True); sys.stdin.readline()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]  # a CLI pull, say
        manager = DownloadManager(endpoint=hub.url)
        d = manager.wait(manager.start("qd/tiny-GGUF", "tiny-F16.gguf").id)
        assert d.state == "failed" and "another QuantDesk process is downloading" in (d.error or "")
        assert not dest.exists()
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(30)
    manager.resume(d.id)  # the other one is gone: this one may write now
    assert manager.wait(d.id).state == DONE
    manager.close()


def test_a_vision_model_downloads_with_its_projector_and_is_paired(vision_hub: HubServer) -> None:
    from app.core.hub.api import repo_details
    from tests.conftest import VISION_REPO
    from tests.support.tiny_vision import tiny_vision_pair

    f = next(f for f in repo_details(VISION_REPO, endpoint=vision_hub.url).gguf_files if f.path == "tiny-vision-Q8_0.gguf")
    manager = DownloadManager(endpoint=vision_hub.url)
    started = manager.start_with_projector(VISION_REPO, f.path, f.projector)
    assert [d.filename for d in started] == ["tiny-vision-Q8_0.gguf", "mmproj-tiny-vision-F16.gguf"]
    done = [manager.wait(d.id) for d in started]
    assert [d.state for d in done] == [DONE, DONE]
    pair = tiny_vision_pair()
    assert [d.dest.read_bytes() for d in done] == [pair.model.read_bytes(), pair.projector.read_bytes()]
    assert sorted(leftovers()) == sorted(d.dest for d in done)  # no .part or lock file left
    entries = manager.library.refresh(hf_cache=False)
    vision = [e for e in entries if e.origin != "starter"]
    assert [Path(e.path).name for e in vision] == ["tiny-vision-Q8_0.gguf"]  # the projector is not a model
    assert vision[0].projector == str(done[1].dest.resolve())
