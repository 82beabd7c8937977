"""Engine rows: decode speed against llama-cpp-python in-process, TTFT with KV reuse, stop latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient

N_CTX, THREADS, DECODE_TOKENS, DECODE_RUNS = 2048, 2, 200, 5
RUN_CAP_S = 20.0  # one generation is cut off after this long (a busy machine can be 50x slower)
ROW_BUDGET_S = 60.0  # repetitions beyond the first stop once a row has run this long
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to read."}]
GREEDY = SamplingParams(temperature=0.0, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0, max_tokens=DECODE_TOKENS, seed=0)


def app_decode(client: EngineClient, sampling: SamplingParams = GREEDY) -> tuple[float, int]:
    """Decode tok/s of the engine process, timed in the parent from the first to the last token event."""
    t_start = time.perf_counter()
    t_first = t_last = 0.0
    n = 0
    for event in client.stream(STORY, sampling):
        now = time.perf_counter()
        if event["ev"] == "token":
            t_first = t_first or now
            if t_last - t_start < RUN_CAP_S <= now - t_start:
                client.cancel()
            t_last = now
        elif event["ev"] == "done":
            n = event["reply"].completion_tokens
    return (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0, n


def direct_decode(llm: Any, max_tokens: int = DECODE_TOKENS) -> tuple[float, int]:
    """The reference: llama-cpp-python in this process, same prompt and sampling."""
    stamps: list[float] = []
    t_start = time.perf_counter()
    chunks = llm.create_chat_completion(
        messages=STORY, temperature=GREEDY.temperature, top_p=GREEDY.top_p, top_k=GREEDY.top_k, min_p=GREEDY.min_p,
        repeat_penalty=GREEDY.repeat_penalty, max_tokens=max_tokens, seed=GREEDY.seed, stream=True,
    )
    for chunk in chunks:
        if chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
            if stamps[-1] - t_start > RUN_CAP_S:
                break
    chunks.close()
    n = len(stamps)
    return (n - 1) / (stamps[-1] - stamps[0]) if n > 1 and stamps[-1] > stamps[0] else 0.0, n


def decode_ratio(client: EngineClient, model: Path) -> tuple[float, str]:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=N_CTX, n_threads=THREADS, n_gpu_layers=0, n_batch=512, n_ubatch=512, verbose=False
    )
    try:
        app_decode(client, replace(GREEDY, max_tokens=16)), direct_decode(llm, 16)  # warm-up: first decode allocates buffers
        app_runs: list[tuple[float, int]] = []
        ref_runs: list[tuple[float, int]] = []
        t0 = time.perf_counter()
        while len(app_runs) < DECODE_RUNS and (not app_runs or time.perf_counter() - t0 < ROW_BUDGET_S):
            # alternate A, B, A, B ... so drift hits both sides alike
            app_runs.append(app_decode(client))
            ref_runs.append(direct_decode(llm))
    finally:
        llm.close()
    app_tps = statistics.median(r[0] for r in app_runs)
    ref_tps = statistics.median(r[0] for r in ref_runs)
    best = max(r[0] for r in app_runs) / max(r[0] for r in ref_runs)

    def runs(side: list[tuple[float, int]]) -> str:
        return f"runs {'/'.join(f'{r[0]:.1f}' for r in side)}, {'/'.join(sorted({str(r[1]) for r in side}))} tok"

    detail = f"app {app_tps:.1f} tok/s ({runs(app_runs)}), in-process {ref_tps:.1f} ({runs(ref_runs)}); best-of ratio {best:.3f}"
    return app_tps / ref_tps, detail


def ttft_ratio(client: EngineClient, reps: int = 3, turns: int = 10) -> tuple[float, str]:
    """TTFT of turn ``turns`` over turn 1 in a growing conversation (median over ``reps`` conversations)."""
    sampling = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=16, seed=0)
    firsts: list[float] = []
    lasts: list[float] = []
    evaluated: tuple[int, int, int] = (0, 0, 0)
    t0 = time.perf_counter()
    for rep in range(reps):
        if rep and time.perf_counter() - t0 > ROW_BUDGET_S / 2:
            break
        # a different system prompt per conversation, so turn 1 never reuses the previous one's cache
        messages = [{"role": "system", "content": f"Session {rep}. You are a helpful assistant."}]
        replies = []
        for k in range(1, turns + 1):
            messages.append({"role": "user", "content": f"Question {k:02d}: name a fruit that is red."})
            reply = client.chat(messages, sampling)
            messages.append({"role": "assistant", "content": reply.text})
            replies.append(reply)
        firsts.append(replies[0].ttft_s)
        lasts.append(replies[-1].ttft_s)
        evaluated = (replies[0].evaluated_prompt_tokens, replies[-1].evaluated_prompt_tokens, replies[-1].prompt_tokens)
    first, last = statistics.median(firsts), statistics.median(lasts)
    detail = (
        f"turn 1 {first * 1000:.1f} ms ({evaluated[0]} tok evaluated), turn {turns} {last * 1000:.1f} ms "
        f"({evaluated[1]} of {evaluated[2]} tok evaluated); median of {len(firsts)}"
    )
    return last / first, detail


def stop_latency(client: EngineClient, reps: int = 3, after: int = 10) -> tuple[float, str]:
    """Seconds from ``cancel()`` (after ``after`` token events) to the ``done`` event in the parent."""
    sampling = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=2000, seed=0)
    latencies: list[float] = []
    reasons: list[str] = []
    t0 = time.perf_counter()
    for rep in range(reps):
        if rep and time.perf_counter() - t0 > ROW_BUDGET_S / 2:
            break
        n, t_cancel = 0, 0.0
        for event in client.stream(STORY, sampling):
            if event["ev"] == "token":
                n += 1
                if n == after:
                    t_cancel = time.perf_counter()
                    client.cancel()
            elif event["ev"] == "done":
                latencies.append(time.perf_counter() - t_cancel if t_cancel else float("inf"))
                reasons.append(event["reply"].finish_reason)
    runs = "/".join(f"{x * 1000:.1f}" for x in latencies)
    return statistics.median(latencies), f"runs {runs} ms (max {max(latencies) * 1000:.1f}); finish {','.join(set(reasons))}"


def reopen_ttft_ratio(model: Path, log_dir: Path) -> tuple[float, str]:
    """TTFT of a follow-up in a ~3,000-token conversation after the engine restarted (its KV cache
    restored from disk) over the same follow-up in the live engine."""
    from app.core.planner.params import LoadParams

    params = LoadParams(n_ctx=4096, n_gpu_layers=0, n_threads=THREADS)
    sampling = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=8, seed=0)
    history = [{"role": "system", "content": "You answer questions about the notes below.\n" +
                "\n".join(f"Note {i}: the shipment {i} left the harbour on day {i % 28 + 1} with {i * 7} crates."
                          for i in range(100))},
               {"role": "user", "content": "Which shipment carried 70 crates?"}]
    live = EngineClient(log_path=log_dir / "reopen-live.log")
    try:
        live.load(model, params)
        first = live.chat(history, sampling)
        time.sleep(2.0)  # idle: the host saves the conversation's cache
        follow = history + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And 140?"}]
        warm = live.chat(follow, sampling)
    finally:
        live.close()
    cold = EngineClient(log_path=log_dir / "reopen-cold.log")
    try:
        cold.load(model, params)
        reopened = cold.chat(follow, sampling)
    finally:
        cold.close()
    return reopened.ttft_s / warm.ttft_s, (
        f"{warm.prompt_tokens} prompt tokens: live follow-up {warm.ttft_s * 1000:.0f} ms ({warm.evaluated_prompt_tokens} "
        f"evaluated); after a restart {reopened.ttft_s * 1000:.0f} ms ({reopened.evaluated_prompt_tokens} evaluated, "
        f"{reopened.cached_tokens} restored); first read {first.ttft_s * 1000:.0f} ms")


def lookup_speedup(client: EngineClient) -> tuple[float, str]:
    """Prompt-lookup decoding on a code edit (the reply repeats the prompt), and on a plain chat reply."""
    code = "".join(f"def step_{i}(state, value):\n    state.total += value * {i}\n    return state\n\n" for i in range(8))
    edit = [{"role": "user", "content": "Rename the parameter value to amount everywhere and return all the code:\n\n" + code}]
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=200, seed=0)
    rows = {}
    for name, prompt in (("edit", edit), ("chat", STORY)):
        speeds: dict[int, list[float]] = {0: [], 8: []}
        acc = (0, 0)
        for _ in range(3):
            for lookup in (0, 8):
                client.chat([{"role": "user", "content": "hi"}], replace(greedy, max_tokens=2))  # same cold start
                r = client.chat(prompt, greedy, lookup=lookup)
                speeds[lookup].append(r.tokens_per_s)
                if lookup:
                    acc = (r.accepted_tokens, r.drafted_tokens)
        rows[name] = (statistics.median(speeds[8]) / statistics.median(speeds[0]), acc)
    (edit_x, (ea, ed)), (chat_x, (ca, cd)) = rows["edit"], rows["chat"]
    return edit_x, (f"code edit {edit_x:.2f}x ({ea}/{ed} drafts accepted); chat reply {chat_x:.2f}x "
                    f"({ca}/{cd}); in the app, on per model once measured to win (engine.speculation)")
