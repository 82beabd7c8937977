"""GGUF headers of files on the Hub, read with HTTP range requests through huggingface_hub
(``HfFileSystem``): never the whole file. The read starts small and doubles until the tensor
list is parsed; the fetched prefix is written into a sparse file of the real size, so the same
gguf reader parses it. Every shard of a split model is read and the shards are merged."""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path

from app.core.errors import HeaderIncomplete, ModelFileError, QuantDeskError
from app.core.gguf.header import SPLIT_NAME, GGUFHeader, merge_shards, parse_header, shard_name
from app.core.gguf.projector import Projector, read_projector

FIRST_READ = 2 * 1024 * 1024  # a 150k-token vocabulary needs ~4 MiB; most headers need less
MAX_HEADER = 256 * 1024 * 1024


def _hub_path(repo_id: str, filename: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}/{filename}" if revision else f"{repo_id}/{filename}"


def read_remote_header(repo_id: str, filename: str, *, revision: str | None = None, token: str | None = None,
                       endpoint: str | None = None) -> GGUFHeader:
    """Header of ``repo_id/filename`` (all shards when it is split); raises a QuantDeskError with the
    Hub's reason (gated, missing, not GGUF) or HeaderIncomplete's cause."""
    from huggingface_hub import HfFileSystem
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    fs = HfFileSystem(endpoint=endpoint, token=token, skip_instance_cache=True)
    label = f"{repo_id}:{filename}"
    try:
        first = _read_one(fs, repo_id, filename, revision)
        if first.split_count <= 1 or not SPLIT_NAME.search(filename):
            return first
        shards = [first]
        for no in range(2, first.split_count + 1):
            shards.append(_read_one(fs, repo_id, shard_name(filename, no, first.split_count), revision))
        return merge_shards(shards)
    except GatedRepoError:
        raise QuantDeskError(f"{label}: this model is gated: accept its license on the model page and log in (HF_TOKEN or 'hf auth login')") from None
    except RepositoryNotFoundError:
        raise QuantDeskError(f"{label}: no such repository (or it is private: log in)") from None
    except FileNotFoundError:
        raise QuantDeskError(f"{label}: no such file in the repository") from None
    except HfHubHTTPError as exc:
        raise QuantDeskError(f"{label}: the Hub answered {exc}") from None
    except QuantDeskError:
        raise
    except Exception as exc:  # connection refused, DNS, timeouts, offline mode (HF_HUB_OFFLINE)
        raise QuantDeskError(f"{label}: cannot reach the Hub ({type(exc).__name__}: {exc})") from None


def _read_one(fs: object, repo_id: str, filename: str, revision: str | None) -> GGUFHeader:
    path = _hub_path(repo_id, filename, revision)
    label = f"{repo_id}:{filename}"
    size = int(fs.info(path)["size"])  # type: ignore[attr-defined]
    want = min(FIRST_READ, size)
    with tempfile.TemporaryDirectory(prefix="quantdesk-header-") as tmp:
        local = Path(tmp) / Path(filename).name
        with fs.open(path, "rb", block_size=FIRST_READ, cache_type="none") as remote, local.open("wb") as out:  # type: ignore[attr-defined]
            out.truncate(size)  # sparse: the tensor data is never fetched
            have = 0
            while True:
                remote.seek(have)
                chunk = remote.read(want - have)
                out.seek(have)
                out.write(chunk)
                out.flush()
                have += len(chunk)
                try:
                    header = parse_header(local, valid_bytes=have, label=label)
                    break
                except HeaderIncomplete:
                    if have >= size or want >= MAX_HEADER:
                        raise ModelFileError(f"{label}: the GGUF header is larger than {MAX_HEADER // 2**20} MiB or cut short") from None
                    want = min(want * 2, size, MAX_HEADER)
    return replace(header, path=Path(label))


PROJECTOR_READ = 1024 * 1024  # a projector's keys and tensor list: no vocabulary, a few KiB to a few hundred


def read_remote_projector(repo_id: str, filename: str, *, revision: str | None = None, token: str | None = None,
                          endpoint: str | None = None) -> Projector | None:
    """The projector facts of ``repo_id/filename`` from the first MiB of the file (for the Hub's fit
    verdicts); None when it is not a projector or cannot be read (the verdict then leaves it out)."""
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(endpoint=endpoint, token=token, skip_instance_cache=True)
    path = _hub_path(repo_id, filename, revision)
    try:
        size = int(fs.info(path)["size"])
        with tempfile.TemporaryDirectory(prefix="quantdesk-header-") as tmp:
            local = Path(tmp) / Path(filename).name
            with fs.open(path, "rb", block_size=PROJECTOR_READ, cache_type="none") as remote, local.open("wb") as out:
                out.truncate(size)  # sparse: the tensor data is never fetched
                out.write(remote.read(min(size, PROJECTOR_READ)))
            found = read_projector(local)
    except Exception:  # unreachable, gated, damaged: the file's own verdict says so when it is downloaded
        return None
    return replace(found, path=Path(f"{repo_id}:{filename}"), size_bytes=size) if found else None


def split_repo_file(spec: str) -> tuple[str, str | None] | None:
    """'owner/name:file.gguf' -> (repo, file); 'owner/name' -> (repo, None); a local path -> None."""
    if Path(spec).expanduser().exists():
        return None
    m = re.fullmatch(r"([\w.-]+/[\w.-]+)(?::(.+))?", spec)
    return (m.group(1), m.group(2)) if m else None
