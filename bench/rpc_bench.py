"""A model split over two RPC workers on loopback against the same model loaded here: decode speed,
load time, and the bytes the engine moves per token (the workers' connections, from the kernel's TCP
counters). Paired, alternating rounds; the starter model, greedy, 2 threads."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Iterator

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from app.core.rpc.worker import Worker, WorkerConfig, parse_size

ROUNDS, TOKENS, CTX, THREADS = 5, 64, 512, 2
RAM = 80_000_000  # the starter model does not load here alone in this: it is split
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to read."}]
GREEDY = SamplingParams(temperature=0.0, max_tokens=TOKENS, seed=0)
IM_END = 2  # kept out, so every reply is TOKENS long


def _workers() -> list[Worker]:
    out = []
    for mem in ("150M", "64M"):
        w = Worker(WorkerConfig(port=0, threads=THREADS, mem=parse_size(mem)))
        w.start()
        out.append(w)
    return out


def _io(workers: list[Worker]) -> int:
    """Bytes received and sent on the workers' RPC connections, from the kernel's TCP counters
    (``ss -ti``: bytes_received, bytes_sent); -1 where ``ss`` is missing."""
    import re
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        return -1
    total = 0
    for w in workers:
        port = w.address.rsplit(":", 1)[1]
        out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
        total += sum(int(n) for n in re.findall(r"bytes_(?:sent|received):(\d+)", out))
    return total


def _rounds(model: Path, workers: list[Worker]) -> Iterator[tuple[float, float, float, float, float]]:
    """Per round: (local tok/s, split tok/s, local load s, split load s, bytes per token)."""
    addresses = [w.address for w in workers]
    for _ in range(ROUNDS):
        with EngineClient() as local:
            t0 = time.perf_counter()
            local.load_model(model, ctx=CTX)
            local_load = time.perf_counter() - t0
            here = local.chat(PROMPT, GREEDY, logit_bias={IM_END: -100.0}).tokens_per_s
        with EngineClient() as split:
            t0 = time.perf_counter()
            split.load_model(model, ctx=CTX, workers=addresses, ram=RAM)
            split_load = time.perf_counter() - t0
            before = _io(workers)
            reply = split.chat(PROMPT, GREEDY, logit_bias={IM_END: -100.0})
            moved = _io(workers) - before
        yield here, reply.tokens_per_s, local_load, split_load, moved / max(reply.completion_tokens, 1)


def measure(model: Path) -> dict[str, tuple[float, str]]:
    workers = _workers()
    try:
        rows = list(_rounds(model, workers))
    finally:
        for w in workers:
            w.stop()
    decode = statistics.median(s / h for h, s, *_ in rows)
    load = statistics.median(sl / ll for _, _, ll, sl, _ in rows)
    per_token = statistics.median(r[4] for r in rows)
    local_tps = statistics.median(r[0] for r in rows)
    split_tps = statistics.median(r[1] for r in rows)
    return {
        "decode": (decode, f"split {split_tps:.1f} tok/s, local {local_tps:.1f} tok/s; {per_token / 1024:.1f} KiB "
                           f"over loopback per generated token (the prompt's share included); median of {ROUNDS} paired rounds"),
        "load": (load, f"median of {ROUNDS} paired rounds (the split sends the workers' weights once per load)"),
    }
