"""The parent side of the CPU-build choice (app.core.engine.cpu_variants): which build the engine
and the other llama.cpp children run here, with the machine's record of builds whose starter-model
self-check died, kept in the data folder."""

from __future__ import annotations

from pathlib import Path

from app.core import paths
from app.core.engine import cpu_variants as cv


def state_path() -> Path:
    return paths.home() / "engine-cpu-variants.json"


def forced_setting() -> str | None:
    from app.core import settings

    value = settings.load().cpu_variant
    return None if value in ("", "auto") else value


def current(environ: dict[str, str] | None = None) -> cv.Choice:
    """The build to run now (raises VariantError for a forced build that is not installed);
    ``environ``: the environment the child gets (default ours)."""
    return cv.choose(state_path(), forced_setting(), environ)


def report() -> dict[str, object]:
    return cv.report(state_path(), forced_setting())


def summary_rows() -> list[tuple[str, str]]:
    """Rows for `quantdesk hw` and Help → Hardware."""
    r = report()
    chosen = r["cpu_variant"]
    assert isinstance(chosen, dict)
    detail = r["cpu_variants_detail"]
    assert isinstance(detail, list)
    names = []
    for d in detail:
        if d["usable"]:
            names.append(d["name"])
        elif d["installed"] and d["bad"]:
            names.append(f"{d['name']} (failed its self-check here)")
    value = f"{chosen['name']} ({chosen['title']}): {chosen['reason']}" if chosen["name"] else chosen["reason"]
    return [("CPU build", value), ("CPU builds usable here", ", ".join(names) or "none")]
