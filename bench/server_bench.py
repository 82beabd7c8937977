"""QuantDesk's engine against llama.cpp's own llama-server, built once from the installed
llama-cpp-python sdist (the same llama.cpp commit) with the CPU flags of the engine's CPU build,
into .bench/ (never shipped). Same model, threads, greedy, flash attention off on both; the ratio
is the median of paired, alternating rounds (this machine's speed drifts between runs)."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.core.engine import SamplingParams
from app.core.engine import cpu_variants as cv
from app.core.engine.client import EngineClient

ROOT = Path(__file__).resolve().parents[1]
ROUNDS, TOKENS, THREADS = 11, 200, 2  # paired rounds: the spread of single ratios here is ±3%
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to read."}]


def llama_server() -> Path:
    from bench.cpu_bench import _install_engine, engine_build

    ie = _install_engine()
    build, cache = engine_build()
    variant = cv.choose().variant
    out = ROOT / ".bench" / f"llama-server-{build['key']}-{variant.name}"
    exe = out / "bin" / "llama-server"
    if exe.is_file():
        return exe
    tree = ie.source_tree(cache, ie.sdist(cache)) / "vendor" / "llama.cpp"
    print("  building llama-server from the same sdist (once; several minutes)", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    ie.run(["cmake", "-S", str(tree), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
            *ie.cpu_options(variant.cmake)], log=out / "configure.log")
    ie.run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(os.cpu_count() or 2)], log=out / "build.log")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_tps(port: int) -> float:
    """llama-server's own decode speed for the prompt, through its chat endpoint (the model's template)."""
    body = json.dumps({"messages": PROMPT, "max_tokens": TOKENS, "temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0,
                       "cache_prompt": False}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return float(json.loads(resp.read())["timings"]["predicted_per_second"])


def decode_ratio(model: Path, log_dir: Path) -> tuple[float, str]:
    from app.core.planner.params import LoadParams

    exe = llama_server()
    port = _free_port()
    server = subprocess.Popen([str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", str(THREADS),
                               "-c", "2048", "-fa", "off", "-np", "1", "--no-webui"],
                              stdout=subprocess.DEVNULL, stderr=open(log_dir / "llama-server.log", "w"))
    client = EngineClient(log_path=log_dir / "engine-vs-server.log")
    try:
        client.load(model, LoadParams(n_ctx=2048, n_gpu_layers=0, n_threads=THREADS))
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("llama-server did not start (see llama-server.log)") from None
                time.sleep(0.3)
        greedy = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=TOKENS, seed=0)
        ours, theirs, ratios = [], [], []
        _server_tps(port)
        client.chat(PROMPT, greedy)  # warm-up both
        for i in range(ROUNDS):
            pair = []
            for side in (("app", "server") if i % 2 == 0 else ("server", "app")):
                if side == "app":
                    client.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))
                    pair.append(("app", client.chat(PROMPT, greedy).tokens_per_s))
                else:
                    pair.append(("server", _server_tps(port)))
            a = dict(pair)["app"]
            b = dict(pair)["server"]
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), (f"QuantDesk {statistics.median(ours):.1f} tok/s, llama-server "
                                       f"{statistics.median(theirs):.1f} ({cv.choose().variant.name} flags, {THREADS} "
                                       f"threads, FA off); median of {ROUNDS} paired rounds, quartiles {q1:.3f}–{q3:.3f}")
