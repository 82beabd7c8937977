"""Where QuantDesk keeps its data: QUANTDESK_HOME, or the platform's user data folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

ENV_HOME = "QUANTDESK_HOME"


def home() -> Path:
    """The root of all app data (database, settings, models, logs); created on first use."""
    env = os.environ.get(ENV_HOME)
    root = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("QuantDesk", appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sub(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return home() / "quantdesk.sqlite3"


def settings_path() -> Path:
    return home() / "settings.json"


def models_dir() -> Path:
    """Where downloaded, converted and quantized models go: the Settings page's models folder,
    else QUANTDESK_HOME/models; created on first use."""
    from app.core import settings  # settings needs paths: imported here

    chosen = settings.load().models_dir
    if chosen:
        path = Path(chosen).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except OSError:
            pass  # an unplugged drive or a folder without write access: fall back, never fail
    return _sub("models")


def logs_dir() -> Path:
    return _sub("logs")


def resources_dir() -> Path:
    """Icons and the .desktop file: ``resources/`` next to ``app/``, or inside the bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"
