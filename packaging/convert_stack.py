"""Build-time helper for packaging/quantdesk.spec: what the bundle needs to convert Hugging Face
checkpoints to GGUF (llama.cpp's convert_hf_to_gguf.py with PyTorch and transformers).

The converter stack is not frozen into the bundle's archive: PyInstaller's analysis of torch and
transformers (thousands of lazily imported modules) is slow and fragile. Instead the installed
distributions of the ``convert`` extra and everything they require are copied, as they lie in
site-packages, into ``<bundle>/_internal/convert-stack/``; the conversion child process (and only
it) puts that folder on ``sys.path`` (``app.core.proc.launch.convert_stack_dir``). The bundle carries
the whole standard library, so that those packages find what they import. The matching llama.cpp
converter (packaging/fetch_converter.py) goes to ``share/quantdesk/llama.cpp-converter/<version>``,
where ``app.core.quant.convert.converter_dir`` looks under ``sys.prefix``.

    QUANTDESK_BUNDLE_CONVERT=0 make package     # a bundle without conversion (~870 MB smaller)
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

STACK = "convert-stack"  # keep in step with app.core.proc.launch.CONVERT_STACK
ROOTS = ("torch", "transformers", "sentencepiece", "safetensors", "protobuf", "numpy", "pyyaml", "tqdm", "regex")
# not needed by the converter, only by command-line tools some of these packages ship
SKIP = {"setuptools", "pip", "typer", "click", "rich", "shellingham", "markdown-it-py", "mdurl", "pygments"}
NO_STDLIB = {"tkinter", "turtle", "turtledemo", "idlelib", "test", "ensurepip", "lib2to3", "venv", "pydoc_data",
             "antigravity", "this", "__phello__", "_tkinter", "msilib", "winreg", "winsound", "_winapi", "nt",
             "_msi", "_overlapped", "msvcrt", "_wmi", "_scproxy"}


def enabled() -> bool:
    return os.environ.get("QUANTDESK_BUNDLE_CONVERT", "1") != "0"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions() -> list[metadata.Distribution]:
    """The ``convert`` stack: ROOTS and what they require (extras not included)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        key = _key(name)
        if key in seen or key in SKIP:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def copy_into(internal: Path) -> None:
    """Copy the stack into the collected bundle's ``_internal`` folder, after COLLECT: given to
    PyInstaller as data, its shared libraries would be analysed and copied a second time."""
    import shutil

    target = internal / STACK
    shutil.rmtree(target, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, dest in datas():
        to = internal / dest
        if Path(src).is_dir():
            shutil.copytree(src, to, ignore=ignore, symlinks=True)
        else:
            to.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, to)


def datas() -> list[tuple[str, str]]:
    """(source, destination folder) pairs: each distribution's top-level folders and files (its
    import packages and its .dist-info), under ``convert-stack/``."""
    out: set[tuple[str, str]] = set()
    for dist in distributions():
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".data"):
                continue
            src = Path(str(dist.locate_file(parts[0])))
            if not src.exists():
                continue
            out.add((str(src), f"{STACK}/{parts[0]}" if src.is_dir() else STACK))
    return sorted(out)


def converter_datas() -> list[tuple[str, str]]:
    version = metadata.version("llama_cpp_python")
    conv = Path(sys.prefix) / "share" / "quantdesk" / "llama.cpp-converter" / version
    if not (conv / "convert_hf_to_gguf.py").is_file():
        raise SystemExit(f"{conv}: the llama.cpp converter is not installed: run 'make install' first")
    return [(str(conv), f"share/quantdesk/llama.cpp-converter/{version}")]


def stdlib_modules() -> list[str]:
    """Every standard-library module, submodules included (for ``hiddenimports``): the converter
    stack imports parts of the standard library the app itself never does."""
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    names = {m for m in sys.stdlib_module_names if m not in NO_STDLIB}
    for top in sorted(names):
        pkg = lib / top
        if not (pkg / "__init__.py").is_file():
            continue
        for f in pkg.rglob("*.py"):
            rel = f.relative_to(lib).with_suffix("").parts
            if any(part in ("test", "tests", "idle_test", "__pycache__") for part in rel) or "-" in f.stem:
                continue
            names.add(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    return sorted(names)
