"""Vision projectors are recognised by their header (general.type, clip.* keys) and by name, and each
model is paired with the projector that fits it: same folder, same embedding width, its architecture."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.core.errors import ModelFileError
from app.core.gguf.projector import (
    is_projector_file,
    is_projector_name,
    pair,
    pair_by_name,
    read_projector,
)
from app.core.gguf.scan import scan_prefix
from tests.support.tiny_vision import TEXT_EMBD, tiny_vision_pair


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Gemma 3 pair, a projector for a 96-wide model, and the same projector under a plain name."""
    root = tmp_path_factory.mktemp("vision")
    pair64, pair96 = tiny_vision_pair(), tiny_vision_pair(text_embd=96)
    shutil.copy(pair64.model, root / "tiny-vision-F16.gguf")
    shutil.copy(pair64.projector, root / "mmproj-tiny-vision-F16.gguf")
    shutil.copy(pair96.projector, root / "mmproj-other-F16.gguf")
    shutil.copy(pair64.projector, root / "vision-encoder.gguf")  # a projector not named mmproj
    return root


def test_names() -> None:
    assert is_projector_name("mmproj-gemma-3-4b-it-F16.gguf")
    assert is_projector_name("unsloth/gemma-3-4b-it-GGUF/mmproj-BF16.gguf")
    assert is_projector_name("Qwen2.5-VL-7B-Instruct-mmproj-f16.gguf")
    assert not is_projector_name("gemma-3-4b-it-Q4_K_M.gguf")
    assert not is_projector_name("mmproj-notes.txt")


def test_header_says_projector_whatever_the_name(vision_dir: Path, tiny_ggufs: dict[str, Path]) -> None:
    assert is_projector_file(vision_dir / "vision-encoder.gguf")
    assert is_projector_file(vision_dir / "mmproj-tiny-vision-F16.gguf")
    assert not is_projector_file(vision_dir / "tiny-vision-F16.gguf")
    assert not is_projector_file(tiny_ggufs["f16"])
    head = scan_prefix(vision_dir / "vision-encoder.gguf")
    assert head["general.architecture"] == "clip" and head["general.type"] == "mmproj"

    proj = read_projector(vision_dir / "vision-encoder.gguf")
    assert proj is not None
    assert (proj.projector_type, proj.projection_dim, proj.vision, proj.audio) == ("gemma3", TEXT_EMBD, True, False)
    assert proj.architectures == {"gemma3"}
    assert read_projector(vision_dir / "tiny-vision-F16.gguf") is None


def test_a_text_model_named_mmproj_is_not_a_projector_by_header(tiny_ggufs: dict[str, Path], tmp_path: Path) -> None:
    fake = shutil.copy(tiny_ggufs["f16"], tmp_path / "mmproj-fake.gguf")
    assert read_projector(fake) is None


def test_a_damaged_projector_is_named(vision_dir: Path, tmp_path: Path) -> None:
    data = (vision_dir / "vision-encoder.gguf").read_bytes()
    bad = tmp_path / "mmproj-cut.gguf"
    bad.write_bytes(data[:200])
    with pytest.raises(ModelFileError, match="mmproj-cut.gguf"):
        read_projector(bad)


def test_pairing_picks_the_projector_that_fits_and_says_why_others_do_not(vision_dir: Path) -> None:
    model = vision_dir / "tiny-vision-F16.gguf"
    right = read_projector(vision_dir / "mmproj-tiny-vision-F16.gguf")
    wrong = read_projector(vision_dir / "mmproj-other-F16.gguf")
    assert right is not None and wrong is not None
    chosen = pair(model, architecture="gemma3", n_embd=TEXT_EMBD, candidates=[wrong, right])
    assert chosen.projector == right
    assert [(p.name, why) for p, why in chosen.refused] == [
        ("mmproj-other-F16.gguf", "made for a text model 96 wide, this model is 64 wide (llama.cpp refuses the pair)")]

    only_wrong = pair(model, architecture="gemma3", n_embd=TEXT_EMBD, candidates=[wrong])
    assert only_wrong.projector is None
    assert only_wrong.note is not None and "96 wide" in only_wrong.note

    other_arch = pair(model, architecture="llama", n_embd=TEXT_EMBD, candidates=[right])
    assert other_arch.projector is None
    assert other_arch.note == "mmproj-tiny-vision-F16.gguf: a gemma3 projector, made for gemma3 models, not llama"


def test_pairing_stays_in_the_models_folder(vision_dir: Path, tmp_path: Path) -> None:
    right = read_projector(vision_dir / "mmproj-tiny-vision-F16.gguf")
    assert right is not None
    elsewhere = pair(tmp_path / "tiny-vision-F16.gguf", architecture="gemma3", n_embd=TEXT_EMBD, candidates=[right])
    assert elsewhere.projector is None and elsewhere.note is None


def test_pairing_by_name_on_the_hub() -> None:
    projectors = ["mmproj-F32.gguf", "mmproj-F16.gguf", "mmproj-BF16.gguf", "big/mmproj-F16.gguf"]
    assert pair_by_name("gemma-3-4b-it-Q4_K_M.gguf", projectors) == "mmproj-F16.gguf"
    assert pair_by_name("big/gemma-3-27b-it-Q4_K_M-00001-of-00002.gguf", projectors) == "big/mmproj-F16.gguf"
    assert pair_by_name("other/x-Q4_K_M.gguf", projectors) is None
    assert pair_by_name("x-Q4_K_M.gguf", ["mmproj-x-Q8_0.gguf", "mmproj-y-Q8_0.gguf"]) == "mmproj-x-Q8_0.gguf"
