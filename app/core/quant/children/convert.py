"""Child process: run llama.cpp's ``convert_hf_to_gguf.py`` unchanged, with three guards.

    python -m app.core.quant.children.convert CONVERTER_DIR [converter arguments...]

- The converter's vendored ``gguf-py`` is what ``import gguf`` finds (the version it was written
  for), ahead of the PyPI ``gguf`` (also ahead of the bundle's frozen copy: a finder first on
  ``sys.meta_path``); nothing here imports ``gguf`` before it. In the desktop bundle the
  unfrozen conversion stack (torch, transformers ...) is put on ``sys.path``.
- No code from the model folder ever runs: every transformers ``from_pretrained`` is forced to
  ``trust_remote_code=False`` (the converter asks for True for some tokenizers) and dynamic
  module loading is refused; the Hub is offline.
- Progress: the converter logs one line per tensor while preparing; the byte progress of the
  writing phase comes as ``write`` events (its tqdm bar is replaced by one that reports to us).
  At exit a ``peak_rss`` event gives this process's peak resident memory.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import resource
import runpy
import sys
import types
from pathlib import Path
from typing import Any, Sequence

from app.core.errors import RemoteCodeRefused
from app.core.proc.launch import convert_stack_dir
from app.core.proc.runner import emit


def _forbid_remote_code() -> None:
    import transformers
    import transformers.dynamic_module_utils as dyn

    def refuse(*_: Any, **__: Any) -> Any:
        raise RemoteCodeRefused("the model folder asks to run its own Python code (trust_remote_code); "
                                "QuantDesk never runs code from a model repository")

    dyn.get_class_from_dynamic_module = refuse
    for name in ("AutoTokenizer", "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoProcessor", "AutoImageProcessor"):
        try:
            cls = getattr(transformers, name)
            original = cls.from_pretrained.__func__
        except (AttributeError, ImportError):  # a class whose backend (PIL, ...) is not installed
            continue

        def safe(klass: Any, *args: Any, _orig: Any = original, **kwargs: Any) -> Any:
            kwargs["trust_remote_code"] = False
            return _orig(klass, *args, **kwargs)

        cls.from_pretrained = classmethod(safe)


class _Bar:
    """Stands in for tqdm in GGUFWriter.write_tensors_to_file: one ``write`` event per tensor."""

    def __init__(self, desc: str = "", total: float | None = None, **_: Any) -> None:
        self.desc, self.total, self.n = desc, total or 0, 0.0

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.desc == "Writing":
            emit("write", done=self.n, total=self.total)

    def set_description(self, desc: str) -> None:
        pass

    def reset(self, total: float | None = None) -> None:
        self.n = 0

    def close(self) -> None:
        pass


def _report_writes() -> None:
    import gguf

    original = gguf.GGUFWriter.write_tensors_to_file

    def write_tensors_to_file(self: Any, *, progress: bool = False) -> None:
        saved = sys.modules.get("tqdm")
        sys.modules["tqdm"] = types.SimpleNamespace(tqdm=_Bar)  # type: ignore[assignment]
        try:
            original(self, progress=True)
        finally:
            if saved is not None:
                sys.modules["tqdm"] = saved
            else:
                sys.modules.pop("tqdm", None)

    gguf.GGUFWriter.write_tensors_to_file = write_tensors_to_file  # type: ignore[method-assign]


class _VendoredGGUF(importlib.abc.MetaPathFinder):
    """``gguf`` and its submodules from the converter's own gguf-py folder, whatever else is on
    the path or frozen into the app."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        if name != "gguf" and not name.startswith("gguf."):
            return None
        return importlib.machinery.PathFinder.find_spec(name, [self.folder] if name == "gguf" else path)


def main(argv: list[str]) -> int:
    conv_dir = Path(argv[0]).resolve()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["NO_LOCAL_GGUF"] = "1"  # we put the vendored gguf-py on the path ourselves, first
    assert "gguf" not in sys.modules, "the PyPI gguf was imported before the converter's own"
    sys.path[0:0] = [str(conv_dir), str(conv_dir / "gguf-py")]
    sys.meta_path.insert(0, _VendoredGGUF(conv_dir / "gguf-py"))
    stack = convert_stack_dir()
    if stack is not None:
        sys.path.insert(2, str(stack))
    _forbid_remote_code()
    _report_writes()
    sys.argv = [str(conv_dir / "convert_hf_to_gguf.py"), *argv[1:]]
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    emit("peak_rss", bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
