"""What the llama.cpp child processes share: llama-cpp-python's ctypes bindings, loaded fast.

``import llama_cpp`` also imports its high-level half (``Llama``, numpy, jinja2, the chat formats):
about 0.1 s of a quantize child's start-up on a 2-core machine, for functions a child never calls.
``bindings()`` loads only ``llama_cpp.llama_cpp`` (the C API) under a bare ``llama_cpp`` package,
unless the full package is already imported or the app is frozen (where the bundle's importer
serves the whole package).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def bindings() -> Any:
    """The llama.cpp C API (``llama_model_quantize``, ``llama_log_set`` ...)."""
    if "llama_cpp" in sys.modules or getattr(sys, "frozen", False):
        import llama_cpp

        return llama_cpp
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        import llama_cpp  # not installed: the usual ImportError

        return llama_cpp
    package = types.ModuleType("llama_cpp")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["llama_cpp"] = package
    try:
        return importlib.import_module("llama_cpp.llama_cpp")
    except Exception:  # another layout of the package: the full import
        for name in [m for m in sys.modules if m == "llama_cpp" or m.startswith("llama_cpp.")]:
            del sys.modules[name]
        import llama_cpp

        return llama_cpp
