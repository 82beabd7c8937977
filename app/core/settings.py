"""App settings: typed, versioned with migrations, written atomically to QUANTDESK_HOME."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from app.core import paths

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # version N -> N+1 goes here, e.g. 1: lambda d: {**d, "new_key": default}
}


@dataclass
class Settings:
    schema_version: int = SCHEMA_VERSION
    last_model: str | None = None
    last_conversation: int | None = None
    default_system_prompt: str = ""
    default_preset: str = "Balanced"
    scan_lmstudio: bool = False  # list LM Studio's models in the library (in place)
    scan_ollama: bool = False  # list Ollama's GGUF blobs in the library (in place)


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = int(data.get("schema_version", 1))
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["schema_version"] = version
    return data


def load(path: Path | None = None) -> Settings:
    path = path or paths.settings_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = _migrate(data)
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError, KeyError) as exc:
        log.warning("settings %s unreadable (%s); using defaults", path, exc)
        return Settings()
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in data.items() if k in known})


def save(settings: Settings, path: Path | None = None) -> None:
    path = path or paths.settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(settings), fh, indent=2)
    os.replace(tmp, path)
