"""App settings: typed, versioned with migrations, written atomically to QUANTDESK_HOME."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from app.core import paths

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
THEMES = ("system", "light", "dark")


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 adds the Settings page (models folder, defaults, threads, theme) and window state."""
    return {
        "models_dir": None, "default_ctx": None, "default_sampling": {}, "engine_threads": None,
        "theme": "system", "window_geometry": "", "last_page": "", **data,
    }


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # version N -> N+1
    1: _v1_to_v2,
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
    # v2: the Settings page
    models_dir: str | None = None  # None: QUANTDESK_HOME/models
    default_ctx: int | None = None  # None: the planner's (4096 or the trained context if smaller)
    default_sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams fields; {}: the preset's
    engine_threads: int | None = None  # None: the physical cores
    theme: str = "system"  # one of THEMES; "system" follows the desktop's light/dark setting
    # v2: window state
    window_geometry: str = ""  # QWidget.saveGeometry() as base64
    last_page: str = ""  # the class name of the page shown last
    # the CPU build of llama.cpp (app.core.engine.cpu_variants): "auto" is the fastest usable one
    cpu_variant: str = "auto"
    # prompt-lookup speculative decoding (app.core.engine.speculation): "auto" turns it on for a model
    # once measured to be faster with it on this machine; "on" or "off" always
    speculation: str = "auto"
    # the API server (Server menu): off by default; the key is only needed beyond loopback
    server_enabled: bool = False
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    server_api_key: str = ""
    # per model file name: thinking on/off ("enabled": true, false or null for the template's
    # default), "budget" (reasoning tokens, null: no limit), "tags" (custom [open, close] pairs)
    thinking: dict[str, dict[str, Any]] = field(default_factory=dict)
    # RPC workers (app.core.rpc) the planner may split a model over when it does not fit here: HOST:PORT each
    workers: list[str] = field(default_factory=list)


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = int(data.get("schema_version", 1))
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["schema_version"] = version
    return data


def load(path: Path | None = None) -> Settings:
    """The settings; a corrupt or unreadable file is moved aside (with a notice) and defaults used."""
    path = path or paths.settings_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        data = _migrate(data)
        known = {f.name for f in fields(Settings)}
        return Settings(**{k: v for k, v in data.items() if k in known})
    except FileNotFoundError:
        return Settings()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        cause = f"{type(exc).__name__}: {exc}"
    from app.core.db import move_aside, notice

    try:
        aside = move_aside(path)
        notice(f"{path}: the settings file was damaged or unreadable ({cause}); it was moved to {aside} "
               "and the defaults are used")
    except OSError as exc:
        notice(f"{path}: the settings file is damaged or unreadable ({cause}) and could not be moved aside "
               f"({exc}); the defaults are used for this session")
    return Settings()


def save(settings: Settings, path: Path | None = None) -> None:
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed."""
    path = path or paths.settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(settings), fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
    except OSError as exc:
        from app.core.errors import QuantDeskError

        raise QuantDeskError(f"{path}: the settings could not be saved ({exc.strerror or exc})") from None


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def update(**changes: Any) -> Settings:
    """Read, change and write back in one step, so that two parts of the app that each change
    their own keys never write back each other's stale values."""
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise KeyError(f"unknown settings: {sorted(unknown)}")
    current = load()
    for key, value in changes.items():
        setattr(current, key, value)
    save(current)
    return current


def models_dir() -> Path:
    """Where downloaded, converted and quantized models go: the Settings page's models folder,
    else QUANTDESK_HOME/models; created on first use."""
    chosen = load().models_dir
    if chosen:
        path = Path(chosen).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except OSError:
            pass  # an unplugged drive or a folder without write access: fall back, never fail
    return paths.sub("models")


def thinking_for(model: str | Path | None, settings: Settings | None = None) -> dict[str, Any]:
    """The thinking options saved for a model (by file name): {} for the template's default."""
    if not model:
        return {}
    options = (settings or load()).thinking.get(Path(model).name)
    return dict(options) if isinstance(options, dict) else {}
