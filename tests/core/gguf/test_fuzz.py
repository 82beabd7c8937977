"""Corrupt or hostile GGUF headers: a clear ModelFileError fast, with bounded memory; never a crash."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from app.core.errors import ModelFileError
from app.core.gguf.header import read_header

MUTATIONS = 300


def small_gguf(path: Path) -> Path:
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("fuzz")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(64)])
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((64, 16), dtype=np.float32))
    for il in range(2):
        writer.add_tensor(f"blk.{il}.attn_q.weight", np.zeros((16, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_valid_small_file_reads(tmp_path: Path) -> None:
    h = read_header(small_gguf(tmp_path / "ok.gguf"))
    assert (h.architecture, h.block_count, h.n_vocab) == ("llama", 2, 64)
    assert h.layer_bytes == (16 * 16 * 4, 16 * 16 * 4)


@pytest.mark.parametrize("field, value", [(8, 2**63), (16, 2**63), (4, 99)])
def test_absurd_counts_and_versions_are_refused(tmp_path: Path, field: int, value: int) -> None:
    path = small_gguf(tmp_path / "bad.gguf")
    data = bytearray(path.read_bytes())
    width = 4 if field == 4 else 8
    data[field:field + width] = value.to_bytes(width, "little")
    path.write_bytes(bytes(data))
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="bad.gguf"):
        read_header(path)
    assert time.perf_counter() - start < 1.0


def test_mutated_headers_fail_cleanly(tmp_path: Path) -> None:
    original = small_gguf(tmp_path / "seed.gguf").read_bytes()
    header_end = original.index(b"token_embd.weight") + 200  # the KV section and the tensor infos
    rng = random.Random(1234)
    rss_before = psutil.Process().memory_info().rss
    outcomes = {"read": 0, "refused": 0}
    for i in range(MUTATIONS):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(4, header_end)
            if rng.random() < 0.5:
                data[pos] = rng.randrange(256)
            else:  # lengths and counts are u64: blow one up
                data[pos:pos + 8] = rng.choice([2**32, 2**62, 2**64 - 1, 10**9]).to_bytes(8, "little")
        path = tmp_path / f"m{i}.gguf"
        path.write_bytes(bytes(data))
        start = time.perf_counter()
        try:
            read_header(path)
            outcomes["read"] += 1
        except ModelFileError as exc:
            assert path.name in str(exc)
            outcomes["refused"] += 1
        assert time.perf_counter() - start < 2.0, f"mutation {i} took too long"
        path.unlink()
    assert outcomes["refused"] > MUTATIONS // 2
    assert psutil.Process().memory_info().rss - rss_before < 200 * 2**20


def test_split_model_is_read_as_one(tmp_path: Path) -> None:
    from tests.support.tiny_models import build_tiny_gguf

    whole = read_header(build_tiny_gguf("llama", tmp_path / "whole.gguf"))
    build_tiny_gguf("llama", tmp_path / "split.gguf", split_max_tensors=20)
    first = tmp_path / "split-00001-of-00002.gguf"
    split = read_header(first)
    assert split.split_count == 2
    assert (split.n_params, split.tensor_bytes, split.layer_bytes) == (whole.n_params, whole.tensor_bytes, whole.layer_bytes)
    (tmp_path / "split-00002-of-00002.gguf").unlink()
    with pytest.raises(ModelFileError, match="missing shard 2 of 2"):
        read_header(first)
