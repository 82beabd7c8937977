"""Saved KV caches, so an old conversation (or one after a restart) continues without re-reading it.

When the engine goes idle after a reply, the KV state of sequence 0 (the conversation so far) is
saved with llama.cpp's ``llama_state_seq_save_file``, under a folder keyed by the model file and the
load parameters that shape the cache. A later prompt that begins with a saved token sequence
restores it (``llama_state_seq_load_file``) and evaluates only the rest. The folder stays within a
byte budget, evicting the least recently used state. Host side: imports llama_cpp, nothing of the
parent. Where: $QUANTDESK_KV_CACHE_DIR (the client sets it to the data folder's kv-cache/);
budget: $QUANTDESK_KV_CACHE_BUDGET bytes (default 2 GiB); unset: nothing is saved.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

MIN_TOKENS = 64  # shorter prompts are quicker to evaluate than to restore
DEFAULT_BUDGET = 2 << 30


def _digest(tokens: list[int]) -> str:
    return hashlib.sha256(b"".join(t.to_bytes(4, "little", signed=True) for t in tokens)).hexdigest()[:32]


class KVStore:
    def __init__(self, root: Path, model_path: str, params: dict[str, Any], budget: int = DEFAULT_BUDGET) -> None:
        st = os.stat(model_path)
        shape = {k: params.get(k) for k in ("n_ctx", "n_gpu_layers", "type_k", "type_v", "flash_attn", "swa_full")}
        key = hashlib.sha256(json.dumps([os.path.realpath(model_path), st.st_size, int(st.st_mtime), shape],
                                        sort_keys=True).encode()).hexdigest()[:24]
        self.root = root
        self.dir = root / key
        self.budget = budget
        self.saved_digest = ""  # the state last saved or restored: no need to save it again

    @classmethod
    def from_env(cls, model_path: str, params: dict[str, Any]) -> "KVStore | None":
        root = os.environ.get("QUANTDESK_KV_CACHE_DIR")
        if not root:
            return None
        try:
            return cls(Path(root), model_path, params, int(os.environ.get("QUANTDESK_KV_CACHE_BUDGET") or DEFAULT_BUDGET))
        except OSError:
            return None

    def _index(self) -> dict[str, int]:
        """digest of a saved token sequence -> its length, from the file names (``<n>-<digest>.kv``)."""
        out = {}
        for f in self.dir.glob("*.kv"):
            n, _, digest = f.stem.partition("-")
            if n.isdigit():
                out[digest] = int(n)
        return out

    def save(self, ctx: Any, tokens: list[int]) -> bool:
        import llama_cpp

        if len(tokens) < MIN_TOKENS:
            return False
        digest = _digest(tokens)
        if digest == self.saved_digest:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"{len(tokens)}-{digest}.kv"
        tmp = final.with_suffix(".partial")
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        if not llama_cpp.llama_state_seq_save_file(ctx, str(tmp).encode(), 0, arr, len(tokens)):
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, final)
        self.saved_digest = digest
        self._evict()
        return True

    def restore(self, ctx: Any, prompt: list[int], have: int) -> list[int] | None:
        """The tokens of the longest saved state that begins ``prompt`` and is longer than the
        ``have`` tokens the cache shares already, loaded into sequence 0; else None."""
        import llama_cpp

        best = 0
        for digest, n in self._index().items():
            if have < n < len(prompt) and n > best and _digest(prompt[:n]) == digest:
                best = n
        if not best:
            return None
        path = self.dir / f"{best}-{_digest(prompt[:best])}.kv"
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        out = (llama_cpp.llama_token * best)()
        n_out = ctypes.c_size_t(0)
        if not llama_cpp.llama_state_seq_load_file(ctx, str(path).encode(), 0, out, best, ctypes.byref(n_out)):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            return []  # the cache was cleared: nothing of it is left
        os.utime(path)  # recently used
        tokens = list(out[: n_out.value])
        self.saved_digest = _digest(tokens)
        return tokens

    def _evict(self) -> None:
        files = sorted(self.root.glob("*/*.kv"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in files)
        while files and total > self.budget:
            f = files.pop(0)
            total -= f.stat().st_size
            f.unlink(missing_ok=True)


def idle_save(store: KVStore | None, ctx: Any, tokens: list[int]) -> None:
    if store is not None:
        t0 = time.perf_counter()
        if store.save(ctx, tokens):
            import sys

            sys.stderr.write(f"kv-cache: saved {len(tokens)} tokens in {time.perf_counter() - t0:.2f} s\n")
