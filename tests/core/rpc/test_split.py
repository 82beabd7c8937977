"""A model split over two RPC workers on loopback and this CPU, through the app's own load path
(EngineClient.load_model with workers and a RAM figure that does not hold it): the planner's split,
llama.cpp's buffers per device as the planner predicted them, the same greedy reply as a local
load; a worker gone before the load and one killed mid-reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from app.core.engine.client import EngineClient
from app.core.engine.protocol import SamplingParams
from app.core.errors import EngineCrashed, QuantDeskError, WorkerError
from app.core.gguf.header import read_header
from app.core.hardware import detect
from app.core.planner.auto import worker_offers
from app.core.planner.split import plan_with_workers
from app.core.rpc.worker import Worker, parse_size
from tests.core.rpc.conftest import start_worker

CTX = 512
RAM = 80_000_000  # the starter model needs ~200 MB at this context: it cannot load here alone
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, seed=0)
ASK = [{"role": "user", "content": "The capital of France is"}]
MiB = 1 << 20
IM_END = 2  # the starter model's end-of-turn token (<|im_end|>), kept out so a reply runs on


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Worker]]:
    small = start_worker(tmp_path_factory.mktemp("small"), mem=parse_size("64M"))
    large = start_worker(tmp_path_factory.mktemp("large"), mem=parse_size("150M"))
    yield [large, small]
    small.stop()
    large.stop()


def _within(predicted: int, measured: int, share: float) -> bool:
    return abs(predicted - measured) <= share * measured + 0.05 * MiB


def test_a_model_that_fits_neither_worker_alone_is_split_and_answers_as_a_local_load(
        starter_model: Path, workers: list[Worker], tmp_path: Path) -> None:
    addresses = [w.address for w in workers]
    plan = plan_with_workers(read_header(starter_model), detect(), worker_offers(addresses), ctx=CTX, ram=RAM)
    assert plan.fits and plan.params.rpc and sum(plan.params.tensor_split) == plan.params.n_gpu_layers
    predicted = {d.get("address", "cpu"): d for d in plan.devices()}
    assert all(predicted[a]["layers"] > 0 for a in addresses)  # both workers take layers
    assert any("split:" in r and "layers on this CPU" in r for r in plan.reasons)
    with EngineClient(log_path=tmp_path / "local.log") as local:
        local.load_model(starter_model, ctx=CTX)
        expected = local.chat(ASK, GREEDY).text
    with EngineClient(log_path=tmp_path / "split.log") as engine:
        info = engine.load_model(starter_model, ctx=CTX, workers=addresses, ram=RAM)
        assert engine.chat(ASK, GREEDY).text == expected
    loaded = {d.get("address", "cpu"): d for d in info.devices}
    assert set(loaded) == {"cpu", *addresses}
    for key, d in loaded.items():
        p = predicted[key]
        assert d["layers"] == p["layers"], (key, d, p)
        assert _within(p["kv_bytes"], d["kv_bytes"], 0.03), (key, "kv", p, d)
        assert _within(p["compute_bytes"], d["compute_bytes"], 0.20), (key, "compute", p, d)
        if key != "cpu":  # the CPU's is the mapped file, all of it; a worker's is what it holds
            assert _within(p["weights_bytes"], d["weights_bytes"], 0.03), (key, "weights", p, d)
            assert p["weights_bytes"] + p["kv_bytes"] + p["compute_bytes"] <= p["budget_bytes"]


def test_plan_and_chat_json_report_the_devices(starter_model: Path, workers: list[Worker]) -> None:
    args = ["--ctx", str(CTX), "--ram", str(RAM), *[a for w in workers for a in ("--worker", w.address)]]
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    planned = subprocess.run([sys.executable, "-m", "app", "plan", str(starter_model), *args, "--json"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert planned.returncode == 0, planned.stderr
    devices = json.loads(planned.stdout)["devices"]
    assert [d["kind"] for d in devices] == ["cpu", "rpc", "rpc"]
    assert {d["address"] for d in devices[1:]} == {w.address for w in workers}
    chat = subprocess.run([sys.executable, "-m", "app", "chat", str(starter_model), *args, "--prompt", "Hi",
                           "--temperature", "0", "--max-tokens", "4", "--json"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert chat.returncode == 0, chat.stderr
    loaded = json.loads(chat.stdout)["devices"]
    assert sorted(d["kind"] for d in loaded) == ["cpu", "rpc", "rpc"]
    assert all(d["weights_bytes"] > 0 for d in loaded)


def test_an_unreachable_worker_is_named_before_any_load(starter_model: Path, tmp_path: Path) -> None:
    with EngineClient(log_path=tmp_path / "engine.log") as engine:
        with pytest.raises(WorkerError, match="127.0.0.1:9: unreachable"):
            engine.load_model(starter_model, ctx=CTX, workers=["127.0.0.1:9"], ram=RAM)
        assert engine.model is None
    out = subprocess.run([sys.executable, "-m", "app", "chat", str(starter_model), "--worker", "127.0.0.1:9", "--prompt", "hi"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "127.0.0.1:9: unreachable" in out.stderr and "Traceback" not in out.stderr


def test_a_worker_killed_mid_reply_keeps_the_partial_reply_and_the_next_one_runs_without_it(
        starter_model: Path, tmp_path: Path) -> None:
    """llama.cpp aborts the engine when a worker it computes on goes away: the client reports the
    crash with what came, and the next request reloads without the dead worker (and says so)."""
    doomed = start_worker(tmp_path / "doomed", mem=parse_size("150M"))
    spare = start_worker(tmp_path / "spare", mem=parse_size("200M"))
    try:
        with EngineClient(log_path=tmp_path / "engine.log") as engine:
            engine.load_model(starter_model, ctx=CTX, workers=[doomed.address, spare.address], ram=RAM)
            assert engine.model is not None and len([d for d in engine.model.devices if d["kind"] == "rpc"]) == 2
            got: list[str] = []
            long = SamplingParams(temperature=0.0, max_tokens=400, seed=0)
            with pytest.raises(EngineCrashed):
                for event in engine.stream([{"role": "user", "content": "Tell me a very long story."}], long,
                                           logit_bias={IM_END: -100.0}):
                    if event["ev"] == "token":
                        got.append(event["text"])
                        if len(got) == 3 and doomed.proc is not None:
                            doomed.proc.kill()
            assert got
            reply = engine.chat(ASK, GREEDY)  # reloads without the dead worker
            assert reply.completion_tokens > 0
            notices = engine.take_notices()
            assert any("without a worker that is gone" in n and doomed.address in n for n in notices), notices
            assert engine.model is not None and doomed.address not in json.dumps(engine.model.devices)
    finally:
        doomed.stop()
        spare.stop()


def test_the_planner_keeps_a_model_that_fits_here_local(starter_model: Path, workers: list[Worker]) -> None:
    plan = plan_with_workers(read_header(starter_model), detect(), worker_offers([w.address for w in workers]), ctx=CTX)
    assert plan.fits and not plan.params.rpc
    assert any("workers are not used" in r or "worker(s) are not used" in r for r in plan.reasons)
    with pytest.raises(QuantDeskError, match="unreachable"):
        worker_offers(["127.0.0.1:9"])


def test_with_a_local_gpu_the_split_ends_there_and_the_output_layer_stays_local(starter_model: Path) -> None:
    """Planned only (no GPU here): llama.cpp lists the workers first, then this computer's GPUs,
    and the last device takes the output layer; the GPU's share is its own, within its memory."""
    from app.core.hardware import GPU, Hardware
    from app.core.planner.split import Offer

    gib = 1 << 30
    hw = Hardware("test", "cpu", 2, 2, (), 16 * gib, 2 * MiB * 100, gpus=(GPU(0, "Test GPU", "nvidia", gib, 700 * MiB, 0),))
    offers = [Offer("10.0.0.2:50052", "CPU", 96 * MiB)]
    plan = plan_with_workers(read_header(starter_model), hw, offers, ctx=CTX, ram=40_000_000, gpu_mem=680 * MiB, gpu_offload=True)
    assert plan.fits, plan.reasons
    kinds = [d["kind"] for d in plan.devices()]
    assert kinds == ["cpu", "rpc", "gpu"]
    gpu = plan.devices()[-1]
    assert plan.params.rpc == ("10.0.0.2:50052",) and len(plan.params.tensor_split) == 2
    assert gpu["weights_bytes"] > 0 and gpu["compute_bytes"] > 0 and "output layer on this" in " ".join(plan.reasons)
    assert plan.memory.gpu_bytes <= 680 * MiB
