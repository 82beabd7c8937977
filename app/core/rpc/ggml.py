"""ctypes bindings to ggml's device registry and its RPC backend (ggml/include/ggml-backend.h,
ggml-rpc.h), for the worker child and the engine process alike. Importing this module loads no
library; the first call imports llama_cpp (after ``cpu_variants.activate()`` in a child).

The RPC backend is found in ggml's registry (``ggml_backend_reg_by_name("RPC")``, where it is
linked in), else loaded from ``libggml-rpc`` beside llama_cpp's other libraries
(``ggml_backend_load``, an engine built with dynamically loaded backends). Its functions are
reached through ``ggml_backend_reg_get_proc_address``, which works in both builds.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.core.errors import WorkerError

# enum ggml_backend_dev_type
DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
RPC_LIB = {"win32": "ggml-rpc.dll", "darwin": "libggml-rpc.dylib"}.get(sys.platform, "libggml-rpc.so")

_VP, _SZ, _STR = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
ADD_SERVER = ctypes.CFUNCTYPE(_VP, _STR)  # ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint)
# void ggml_backend_rpc_start_server(endpoint, cache_dir, n_threads, n_devices, ggml_backend_dev_t * devices)
START_SERVER = ctypes.CFUNCTYPE(None, _STR, _STR, _SZ, _SZ, ctypes.POINTER(_VP))


@dataclass(frozen=True)
class Device:
    """One device of ggml's registry: ``name`` as ggml names it (CPU, CUDA0, RPC0 ...)."""

    index: int
    name: str
    description: str
    type: str  # cpu, gpu, igpu, accel
    free_bytes: int
    total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def lib() -> Any:
    """The libggml that libllama runs on, reached through libllama's own handle (dlsym searches a
    library's dependencies). Not ``llama_cpp._ggml.libggml``: the wheel holds lib/libggml.so and
    lib/libggml.so.0 as two copies, and that one opens the first by path, a second instance with
    a registry of its own, so devices registered there never reach libllama."""
    import llama_cpp.llama_cpp as native

    g = native._lib
    if getattr(g, "ggml_backend_dev_count", None) is None:  # Windows: GetProcAddress does not search dependencies
        from llama_cpp import _ggml  # type: ignore[attr-defined]

        g = _ggml.libggml  # one ggml.dll per process there
    for name, restype, argtypes in (
        ("ggml_backend_dev_count", _SZ, []),
        ("ggml_backend_dev_get", _VP, [_SZ]),
        ("ggml_backend_dev_name", _STR, [_VP]),
        ("ggml_backend_dev_description", _STR, [_VP]),
        ("ggml_backend_dev_type", ctypes.c_int, [_VP]),
        ("ggml_backend_dev_memory", None, [_VP, ctypes.POINTER(_SZ), ctypes.POINTER(_SZ)]),
        ("ggml_backend_dev_backend_reg", _VP, [_VP]),
        ("ggml_backend_reg_by_name", _VP, [_STR]),
        ("ggml_backend_reg_get_proc_address", _VP, [_VP, _STR]),
        ("ggml_backend_reg_dev_count", _SZ, [_VP]),
        ("ggml_backend_reg_dev_get", _VP, [_VP, _SZ]),
        ("ggml_backend_register", None, [_VP]),
        ("ggml_backend_load", _VP, [_STR]),
        ("ggml_backend_load_all", None, []),
        ("ggml_version", _STR, []),
        ("ggml_commit", _STR, []),
    ):
        fn = getattr(g, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes
    if g.ggml_backend_dev_count() == 0:  # dynamically loaded backends: none is there until loaded
        g.ggml_backend_load_all()
    return g


def lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def rpc_reg() -> int:
    """The RPC backend's registry entry, loading ``libggml-rpc`` where the build has it apart."""
    g = lib()
    reg = g.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        path = lib_dir() / RPC_LIB
        if path.exists():
            reg = g.ggml_backend_load(str(path).encode())
        if not reg:
            raise WorkerError(f"this engine was built without llama.cpp's RPC backend (no {RPC_LIB} in {lib_dir()}): "
                              "reinstall it with GGML_RPC=ON ('make install')")
    return int(reg)


def _proc(name: str, prototype: Any) -> Any:
    address = lib().ggml_backend_reg_get_proc_address(rpc_reg(), name.encode())
    if not address:
        raise WorkerError(f"llama.cpp's RPC backend has no {name}: the engine is from another llama.cpp version")
    return prototype(address)


def start_server(endpoint: str, devices: list[int], *, cache_dir: str | None, threads: int) -> None:
    """ggml's RPC server on ``devices`` (handles from ``device_handle``). Blocks for as long as it
    serves; returns only when it could not start (the reason is on stderr)."""
    array = (_VP * len(devices))(*devices)
    _proc("ggml_backend_rpc_start_server", START_SERVER)(
        endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, len(devices), array)


def add_server(endpoint: str) -> int:
    """Connect to a worker (HELLO, device count) and return its registry entry. llama.cpp aborts
    the process when the worker cannot be reached or speaks another protocol: probe it first."""
    reg = _proc("ggml_backend_rpc_add_server", ADD_SERVER)(endpoint.encode())
    if not reg:
        raise WorkerError(f"{endpoint}: the worker offers no device")
    return int(reg)


def register(reg: int) -> None:
    """Add a backend and its devices to the registry (llama.cpp ignores a second time)."""
    lib().ggml_backend_register(reg)


def memory(handle: int) -> tuple[int, int]:
    """A device's (free, total) bytes; for an RPC device, the worker's real figures (one round trip)."""
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    lib().ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    return int(free.value), int(total.value)


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def describe(index: int, handle: int) -> Device:
    g = lib()
    free, total = memory(handle)
    kind = DEVICE_TYPES.get(g.ggml_backend_dev_type(handle), "unknown")
    return Device(index=index, name=_text(g.ggml_backend_dev_name(handle)), description=_text(g.ggml_backend_dev_description(handle)),
                  type=kind, free_bytes=free, total_bytes=total)


def handles() -> list[int]:
    g = lib()
    return [int(g.ggml_backend_dev_get(i)) for i in range(g.ggml_backend_dev_count())]


def devices() -> list[Device]:
    """Every device of the registry, in its order (llama.cpp's device list)."""
    return [describe(i, h) for i, h in enumerate(handles())]


def reg_devices(reg: int) -> list[int]:
    g = lib()
    return [int(g.ggml_backend_reg_dev_get(reg, i)) for i in range(g.ggml_backend_reg_dev_count(reg))]


def build() -> dict[str, str]:
    """Which llama.cpp this is: llama-cpp-python's version and ggml's version and commit."""
    import llama_cpp

    g = lib()
    out = {"llama_cpp_python": str(llama_cpp.__version__)}
    if getattr(g, "ggml_version", None) is not None:
        out["ggml"] = _text(g.ggml_version())
    if getattr(g, "ggml_commit", None) is not None:
        out["ggml_commit"] = _text(g.ggml_commit())
    return out
