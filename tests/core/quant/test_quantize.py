"""Quantization: the same tensor data as calling llama_model_quantize directly; an importance matrix
computed from text in llama.cpp's format, loaded (GGUF and legacy .dat) and used; i-quants refuse
without one; cancel leaves nothing; quantized sources need the opt-in; the source is unchanged."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import Cancelled, ModelFileError, QuantizeError
from app.core.gguf.quant_types import QUANT_TYPES, quant_type
from app.core.jobs import CancelToken, Progress
from app.core.quant.imatrix import compute_imatrix, load_imatrix
from app.core.quant.quantize import default_calibration, output_name, quantize
from tests.core.quant.test_convert import assert_same_tensors

DIRECT = """
import ctypes, json, sys
import llama_cpp
a = json.loads(sys.argv[1])
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = a["ftype"]; p.nthread = 2
keep = []
if a["imatrix"]:
    from app.core.quant.imatrix import load_imatrix
    data = load_imatrix(a["imatrix"]).normalized()
    arr = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
    for i, (k, v) in enumerate(data.items()):
        b = ctypes.create_string_buffer(k.encode()); keep += [b, v]
        arr[i].name = ctypes.cast(b, ctypes.c_char_p); arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)); arr[i].size = v.size
    p.imatrix = arr
sys.exit(llama_cpp.llama_model_quantize(a["src"].encode(), a["dst"].encode(), ctypes.byref(p)))
"""


def direct_quantize(src: Path, dst: Path, qtype: str, imatrix: Path | None = None) -> Path:
    """llama_model_quantize called directly, in its own process, with default parameters."""
    args = {"src": str(src), "dst": str(dst), "ftype": quant_type(qtype).ftype, "imatrix": str(imatrix) if imatrix else None}
    subprocess.run([sys.executable, "-c", DIRECT, json.dumps(args)], check=True, capture_output=True, timeout=300)
    return dst


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_imatrix(tiny_f16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compute_imatrix(tiny_f16, default_calibration(), tmp_path_factory.mktemp("imatrix") / "tiny.imatrix.gguf",
                           chunk=128, n_threads=2).path


def test_the_type_table_matches_llama_cpp() -> None:
    import llama_cpp

    for t in QUANT_TYPES:
        prefix = "LLAMA_FTYPE_ALL_" if t.name == "F32" else "LLAMA_FTYPE_MOSTLY_"
        assert getattr(llama_cpp, prefix + t.name) == t.ftype, t.name
        assert 1 <= t.bits_per_weight <= 32 and t.explanation
    assert quant_type("q4_k").name == "Q4_K_M"
    assert output_name(Path("SmolLM2-135M-F16.gguf"), "q5_k_m") == "SmolLM2-135M-Q5_K_M.gguf"


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q8_0"])
def test_quantize_matches_llama_model_quantize(qtype: str, tiny_f16: Path, tmp_path: Path) -> None:
    before = sha(tiny_f16)
    events: list[Progress] = []
    ours = quantize(tiny_f16, tmp_path / f"ours-{qtype}.gguf", qtype, nthread=2, progress=events.append)
    theirs = direct_quantize(tiny_f16, tmp_path / "direct.gguf", qtype)
    assert_same_tensors(ours.path, theirs)
    total = max(e.total for e in events)
    assert total > 0 and any(e.done == total for e in events)  # a report per tensor, to the last
    assert sha(tiny_f16) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.gguf", f"ours-{qtype}.gguf"]


def test_imatrix_file_is_llama_cpp_format(tiny_imatrix: Path, tiny_f16: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(tiny_imatrix)
    assert "general.architecture" not in reader.fields
    assert reader.fields["general.type"].contents() == "imatrix"
    assert reader.fields["imatrix.chunk_size"].contents() == 128
    names = [t.name for t in reader.tensors]
    bases = [n.removesuffix(".in_sum2") for n in names[0::2]]  # per tensor, sorted: .in_sum2 then .counts
    assert bases == sorted(bases) and names[1::2] == [f"{b}.counts" for b in bases]
    m = load_imatrix(tiny_imatrix)
    assert len(m.sums) == 2 * 7  # q, k, v, output, gate, up, down in each of 2 layers
    assert m.sums["blk.0.attn_q.weight"].shape == (1, 256) and m.sums["blk.0.ffn_down.weight"].shape == (1, 512)
    assert m.chunk_count == m.counts["blk.0.attn_q.weight"][0] // 128 > 0
    assert all(np.all(v > 0) for v in m.normalized().values())


def test_legacy_dat_loads_to_the_same_importance(tiny_imatrix: Path, tmp_path: Path) -> None:
    m = load_imatrix(tiny_imatrix)
    dat = tmp_path / "tiny.dat"
    chunk = m.chunk_size
    with dat.open("wb") as fh:  # what llama-imatrix --output-format dat writes (save_imatrix_legacy)
        fh.write(struct.pack("<i", len(m.sums)))
        for name in sorted(m.sums):
            ncall = int((m.counts[name].max() + chunk - 1) // chunk)
            values = (m.sums[name].reshape(-1) / m.counts[name][0]) * ncall
            fh.write(struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, values.size))
            fh.write(values.astype("<f4").tobytes())
        fh.write(struct.pack("<i", m.chunk_count) + struct.pack("<i", 8) + b"cal.text")
    legacy = load_imatrix(dat)
    assert legacy.legacy and legacy.datasets == ["cal.text"]
    for name, values in m.normalized().items():
        np.testing.assert_allclose(legacy.normalized()[name], values, rtol=1e-5)


def test_iquant_with_imatrix_matches_llama_model_quantize(tiny_f16: Path, tiny_imatrix: Path, tmp_path: Path) -> None:
    import gguf

    ours = quantize(tiny_f16, tmp_path / "ours-IQ2_XS.gguf", "IQ2_XS", imatrix=tiny_imatrix, nthread=2)
    theirs = direct_quantize(tiny_f16, tmp_path / "direct.gguf", "IQ2_XS", imatrix=tiny_imatrix)
    assert_same_tensors(ours.path, theirs)
    fields = gguf.GGUFReader(ours.path).fields
    assert fields["quantize.imatrix.file"].contents() == tiny_imatrix.name
    assert fields["quantize.imatrix.entries_count"].contents() == 14


def test_iquant_without_imatrix_is_refused(tiny_f16: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="needs an importance matrix"):
        quantize(tiny_f16, tmp_path / "out.gguf", "IQ2_XXS")
    assert list(tmp_path.iterdir()) == []


def test_bad_imatrix_file_is_named(tiny_f16: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.imatrix"
    bad.write_bytes(b"\x03\x00\x00\x00garbage")
    with pytest.raises(ModelFileError, match="bad.imatrix"):
        quantize(tiny_f16, tmp_path / "out.gguf", "IQ2_XS", imatrix=bad)


def test_quantized_source_needs_the_opt_in(starter_model: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="already quantized.*--allow-requantize"):
        quantize(starter_model, tmp_path / "out.gguf", "Q4_K_M")
    assert list(tmp_path.iterdir()) == []


def test_cancel_leaves_nothing(starter_f16: Path, tmp_path: Path) -> None:
    cancel = CancelToken()

    def on_progress(p: Progress) -> None:
        if p.unit == "tensor" and p.done >= 2:
            cancel.cancel()

    with pytest.raises(Cancelled):
        quantize(starter_f16, tmp_path / "out.gguf", "Q4_K_M", progress=on_progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []
