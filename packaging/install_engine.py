"""Build and install llama-cpp-python for this machine, portably (stdlib only; run by `make`).

Backend: QUANTDESK_ENGINE=cpu|cuda|metal|auto (default auto): Apple arm64 -> Metal; an NVIDIA
GPU (nvidia-smi lists one) and nvcc -> CUDA; otherwise CPU.

Nothing is built with -march=native: the build machine is not the user's machine. The wheel's own
CPU backend is the baseline (SSE4.2 on x86-64), and a short list of faster builds of the CPU
backend (app/core/engine/cpu_variants.py: AVX2, AVX2+AVX-VNNI, AVX-512) is compiled from the same
sdist and installed beside it in llama_cpp/lib/cpu-variants/. The engine picks one at run time and
steps down when one dies of an illegal instruction. No AMX build: it dies on some machines
(llama.cpp PR #26954).

Every build is cached under ~/.cache/quantdesk/engine/<identity>/ (QUANTDESK_ENGINE_CACHE moves
it), where the identity is a hash of everything that shapes the binaries: version, backend, CMake
options, compiler, platform, variant list. pip's own wheel cache ignores CMAKE_ARGS, so it is never
used for the engine. The venv's stamp holds the identity: a `make` with other flags rebuilds.

CUDA: QUANTDESK_CUDA_ARCHS sets CMAKE_CUDA_ARCHITECTURES (default "native", the GPUs present;
a bundle for other people is built with the documented list in packaging/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

VERSION = "0.3.36"  # keep in step with pyproject.toml
IDENTITY_SCHEMA = 1
ROOT = Path(__file__).resolve().parents[1]


def _load_cpu_variants():  # type: ignore[no-untyped-def]
    """app/core/engine/cpu_variants.py (stdlib only), loaded by path: the app is not installed yet."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_quantdesk_cpu_variants", ROOT / "app" / "core" / "engine" / "cpu_variants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cpu_variants = _load_cpu_variants()

CPU_FLAGS = ("SSE42", "AVX", "AVX2", "BMI2", "FMA", "F16C", "AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
             "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16")


def detect() -> str:
    wanted = os.environ.get("QUANTDESK_ENGINE", "auto").lower()
    if wanted in ("cpu", "cuda", "metal"):
        return wanted
    if wanted != "auto":
        sys.exit(f"QUANTDESK_ENGINE={wanted!r}: use cpu, cuda, metal or auto")
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "metal"
    if shutil.which("nvcc") and shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if probe.returncode == 0 and "GPU" in probe.stdout:
            return "cuda"
    return "cpu"


# ggml's own thread pool instead of OpenMP: the engine host attaches a persistent one to each
# context (app/core/engine/threadpool.py), whose barriers spin on an atomic where libgomp's end in
# a futex_wake syscall each (~450 a token); measured 1.04× the OpenMP build's decode tok/s here
THREADING = ["-DGGML_OPENMP=OFF"]


def cpu_options(enabled: tuple[str, ...]) -> list[str]:
    """CMake options for a CPU build with exactly ``enabled`` instruction sets (x86), never native."""
    opts = ["-DGGML_NATIVE=OFF"]
    if cpu_variants.is_x86():
        opts += [f"-DGGML_{f}={'ON' if f in enabled else 'OFF'}" for f in CPU_FLAGS]
    return opts


def cmake_args(backend: str) -> list[str]:
    args = cpu_options(cpu_variants.baseline().cmake) + THREADING + ["-DGGML_RPC=ON"]
    if backend == "cuda":
        args += ["-DGGML_CUDA=on", f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('QUANTDESK_CUDA_ARCHS', 'native')}"]
    elif backend == "metal":
        args += ["-DGGML_METAL=on"]
    return args


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return cc


def identity(backend: str) -> dict[str, object]:
    return {
        "schema": IDENTITY_SCHEMA,
        "version": VERSION,
        "backend": backend,
        "cmake_args": cmake_args(backend) + os.environ.get("CMAKE_ARGS", "").split(),
        "compiler": compiler(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "variants": {v.name: list(v.cmake) for v in cpu_variants.all_variants() if not v.builtin},
    }


def cache_root() -> Path:
    env = os.environ.get("QUANTDESK_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quantdesk" / "engine"


def run(cmd: list[str], *, env: dict[str, str] | None = None, log: Path | None = None) -> None:
    """Run a build step; on failure print the end of its log and stop the install with the cause."""
    if log is None:
        subprocess.run(cmd, check=True, env=env)
        return
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print("\n".join(tail), file=sys.stderr)
        sys.exit(f"engine build step failed ({' '.join(cmd[:4])} …, exit {proc.returncode}); full log: {log}")


def sdist(cache: Path) -> Path:
    found = sorted(cache.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    if found:
        return found[0]
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         f"llama-cpp-python=={VERSION}", "-d", str(cache)])
    return next(cache.glob(f"llama_cpp_python-{VERSION}.tar.gz"))


def build_wheel(cache: Path, src: Path, backend: str, timings: dict[str, float]) -> Path:
    found = sorted(cache.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    if found:
        return found[0]
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(cmake_args(backend) + env.get("CMAKE_ARGS", "").split())
    print(f"building llama-cpp-python {VERSION} ({backend}, portable CPU baseline) — 10 to 25 minutes "
          f"on 2 cores the first time; log: {cache / 'wheel.log'}", flush=True)
    t0 = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "-v", "-w", str(cache), str(src)],
        env=env, log=cache / "wheel.log")
    timings["wheel"] = round(time.monotonic() - t0, 1)
    return next(cache.glob(f"llama_cpp_python-{VERSION}-*.whl"))


def source_tree(cache: Path, src: Path) -> Path:
    """The sdist unpacked under ``cache`` (removed again by the caller when done)."""
    tree = cache / "src" / f"llama_cpp_python-{VERSION}"
    if not tree.is_dir():
        with tarfile.open(src) as tar:
            tar.extractall(cache / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return tree


def build_cpu_library(tree: Path, build: Path, options: list[str], out: Path, log: Path,
                      env: dict[str, str] | None = None) -> float:
    """Compile only libggml-cpu from ``tree`` with ``options`` into ``out``; returns the seconds."""
    shutil.rmtree(build, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run(["cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAVA_BUILD=OFF", *options],
        env=env, log=log)
    run(["cmake", "--build", str(build), "--target", "ggml-cpu", "-j", str(os.cpu_count() or 2)],
        env=env, log=log.with_suffix(".build.log"))
    built = next(build.rglob(cpu_variants.LIB_NAME))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, out)
    shutil.rmtree(build, ignore_errors=True)
    return round(time.monotonic() - t0, 1)


def build_variants(cache: Path, src: Path, timings: dict[str, float]) -> dict[str, Path]:
    """Each variant's libggml-cpu, compiled from the same sdist with only its instruction sets."""
    out: dict[str, Path] = {}
    for v in cpu_variants.all_variants():
        if v.builtin:
            continue
        lib = cache / cpu_variants.VARIANTS_DIR / v.name / cpu_variants.LIB_NAME
        if not lib.is_file():
            print(f"building the CPU backend for {v.describe()} (about a minute)", flush=True)
            timings[v.name] = build_cpu_library(source_tree(cache, src), cache / "build" / v.name,
                                                cpu_options(v.cmake) + THREADING, lib, cache / f"variant-{v.name}.log")
        out[v.name] = lib
    shutil.rmtree(cache / "src", ignore_errors=True)
    return out


def installed_lib_dir() -> Path:
    code = "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('llama_cpp').submodule_search_locations[0]) / 'lib')"
    return Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def main() -> None:
    backend = detect()
    ident = identity(backend)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    want = {**ident, "key": key}
    stamp = Path(sys.prefix) / "quantdesk-engine.json"
    try:
        have = json.loads(stamp.read_text())
    except (OSError, ValueError):
        have = None
    if have == want:
        print(f"llama-cpp-python {VERSION} ({backend}, build {key}) already installed")
        return
    cache = cache_root() / f"{VERSION}-{backend}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "identity.json").write_text(json.dumps(want, indent=1))
    timings_file = cache / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    src = sdist(cache)
    wheel = build_wheel(cache, src, backend, timings)
    variants = build_variants(cache, src, timings)
    timings_file.write_text(json.dumps(timings, indent=1))
    # the cached wheel, never one from pip's cache (which ignores CMAKE_ARGS)
    run([sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(wheel)])
    run([sys.executable, "-m", "pip", "install", "--quiet", str(wheel)])
    lib = installed_lib_dir()
    dest = lib / cpu_variants.VARIANTS_DIR
    shutil.rmtree(dest, ignore_errors=True)
    for name, path in variants.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / name / path.name)
    (dest / "build.json").parent.mkdir(parents=True, exist_ok=True)
    (dest / "build.json").write_text(json.dumps({**want, "build_seconds": timings}, indent=1))
    stamp.write_text(json.dumps(want))
    print(f"llama-cpp-python {VERSION} ({backend}, build {key}) installed with CPU builds: "
          + ", ".join(v.name for v in cpu_variants.all_variants()))


if __name__ == "__main__":
    main()
