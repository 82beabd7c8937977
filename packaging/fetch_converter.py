"""Fetch llama.cpp's HF -> GGUF converter at the engine's exact version (stdlib only; run by `make`).

The llama-cpp-python sdist on PyPI vendors llama.cpp, including ``convert_hf_to_gguf.py``, its
``conversion/`` package and ``gguf-py``. A converter from another llama.cpp version than the engine's
is a known source of broken files (llama.cpp #14315, #13089, #8649), so we take it from the sdist of
the installed llama-cpp-python and record that version. The code is never committed: it lands in
``<venv>/share/quantdesk/llama.cpp-converter/<version>/``, which the app finds at run time
(``app.core.quant.convert.converter_dir``; ``QUANTDESK_CONVERTER_DIR`` overrides).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

# what the converter needs from vendor/llama.cpp/ (the two built-in vocabularies are read by
# conversion/base.py's _set_vocab_builtin from sys.path[0]/models)
WANTED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "gguf-py/LICENSE", "LICENSE",
          "models/ggml-vocab-gpt-neox.gguf", "models/ggml-vocab-llama-spm.gguf")
STAMP = "quantdesk-converter.json"


def target_dir(version: str) -> Path:
    return Path(sys.prefix) / "share" / "quantdesk" / "llama.cpp-converter" / version


def installed_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        sys.exit("fetch_converter: llama-cpp-python is not installed; run packaging/install_engine.py first")


def fetch(version: str) -> Path:
    dest = target_dir(version)
    stamp = dest / STAMP
    if stamp.exists() and json.loads(stamp.read_text()).get("llama_cpp_python") == version:
        print(f"llama.cpp converter {version} already in {dest}")
        return dest
    with tempfile.TemporaryDirectory(prefix="quantdesk-sdist-") as tmp:
        print(f"fetching llama.cpp's converter from the llama-cpp-python {version} sdist", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", f"llama-cpp-python=={version}",
                        "--no-binary", ":all:", "--no-deps", "-d", tmp],
                       check=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if len(sdists) != 1:
            sys.exit(f"fetch_converter: expected one sdist in {tmp}, found {[p.name for p in sdists]}")
        staging = Path(tempfile.mkdtemp(prefix="converter-", dir=dest.parent if dest.parent.exists() else None))
        try:
            _extract(sdists[0], staging)
            for needed in ("convert_hf_to_gguf.py", "conversion/__init__.py", "gguf-py/gguf/__init__.py"):
                if not (staging / needed).exists():
                    sys.exit(f"fetch_converter: the sdist has no vendor/llama.cpp/{needed}; its layout changed")
            (staging / STAMP).write_text(json.dumps({"llama_cpp_python": version, "source": sdists[0].name}))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"llama.cpp converter {version} installed in {dest}")
    return dest


def _extract(sdist: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 3)  # llama_cpp_python-X/vendor/llama.cpp/<rest>
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"] or not member.isfile():
                continue
            rest = parts[3]
            if not any(rest == w or (w.endswith("/") and rest.startswith(w)) for w in WANTED):
                continue
            if "__pycache__" in rest or ".." in rest.split("/"):
                continue
            target = out / rest
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with src, target.open("wb") as fh:
                shutil.copyfileobj(src, fh)


if __name__ == "__main__":
    fetch(installed_version())
