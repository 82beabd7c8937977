"""ggml's own CPU thread pool, kept for the life of a loaded model and attached to its llama
contexts (``llama_attach_threadpool``, which llama-cpp-python does not bind), through ctypes.

The engine is built without OpenMP (packaging/install_engine.py ``THREADING``). Such a ggml given
no pool starts and joins its compute threads for every graph, that is for every token; a pool
keeps them, and its barriers spin on an atomic where libgomp's end each in a futex_wake syscall
(~450 barriers a token for a small model). Side by side on the starter model, 2 threads, greedy:
1.04× the OpenMP build's decode tok/s, 0.99× for the same build without a pool.

Between tokens the pool's threads poll for the next graph; once a request is done the host pauses
the pool, so they sleep instead of spinning while the app is idle. The next graph wakes them
(ggml's kickoff resumes a paused pool).

``ggml_threadpool_new`` and ``ggml_threadpool_free`` come from the CPU backend's registry entry
(``ggml_backend_reg_get_proc_address``, which answers for them), so they are those of the CPU
build in use (engine.cpu_variants). The parameter struct is ``ggml_threadpool_params`` of ggml.h
at the pinned llama.cpp (GGML_MAX_N_THREADS 512), filled by ggml's own
``ggml_threadpool_params_init``.
"""

from __future__ import annotations

import ctypes
from typing import Any

MAX_THREADS = 512  # GGML_MAX_N_THREADS


class Params(ctypes.Structure):
    """struct ggml_threadpool_params (ggml.h)."""

    _fields_ = [
        ("cpumask", ctypes.c_bool * MAX_THREADS),  # all false: the default affinity
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),  # enum ggml_sched_priority
        ("poll", ctypes.c_uint32),  # 0: no polling .. 100: aggressive
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


_NEW = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(Params))
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _native() -> Any:
    import llama_cpp.llama_cpp as native

    return native._lib


def _cpu_proc(name: str, prototype: Any) -> Any:
    """A function of the CPU backend in use, from its registry entry; None where it has none."""
    from app.core.rpc import ggml

    g = ggml.lib()
    reg = g.ggml_backend_reg_by_name(b"CPU")
    address = g.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    return prototype(address) if address else None


def _optional(name: str, restype: Any, argtypes: list[Any]) -> Any:
    """A ggml function reached through libllama's handle (dlsym searches its dependencies; not on
    Windows, where the caller does without it)."""
    fn = getattr(_native(), name, None)
    if fn is not None:
        fn.restype, fn.argtypes = restype, argtypes
    return fn


def params(n_threads: int) -> Params:
    p = Params()
    init = _optional("ggml_threadpool_params_init", None, [ctypes.POINTER(Params), ctypes.c_int])
    if init is not None:
        init(ctypes.byref(p), n_threads)
    else:  # the same defaults as ggml.c's ggml_threadpool_params_init
        p.n_threads, p.prio, p.poll, p.strict_cpu = n_threads, 0, 50, False
    p.paused = True  # no thread spins until the first graph
    return p


class ThreadPools:
    """The decode pool (``n_threads``) and the prompt pool (``n_threads_batch``; the same pool when
    the counts match) for the contexts of one loaded model: the model's own and its draft model's,
    which run one after the other on the host's main thread. Free it after those contexts."""

    def __init__(self, n_threads: int, n_threads_batch: int) -> None:
        self.n_threads, self.n_threads_batch = n_threads, n_threads_batch
        self.decode: int | None = None
        self.batch: int | None = None
        new = _cpu_proc("ggml_threadpool_new", _NEW)
        self._free = _cpu_proc("ggml_threadpool_free", _FREE)
        if new is None or self._free is None:  # a CPU backend without pools: ggml makes one per graph
            return
        self._attach = _optional("llama_attach_threadpool", None, [ctypes.c_void_p] * 3)
        if self._attach is None:
            return
        self._pause = _optional("ggml_threadpool_pause", None, [ctypes.c_void_p])
        self.decode = new(ctypes.byref(params(n_threads))) or None
        if self.decode is not None:
            self.batch = self.decode if n_threads_batch == n_threads else (new(ctypes.byref(params(n_threads_batch))) or self.decode)

    def attach(self, ctx: Any) -> None:
        """Run ``ctx``'s graphs (a llama_context pointer) on these pools."""
        if self.decode is not None:
            self._attach(ctx, self.decode, self.batch)

    def pause(self) -> None:
        """Let the threads sleep until the next graph (the host calls it when a request is done)."""
        if self.decode is not None and self._pause is not None:
            for pool in {self.decode, self.batch}:
                self._pause(pool)

    def close(self) -> None:
        if self.decode is not None:
            for pool in {self.decode, self.batch}:
                self._free(pool)
        self.decode = self.batch = None

    def describe(self) -> str:
        if self.decode is None:
            return "per graph"
        if self.batch == self.decode:
            return f"{self.n_threads} threads"
        return f"{self.n_threads} threads, {self.n_threads_batch} for prompts"
