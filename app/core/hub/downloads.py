"""Download manager: several downloads at once, pause / resume / cancel, resume after a dropped
connection or an app restart from the bytes already on disk, transient errors retried with backoff,
a free-disk check first, and the sha256 the Hub advertises checked before a file is ready.

Metadata comes from huggingface_hub (``get_hf_file_metadata``: size, sha256 ETag, commit, CDN
location, Xet data) and bodies travel through its HTTP session (``http_stream_backoff``: its
proxies, headers and token). Its own ``hf_hub_download`` checks only the size, deletes partial
files on failure and resumes only inside one call, so the body loop here is our own: Range requests
from the ``.part`` file's size. Xet-backed files go through huggingface_hub's ``xet_get`` (hf_xet's
chunk cache makes a restarted transfer fetch only missing chunks).

A file is written as ``<name>.part`` next to its final path, renamed only after the hash matched,
then registered in the library. A split model is one download of all its shards. A vision
projector is not registered as a model: the library pairs it with the models in its folder.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from app.core import paths
from app.core.db import owner_lock
from app.core.errors import Cancelled, ChecksumError, DiskSpaceError, HubError, QuantDeskError
from app.core.gguf.header import SPLIT_NAME, shard_name
from app.core.gguf.projector import is_projector_file
from app.core.hub.api import hub_error, local_path
from app.core.jobs import CancelToken, RateMeter
from app.core.library.catalog import DOWNLOADED, Library
from app.core.proc.runner import ensure_free_space
from app.core.settings import fsync_dir, models_dir

log = logging.getLogger(__name__)

QUEUED, RUNNING, PAUSED, VERIFYING, DONE, FAILED, CANCELLED = (
    "queued", "downloading", "paused", "verifying", "done", "failed", "cancelled")
ACTIVE = (QUEUED, RUNNING, VERIFYING)
CHUNK = 1024 * 1024
DISK_MARGIN = 64 * 1024 * 1024
MAX_STALLED_ATTEMPTS = 6  # retries in a row without a new byte
BACKOFF_S = (0.5, 1, 2, 4, 8, 15)
NOTIFY_INTERVAL_S = 0.1
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass
class Download:
    id: int
    repo_id: str
    filename: str
    revision: str | None
    commit: str | None
    dest: Path
    size: int = 0
    done: int = 0
    state: str = QUEUED
    error: str | None = None
    speed: float = 0.0
    eta_s: float | None = None
    shards: list[str] = field(default_factory=list)
    restarted_bytes: int = 0  # bytes fetched twice (a server that ignored Range); for the benchmark

    @property
    def fraction(self) -> float:
        return self.done / self.size if self.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "repo_id": self.repo_id, "filename": self.filename, "revision": self.commit or self.revision,
                "path": str(self.dest), "size_bytes": self.size, "done_bytes": self.done, "state": self.state,
                "error": self.error, "speed": round(self.speed), "eta_s": self.eta_s}


Listener = Callable[[Download], None]


def _shards(filename: str) -> list[str]:
    m = SPLIT_NAME.search(filename)
    if not m:
        return [filename]
    count = int(m.group(2))
    return [shard_name(filename, no, count) for no in range(1, count + 1)]


class DownloadManager:
    """Thread-safe; every download runs on its own thread; ``listener`` is called from those threads."""

    def __init__(self, library: Library | None = None, *, models_dir: Path | None = None, endpoint: str | None = None,
                 token: str | None = None, max_parallel: int = 3, listener: Listener | None = None) -> None:
        self.library = library or Library()
        self._models_dir = models_dir
        self.endpoint = endpoint
        self.token = token
        self.listeners: list[Listener] = [listener] if listener else []
        self._slots = threading.Semaphore(max_parallel)
        self._lock = threading.RLock()
        self._items: dict[int, Download] = {}
        self._tokens: dict[int, CancelToken] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._last_note: dict[int, float] = {}
        self._written: dict[int, set[str]] = {}  # shards each download completed itself (not found there)
        self._load()

    @property
    def models_dir(self) -> Path:
        """Where new downloads go: the folder given, else the Settings' models folder, read each time."""
        return self._models_dir or models_dir()

    # ---- state ------------------------------------------------------------------------------

    def _load(self) -> None:
        """Downloads of an earlier run: an unfinished one becomes paused, its .part kept."""
        for row in self.library.execute("SELECT * FROM downloads ORDER BY id"):
            state = row["state"]
            if state in ACTIVE:
                state = PAUSED
            d = Download(row["id"], row["repo_id"], row["filename"], row["revision"], row["commit_hash"], Path(row["dest"]),
                         row["size"], row["done"], state, row["error"], shards=_shards(row["filename"]))
            if state == PAUSED:
                d.done = self._bytes_on_disk(d)
            self._items[d.id] = d
            self._save(d)

    def _save(self, d: Download) -> None:
        self.library.execute(
            "UPDATE downloads SET state=?, error=?, size=?, done=?, commit_hash=?, updated=? WHERE id=?",
            (d.state, d.error, d.size, d.done, d.commit, time.time(), d.id))

    def _notify(self, d: Download, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._last_note.get(d.id, 0.0) < NOTIFY_INTERVAL_S:
            return
        self._last_note[d.id] = now
        snapshot = replace(d, shards=list(d.shards))
        for listener in list(self.listeners):
            try:
                listener(snapshot)
            except Exception:  # a listener's bug must not kill a download
                log.exception("download listener failed")

    def _set(self, d: Download, state: str, error: str | None = None) -> None:
        with self._lock:
            d.state, d.error = state, error
            if state != RUNNING:
                d.speed, d.eta_s = 0.0, None
            self._save(d)
        log.info("download %s %s/%s: %s%s", d.id, d.repo_id, d.filename, state, f" ({error})" if error else "")
        self._notify(d)

    def downloads(self) -> list[Download]:
        with self._lock:
            return [replace(d) for d in self._items.values()]

    def get(self, download_id: int) -> Download:
        with self._lock:
            if download_id not in self._items:
                raise QuantDeskError(f"download {download_id}: no such download")
            return replace(self._items[download_id])

    # ---- commands ---------------------------------------------------------------------------

    def start(self, repo_id: str, filename: str, *, revision: str | None = None) -> Download:
        """Queue a download (all shards of a split model); an existing unfinished one is resumed."""
        dest = local_path(self.models_dir, repo_id, filename)  # refuses names that leave the folder
        for shard in _shards(filename):
            local_path(self.models_dir, repo_id, shard)
        with self._lock:
            existing = next((d for d in self._items.values() if d.dest == dest), None)
            if existing is not None and existing.state in ACTIVE:
                return replace(existing)
            if existing is not None:
                if existing.state == DONE and dest.exists():
                    return replace(existing)
                self.resume(existing.id)
                return replace(existing)
            now = time.time()
            cur = self.library.execute(
                "INSERT INTO downloads (repo_id, filename, revision, dest, state, created, updated) VALUES (?,?,?,?,?,?,?)",
                (repo_id, filename, revision, str(dest), QUEUED, now, now))
            d = Download(int(cur.lastrowid or 0), repo_id, filename, revision, None, dest, shards=_shards(filename))
            self._items[d.id] = d
            self._written[d.id] = set()  # row ids are reused: nothing from an earlier download of this id
            self._launch(d)
            return replace(d)

    def start_with_projector(self, repo_id: str, filename: str, projector: str | None, *,
                             revision: str | None = None) -> list[Download]:
        """A vision model and its projector (``HubFile.projector``): two downloads, each written and
        checked on its own (``.part``, sha256, rename), the model first."""
        started = [self.start(repo_id, filename, revision=revision)]
        if projector:
            started.append(self.start(repo_id, projector, revision=revision))
        return started

    def pause(self, download_id: int) -> None:
        with self._lock:
            d = self._items[download_id]
            token = self._tokens.get(download_id)
            if d.state in ACTIVE and token is not None:
                token.pause()
                token.cancel("paused")

    def resume(self, download_id: int) -> None:
        with self._lock:
            d = self._items[download_id]
            if d.state in ACTIVE:
                return
            if d.state == DONE and d.dest.exists():
                return
            d.error = None
            self._launch(d)

    def cancel(self, download_id: int) -> None:
        """Stop and delete what was fetched; a finished file is left alone (delete it in the library)."""
        with self._lock:
            d = self._items[download_id]
            token = self._tokens.get(download_id)
            if d.state in ACTIVE and token is not None:
                token.cancel("cancelled")
                return
            if d.state in (PAUSED, FAILED, QUEUED):
                self._remove_parts(d)
                d.done = 0
                self._set(d, CANCELLED)

    def remove(self, download_id: int) -> None:
        """Forget a finished, failed or cancelled download (its file, if ready, stays in the library)."""
        with self._lock:
            d = self._items[download_id]
            if d.state in ACTIVE:
                raise QuantDeskError(f"{d.filename}: still downloading; cancel it first")
            if d.state != DONE:
                self._remove_parts(d)
            del self._items[download_id]
            self.library.execute("DELETE FROM downloads WHERE id=?", (download_id,))

    def wait(self, download_id: int, timeout: float | None = None) -> Download:
        thread = self._threads.get(download_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(download_id)

    def close(self, timeout: float = 10.0) -> None:
        """Pause everything running (the .part files stay for the next start)."""
        for download_id in list(self._tokens):
            self.pause(download_id)
        for thread in list(self._threads.values()):
            thread.join(timeout)

    @property
    def active(self) -> list[Download]:
        return [d for d in self.downloads() if d.state in ACTIVE]

    # ---- the worker -------------------------------------------------------------------------

    def _launch(self, d: Download) -> None:
        token = CancelToken()
        self._tokens[d.id] = token
        d.state, d.error = QUEUED, None
        self._save(d)
        self._notify(d)
        thread = threading.Thread(target=self._run, args=(d, token), name=f"download-{d.id}", daemon=True)
        self._threads[d.id] = thread
        thread.start()

    def _run(self, d: Download, token: CancelToken) -> None:
        try:
            with self._slots:
                token.check("download")
                self._set(d, RUNNING)
                self._download_all(d, token)
            self._written.pop(d.id, None)
            self._set(d, DONE)
        except Cancelled:
            if token.paused:
                d.done = self._bytes_on_disk(d)
                self._set(d, PAUSED)
            else:
                self._remove_parts(d)
                d.done = 0
                self._set(d, CANCELLED)
        except QuantDeskError as exc:
            self._set(d, FAILED, str(exc))
        except Exception as exc:  # unexpected: a sentence, and the traceback in the log
            log.exception("download %s failed", d.id)
            self._set(d, FAILED, f"{d.repo_id}/{d.filename}: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                if self._tokens.get(d.id) is token:
                    del self._tokens[d.id]

    def _download_all(self, d: Download, token: CancelToken) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        metas = []
        for shard in d.shards:
            url = hf_hub_url(d.repo_id, shard, revision=d.commit or d.revision, endpoint=self.endpoint)
            metas.append(self._retry(functools.partial(get_hf_file_metadata, url, token=self.token, endpoint=self.endpoint),
                                     token, f"{d.repo_id}/{shard}"))
        d.commit = d.commit or metas[0].commit_hash  # later shards and a resume read the same commit
        d.size = sum(int(m.size or 0) for m in metas)
        dests = [_shard_dest(d, s) for s in d.shards]
        d.done = self._bytes_on_disk(d)
        self._save(d)
        self._check_disk(d)
        first_sha, offset = None, 0
        for shard, meta, dest in zip(d.shards, metas, dests):
            sha = self._download_one(d, shard, meta, dest, token, offset)
            first_sha = first_sha or sha
            offset += int(meta.size or 0)
        self._set(d, VERIFYING)
        if not d.filename.endswith(".gguf"):
            return  # config, tokenizer or safetensors of a model to convert: verified, not a model by itself
        if is_projector_file(dests[0]):  # a vision projector: never a model; paired with the models beside it
            self.library.pair_folder(dests[0].parent)
            return
        # verified by sha256 already; the header facts (architecture, parameters) are read by the
        # library's next refresh, off the download's path (a 150k-token vocabulary takes seconds)
        self.library.register(dests[0], origin=DOWNLOADED, owned=True, source_repo=d.repo_id, revision=d.commit,
                              sha256=first_sha if len(dests) == 1 else None, hash_file=False, read=False)

    def _retry(self, call: Callable[[], Any], token: CancelToken, what: str) -> Any:
        """Transient failures (connection, 5xx, 429) retried with backoff; the Hub's 'no' is not."""
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(len(BACKOFF_S) + 1):
            token.check("download")
            try:
                return call()
            except HfHubHTTPError as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status not in (408, 429, 500, 502, 503, 504) or attempt == len(BACKOFF_S):
                    raise hub_error(exc, what) from None
            except (OSError, TimeoutError) as exc:
                if attempt == len(BACKOFF_S):
                    raise hub_error(exc, what) from None
            except Exception as exc:
                if not _transient(exc) or attempt == len(BACKOFF_S):
                    raise hub_error(exc, what) from None
            log.info("%s: transient error, retry %d in %.1fs", what, attempt + 1, BACKOFF_S[attempt])
            if token.wait(BACKOFF_S[attempt]):
                token.check("download")
        raise HubError(f"{what}: the Hub kept failing")

    def _check_disk(self, d: Download) -> None:
        d.dest.parent.mkdir(parents=True, exist_ok=True)
        ensure_free_space(d.dest.parent, d.size - d.done + DISK_MARGIN, f"downloading {d.filename}",
                          then="nothing was downloaded")

    def _download_one(self, d: Download, shard: str, meta: Any, dest: Path, token: CancelToken, offset: int) -> str | None:
        """One file into ``dest.part``; returns its sha256. A finished shard (final name) is kept."""
        expected = int(meta.size or 0)
        etag = (meta.etag or "").strip('"').removeprefix("W/").strip('"')
        if dest.exists() and dest.stat().st_size == expected:
            return None if len(etag) != 64 else etag  # verified before it got its final name
        part = dest.with_name(dest.name + ".part")
        from huggingface_hub.file_download import is_xet_available

        lock = owner_lock(part, lock_path=part_lock_path(part))  # one writer per .part, across processes
        if lock is None:
            raise QuantDeskError(f"{dest}: another QuantDesk process is downloading this file now; "
                                 "wait for it to finish (this download can be resumed later)")
        try:
            return self._download_locked(d, shard, meta, dest, part, expected, etag, token, offset, is_xet_available)
        finally:
            lock.close()

    def _download_locked(self, d: Download, shard: str, meta: Any, dest: Path, part: Path, expected: int, etag: str,
                         token: CancelToken, offset: int, is_xet_available: Callable[[], bool]) -> str | None:
        if dest.exists() and dest.stat().st_size == expected:  # the other process finished it meanwhile
            return None if len(etag) != 64 else etag
        try:
            digest = None
            if meta.xet_file_data is not None and is_xet_available():
                self._xet(d, meta, part, expected, token, offset)
            else:
                digest = self._http(d, meta, part, expected, token, offset)
            token.check("download")
            self._verify(part, expected, etag, f"{d.repo_id}/{shard}", token, digest if len(etag) == 64 else None)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                part.unlink(missing_ok=True)
                raise DiskSpaceError(f"{shard}: the disk is full ({part.parent}: {exc.strerror}); the partial file was deleted") from None
            raise
        with part.open("rb+") as fh:  # on disk before it gets its final name (a power cut keeps no torn file)
            os.fsync(fh.fileno())
        os.replace(part, dest)
        fsync_dir(dest.parent)
        self._written.setdefault(d.id, set()).add(shard)
        return etag if len(etag) == 64 else None

    def _http(self, d: Download, meta: Any, part: Path, expected: int, token: CancelToken, base: int) -> str:
        """Range requests from the .part file's size until it is complete; returns its sha256,
        hashed as the bytes arrive (the bytes already on disk are hashed once, on resume)."""
        from huggingface_hub.utils import build_hf_headers

        url = meta.location
        headers = build_hf_headers(token=self.token)
        if urlsplit(url).netloc != urlsplit(self.endpoint or _default_endpoint()).netloc:
            headers.pop("authorization", None)  # a CDN: the token stays with the Hub
            headers.pop("Authorization", None)
        hashers: list[_Hasher] = []
        try:
            return self._http_loop(d, url, headers, part, expected, token, base, hashers)
        finally:
            for h in hashers:
                h.abandon()

    def _http_loop(self, d: Download, url: str, headers: dict[str, str], part: Path, expected: int, token: CancelToken,
                   base: int, hashers: list[_Hasher]) -> str:
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

        meter = RateMeter()
        stalled = 0
        hasher, hashed = _Hasher(), 0
        hashers.append(hasher)
        while True:
            have = part.stat().st_size if part.exists() else 0
            if have > expected:
                part.unlink()
                have = 0
            if hashed != have:  # resume: the bytes already on disk (or a short write after an error)
                hasher.abandon()
                hasher, hashed = _Hasher(part, have), have
                hashers.append(hasher)
            if have == expected:
                return hasher.hexdigest()
            token.check("download")
            req = dict(headers)
            if have:
                req["Range"] = f"bytes={have}-"
            got = 0
            try:
                with http_stream_backoff("GET", url, headers=req, max_retries=0, retry_on_exceptions=(),
                                         retry_on_status_codes=(), follow_redirects=True) as response:  # retries: ours
                    hf_raise_for_status(response)
                    mode = "ab"
                    if have and response.status_code == 200:  # the server ignored Range: start again
                        d.restarted_bytes += have
                        mode, have = "wb", 0
                        hasher.abandon()
                        hasher, hashed = _Hasher(), 0
                        hashers.append(hasher)
                    elif have and response.status_code == 206:
                        start = int(response.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
                        if start != have:
                            raise HubError(f"{d.filename}: the server answered the wrong range ({start} for {have})")
                    with part.open(mode) as out:
                        for chunk in response.iter_bytes(CHUNK):
                            out.write(chunk)
                            hasher.update(chunk)
                            hashed += len(chunk)
                            got += len(chunk)
                            d.done = base + have + got
                            d.speed = meter.update(d.done)
                            d.eta_s = RateMeter.eta(d.done, d.size, d.speed)
                            self._notify(d, force=False)
                            if token.cancelled:
                                out.flush()
                                token.check("download")
            except Cancelled:
                raise
            except HfHubHTTPError as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status not in (408, 429, 500, 502, 503, 504):
                    raise hub_error(exc, f"{d.repo_id}/{d.filename}") from None
                stalled = self._backoff(d, stalled, got, token, exc)
            except OSError as exc:
                if exc.errno in DISK_FULL:
                    raise
                stalled = self._backoff(d, stalled, got, token, exc)
            except Exception as exc:
                if not _transient(exc):
                    raise hub_error(exc, f"{d.repo_id}/{d.filename}") from None
                stalled = self._backoff(d, stalled, got, token, exc)
            self._save(d)

    def _backoff(self, d: Download, stalled: int, got: int, token: CancelToken, exc: BaseException) -> int:
        stalled = 0 if got else stalled + 1
        if stalled >= MAX_STALLED_ATTEMPTS:
            raise HubError(f"{d.repo_id}/{d.filename}: the connection keeps failing ({type(exc).__name__}: {exc}); "
                           "paused bytes are kept: resume later") from None
        wait = BACKOFF_S[min(stalled, len(BACKOFF_S) - 1)]
        log.info("download %s: %s after %d new bytes; resuming in %.1fs", d.id, type(exc).__name__, got, wait)
        if token.wait(wait):
            token.check("download")
        return stalled

    def _xet(self, d: Download, meta: Any, part: Path, expected: int, token: CancelToken, base: int) -> None:
        from huggingface_hub.file_download import xet_get
        from huggingface_hub.utils import build_hf_headers
        from huggingface_hub.utils import tqdm as hf_tqdm

        manager, bars = self, []

        class _Progress(hf_tqdm):  # type: ignore[misc, valid-type]
            """huggingface_hub's tqdm, silent; the first bar xet_get makes counts bytes written."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)
                self.qd_done = 0
                bars.append(self)

            def update(self, n: float | None = 1) -> bool | None:
                if self is bars[0]:
                    self.qd_done += int(n or 0)
                    d.done = base + self.qd_done
                    manager._notify(d, force=False)
                    token.check("download")  # may be swallowed by hf_xet; checked again afterwards
                return super().update(n)

        part.unlink(missing_ok=True)
        xet_get(incomplete_path=part, xet_file_data=meta.xet_file_data, headers=build_hf_headers(token=self.token),
                expected_size=expected, displayed_filename=d.filename, tqdm_class=_Progress)  # type: ignore[arg-type]

    def _verify(self, part: Path, expected: int, etag: str, what: str, token: CancelToken, digest: str | None) -> None:
        size = part.stat().st_size
        if size != expected:
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{what}: got {size} bytes, the Hub says {expected}; the file was deleted")
        if digest is not None:
            actual = digest
        elif len(etag) == 64:  # LFS: the ETag is the sha256
            h = hashlib.sha256()
        elif len(etag) == 40:  # a small git file: the git blob id
            h = hashlib.sha1(b"blob %d\0" % size)
        else:
            log.warning("%s: the Hub gave no hash (ETag %r); size checked only", what, etag)
            return
        if digest is None:
            with part.open("rb") as f:
                while block := f.read(8 * CHUNK):
                    h.update(block)
                    if token.cancelled:
                        token.check("download")
            actual = h.hexdigest()
        if actual != etag:
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{what}: checksum mismatch (sha256 {actual[:12]}…, the Hub says {etag[:12]}…): "
                                "the file is corrupt and was deleted; try again")

    def _bytes_on_disk(self, d: Download) -> int:
        total = 0
        for shard in d.shards:
            dest = _shard_dest(d, shard)
            part = dest.with_name(dest.name + ".part")
            if dest.exists():
                total += dest.stat().st_size
            elif part.exists():
                total += part.stat().st_size
        return total

    def _remove_parts(self, d: Download) -> None:
        """Drop what this download wrote and did not finish: its .part files, and the shards it
        completed itself of a split model left incomplete. A shard that was already there (the
        complete copy a re-download found) is never deleted, nor anything of a registered model."""
        first = _shard_dest(d, d.shards[0]) if d.shards else d.dest
        registered = self.library.find(first) is not None
        written = self._written.pop(d.id, set())
        for shard in d.shards:
            dest = _shard_dest(d, shard)
            dest.with_name(dest.name + ".part").unlink(missing_ok=True)
            if (len(d.shards) > 1 and d.state != DONE and shard in written and not registered
                    and dest.exists() and not self.library.find(dest)):
                dest.unlink()  # a shard this download finished, of a split model it did not finish


def part_lock_path(part: Path) -> Path:
    """Where the lock of a .part file lives: in the data folder, never among the models."""
    return paths.home() / "locks" / (hashlib.sha1(str(part.resolve()).encode()).hexdigest() + ".lock")


def _shard_dest(d: Download, shard: str) -> Path:
    """A shard lies next to the download's first file (wherever the models folder was then)."""
    return d.dest.with_name(Path(shard).name)


class _Hasher:
    """sha256 on its own thread (hashlib releases the GIL), so hashing overlaps receiving: without
    SHA CPU instructions sha256 runs near 200 MiB/s, as fast as a fast link."""

    def __init__(self, prefix: Path | None = None, n: int = 0) -> None:
        self._h = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, args=(prefix, n), name="sha256", daemon=True)
        self._thread.start()

    def _run(self, prefix: Path | None, n: int) -> None:
        if prefix is not None:  # resume: the bytes already on disk are hashed once
            with prefix.open("rb") as f:
                while n > 0 and (block := f.read(min(8 * CHUNK, n))):
                    self._h.update(block)
                    n -= len(block)
        while (chunk := self._queue.get()) is not None:
            self._h.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def hexdigest(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._h.hexdigest()

    def abandon(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)


def _transient(exc: BaseException) -> bool:
    name = type(exc).__name__
    return any(k in name for k in ("Timeout", "Network", "Connect", "RemoteProtocol", "ReadError", "WriteError", "Protocol"))


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


