"""The path the engine will take, proven before it does: a fresh Python process registers real
workers in ggml's registry (app.core.rpc.client.register) and llama-cpp-python loads the starter
model onto them; llama.cpp's log shows the RPC buffers, and greedy replies equal a local load's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from app.core.proc.launch import child_env
from app.core.rpc.worker import Worker
from tests.conftest import THREADS
from tests.core.rpc.conftest import start_worker

PROMPT = "The capital of France is"
# the fresh process: local load, then the same model over the workers; prints one JSON line
SCRIPT = """
import ctypes, json, sys
from app.core.engine import cpu_variants
cpu_variants.activate()
import llama_cpp
from app.core.rpc.client import register

lines = []
@llama_cpp.llama_log_callback
def on_log(level, text, data):
    lines.append(text.decode("utf-8", "replace"))
llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))

path, prompt, threads, addresses = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def reply(**options):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=threads, seed=1, verbose=True, **options)
    text = llm(prompt, max_tokens=24, temperature=0.0)["choices"][0]["text"]
    llm.close()
    return text

out = {"local": reply(n_gpu_layers=0)}
mark = len(lines)
out["devices"] = [d.to_dict() for d in register(addresses)]
out["again"] = [d.to_dict() for d in register(addresses)]
out["split"] = reply(n_gpu_layers=-1, tensor_split=[1.0] * len(addresses))
out["split_log"] = "".join(lines[mark:])
mark = len(lines)
out["partial"] = reply(n_gpu_layers=10)
out["partial_log"] = "".join(lines[mark:])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def second_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = start_worker(tmp_path_factory.mktemp("worker-2"))
    yield w
    w.stop()


def _buffers(log: str) -> dict[str, float]:
    """llama.cpp's 'NAME model buffer size = X MiB' lines, by buffer name."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\S+) model buffer size =\s+([\d.]+) MiB", log)}


def test_a_fresh_process_loads_the_starter_model_across_two_workers(starter_model: Path, worker: Worker,
                                                                   second_worker: Worker, tmp_path: Path) -> None:
    env = child_env()
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(starter_model), PROMPT, str(THREADS), worker.address,
                          second_worker.address], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    devices = out["devices"]
    assert [d["address"] for d in devices] == [worker.address, second_worker.address]
    assert [d["name"] for d in devices] == ["RPC0", "RPC1"] and [d["description"] for d in devices] == [worker.address, second_worker.address]
    assert devices[0]["offered_bytes"] == 256 << 20 and devices[1]["offered_bytes"] > 256 << 20
    assert all(d["free_bytes"] > 0 and d["total_bytes"] >= d["free_bytes"] for d in devices)
    assert out["again"] == devices  # registered once per process
    split = _buffers(out["split_log"])  # a buffer is named for the device's index on its worker, and the worker
    assert split.get(f"RPC0[{worker.address}]", 0) > 0 and split.get(f"RPC0[{second_worker.address}]", 0) > 0, out["split_log"][-3000:]
    partial = _buffers(out["partial_log"])
    assert any(name.startswith("RPC") for name in partial) and partial.get("CPU_Mapped", partial.get("CPU", 0)) > 0, partial
    assert out["local"].strip()
    assert out["split"] == out["local"]
    assert out["partial"] == out["local"]


KILLED_SCRIPT = """
import sys
from app.core.engine import cpu_variants
cpu_variants.activate()
import llama_cpp
from app.core.rpc.client import register
register([sys.argv[2]])
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_gpu_layers=-1, verbose=False)
no_end = {t: -100.0 for t in {llm.token_eos(), 0, 2}}  # the reply must run until the worker goes
for chunk in llm("Once upon a time", max_tokens=400, temperature=0, stream=True, logit_bias=no_end):
    print("token", flush=True)
print("done", flush=True)
"""


def test_a_worker_killed_mid_reply_ends_the_process_that_uses_it(starter_model: Path, tmp_path: Path) -> None:
    """What the engine will meet: llama.cpp aborts (SIGABRT) when a worker it computes on goes away,
    rather than hanging; the engine's parent sees a crashed child and reloads without the worker."""
    import signal

    w = start_worker(tmp_path / "home")
    try:
        proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(starter_model), w.address], env=child_env(),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        tokens = 0
        for line in proc.stdout:
            tokens += line.startswith("token")
            if tokens == 3:
                assert w.proc is not None
                w.proc.kill()
        code = proc.wait(timeout=60)
        assert code == -signal.SIGABRT and 3 <= tokens < 400, (code, tokens)
    finally:
        w.stop()
