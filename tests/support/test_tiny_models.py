"""Tiny random-weight GGUF models (tests/support/tiny_models.py) load and run in llama.cpp, per architecture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest

from app.core.gguf.header import read_header
from tests.support.tiny_models import ARCHS, FileType, build_tiny_gguf, gguf_arch_name

MAX_FILE_BYTES = 20 * 1024 * 1024


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_loads_and_generates(arch: str, tmp_path: Path) -> None:
    import llama_cpp

    path = build_tiny_gguf(arch, tmp_path / f"tiny-{arch}.gguf", n_layer=4)
    assert path.stat().st_size < MAX_FILE_BYTES

    header = read_header(path)
    assert header.architecture == gguf_arch_name(arch)
    assert header.block_count == 4
    assert header.embedding_length == 128
    assert header.file_type == gguf.LlamaFileType.MOSTLY_F16

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=2, n_gpu_layers=0, verbose=False)
    try:
        assert llm.n_vocab() == 49152  # the starter model's tokenizer was copied
        out = llm.create_completion("Hello", max_tokens=4, temperature=0)
    finally:
        llm.close()
    assert not isinstance(out, Iterator)
    assert out["choices"][0]["finish_reason"] in ("length", "stop")
    assert out["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(
    ("file_type", "ftype", "matrix_type"),
    [
        ("q8_0", gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
        ("f32", gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    ],
)
def test_tiny_model_file_types(
    file_type: FileType, ftype: gguf.LlamaFileType, matrix_type: gguf.GGMLQuantizationType, tmp_path: Path
) -> None:
    path = build_tiny_gguf("llama-moe", tmp_path / "tiny.gguf", file_type=file_type)
    reader = gguf.GGUFReader(path)  # read_header parses the file too: one parse is enough here (~5 s each)
    assert reader.fields["general.file_type"].contents() == ftype
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == matrix_type
    assert types["blk.0.ffn_up_exps.weight"] == matrix_type
    assert types["blk.0.ffn_gate_inp.weight"] == gguf.GGMLQuantizationType.F32  # router kept in F32
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert "output.weight" not in types  # tied embeddings by default
