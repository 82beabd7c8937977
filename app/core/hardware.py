"""What this machine has: CPU, RAM (psutil), NVIDIA GPUs (NVML), Apple unified memory.

Every probe is defensive: no NVML library, no GPU or a driver error is reported as such, never
raised. The engine's own capabilities (GPU offload, backends) come from the engine host, which
is the only process that loads llama.cpp.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

SIMD_FLAGS = ("sse3", "ssse3", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "neon", "asimd", "sve")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    vendor: str  # "nvidia", "apple"
    total_bytes: int
    free_bytes: int
    used_bytes: int
    driver: str = ""
    compute_capability: str = ""
    unified_memory: bool = False


@dataclass(frozen=True)
class Hardware:
    os: str
    cpu_model: str
    physical_cores: int
    logical_cores: int
    simd: tuple[str, ...]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GPU, ...] = ()
    gpu_note: str = ""  # why no GPU is listed, when none is
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def unified_memory(self) -> bool:
        return any(g.unified_memory for g in self.gpus)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["simd"] = list(self.simd)
        data["gpus"] = [asdict(g) for g in self.gpus]
        return data


def _cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    if key in ("model name", "Model") and value.strip():
                        model = value.strip()
                    elif key in ("flags", "Features"):
                        flags.update(value.split())
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5).stdout.strip() or model
        except (OSError, subprocess.SubprocessError):
            pass
        if platform.machine() == "arm64":
            flags.update({"neon", "asimd"})
    return model, tuple(f for f in SIMD_FLAGS if f in flags)


def nvidia_gpus() -> tuple[tuple[GPU, ...], str]:
    """NVIDIA GPUs through NVML, and a note when there are none."""
    try:
        import pynvml
    except ImportError:
        return (), "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return (), f"no NVIDIA driver (NVML: {exc})"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                cc = f"{major}.{minor}"
            except pynvml.NVMLError:
                cc = ""
            gpus.append(GPU(
                index=i,
                name=name.decode() if isinstance(name, bytes) else str(name),
                vendor="nvidia",
                total_bytes=int(mem.total),
                free_bytes=int(mem.free),
                used_bytes=int(mem.used),
                driver=driver,
                compute_capability=cc,
            ))
        return tuple(gpus), "" if gpus else "the NVIDIA driver lists no GPU"
    except pynvml.NVMLError as exc:
        return (), f"NVML error: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def apple_gpu(ram_total: int, ram_available: int) -> GPU | None:
    """Apple silicon: unified memory; Metal's recommended working set is about 3/4 of RAM
    (2/3 on machines with 36 GB or less), the figure llama.cpp's Metal backend reports."""
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return None
    share = 0.75 if ram_total > 36 * 10**9 else 2 / 3
    working_set = int(ram_total * share)
    return GPU(0, "Apple GPU (Metal)", "apple", working_set, min(working_set, ram_available), 0, unified_memory=True)


def detect() -> Hardware:
    vm = psutil.virtual_memory()
    model, simd = _cpu_model_and_flags()
    gpus, note = nvidia_gpus()
    apple = apple_gpu(vm.total, vm.available)
    if apple is not None:
        gpus, note = (apple,), ""
    return Hardware(
        os=f"{platform.system()} {platform.release()} ({platform.machine()})",
        cpu_model=model,
        physical_cores=psutil.cpu_count(logical=False) or psutil.cpu_count() or 1,
        logical_cores=psutil.cpu_count() or 1,
        simd=simd,
        ram_total_bytes=vm.total,
        ram_available_bytes=vm.available,
        gpus=gpus,
        gpu_note=note,
    )


def summary(hw: Hardware, gpu_offload: bool | None = None) -> list[tuple[str, str]]:
    """(label, text) rows describing ``hw`` for people: the CLI and the Hardware page show these."""
    rows = [
        ("System", hw.os),
        ("CPU", f"{hw.cpu_model}: {hw.physical_cores} cores, {hw.logical_cores} threads"),
        ("SIMD", " ".join(hw.simd) or "none found"),
        ("RAM", f"{human_bytes(hw.ram_total_bytes)} total, {human_bytes(hw.ram_available_bytes)} available"),
    ]
    for g in hw.gpus:
        detail = f"driver {g.driver}, compute capability {g.compute_capability}" if g.vendor == "nvidia" else "unified memory"
        rows.append((f"GPU {g.index}", f"{g.name}: {human_bytes(g.total_bytes)} total, {human_bytes(g.free_bytes)} free ({detail})"))
    if not hw.gpus:
        rows.append(("GPU", f"none: {hw.gpu_note}"))
    if gpu_offload is not None:
        rows.append(("Engine", "llama.cpp with GPU offload" if gpu_offload else "llama.cpp, CPU build (no GPU offload)"))
    return rows
