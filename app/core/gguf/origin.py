"""Where a GGUF file's original weights are: the repo its metadata names
(``general.base_model.N.repo_url`` / ``.organization`` + ``.name``, ``general.source.repo_url`` /
``general.source.huggingface.repository``), as a Hub repo id "owner/name" when it is one."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
MAX_BASE_MODELS = 16  # a merge names a few; the count comes from the file
HF_URL = re.compile(r"^https?://(?:www\.)?huggingface\.co/([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)/?$")


def _repo_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = HF_URL.match(text)
    if m:
        text = m.group(1)
    return text if REPO_ID.match(text) else None


def original_repo(path: str | Path) -> str | None:
    """The Hub repo of the original (unquantized) weights the file's metadata names, or None (also
    for a file whose header cannot be read: the bounded walk of scan.py, as for every header)."""
    from app.core.gguf.scan import Corrupt, Incomplete, Skipped, scan

    try:
        fields = scan(Path(path)).fields
    except (Corrupt, Incomplete, OSError, ValueError):
        return None

    def value(key: str) -> object:
        v = fields.get(key)
        return None if isinstance(v, Skipped) else v

    count = value("general.base_model.count")
    for i in range(min(count, MAX_BASE_MODELS) if isinstance(count, int) else 0):  # a hostile count stays bounded
        key = f"general.base_model.{i}"
        found = _repo_id(value(f"{key}.repo_url"))
        org, name = value(f"{key}.organization"), value(f"{key}.name")
        if found is None and isinstance(org, str) and isinstance(name, str):
            found = _repo_id(f"{org}/{name}")
        if found:
            return found
    for key in ("general.source.repo_url", "general.source.huggingface.repository", "general.source.url"):
        found = _repo_id(value(key))
        if found:
            return found
    return None
