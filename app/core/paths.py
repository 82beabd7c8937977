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


def sub(name: str) -> Path:
    """QUANTDESK_HOME/``name``, created on first use."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return home() / "quantdesk.sqlite3"


def settings_path() -> Path:
    return home() / "settings.json"


def logs_dir() -> Path:
    return sub("logs")


def resources_dir() -> Path:
    """Icons and the .desktop file: ``resources/`` next to ``app/``, or inside the bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"
