"""The quantize commands as a user runs them: convert, imatrix, quantize, eval, quant-types."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_main import quantdesk
from tests.support.hf_models import tiny_hf_folder


def test_convert_quantize_eval_chain(tmp_path: Path, tiny_f16: Path) -> None:
    folder = tiny_hf_folder("llama", tmp_path / "hf")
    r = quantdesk("convert", str(folder), "--outtype", "q8_0", "-o", str(tmp_path / "tiny-Q8_0.gguf"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outtype"] == "q8_0"

    r = quantdesk("imatrix", str(tiny_f16), "--text", "resources/calibration.txt", "-o", str(tmp_path / "t.imatrix.gguf"),
                  "--chunk", "128", "--chunks", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chunks"] == 2

    r = quantdesk("quantize", str(tiny_f16), str(tmp_path / "tiny-Q4_K_M.gguf"), "--type", "q4_k_m", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["type"] == "Q4_K_M" and out["imatrix"] is None and Path(out["path"]).is_file()

    r = quantdesk("eval", out["path"], "--baseline", str(tiny_f16), "--ctx", "64", "--chunks", "2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["baseline"] for row in rows] == [True, False] and rows[1]["kl_divergence"] >= 0

    r = quantdesk("list", "--json")
    listed = {Path(e["path"]).name: e for e in json.loads(r.stdout)}
    assert listed["tiny-Q4_K_M.gguf"]["origin"] == "quantized" and listed["tiny-Q8_0.gguf"]["origin"] == "converted"


def test_bad_input_exits_2_without_a_traceback(tmp_path: Path, tiny_f16: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (("convert", str(empty), "-o", str(tmp_path / "x.gguf")), "config.json: missing"),
        (("quantize", str(tiny_f16), str(tmp_path / "y.gguf"), "--type", "Q9_Z"), "not a llama.cpp quantization type"),
        (("quantize", str(tiny_f16), str(tmp_path / "y.gguf"), "--type", "IQ2_XS", "--imatrix", str(tmp_path / "nope")), "no such imatrix file"),
        (("eval", str(tmp_path / "missing.gguf")), "no such file"),
    ]
    for args, expected in cases:
        r = quantdesk(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert expected in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_quant_types_lists_every_type_with_sizes(tiny_f16: Path) -> None:
    r = quantdesk("quant-types", str(tiny_f16), "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert {"Q4_K_M", "IQ2_XS", "Q8_0", "F16", "TQ1_0"} <= set(rows)
    assert rows["IQ2_XS"]["imatrix"] == "required" and rows["Q8_0"]["estimated_bytes"] < rows["F16"]["estimated_bytes"]
