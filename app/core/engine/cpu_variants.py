"""Which build of llama.cpp's CPU backend runs on this machine.

The engine is built without ``-march=native`` (packaging/install_engine.py): the wheel's own
``llama_cpp/lib/libggml-cpu.so`` is the baseline (SSE4.2 on x86-64), and a short list of faster
builds of the same library sit beside it in ``llama_cpp/lib/cpu-variants/<name>/libggml-cpu.so``.
Before ``import llama_cpp`` a process may *activate* one of them: it is loaded first (with
``libggml-base.so``), so when ``libggml.so`` asks for ``libggml-cpu.so`` the dynamic linker uses
the one already loaded (same soname). A plain ``import llama_cpp`` without activation runs the
baseline, which works on every x86-64 CPU of the last decade.

No AMX build is shipped: ggml's AMX path dies with SIGILL where the OS or hypervisor has not
granted the tile state (llama.cpp PR #26954, issue #28328).

This module is imported by the engine host and the other llama.cpp children before llama_cpp, and
by the parent to choose; it uses the standard library only and imports nothing of the app.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "QUANTDESK_CPU_VARIANT"  # force a variant (user), or the one the parent chose (children)
VARIANTS_DIR = "cpu-variants"
LIB_NAME = {"linux": "libggml-cpu.so", "darwin": "libggml-cpu.dylib", "win32": "ggml-cpu.dll"}.get(
    "linux" if sys.platform.startswith("linux") else sys.platform, "libggml-cpu.so")
BASE_LIB_NAME = LIB_NAME.replace("ggml-cpu", "ggml-base")


class VariantError(Exception):
    """A forced variant that is not installed here, or one that cannot be loaded."""


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    cmake: tuple[str, ...]  # GGML_<X>=ON options of its build (the rest OFF)
    needs: frozenset[str]  # /proc/cpuinfo flags the CPU must report
    builtin: bool = False  # the wheel's own library (no file under cpu-variants/)

    def describe(self) -> str:
        return f"{self.name} ({self.title})"


_X86_HASWELL = frozenset({"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"})
_AVX512 = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})

# best first; each one's fallback is the next one this CPU supports
X86_VARIANTS: tuple[Variant, ...] = (
    Variant("icelake", "AVX-512 with VBMI and VNNI", ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512",
                                                     "AVX512_VBMI", "AVX512_VNNI"),
            _X86_HASWELL | _AVX512 | {"avx512vbmi", "avx512_vnni"}),
    Variant("alderlake", "AVX2 with AVX-VNNI", ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"),
            _X86_HASWELL | {"avx_vnni"}),
    Variant("haswell", "AVX2 and FMA", ("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"), _X86_HASWELL),
    Variant("sse42", "baseline x86-64, SSE4.2", ("SSE42",), frozenset({"sse4_2"}), builtin=True),
)
# Apple silicon and other 64-bit Arm: the wheel's build for the architecture's baseline
ARM_VARIANTS: tuple[Variant, ...] = (Variant("arm64", "baseline 64-bit Arm", (), frozenset(), builtin=True),)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def all_variants() -> tuple[Variant, ...]:
    return X86_VARIANTS if is_x86() else ARM_VARIANTS


def baseline() -> Variant:
    return all_variants()[-1]


def by_name(name: str) -> Variant | None:
    return next((v for v in all_variants() if v.name == name), None)


# -- the CPU ----------------------------------------------------------------------------------------
def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags the OS reports (Linux lists only what it has enabled, e.g. no
    avx512f where the hypervisor withholds the AVX-512 state)."""
    if cpuinfo is None and sys.platform.startswith("linux"):
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    if cpuinfo is not None:
        for line in cpuinfo.splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
        return frozenset()
    if sys.platform == "win32":  # IsProcessorFeaturePresent knows AVX, AVX2 and AVX-512F
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        flags = {"sse4_2"} if kernel32.IsProcessorFeaturePresent(38) else set()
        if kernel32.IsProcessorFeaturePresent(40):  # PF_AVX2_INSTRUCTIONS_AVAILABLE
            flags |= _X86_HASWELL
        if kernel32.IsProcessorFeaturePresent(41):  # PF_AVX512F_INSTRUCTIONS_AVAILABLE
            flags |= _AVX512
        return frozenset(flags)
    if sys.platform == "darwin" and is_x86():
        import subprocess

        out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                             capture_output=True, text=True).stdout.lower()
        names = set(out.split()) | {n.replace(".", "_") for n in out.split()}
        flags = {"sse4_2"} if "sse4_2" in names or "sse4.2" in out else set()
        if {"avx2", "fma", "bmi2"} <= names:
            flags |= _X86_HASWELL
        return frozenset(flags)
    return frozenset()


def machine_id(flags: frozenset[str] | None = None) -> str:
    """Names this CPU as the variant state knows it (a copied data folder is not another machine's)."""
    flags = cpu_flags() if flags is None else flags
    return hashlib.sha256((platform.machine() + " " + " ".join(sorted(flags))).encode()).hexdigest()[:16]


def supported(v: Variant, flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return v.needs <= flags


# -- the installed builds -----------------------------------------------------------------------------
def llama_lib_dir() -> Path | None:
    """llama_cpp's ``lib`` folder, found without importing llama_cpp (which loads the libraries)."""
    override = os.environ.get("LLAMA_CPP_LIB_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def library_path(v: Variant) -> Path | None:
    lib = llama_lib_dir()
    if lib is None:
        return None
    return lib / LIB_NAME if v.builtin else lib / VARIANTS_DIR / v.name / LIB_NAME


def installed() -> list[Variant]:
    out = []
    for v in all_variants():
        path = library_path(v)
        if path is not None and path.is_file():
            out.append(v)
    return out


# -- activation (in the process that will import llama_cpp) ---------------------------------------------
_active: Variant | None = None


def active() -> Variant | None:
    return _active


def activate(name: str | None = None) -> Variant:
    """Load variant ``name`` (default: $QUANTDESK_CPU_VARIANT, else the baseline) so that the next
    ``import llama_cpp`` runs on it. Call it before llama_cpp is imported; later calls return the
    variant already active."""
    global _active
    if _active is not None:
        return _active
    name = name or os.environ.get(ENV) or ""
    v = by_name(name) if name else baseline()
    if v is None:
        raise VariantError(f"{ENV}={name!r}: no such CPU build; the builds are "
                           + ", ".join(x.name for x in all_variants()))
    if "llama_cpp" in sys.modules and not v.builtin:
        raise VariantError(f"CPU build {v.name!r} asked for after llama_cpp was imported")
    if not v.builtin:
        path = library_path(v)
        lib = llama_lib_dir()
        if path is None or lib is None or not path.is_file():
            raise VariantError(f"CPU build {v.name!r} is not installed (no {path}); installed: "
                               + ", ".join(x.name for x in installed()))
        preload(path, lib)
    _active = v
    _simulate_crash("load")
    return v


def preload(library: Path, lib_dir: Path) -> None:
    """Load ``library`` (a libggml-cpu build) with llama_cpp's libggml-base, before llama_cpp: the
    dynamic linker then resolves libggml's libggml-cpu.so.0 to it (same soname)."""
    mode = getattr(ctypes, "RTLD_GLOBAL", 0)
    try:
        ctypes.CDLL(str(lib_dir / BASE_LIB_NAME), mode=mode)
        ctypes.CDLL(str(library), mode=mode)
    except OSError as exc:
        raise VariantError(f"{library}: cannot load this CPU build: {exc}") from None


def _simulate_crash(stage: str) -> None:
    """QUANTDESK_SIMULATE_CRASH=SIGNAL:VARIANT[:STAGE[:MODEL-SUBSTRING]]: a test switch that makes
    this process die of SIGNAL (SIGILL: as an unsupported instruction would) on that CPU build, at
    ``load`` (when the library is activated) or ``decode`` (the first token; the default),
    optionally only for a model whose path contains MODEL-SUBSTRING. Used by the fallback tests."""
    spec = os.environ.get("QUANTDESK_SIMULATE_CRASH", "")
    if not spec or _active is None:
        return
    parts = spec.split(":", 3)
    if len(parts) < 2 or parts[1] != _active.name:
        return
    kind, _, where = stage.partition(":")
    if (parts[2] if len(parts) > 2 and parts[2] else "decode") != kind:
        return
    if len(parts) > 3 and parts[3] not in where:
        return
    import signal

    sig = getattr(signal, parts[0], signal.SIGILL)
    sys.stderr.write(f"simulated {parts[0]} on CPU build {_active.name} at {stage}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), sig)
    time.sleep(5)


def simulate_decode_crash(model_path: str) -> None:
    _simulate_crash(f"decode:{model_path}")


# -- choosing (in the parent) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    variant: Variant
    reason: str


def _state(state_path: Path | None) -> dict[str, object]:
    if state_path is None:
        return {}
    try:
        data = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("machine") != machine_id():
        return {}
    return data


def bad_variants(state_path: Path | None) -> dict[str, str]:
    """Variants marked bad on this machine (their starter-model self-check died), with why."""
    bad = _state(state_path).get("bad", {})
    return {str(k): str(v) for k, v in bad.items()} if isinstance(bad, dict) else {}


def mark_bad(state_path: Path, v: Variant, why: str) -> None:
    data = _state(state_path)
    bad = dict(bad_variants(state_path))
    bad[v.name] = why
    data.update({"machine": machine_id(), "bad": bad})
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, state_path)


def usable(state_path: Path | None = None, flags: frozenset[str] | None = None) -> list[Variant]:
    """Installed, supported by this CPU, not marked bad here; best first."""
    flags = cpu_flags() if flags is None else flags
    bad = bad_variants(state_path)
    return [v for v in installed() if supported(v, flags) and v.name not in bad]


def choose(state_path: Path | None = None, forced: str | None = None, environ: dict[str, str] | None = None) -> Choice:
    """The variant to run: $QUANTDESK_CPU_VARIANT (in ``environ``, default ours) or ``forced`` (a
    setting) when given, else the best usable one."""
    env = (os.environ if environ is None else environ).get(ENV)
    wanted = env or (forced if forced and forced != "auto" else None)
    if wanted:
        v = by_name(wanted)
        if v is None or v not in installed():
            raise VariantError(f"CPU build {wanted!r} is not installed here; installed: "
                               + ", ".join(x.name for x in installed()))
        source = f"${ENV}" if env else "the setting"
        return Choice(v, f"forced by {source}")
    best = next(iter(usable(state_path)), None)
    if best is None:
        return Choice(baseline(), "no other build is usable here")
    order = all_variants()
    marked = [name for name in bad_variants(state_path) if (x := by_name(name)) and order.index(x) < order.index(best)]
    why = "the fastest installed build this CPU supports"
    if marked:
        why += f" ({', '.join(marked)} failed the self-check here)"
    return Choice(best, why)


def next_safer(v: Variant, state_path: Path | None = None) -> Variant | None:
    """The next variant below ``v`` that this machine can run, or None at the baseline."""
    order = list(all_variants())
    below = order[order.index(v) + 1:]
    usable_names = {x.name for x in usable(state_path)} | {baseline().name}
    return next((x for x in below if x.name in usable_names), None)


def report(state_path: Path | None = None, forced: str | None = None) -> dict[str, object]:
    """What ``quantdesk hw --json`` shows: the variant the engine runs (and why), and every build."""
    flags = cpu_flags()
    bad = bad_variants(state_path)
    inst = installed()
    try:
        choice = choose(state_path, forced)
        chosen: dict[str, str] = {"name": choice.variant.name, "title": choice.variant.title, "reason": choice.reason}
    except VariantError as exc:
        chosen = {"name": "", "title": "", "reason": str(exc)}
    return {
        "cpu_variant": chosen,
        "cpu_variants": [v.name for v in usable(state_path, flags)],
        "cpu_variants_detail": [
            {"name": v.name, "title": v.title, "installed": v in inst, "supported": supported(v, flags),
             "bad": bad.get(v.name), "usable": v in inst and supported(v, flags) and v.name not in bad}
            for v in all_variants()
        ],
    }
