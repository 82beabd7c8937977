"""The API server (``quantdesk serve``) against the engine called directly: decode speed through a
streaming client, the time to first token it adds, 8 concurrent clients on one model, and its RSS.
Both sides are timed the same way, from the caller (the engine's token events come in 20 ms batches
on both); rounds alternate and the median is reported (this machine's speed drifts)."""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient

ROOT = Path(__file__).resolve().parents[1]
ROUNDS, TOKENS, THREADS, CTX = 5, 128, 2, 2048
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to read."}]
NO_EOS = {"0": -100, "2": -100}  # the starter model's end tokens: every reply is TOKENS long
READY = re.compile(r"API server on http://([\d.]+):(\d+)/v1")


class Server:
    def __init__(self, model: Path, home: Path, *, preload: bool = True) -> None:
        env = {**os.environ, "QUANTDESK_HOME": str(home), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        models = ["--model", str(model)] if preload else []
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", "0", *models, "--ctx", str(CTX),
                                      "--threads", str(THREADS)], env=env, stderr=subprocess.PIPE, text=True,
                                     stdout=subprocess.DEVNULL)
        assert self.proc.stderr is not None
        self.port = 0
        for line in self.proc.stderr:
            m = READY.search(line)
            if m:
                self.port = int(m.group(2))
                break
        if not self.port:
            raise RuntimeError("the API server did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr or []], daemon=True).start()

    def rss_mb(self) -> float:
        me = psutil.Process(self.proc.pid)
        return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 1e6

    def stream(self, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, int]:
        """(TTFT s, decode tok/s, completion tokens) as a streaming client sees them."""
        body = json.dumps({"model": "starter", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}, "logit_bias": NO_EOS})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        first = last = 0.0
        tokens = 0
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
        conn.close()
        return first - t0, (tokens - 1) / (last - first) if last > first else 0.0, tokens

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _direct(client: EngineClient, max_tokens: int) -> tuple[float, float]:
    sampling = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, max_tokens=max_tokens)
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    for event in client.stream(PROMPT, sampling, logit_bias={0: -100, 2: -100}):
        if event["ev"] == "token":
            last = time.perf_counter()
            first = first or last
        elif event["ev"] == "done":
            n = event["reply"].completion_tokens
    return first - t0, (n - 1) / (last - first) if last > first else 0.0


def measure_all(model: Path, home: Path) -> dict[str, Any]:
    from app.core.planner.params import LoadParams

    out: dict[str, Any] = {}
    server = Server(model, home / "api-home")
    client = EngineClient(log_path=home / "engine-vs-api.log")
    try:
        out["rss_loaded_mb"] = server.rss_mb()
        client.load(model, LoadParams(n_ctx=CTX, n_gpu_layers=0, n_threads=THREADS))
        server.stream(PROMPT, 8)  # warm-up: both caches hold the prompt
        _direct(client, 8)
        ratios, added, ours, theirs = [], [], [], []
        for i in range(ROUNDS):
            pair: dict[str, tuple[float, float]] = {}
            for side in (("api", "direct") if i % 2 == 0 else ("direct", "api")):
                pair[side] = server.stream(PROMPT, TOKENS)[:2] if side == "api" else _direct(client, TOKENS)
            ratios.append(pair["api"][1] / pair["direct"][1])
            added.append(pair["api"][0] - pair["direct"][0])
            ours.append(pair["api"][1])
            theirs.append(pair["direct"][1])
        out["ratio"], out["added_ttft_s"] = statistics.median(ratios), statistics.median(added)
        out["api_tps"], out["direct_tps"] = statistics.median(ours), statistics.median(theirs)
        client.close()
        results: list[tuple[float, float, int]] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            t0 = time.perf_counter()
            _, _, n = server.stream([{"role": "user", "content": f"Tell story number {i} about a dragon."}], 48)
            with lock:
                results.append((time.perf_counter() - t0, n, i))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        wall = time.perf_counter() - t0
        lat = sorted(r[0] for r in results)
        out["concurrent"] = {"done": len(results), "p50_s": statistics.median(lat) if lat else 0.0,
                             "p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0,
                             "tps": sum(r[1] for r in results) / wall}
    finally:
        client.close()
        server.stop()
    idle = Server(model, home / "api-home-idle", preload=False)  # the library's models listed, none loaded
    try:
        out["rss_idle_mb"] = psutil.Process(idle.proc.pid).memory_info().rss / 1e6
    finally:
        idle.stop()
    return out


_cache: dict[str, Any] = {}


def _results(model: Path, home: Path) -> dict[str, Any]:
    if not _cache:
        _cache.update(measure_all(model, home))
    return _cache


def decode_ratio(model: Path, home: Path) -> tuple[float, str]:
    r = _results(model, home)
    return r["ratio"], (f"through the API {r['api_tps']:.1f} tok/s, engine directly {r['direct_tps']:.1f} "
                        f"(streaming client, greedy, {TOKENS} tokens, median of {ROUNDS} paired rounds)")


def added_ttft(model: Path, home: Path) -> tuple[float, str]:
    r = _results(model, home)
    return r["added_ttft_s"], "request sent -> first content chunk, minus the engine's own first token (cached prompt)"


def concurrent(model: Path, home: Path) -> tuple[float, str]:
    c = _results(model, home)["concurrent"]
    return float(c["done"]), f"8 clients x 48 tokens: p50 {c['p50_s']:.1f} s, p95 {c['p95_s']:.1f} s, {c['tps']:.1f} tok/s in all"


def rss(model: Path, home: Path, loaded: bool) -> tuple[float, str]:
    r = _results(model, home)
    if loaded:
        return r["rss_loaded_mb"], "server + its engine process, starter model loaded"
    return r["rss_idle_mb"], "server process, model not loaded"
