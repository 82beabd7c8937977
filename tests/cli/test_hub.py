"""quantdesk search / files / pull / list, as a user runs them (HF_ENDPOINT points at the local Hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HUB_TOKEN
from tests.support.hub_server import HubServer


def cli(hub: HubServer, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, env=env, timeout=300)


def test_search_json(hub: HubServer) -> None:
    out = cli(hub, "search", "tiny", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == ["qd/tiny-GGUF"]
    assert set(rows[0]) >= {"id", "downloads", "likes", "gated", "gguf"} and rows[0]["gguf"] is True
    everything = json.loads(cli(hub, "search", "tiny", "--all", "--json").stdout)
    assert {r["id"] for r in everything} == {"qd/tiny-GGUF", "qd/tiny-safetensors", "qd/tiny-GPTQ"}


def test_files_json_has_fit_and_one_recommendation(hub: HubServer) -> None:
    out = cli(hub, "files", "qd/tiny-GGUF", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["path"] for r in rows} == {"tiny-F16.gguf", "tiny-Q8_0.gguf", "split/tiny-split-00001-of-00002.gguf"}
    for r in rows:
        assert set(r) >= {"path", "size_bytes", "quant", "fit", "recommended"}
        assert r["fit"] in ("full GPU", "CPU only") or "layers" in r["fit"]
    assert sum(r["recommended"] for r in rows) == 1
    split = next(r for r in rows if r["path"].startswith("split/"))
    assert split["shards"] == 2


def test_files_of_a_repo_without_gguf_explains(hub: HubServer) -> None:
    out = cli(hub, "files", "qd/tiny-GPTQ")
    assert out.returncode == 2 and "GPTQ" in out.stderr and "Traceback" not in out.stderr


def test_pull_prints_the_ready_path_last_and_list_shows_it(hub: HubServer, tiny_ggufs: dict[str, Path]) -> None:
    out = cli(hub, "pull", "qd/tiny-GGUF", "tiny-Q8_0.gguf")
    assert out.returncode == 0, out.stderr
    ready = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(ready["path"]).read_bytes() == tiny_ggufs["q8_0"].read_bytes()
    assert "done" in out.stderr  # progress went to stderr
    listed = json.loads(cli(hub, "list", "--json").stdout)
    mine = next(e for e in listed if e["path"] == ready["path"])
    assert (mine["origin"], mine["source_repo"], mine["quant"]) == ("downloaded", "qd/tiny-GGUF", "Q8_0")


def test_pull_gated_without_access_exits_2_with_the_reason(hub: HubServer) -> None:
    out = cli(hub, "pull", "qd/gated-GGUF", "tiny-Q8_0.gguf")
    assert out.returncode == 2
    assert "accept its license" in out.stderr and "Traceback" not in out.stderr and out.stdout == ""
    assert cli(hub, "pull", "qd/gated-GGUF", "tiny-Q8_0.gguf", token=HUB_TOKEN).returncode == 0


@pytest.mark.parametrize("args,needle", [
    (("pull", "qd/tiny-GGUF", "../../x.gguf"), "unsafe"),
    (("pull", "qd/nope", "x.gguf"), "no such repository"),
    (("search", "x", "--limit", "0"), "--limit 0"),
])
def test_bad_input_exits_2(hub: HubServer, args: tuple[str, ...], needle: str) -> None:
    out = cli(hub, *args)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


def test_offline_mode_is_honoured(hub: HubServer) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "app", "pull", "qd/tiny-GGUF", "tiny-Q8_0.gguf"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 2 and "offline" in out.stderr and "Traceback" not in out.stderr
    assert not any("/resolve/" in p for _, p, _ in hub.requests)


def test_pull_with_projector_fetches_the_pair(vision_hub: HubServer) -> None:
    from tests.conftest import VISION_REPO
    from tests.support.tiny_vision import tiny_vision_pair

    rows = json.loads(cli(vision_hub, "files", VISION_REPO, "--json").stdout)
    assert {r["path"]: r["projector"] for r in rows} == {"tiny-vision-F16.gguf": "mmproj-tiny-vision-F16.gguf",
                                                          "tiny-vision-Q8_0.gguf": "mmproj-tiny-vision-F16.gguf"}
    out = cli(vision_hub, "pull", VISION_REPO, "tiny-vision-Q8_0.gguf", "--with-projector")
    assert out.returncode == 0, out.stderr
    ready = json.loads(out.stdout.strip().splitlines()[-1])
    pair = tiny_vision_pair()
    assert Path(ready["path"]).read_bytes() == pair.model.read_bytes()
    assert Path(ready["projector"]).read_bytes() == pair.projector.read_bytes()
    listed = json.loads(cli(vision_hub, "list", "--json").stdout)
    mine = [e for e in listed if e["origin"] != "starter"]
    assert [e["path"] for e in mine] == [ready["path"]] and mine[0]["projector"] == ready["projector"]


def test_pull_with_projector_of_a_text_model_says_there_is_none(hub: HubServer) -> None:
    out = cli(hub, "pull", "qd/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf", "--with-projector")
    assert out.returncode == 2 and "no vision projector" in out.stderr and "Traceback" not in out.stderr
