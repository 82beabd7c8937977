"""Hub browsing through the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import QuantDeskError
from app.core.hub import api as hubmod
from tests.support.hub_server import HubServer


def test_search_gguf_only_sorted_and_paged(hub: HubServer) -> None:
    hub.page_size = 1  # every row is its own page: the iterator follows Link rel="next"
    rows = list(hubmod.search("", endpoint=hub.url))
    assert [r.id for r in rows] == ["qd/SmolLM2-135M-Instruct-GGUF", "qd/tiny-GGUF", "qd/gated-GGUF"]
    assert all(r.gguf for r in rows)
    pages = [p for m, p, _ in hub.requests if p.startswith("/api/models?") or p.startswith("/api/models/?")]
    assert len(pages) >= 3 and any("cursor=" in p for p in pages)
    by_likes = [r.id for r in hubmod.search("", sort="likes", endpoint=hub.url)]
    assert by_likes[0] == "qd/tiny-GGUF"
    everything = {r.id for r in hubmod.search("tiny", gguf_only=False, endpoint=hub.url)}
    assert {"qd/tiny-safetensors", "qd/tiny-GPTQ", "qd/tiny-GGUF"} <= everything
    top = next(iter(hubmod.search("smol", endpoint=hub.url)))
    assert (top.downloads, top.likes, top.updated, top.license, top.gated) == (900, 30, "2025-02-03", "apache-2.0", False)
    gated = next(iter(hubmod.search("gated", endpoint=hub.url)))
    assert gated.gated


def test_bad_sort_and_unreachable_hub_are_sentences(hub: HubServer) -> None:
    with pytest.raises(QuantDeskError, match="sort 'stars'"):
        list(hubmod.search("x", sort="stars", endpoint=hub.url))
    with pytest.raises(QuantDeskError, match="cannot reach the Hub"):
        list(hubmod.search("x", endpoint="http://127.0.0.1:9"))


def test_model_page_groups_quants_and_split_files(hub: HubServer, tiny_ggufs: dict[str, Path]) -> None:
    details = hubmod.repo_details("qd/tiny-GGUF", endpoint=hub.url)
    assert details.kind == "gguf"
    files = {f.path: f for f in details.gguf_files}
    split = files["split/tiny-split-00001-of-00002.gguf"]
    assert split.split and split.size_bytes == tiny_ggufs["split1"].stat().st_size + tiny_ggufs["split2"].stat().st_size
    assert files["tiny-F16.gguf"].quant == "F16" and files["tiny-Q8_0.gguf"].quant == "Q8_0"
    assert files["mmproj-tiny-F16.gguf"].mmproj
    assert [f.path for f in details.gguf_files][-1] == "mmproj-tiny-F16.gguf"  # projectors last
    assert all(len(s) == 64 for f in details.gguf_files for s in f.sha256)


def test_repo_kinds_are_explained(hub: HubServer) -> None:
    st = hubmod.repo_details("qd/tiny-safetensors", endpoint=hub.url)
    assert st.kind == "safetensors" and "Convert & quantize" in st.explanation
    gptq = hubmod.repo_details("qd/tiny-GPTQ", endpoint=hub.url)
    assert gptq.kind == "foreign" and "GPTQ" in gptq.explanation and "base model" in gptq.explanation
    assert hubmod.classify(["pytorch_model.bin", "config.json"], {}, [])[0] == "pickle"
    assert hubmod.classify(["model.safetensors"], {"quantization_config": {"quant_method": "awq"}}, [])[0] == "foreign"
    assert hubmod.classify(["model.safetensors"], None, ["exl2"])[1].startswith("This repo holds EXL2")


def test_model_card_without_front_matter(hub: HubServer) -> None:
    card = hubmod.model_card("qd/SmolLM2-135M-Instruct-GGUF", endpoint=hub.url)
    assert card.startswith("# SmolLM2 GGUF") and "license:" not in card
    assert hubmod.model_card("qd/tiny-GGUF", endpoint=hub.url) == ""


def test_gated_and_missing_repos(hub: HubServer) -> None:
    with pytest.raises(QuantDeskError, match="no such repository"):
        hubmod.repo_details("qd/nope", endpoint=hub.url)


@pytest.mark.parametrize("name", ["../evil.gguf", "/etc/passwd", "a/../../b.gguf", "a\\..\\b.gguf", ".hidden.gguf",
                                  "x/./y.gguf", "C:evil.gguf", "nul\x00.gguf", "dir/.git/config", ""])
def test_hub_file_names_never_leave_the_models_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(QuantDeskError, match="unsafe|leaves|repository id"):
        hubmod.local_path(tmp_path, "qd/repo", name)


def test_safe_names_map_under_owner_and_repo(tmp_path: Path) -> None:
    p = hubmod.local_path(tmp_path, "qd/repo", "sub/Model-Q4_K_M.gguf")
    assert p == (tmp_path / "qd" / "repo" / "sub" / "Model-Q4_K_M.gguf").resolve()
    with pytest.raises(QuantDeskError):
        hubmod.local_path(tmp_path, "../qd", "x.gguf")


@pytest.mark.parametrize("name,label", [
    ("Llama-3-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("model.IQ2_XS.gguf", "IQ2_XS"), ("m-q8_0.gguf", "Q8_0"),
    ("x-BF16-00001-of-00003.gguf", "BF16"), ("Qwen3-UD-Q4_K_XL.gguf", "Q4_K_XL"), ("mmproj-model-f16.gguf", "F16"),
    ("gpt-oss-20b-MXFP4.gguf", "MXFP4"), ("plain.gguf", None),
])
def test_quant_labels_from_names(name: str, label: str | None) -> None:
    from app.core.gguf.header import quant_label

    assert quant_label(name) == label


@pytest.mark.parametrize("name", ["model.gguf\n", "model.gguf\r", "CON", "nul.gguf", "COM1.gguf", "sub/LPT9.txt",
                                  "aux .gguf", "dir/" * 60 + "m.gguf", "x" * 201 + ".gguf"])
def test_hub_names_that_break_on_some_disk_are_refused(tmp_path: Path, name: str) -> None:
    """Trailing newlines, Windows device names (with any extension), over-long paths."""
    with pytest.raises(QuantDeskError, match="unsafe|reserved device name|characters long") as err:
        hubmod.local_path(tmp_path, "qd/repo", name)
    assert "qd/repo/" in str(err.value)


def test_names_that_differ_only_by_case_are_refused(tmp_path: Path) -> None:
    assert hubmod.case_collisions(["A.gguf", "a.gguf", "b.gguf", "sub/B.gguf"]) == {"A.gguf", "a.gguf"}
    first = hubmod.local_path(tmp_path, "qd/repo", "Model-Q4_K_M.gguf")
    first.parent.mkdir(parents=True)
    first.write_bytes(b"GGUF")
    assert hubmod.local_path(tmp_path, "qd/repo", "Model-Q4_K_M.gguf") == first  # the same name is fine
    with pytest.raises(QuantDeskError, match="only by case"):
        hubmod.local_path(tmp_path, "qd/repo", "model-q4_k_m.gguf")


def test_front_matter_is_stripped_in_linear_time() -> None:
    import time

    assert hubmod.strip_front_matter("---\nlicense: mit\n---\n# Card\n") == "# Card\n"
    assert hubmod.strip_front_matter("---  \nlicense: mit\n---\r\n# Card") == "# Card"
    assert hubmod.strip_front_matter("# no front matter\n---\n") == "# no front matter\n---\n"
    for hostile in ("---" + "\n" * 400_000, "---\n" + "a: b\n" * 200_000, "--- \n" + " \n" * 300_000 + "x"):
        start = time.perf_counter()
        assert hubmod.strip_front_matter(hostile) == hostile  # never closed: the card is shown whole
        assert time.perf_counter() - start < 0.5


def test_a_vision_repo_pairs_each_model_with_its_projector(vision_hub: HubServer) -> None:
    from tests.conftest import VISION_REPO
    from tests.support.tiny_vision import tiny_vision_pair

    details = hubmod.repo_details(VISION_REPO, endpoint=vision_hub.url)
    files = {f.path: f for f in details.gguf_files}
    assert sorted(f.path for f in details.gguf_files if f.mmproj) == ["mmproj-tiny-vision-F16.gguf", "mmproj-tiny-vision-F32.gguf"]
    projector_bytes = tiny_vision_pair().projector.stat().st_size
    for name in ("tiny-vision-F16.gguf", "tiny-vision-Q8_0.gguf"):
        f = files[name]
        assert f.projector == "mmproj-tiny-vision-F16.gguf"  # F16 first, as most repos ship it
        assert f.projector_bytes == projector_bytes and f.download_bytes == f.size_bytes + projector_bytes
        assert f.to_dict()["download_bytes"] == f.download_bytes
    assert files["mmproj-tiny-vision-F16.gguf"].projector is None


def test_a_text_repo_has_no_projector_pairs_except_by_name(hub: HubServer) -> None:
    details = hubmod.repo_details("qd/SmolLM2-135M-Instruct-GGUF", endpoint=hub.url)
    assert all(f.projector is None and f.projector_bytes == 0 for f in details.gguf_files)
    tiny = {f.path: f for f in hubmod.repo_details("qd/tiny-GGUF", endpoint=hub.url).gguf_files}
    assert tiny["tiny-F16.gguf"].projector == "mmproj-tiny-F16.gguf"  # the Hub lists names only
    assert tiny["split/tiny-split-00001-of-00002.gguf"].projector is None  # another folder
