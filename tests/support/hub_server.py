"""A local Hugging Face Hub for tests: the HTTP API the real ``huggingface_hub`` client (2.x, on
httpx2) speaks, served on 127.0.0.1 by a daemon thread. Pass ``endpoint=server.url`` to ``HfApi``,
``hf_hub_download`` or ``HfFileSystem``; ``HF_ENDPOINT`` works for subprocesses only (read at import).

  GET  /api/models                              list_models: search author filter pipeline_tag gated sort
                                                direction limit full expand; Link rel="next" pages
  GET  /api/models/{repo}[/revision/{rev}]      model_info / repo_info (blobs=true: sizes, sha256)
  GET  /api/models/{repo}/tree/{rev}[/{path}]   list_repo_tree / list_repo_files (recursive, expand; pages)
  POST /api/models/{repo}/paths-info/{rev}      get_paths_info
  HEAD|GET /{repo}/resolve/{rev}/{path}         file metadata and bodies; one Range (a-b, a-, -n) -> 206
  GET  /api/whoami-v2                           whoami (login): the user for the server's token, else 401

Revisions: ``main`` and the repo's ``sha``. Errors carry the X-Error-Code the client types them by:
RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo (401 without a token, 403 with a wrong one).
.gguf and .safetensors files are LFS: ETag/X-Linked-Etag = sha256, X-Linked-Size; others: git blob id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

LFS_SUFFIXES = (".gguf", ".safetensors")
CHUNK = 64 * 1024
EPOCH = "2024-01-01T00:00:00.000Z"
LIST_FIELDS = ("_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag", "library_name", "createdAt")
SORT_KEYS = {"downloads": "downloads", "likes": "likes", "lastModified": "last_modified", "createdAt": "created_at"}


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, Path | bytes] = field(default_factory=dict)
    gated: bool | str = False  # True means "manual"; "auto" is passed through
    private: bool = False
    downloads: int = 0
    likes: int = 0
    tags: list[str] = field(default_factory=list)
    library_name: str | None = None
    pipeline_tag: str | None = None
    card: str | None = None  # README.md; its YAML front matter becomes cardData
    last_modified: str = EPOCH
    created_at: str = EPOCH
    author: str | None = None  # defaults to the namespace
    sha: str = ""  # the one commit; defaults to sha1(repo_id)
    extra: dict[str, Any] = field(default_factory=dict)  # more model_info fields, e.g. {"gguf": {...}}

    def __post_init__(self) -> None:
        self.files = dict(self.files)
        self.author = self.author or (self.repo_id.split("/")[0] if "/" in self.repo_id else None)
        self.sha = self.sha or hashlib.sha1(self.repo_id.encode()).hexdigest()
        if self.card is not None:
            self.files.setdefault("README.md", self.card.encode())
        elif isinstance(readme := self.files.get("README.md"), bytes):
            self.card = readme.decode(errors="replace")

    def card_data(self) -> dict[str, Any] | None:
        m = re.match(r"---\s*\n(.*?)\n---", self.card or "", re.S)
        data = yaml.safe_load(m.group(1)) if m else None
        return data if isinstance(data, dict) else None

    def directories(self) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}


@dataclass(frozen=True)
class _Blob:
    size: int
    sha256: str
    oid: str  # git blob id (of the pointer file for LFS files)
    pointer_size: int | None  # set for LFS files


_BLOBS: dict[tuple[str, object], _Blob] = {}  # bytes key themselves; files by (path, size, mtime)


def _size(data: Path | bytes) -> int:
    return data.stat().st_size if isinstance(data, Path) else len(data)


def _chunks(data: Path | bytes, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    end = _size(data) if length is None else start + length
    if isinstance(data, bytes):
        yield from (data[i:min(i + CHUNK, end)] for i in range(start, end, CHUNK))
        return
    with data.open("rb") as f:  # streamed: big files never sit in memory
        f.seek(start)
        while start < end and (chunk := f.read(min(CHUNK, end - start))):
            start += len(chunk)
            yield chunk


def _blob(path: str, data: Path | bytes) -> _Blob:
    """Size and hashes, computed once per content."""
    key = (path, data if isinstance(data, bytes) else (str(data), data.stat().st_size, data.stat().st_mtime_ns))
    if key not in _BLOBS:
        size, sha, git = _size(data), hashlib.sha256(), hashlib.sha1(b"blob %d\0" % _size(data))
        for chunk in _chunks(data):
            sha.update(chunk)
            git.update(chunk)
        blob = _Blob(size, sha.hexdigest(), git.hexdigest(), None)
        if path.endswith(LFS_SUFFIXES):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.sha256}\nsize {size}\n".encode()
            blob = _Blob(size, blob.sha256, hashlib.sha1(b"blob %d\0%s" % (len(pointer), pointer)).hexdigest(), len(pointer))
        _BLOBS[key] = blob
    return _BLOBS[key]


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class HubServer:
    """Context manager; it serves from ``__init__`` on. The fault switches and logs are plain
    attributes that tests set and read at any time."""

    def __init__(self, repos: Iterable[HubRepo] = (), *, token: str | None = None, page_size: int = 1000) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.token = token  # the token that opens gated and private repos; None: any token does
        self.page_size = page_size  # entries per page of /api/models and /tree (the Hub: 1000)
        self.drop_after_bytes: int | None = None  # the next file body longer than this is cut there, once
        self.fail_next: list[int] = []  # statuses for the next /resolve/ requests (HEAD or GET)
        self.bytes_per_second: int | None = None  # throttle file bodies (a slow link), None: full speed
        self.corrupt_sha: set[str] = set()  # "path" or "repo_id/path": the advertised hash is wrong
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path?query, headers)
        self.transfers: list[tuple[str, str, int, int]] = []  # (method, path?query, status, body bytes sent)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0
        self._conns: set[socket.socket] = set()
        for repo in repos:
            self.add_repo(repo)
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()

    def add_repo(self, repo: HubRepo) -> None:
        self.repos[repo.repo_id] = repo

    def close(self) -> None:
        self._httpd.shutdown()
        with self._lock:
            for conn in self._conns:  # the client's idle keep-alive connections
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being answered: a body the client stopped reading (a streamed
        read closed early) reaches ``transfers`` once the server notices the hang-up."""
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout)

    def advertised_hash(self, repo: HubRepo, path: str) -> str:
        """sha256 for LFS files, the git blob id otherwise; wrong when the path is in corrupt_sha."""
        blob = _blob(path, repo.files[path])
        value = blob.sha256 if blob.pointer_size is not None else blob.oid
        if path in self.corrupt_sha or f"{repo.repo_id}/{path}" in self.corrupt_sha:
            value = hashlib.sha256(value.encode()).hexdigest()[: len(value)]
        return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
ROUTES = [
    ("GET", re.compile(r"/api/whoami-v2"), "whoami"),
    ("GET", re.compile(r"/api/models/?"), "list_models"),
    ("GET", re.compile(rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?"), "model_info"),
    ("GET", re.compile(rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    ("POST", re.compile(rf"/api/models/{REPO}/paths-info/(?P<rev>[^/]+)"), "paths_info"),
    ("GET", re.compile(rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
]
RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, [""])[0].lower() == "true"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.hub._lock:
            self.server.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.hub._lock:
            self.server.hub._conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        hub = self.server.hub
        hub.requests.append((self.command, self.path, dict(self.headers.items())))
        with hub._idle:
            hub._busy += 1
        try:
            self._answer()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            with hub._idle:
                hub._busy -= 1
                hub._idle.notify_all()

    do_HEAD = do_POST = do_GET

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            for method, pattern, name in ROUTES:
                m = pattern.fullmatch(url.path)
                if m and method == ("GET" if self.command == "HEAD" else self.command):
                    args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    return getattr(self, f"_{name}")(query=query, body=body, **args)
            raise _HubError(404, None, "Not Found")
        except _HubError as e:
            headers = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {}), **e.headers}
            self._send_json({"error": e.message}, e.status, headers)

    def _send_head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self._send_head(status, {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.server.hub.transfers.append((self.command, self.path, status, 0 if self.command == "HEAD" else len(payload)))

    def _authorized(self) -> bool | None:
        """None: no token sent; else whether the token opens gated and private repos."""
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return None if not given else self.server.hub.token in (None, given)

    def _repo(self, repo_id: str, rev: str | None) -> HubRepo:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise _HubError(401 if self._authorized() is None else 404, "RepoNotFound", "Repository not found")
        if rev is not None and rev not in ("main", repo.sha):
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    def _paginate(self, items: list[Any], query: dict[str, list[str]]) -> None:
        size = self.server.hub.page_size
        per_page = max(1, min(int(query.get("limit", [""])[0] or size), size))
        offset = int(query.get("cursor", ["0"])[0])
        headers = {}
        if offset + per_page < len(items):
            params = [(k, v) for k, vs in query.items() if k != "cursor" for v in vs] + [("cursor", str(offset + per_page))]
            headers["Link"] = f'<{self.server.hub.url}{urlsplit(self.path).path}?{urlencode(params)}>; rel="next"'
        self._send_json(items[offset:offset + per_page], headers=headers)

    def _model(self, repo: HubRepo, *, blobs: bool) -> dict[str, Any]:
        siblings = [self._sibling(repo, p) if blobs else {"rfilename": p} for p in sorted(repo.files)]
        return {
            "_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.author, "sha": repo.sha,
            "lastModified": repo.last_modified, "createdAt": repo.created_at, "private": repo.private,
            "gated": "manual" if repo.gated is True else repo.gated, "disabled": False, "downloads": repo.downloads,
            "likes": repo.likes, "trendingScore": 0, "tags": repo.tags, "library_name": repo.library_name,
            "pipeline_tag": repo.pipeline_tag, "cardData": repo.card_data(), "siblings": siblings,
            "usedStorage": sum(_size(d) for d in repo.files.values()), **repo.extra,
        }

    def _sibling(self, repo: HubRepo, path: str) -> dict[str, Any]:
        blob, advertised = _blob(path, repo.files[path]), self.server.hub.advertised_hash(repo, path)
        if blob.pointer_size is None:
            return {"rfilename": path, "size": blob.size, "blobId": advertised}
        lfs = {"sha256": advertised, "size": blob.size, "pointerSize": blob.pointer_size}
        return {"rfilename": path, "size": blob.size, "blobId": blob.oid, "lfs": lfs}

    def _entry(self, repo: HubRepo, path: str, expand: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "directory", "oid": hashlib.sha1(f"{repo.sha}:{path}".encode()).hexdigest(), "size": 0, "path": path}
        if path in repo.files:
            sib = self._sibling(repo, path)
            out = {"type": "file", "oid": sib["blobId"], "size": sib["size"], "path": path}
            if "lfs" in sib:
                out["lfs"] = {"oid": sib["lfs"]["sha256"], "size": sib["size"], "pointerSize": sib["lfs"]["pointerSize"]}
        if expand:
            out["lastCommit"] = {"id": repo.sha, "title": "Upload files", "date": repo.last_modified}
        return out

    def _whoami(self, query: dict[str, list[str]], body: bytes) -> None:
        if not self._authorized():
            raise _HubError(401, None, "Invalid credentials in Authorization header")
        self._send_json({"type": "user", "name": "qd-tester", "fullname": "QuantDesk Tester",
                         "auth": {"type": "access_token", "accessToken": {"displayName": "qd-test", "role": "read"}}})

    def _list_models(self, query: dict[str, list[str]], body: bytes) -> None:
        q = {k: v[0] for k, v in query.items()}
        repos = [r for r in self.server.hub.repos.values() if not r.private or self._authorized()]
        repos = [r for r in repos if q.get("search", "").lower() in r.repo_id.lower()
                 and q.get("author", r.author) == r.author and q.get("pipeline_tag", r.pipeline_tag) == r.pipeline_tag
                 and ("gated" not in q or bool(r.gated) == _flag(query, "gated"))
                 and all(tag in (*r.tags, r.library_name, r.pipeline_tag) for tag in query.get("filter", []))]
        if q.get("sort") in SORT_KEYS:
            repos.sort(key=lambda r: getattr(r, SORT_KEYS[q["sort"]]), reverse=q.get("direction", "-1") != "1")
        expand = query.get("expand", []) + query.get("expand[]", [])
        fields = ("_id", "id", *expand) if expand else None if _flag(query, "full") else LIST_FIELDS
        models = [self._model(r, blobs=False) for r in repos]
        self._paginate([{k: v for k, v in m.items() if fields is None or k in fields} for m in models], query)

    def _model_info(self, query: dict[str, list[str]], body: bytes, repo: str, rev: str | None = None) -> None:
        data = self._model(self._repo(repo, rev), blobs=_flag(query, "blobs"))
        expand = query.get("expand", []) + query.get("expand[]", [])
        self._send_json({k: v for k, v in data.items() if not expand or k in (*expand, "_id", "id")})

    def _tree(self, query: dict[str, list[str]], body: bytes, repo: str, rev: str, path: str = "") -> None:
        r, base = self._repo(repo, rev), path.strip("/")
        if base and base not in r.directories():
            raise _HubError(404, "EntryNotFound", f"{base} does not exist on \"{rev}\"")
        prefix = f"{base}/" if base else ""
        paths = [p for p in (*sorted(r.directories()), *sorted(r.files))
                 if p.startswith(prefix) and (_flag(query, "recursive") or "/" not in p[len(prefix):])]
        self._paginate([self._entry(r, p, _flag(query, "expand")) for p in paths], query)

    def _paths_info(self, query: dict[str, list[str]], body: bytes, repo: str, rev: str) -> None:
        r, form = self._repo(repo, rev), parse_qs(body.decode())  # a form: paths=a&paths=b&expand=false
        known = r.directories() | set(r.files)
        self._send_json([self._entry(r, p.strip("/"), _flag(form, "expand")) for p in form.get("paths", []) if p.strip("/") in known])

    def _resolve(self, query: dict[str, list[str]], body: bytes, repo: str, rev: str, path: str) -> None:
        hub = self.server.hub
        with hub._lock:
            failure = hub.fail_next.pop(0) if hub.fail_next else None
        if failure is not None:
            raise _HubError(failure, None, HTTPStatus(failure).phrase)
        r = self._repo(repo, rev)
        if r.gated and not self._authorized():
            given = self._authorized() is not None
            raise _HubError(403 if given else 401, "GatedRepo", f"Access to model {repo} is restricted"
                            + (" and you are not in the authorized list." if given else ". You must be authenticated to access it."))
        if path not in r.files:
            raise _HubError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": r.sha})
        blob, etag = _blob(path, r.files[path]), hub.advertised_hash(r, path)
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{etag}"', "X-Repo-Commit": r.sha, "Accept-Ranges": "bytes"}
        if blob.pointer_size is not None:
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(blob.size)}
        start, end, status = 0, blob.size - 1, 200
        m = RANGE.fullmatch(self.headers.get("Range", ""))
        if m and (m[1] or m[2]) and self.command == "GET":
            start, end = (int(m[1]), min(int(m[2] or end), end)) if m[1] else (max(blob.size - int(m[2]), 0), end)
            if start > end:
                raise _HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{blob.size}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{blob.size}"
        length = end - start + 1
        self._send_head(status, {**headers, "Content-Length": str(length)})
        with hub._lock:
            drop = hub.drop_after_bytes
            cut = drop if self.command == "GET" and drop is not None and drop < length else None
            hub.drop_after_bytes = None if cut is not None else drop
        sent = 0
        try:
            for chunk in () if self.command == "HEAD" else _chunks(r.files[path], start, length):
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[: cut - sent])
                    sent = cut
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # the client sees a short body
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                if hub.bytes_per_second:
                    time.sleep(len(chunk) / hub.bytes_per_second)
        finally:  # also when the client hangs up mid-body
            hub.transfers.append((self.command, self.path, status, sent))
