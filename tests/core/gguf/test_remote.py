"""Remote GGUF headers and per-file verdicts, through the real huggingface_hub client against a
local Hub-compatible server: only the header bytes travel (range requests), never the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from app.core.errors import QuantDeskError
from app.core.gguf.header import read_header
from app.core.gguf.remote import read_remote_header
from app.core.hardware import GPU, Hardware
from app.core.planner.memory import GiB, estimate, plan
from app.core.planner.recommend import plan_repo
from tests.support.hub_server import HubRepo, HubServer
from tests.support.tiny_models import build_tiny_gguf

TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-models")
    out = {kind: build_tiny_gguf("llama", root / f"tiny-{kind.upper()}.gguf", file_type=kind) for kind in ("f32", "f16", "q8_0")}
    build_tiny_gguf("llama", root / "tiny-split.gguf", split_max_tensors=20)
    out["split1"] = root / "tiny-split-00001-of-00002.gguf"
    out["split2"] = root / "tiny-split-00002-of-00002.gguf"
    return out


@pytest.fixture(scope="module")
def hub(models: dict[str, Path], starter_model: Path) -> Iterator[HubServer]:
    repos = [
        HubRepo("qd/starter-GGUF", files={"SmolLM2-135M-Instruct.Q4_1.gguf": starter_model, "README.md": b"# starter"}),
        HubRepo("qd/tiny-GGUF", files={
            "tiny-F32.gguf": models["f32"], "tiny-F16.gguf": models["f16"], "tiny-Q8_0.gguf": models["q8_0"],
            "mmproj-tiny-f16.gguf": models["f16"], "config.json": b"{}",
        }),
        HubRepo("qd/split-GGUF", files={"tiny-split-00001-of-00002.gguf": models["split1"], "tiny-split-00002-of-00002.gguf": models["split2"]}),
        HubRepo("qd/gated-GGUF", files={"tiny-F16.gguf": models["f16"]}, gated=True),
    ]
    with HubServer(repos, token=TOKEN) as server:
        yield server


def fetched_bytes(server: HubServer, path_part: str) -> int:
    total = 0
    for method, path, headers in server.requests:
        if method == "GET" and path_part in path and "resolve" in path:
            rng = {k.lower(): v for k, v in headers.items()}.get("range", "")
            if rng.startswith("bytes="):
                start, _, end = rng[6:].partition("-")
                total += (int(end) + 1 - int(start)) if end else 0
    return total


def test_remote_header_equals_local_and_reads_only_the_header(hub: HubServer, starter_model: Path) -> None:
    hub.requests.clear()
    remote = read_remote_header("qd/starter-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf", endpoint=hub.url)
    local = read_header(starter_model)
    assert replace(remote, path=local.path) == local
    assert str(remote.path) == "qd/starter-GGUF:SmolLM2-135M-Instruct.Q4_1.gguf"
    got = fetched_bytes(hub, "SmolLM2")
    assert 0 < got < local.size_bytes // 10, f"fetched {got:,} of {local.size_bytes:,} bytes"


def test_remote_split_model_reads_every_shard(hub: HubServer, models: dict[str, Path]) -> None:
    remote = read_remote_header("qd/split-GGUF", "tiny-split-00001-of-00002.gguf", endpoint=hub.url)
    whole = read_header(models["f16"])
    assert remote.split_count == 2
    assert (remote.n_params, remote.tensor_bytes) == (whole.n_params, whole.tensor_bytes)


def test_gated_and_missing_say_what_to_do(hub: HubServer) -> None:
    with pytest.raises(QuantDeskError, match="gated: accept its license"):
        read_remote_header("qd/gated-GGUF", "tiny-F16.gguf", endpoint=hub.url)
    assert read_remote_header("qd/gated-GGUF", "tiny-F16.gguf", endpoint=hub.url, token=TOKEN).block_count == 4
    with pytest.raises(QuantDeskError, match="no such"):
        read_remote_header("qd/nothing-here", "x.gguf", endpoint=hub.url)
    with pytest.raises(QuantDeskError, match="no such file"):
        read_remote_header("qd/tiny-GGUF", "missing.gguf", endpoint=hub.url)


def test_repo_verdicts_recommend_the_best_full_fit(hub: HubServer, models: dict[str, Path]) -> None:
    hw = Hardware("test", "cpu", 2, 2, (), 16 * GiB, 16 * GiB, gpus=(GPU(0, "Test GPU", "nvidia", 8 * GiB, 8 * GiB, 0),))
    need = {k: plan(read_header(models[k]), hw, ctx=2048).memory.gpu_bytes for k in ("f32", "f16")}
    # F16 fits fully, F32 in part: llama.cpp offloads the output layer first, so its share must fit too
    f32 = plan(read_header(models["f32"]), hw, ctx=2048).params
    one = estimate(read_header(models["f32"]), replace(f32, n_gpu_layers=2), gpu_offload=True).gpu_bytes
    low = max(need["f16"], one)
    assert low < need["f32"]
    gpu_mem = (low + need["f32"]) // 2
    verdicts = {v.path: v for v in plan_repo("qd/tiny-GGUF", hw, ctx=2048, gpu_mem=gpu_mem, endpoint=hub.url)}
    assert set(verdicts) == {"tiny-F32.gguf", "tiny-F16.gguf", "tiny-Q8_0.gguf"}  # the projector is not a model
    assert verdicts["tiny-F16.gguf"].recommended and verdicts["tiny-F16.gguf"].verdict == "full GPU"
    assert verdicts["tiny-F32.gguf"].verdict.endswith("layers") and not verdicts["tiny-F32.gguf"].full
    assert verdicts["tiny-Q8_0.gguf"].full and not verdicts["tiny-Q8_0.gguf"].recommended
    assert all(v.max_ctx > 0 for v in verdicts.values())


def test_plan_cli_for_a_repo(hub: HubServer) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
    out = subprocess.run([sys.executable, "-m", "app", "plan", "qd/tiny-GGUF", "--gpu-mem", "0", "--json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sum(r["recommended"] for r in rows) == 1
    best = next(r for r in rows if r["recommended"])
    assert best["path"] == "tiny-F32.gguf" and best["verdict"] == "CPU only"  # plenty of RAM: the best quality
    inspect = subprocess.run([sys.executable, "-m", "app", "inspect", "qd/tiny-GGUF:tiny-Q8_0.gguf", "--json"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["file_type_name"] == "MOSTLY_Q8_0".removeprefix("MOSTLY_")
    gated = subprocess.run([sys.executable, "-m", "app", "inspect", "qd/gated-GGUF:tiny-F16.gguf"],
                           capture_output=True, text=True, timeout=120, env={**env, "HF_TOKEN": ""})
    assert gated.returncode == 2 and "accept its license" in gated.stderr and "Traceback" not in gated.stderr


def test_a_vision_models_verdict_counts_its_projector(vision_hub: HubServer) -> None:
    """The projector the listing pairs with a model is read from the Hub (its first MiB) and its
    weights and encoder compute go into the verdict's memory, as the planner counts them at load."""
    from app.core.gguf.projector import read_projector
    from app.core.planner.memory import projector_bytes
    from tests.conftest import VISION_REPO
    from tests.support.tiny_vision import tiny_vision_pair

    hw = Hardware("test", "cpu", 2, 2, (), 16 * GiB, 16 * GiB)
    verdicts = {v.path: v for v in plan_repo(VISION_REPO, hw, ctx=256, endpoint=vision_hub.url)}
    assert set(verdicts) == {"tiny-vision-F16.gguf", "tiny-vision-Q8_0.gguf"}
    local = read_projector(tiny_vision_pair().projector)
    assert local is not None
    expected = sum(projector_bytes(local))
    for v in verdicts.values():
        assert v.projector == "mmproj-tiny-vision-F16.gguf"
        assert v.memory["projector_bytes"] == expected
    text_only = plan(read_header(tiny_vision_pair().model), hw, ctx=256)
    assert verdicts["tiny-vision-F16.gguf"].memory["cpu_bytes"] == text_only.memory.cpu_bytes + expected
