"""The wizard on an already-quantized source (the Q4_1 starter): nothing at or above the source's
bits per weight is listed or ticked, the note says why, and when the file's metadata names its
original weights the wizard offers them in one click."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.gguf.header import read_header
from app.core.gguf.origin import original_repo
from app.core.quant.pipeline import source_bits
from app.ui.quantize.wizard import QuantizeWizard
from tests.support.hub_server import HubRepo, HubServer

WAIT_MS = 120_000


def with_base_model(src: Path, out: Path, repo: str) -> Path:
    """A copy of ``src`` whose metadata names ``repo`` as its base model (the gguf writer)."""
    import gguf

    reader = gguf.GGUFReader(str(src), "r")
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(out), arch, use_temp_file=False)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, f.contents())
        else:
            writer.add_key_value(key, f.contents(), vtype)
    owner, name = repo.split("/")
    writer.add_base_model_count(1)
    writer.add_base_model_name(0, name)
    writer.add_base_model_organization(0, owner)
    writer.add_base_model_repo_url(0, f"https://huggingface.co/{repo}")
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def starter_with_base(starter_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_base_model(starter_model, tmp_path_factory.mktemp("based") / "starter-based.gguf",
                           "qd/SmolLM2-135M-Instruct")


def test_quantized_source_lists_only_levels_below_its_precision(qtbot, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    bits = source_bits(read_header(starter_model))
    assert bits is not None
    wizard = QuantizeWizard(None, str(starter_model))
    qtbot.addWidget(wizard)
    qtbot.waitUntil(lambda: wizard.levels.rowCount() > 0, timeout=WAIT_MS)
    listed = [lp.qtype for lp in wizard.proposals]
    assert listed and all(t.bits_per_weight < bits for t in listed)
    assert "Q8_0" not in [t.name for t in listed] and "Q6_K" not in [t.name for t in listed]
    [proposed] = [lp for lp in wizard.proposals if lp.proposed]
    assert proposed.qtype.bits_per_weight < bits and wizard.chosen_types() == [proposed.qtype.name]
    source_size = starter_model.stat().st_size
    assert all(lp.size_bytes < source_size for lp in wizard.proposals)
    note = wizard.source_note.text()
    assert "already quantized" in note and "bits per weight" in note and "adds size and no quality" in note
    assert not wizard.original_button.isVisible()  # the starter names no base model


def test_base_model_metadata_is_offered_in_one_click(qtbot, starter_with_base: Path, starter_hf: Path,  # type: ignore[no-untyped-def]
                                                    hub: HubServer) -> None:
    files = {p.name: p for p in starter_hf.iterdir() if p.is_file()}
    hub.add_repo(HubRepo("qd/SmolLM2-135M-Instruct", files=files, tags=["safetensors"]))
    assert original_repo(starter_with_base) == "qd/SmolLM2-135M-Instruct"
    wizard = QuantizeWizard(None, str(starter_with_base), endpoint=hub.url)
    qtbot.addWidget(wizard)
    wizard.show()
    qtbot.waitUntil(lambda: wizard.original_button.isVisible(), timeout=WAIT_MS)
    assert "qd/SmolLM2-135M-Instruct" in wizard.original_button.text()
    wizard.original_button.click()
    assert wizard.source_edit.text() == "qd/SmolLM2-135M-Instruct"
    assert not wizard.original_button.isVisible()
    qtbot.waitUntil(lambda: "Hub repo with safetensors" in wizard.source_note.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: wizard.levels.rowCount() > 0, timeout=WAIT_MS)
    assert wizard.proposals[0].qtype.name == "Q8_0"  # from the original weights the whole ladder makes sense


def test_unquantized_source_keeps_the_whole_ladder(tiny_f16: Path) -> None:
    assert source_bits(read_header(tiny_f16)) is None
