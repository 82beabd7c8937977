"""QuantDesk's engine against llama.cpp's own llama-server, built once from the installed
llama-cpp-python sdist (the same llama.cpp commit) with the CPU flags of the engine's CPU build,
into .bench/ (never shipped). Same model, threads, greedy, flash attention off on both; the ratio
is the median of paired, alternating rounds (this machine's speed drifts between runs).

llama-server is measured twice in the same rounds: as llama.cpp builds it by default (OpenMP, the
row's value) and built like the engine, without OpenMP (the detail), where it starts its compute
threads for every graph: it attaches no thread pool, the engine host does (engine.threadpool)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.core.engine import SamplingParams
from app.core.engine import cpu_variants as cv
from app.core.engine.client import EngineClient

ROOT = Path(__file__).resolve().parents[1]
# rounds (each of the 6 orders of the three sides 7 times): single ratios here spread ±3% on a quiet
# machine, ±15% on a busy one (runs of 42 and 84 rounds gave 1.010 and 1.007, 0.980 and 0.988 without OpenMP)
ROUNDS, TOKENS, THREADS = 42, 200, 2
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to read."}]


IDLE_WAIT_S = 1.5  # > engine.host.IDLE_SAVE_S, and the save itself
WORK_TOKENS = (4, 20)  # replies whose difference is counted; prompt + reply stay under the KV store's MIN_TOKENS


def llama_server(variant_name: str | None = None, *, openmp: bool = True) -> Path:
    """llama-server with the flags of the engine's CPU build in use (or of ``variant_name``); with
    OpenMP (llama.cpp's default) or, ``openmp=False``, with the engine's threading options."""
    from bench.cpu_bench import _install_engine, engine_build

    ie = _install_engine()
    build, cache = engine_build()
    variant = (cv.by_name(variant_name) if variant_name else None) or cv.choose().variant
    out = ROOT / ".bench" / f"llama-server-{build['key']}-{variant.name}{'' if openmp else '-noomp'}"
    exe = out / "bin" / "llama-server"
    if exe.is_file():
        return exe
    tree = ie.source_tree(cache, ie.sdist(cache)) / "vendor" / "llama.cpp"
    print("  building llama-server from the same sdist (once; several minutes)", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    ie.run(["cmake", "-S", str(tree), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
            *ie.cpu_options(variant.cmake), *([] if openmp else ie.THREADING)], log=out / "configure.log")
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


def _start_server(exe: Path, model: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    server = subprocess.Popen([str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", str(THREADS),
                               "-c", "2048", "-fa", "off", "-np", "1", "--no-webui"],
                              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return server, port


def _wait_healthy(server: subprocess.Popen[bytes], port: int, why: str, *, wait_s: float = 120, poll_s: float = 0.3,
                  request_s: float = 2) -> None:
    """Return once llama-server answers /health; ``why`` ends the error when it exits or ``wait_s`` passes."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=request_s).read()
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"llama-server did not start {why}") from None
            time.sleep(poll_s)


def decode_ratio(model: Path, log_dir: Path) -> tuple[float, str]:
    from app.core.planner.params import LoadParams

    builds = {"server": llama_server(), "server-noomp": llama_server(openmp=False)}
    servers = {side: _start_server(exe, model, log_dir / f"{side}.log") for side, exe in builds.items()}
    client = EngineClient(log_path=log_dir / "engine-vs-server.log")
    try:
        client.load(model, LoadParams(n_ctx=2048, n_gpu_layers=0, n_threads=THREADS))
        for side, (server, port) in servers.items():
            _wait_healthy(server, port, f"(see {log_dir / f'{side}.log'})")
        greedy = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=TOKENS, seed=0)
        tps: dict[str, list[float]] = {"app": [], "server": [], "server-noomp": []}
        for _, port in servers.values():
            _server_tps(port)
        client.chat(PROMPT, greedy)  # warm-up all three
        orders = list(itertools.permutations(tps))  # each side first, middle and last equally often
        for i in range(ROUNDS):
            for side in orders[i % len(orders)]:
                if side == "app":
                    client.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))
                    tps["app"].append(client.chat(PROMPT, greedy).tokens_per_s)
                    time.sleep(IDLE_WAIT_S)  # the engine saves the conversation's KV cache when idle: not during llama-server's turn
                else:
                    tps[side].append(_server_tps(servers[side][1]))
    finally:
        client.close()
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=10)
    ratios = [a / b for a, b in zip(tps["app"], tps["server"], strict=True)]
    noomp = statistics.median(a / b for a, b in zip(tps["app"], tps["server-noomp"], strict=True))
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    med = {side: statistics.median(v) for side, v in tps.items()}
    return statistics.median(ratios), (f"QuantDesk {med['app']:.1f} tok/s, llama-server {med['server']:.1f} "
                                       f"({cv.choose().variant.name} flags, {THREADS} threads, FA off); median of {ROUNDS} "
                                       f"rounds, quartiles {q1:.3f}–{q3:.3f}; ÷ llama-server built without OpenMP "
                                       f"({med['server-noomp']:.1f}): {noomp:.3f}")


# -- decode work per token, counted by callgrind ---------------------------------------------------
VALGRIND_SAFE = ("haswell",)  # valgrind decodes AVX2 but neither AVX-512 nor AVX-VNNI


def _valgrind_variant() -> str:
    """The CPU build both sides run under callgrind: the one in use if valgrind can decode it,
    else haswell (every x86 build above it needs a superset of haswell's instructions). The
    kernels are then the same on both sides, which is all the per-token comparison needs."""
    chosen = cv.choose().variant
    if chosen.name in ("icelake", "alderlake"):
        return VALGRIND_SAFE[0]
    return chosen.name


def _dump(pid: int) -> None:
    """Ask callgrind in ``pid`` to write its counts so far (and zero them); returns once written."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, stdout=subprocess.DEVNULL, timeout=600)


def _totals(out_dir: Path, prefix: str, pid: int) -> list[int]:
    """The instruction totals of ``pid``'s dumps, in order (callgrind's ``totals:`` lines)."""
    files = sorted(out_dir.glob(f"{prefix}.{pid}.*"), key=lambda f: int(f.suffix[1:]))
    out = []
    for f in files:
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                out.append(int(line.split()[1]))
                break
    return out


def decode_work_ratio(model: Path, log_dir: Path) -> tuple[float, str]:
    """Instructions per decoded token, llama-server's ÷ the app's (through the engine host, its pipe
    included), counted by valgrind's callgrind: deterministic where tok/s drift with the machine. One
    thread on both (OMP_THREAD_LIMIT=1), so no thread spins while waiting; each side evaluates the
    prompt once, then answers it again from its cache with WORK_TOKENS[0] and WORK_TOKENS[1] tokens,
    and the difference of those two replies' counts over the difference of their lengths is the
    cost of one decode step and everything the loop does around it."""
    import shutil

    from app.core.engine import client as engine_client
    from app.core.planner.params import LoadParams

    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("valgrind is not installed (apt install valgrind)")
    variant = _valgrind_variant()
    exe = llama_server(variant)
    out_dir = log_dir / "callgrind"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    grind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + str(out_dir / "%q{QD_SIDE}.%p")]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1", cv.ENV: variant}
    port = _free_port()
    server = subprocess.Popen([*grind, str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", "1",
                               "-tb", "1", "-c", "2048", "-fa", "off", "-np", "1", "--no-webui"],
                              env={**env, "QD_SIDE": "server"}, stdout=subprocess.DEVNULL,
                              stderr=open(log_dir / "llama-server-callgrind.log", "w"))
    original = engine_client.host_command
    engine_client.host_command = lambda: [*grind, *original()]  # type: ignore[assignment]
    client = EngineClient(log_path=log_dir / "engine-callgrind.log", env={**env, "QD_SIDE": "app"})
    try:
        client.load(model, LoadParams(n_ctx=2048, n_gpu_layers=0, n_threads=1))
        assert client._proc is not None
        host_pid = client._proc.pid
        _wait_healthy(server, port, "under valgrind (see llama-server-callgrind.log)", wait_s=900, poll_s=1, request_s=5)

        def server_reply(n: int) -> tuple[int, int]:
            body = json.dumps({"messages": PROMPT, "max_tokens": n, "temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0,
                               "cache_prompt": True}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=1800) as resp:
                usage = json.loads(resp.read())["usage"]
            return int(usage["prompt_tokens"]), int(usage["completion_tokens"])

        def app_reply(n: int) -> tuple[int, int]:
            r = client.chat(PROMPT, SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=n, seed=0))
            return r.prompt_tokens, r.completion_tokens

        def side_counts(pid: int, reply: Callable[[int], tuple[int, int]]) -> list[tuple[int, int]]:
            reply(1)  # the prompt, evaluated once: both later replies start from the cache
            _dump(pid)
            out = []
            for n in WORK_TOKENS:
                out.append(reply(n))
                _dump(pid)
            return out

        with ThreadPoolExecutor(2) as pool:  # the two sides at once: counts do not depend on timing
            futures = {"server": pool.submit(side_counts, server.pid, server_reply),
                       "app": pool.submit(side_counts, host_pid, app_reply)}
            counts = {side: f.result() for side, f in futures.items()}
    finally:
        engine_client.host_command = original  # type: ignore[assignment]
        client.close()
        server.terminate()
        server.wait(timeout=60)
    per_token = {}
    for side, pid in (("server", server.pid), ("app", host_pid)):
        totals = _totals(out_dir, side, pid)[-2:]  # the two replies' dumps (the last file is the exit's)
        (p_a, n_a), (p_b, n_b) = counts[side]
        if n_b <= n_a or len(totals) < 2:
            raise RuntimeError(f"{side}: replies of {n_a} and {n_b} tokens, {len(totals)} dumps")
        per_token[side] = (totals[1] - totals[0]) / (n_b - n_a)
    prompts = {side: counts[side][0][0] for side in counts}
    ratio = per_token["server"] / per_token["app"]
    return ratio, (f"instructions per decoded token: llama-server {per_token['server'] / 1e6:.2f} M, QuantDesk "
                   f"{per_token['app'] / 1e6:.2f} M (callgrind, 1 thread, replies of {WORK_TOKENS[0]} and "
                   f"{WORK_TOKENS[1]} tokens after a cached prompt of {prompts['server']} / {prompts['app']} tokens, "
                   f"{variant} build on both)")
