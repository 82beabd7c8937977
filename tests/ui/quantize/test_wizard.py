"""The quantize wizard in the real window: a GGUF source, a Hub repo with safetensors (through the
download manager and llama.cpp's converter), results with quality, the jobs panel, and Cancel."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.core.library.catalog import Library
from app.core.settings import models_dir
from app.ui.main_window import MainWindow
from tests.support.hub_server import HubRepo, HubServer

WAIT_MS = 300_000



@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.hf_models import tiny_hf_folder

    return tiny_hf_folder("llama", tmp_path_factory.mktemp("hf") / "tiny-llama")


def wait_levels(qtbot, wizard) -> None:  # type: ignore[no-untyped-def]
    qtbot.waitUntil(lambda: wizard.levels.rowCount() > 0, timeout=WAIT_MS)


def test_gguf_source_is_proposed_quantized_measured_and_listed(qtbot, hub_window: MainWindow, tiny_f16: Path) -> None:  # type: ignore[no-untyped-def]
    wizard = hub_window.quantize_source(str(tiny_f16))
    wait_levels(qtbot, wizard)
    proposed = [lp.qtype.name for lp in wizard.proposals if lp.proposed]
    assert proposed == ["Q8_0"] and wizard.chosen_types() == ["Q8_0"]  # a tiny model fits fully at the best level
    assert "★ proposed" in wizard.levels.item(0, 4).text()
    wizard.set_chosen(["Q8_0", "Q4_K_M"])
    wizard.out_dir.setText(str(models_dir() / "out"))
    with qtbot.waitSignal(wizard.finished_run, timeout=WAIT_MS) as done:
        wizard.quantize_button.click()
    result = done.args[0]
    assert result is not None and wizard.stack.currentIndex() == 2
    assert [r.quant for r in result.rows] == ["F16", "Q8_0", "Q4_K_M"]
    assert all(r.perplexity and r.perplexity > 1 for r in result.rows)
    assert result.rows[1].kl_divergence is not None and result.rows[1].kl_divergence < result.rows[2].kl_divergence
    assert wizard.results.rowCount() == 3 and wizard.results.item(0, 0).text() == "F16 (baseline)"
    assert wizard.chart.rows == result.rows
    entries = {Path(e.path).name: e for e in Library().entries(dedupe=False)}
    q4 = entries[result.rows[2].path.name]
    assert (q4.origin, q4.quant, q4.parent) == ("quantized", "Q4_K_M", str(tiny_f16))
    [job] = [j for k, j in hub_window.jobs.jobs.items() if k.startswith("quantize-")]
    assert job.state == "done" and not job.active


def test_hub_repo_is_downloaded_converted_and_quantized(qtbot, hub_window: MainWindow, hub: HubServer, tiny_hf: Path) -> None:  # type: ignore[no-untyped-def]
    files = {p.name: p for p in tiny_hf.iterdir() if p.is_file()}
    hub.add_repo(HubRepo("qd/tiny-llama-hf", files=files, tags=["safetensors"]))
    wizard = hub_window.quantize_source("qd/tiny-llama-hf")
    wait_levels(qtbot, wizard)
    assert "download manager" in wizard.source_note.text()
    wizard.set_chosen(["Q8_0"])
    wizard.evaluate.setChecked(False)
    with qtbot.waitSignal(wizard.finished_run, timeout=WAIT_MS) as done:
        wizard.quantize_button.click()
    result = done.args[0]
    assert result is not None, wizard.source_note.text()
    folder = models_dir() / "qd" / "tiny-llama-hf"
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"].read_bytes()
    assert {d.filename for d in hub_window.downloads.manager.downloads()} >= {"model.safetensors", "config.json", "tokenizer.model"}
    lib = {Path(e.path).name: e for e in Library().entries(dedupe=False)}
    q8 = lib[result.rows[1].path.name]
    assert (q8.origin, q8.source_repo, q8.revision) == ("quantized", "qd/tiny-llama-hf", hub.repos["qd/tiny-llama-hf"].sha)
    assert lib[result.baseline.name].origin == "converted"


def test_repos_that_cannot_be_converted_are_explained(qtbot, hub_window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    wizard = hub_window.quantize_source("qd/tiny-GPTQ")
    qtbot.waitUntil(lambda: "GPTQ" in wizard.source_note.text(), timeout=WAIT_MS)
    assert not wizard.quantize_button.isEnabled()
    wizard.set_source("/no/such/model")
    qtbot.waitUntil(lambda: "no such file" in wizard.source_note.text(), timeout=WAIT_MS)


def test_cancel_leaves_no_partial_output(qtbot, hub_window: MainWindow, starter_f16: Path) -> None:  # type: ignore[no-untyped-def]
    wizard = hub_window.quantize_source(str(starter_f16))
    wait_levels(qtbot, wizard)
    out = models_dir() / "cancelled"
    wizard.out_dir.setText(str(out))
    wizard.set_chosen(["Q4_K_M"])
    wizard.evaluate.setChecked(False)
    wizard.quantize_button.click()
    qtbot.waitUntil(lambda: wizard.stage.text() == "Quantizing" and wizard.bar.value() > 0, timeout=WAIT_MS)
    with qtbot.waitSignal(wizard.finished_run, timeout=WAIT_MS) as done:
        key = next(k for k in hub_window.jobs.jobs if k.startswith("quantize-"))
        qtbot.mouseClick(hub_window.jobs.cancel_button(key), Qt.MouseButton.LeftButton)  # Cancel from the jobs panel
    assert done.args[0] is None and "Cancelled" in wizard.source_note.text()
    assert not out.exists() or list(out.iterdir()) == []
    assert hub_window.jobs.jobs[key].state == "cancelled"
