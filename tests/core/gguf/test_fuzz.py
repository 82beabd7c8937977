"""Corrupt or hostile GGUF headers: a clear ModelFileError fast, with bounded memory; never a crash."""

from __future__ import annotations

import random
import struct
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


# --- structure-aware: headers built field by field, with lengths and counts that lie ------------

STRUCTURED_CASES = 600
TYPES = {"u8": (0, "B"), "i8": (1, "b"), "u16": (2, "H"), "i16": (3, "h"), "u32": (4, "I"), "i32": (5, "i"),
         "f32": (6, "f"), "bool": (7, "?"), "u64": (10, "Q"), "i64": (11, "q"), "f64": (12, "d")}


def gguf_string(text: bytes, *, claimed: int | None = None) -> bytes:
    return struct.pack("<Q", len(text) if claimed is None else claimed) + text


def gguf_kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_string(key.encode()) + struct.pack("<I", vtype) + payload


def gguf_array(etype: int, count: int, body: bytes) -> bytes:
    return struct.pack("<IQ", etype, count) + body


def gguf_file(kvs: list[bytes], *, n_kv: int | None = None, tensors: bytes = b"", n_tensors: int = 0) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs) if n_kv is None else n_kv)
    return head + b"".join(kvs) + tensors


def tensor_info(name: bytes, dims: list[int], ttype: int = 0, offset: int = 0, *, n_dims: int | None = None) -> bytes:
    return (gguf_string(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims)
            + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ttype, offset))


def timed_read(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        read_header(path)
        outcome = "read"
    except ModelFileError as exc:
        assert path.name in str(exc), f"the message must name the file: {exc}"
        outcome = "refused"
    return time.perf_counter() - start, outcome


def test_the_49_byte_file_whose_array_claims_more_than_the_file_holds_is_refused_at_once(tmp_path: Path) -> None:
    data = gguf_file([gguf_kv("a", 9, gguf_array(TYPES["u32"][0], 2**40, b""))])
    path = tmp_path / "liar.gguf"
    path.write_bytes(data.ljust(49, b"\0"))
    assert path.stat().st_size == 49
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"liar\.gguf.*claims .* bytes but only \d+ remain"):
        read_header(path)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("etype", ["u8", "string"])
def test_a_well_formed_5_mb_array_is_read_fast_with_little_memory(tmp_path: Path, etype: str) -> None:
    if etype == "u8":
        array = gguf_array(0, 5 * 2**20, bytes(5 * 2**20))
    else:  # the worst case for a walker: 5 MB of one-byte strings
        n = 5 * 2**20 // 9
        array = gguf_array(8, n, gguf_string(b"x") * n)
    kvs = [gguf_kv("general.architecture", 8, gguf_string(b"llama")), gguf_kv("tokenizer.ggml.tokens", 9, array)]
    path = tmp_path / "big.gguf"
    path.write_bytes(gguf_file(kvs))
    rss_before = psutil.Process().memory_info().rss
    took, outcome = timed_read(path)
    assert outcome == "read"
    assert took < 2.0, f"{took:.2f} s for a 5 MB {etype} array"
    assert psutil.Process().memory_info().rss - rss_before < 100 * 2**20


def _random_value(rng: random.Random, depth: int = 0) -> tuple[int, bytes]:
    """(type, payload) of a random value, with a chance at every length to lie."""
    def lie(true: int) -> int:
        r = rng.random()
        if r < 0.75:
            return true
        return rng.choice([true + 1, true * 3 + 7, 2**31, 2**32 + true, 2**63, 2**64 - 1, max(true - 1, 0)])

    kind = rng.random()
    if kind < 0.35:
        name, (vtype, code) = rng.choice(list(TYPES.items()))
        return vtype, struct.pack("<" + code, {"f": 1.5, "d": 2.5, "?": True}.get(code, rng.randrange(0, 100)))
    if kind < 0.6:
        text = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 40)))
        return 8, gguf_string(text, claimed=lie(len(text)))
    if kind < 0.9 or depth >= 6:
        n = rng.randrange(0, 50)
        if rng.random() < 0.5:
            name, (etype, code) = rng.choice(list(TYPES.items()))
            body = struct.pack(f"<{n}{code}", *([True] * n if code == "?" else [1.0] * n if code in "fd" else [1] * n))
        else:
            etype, body = 8, b"".join(gguf_string(b"t%d" % i, claimed=lie(len(b"t%d" % i))) for i in range(n))
        return 9, gguf_array(etype, lie(n), body)
    n = rng.randrange(0, 4)  # nested arrays, up to 6 levels (more than the reader allows)
    inner = [_random_value(rng, depth + 1) for _ in range(n)]
    body = b"".join(p for t, p in inner if t == 9)
    return 9, gguf_array(rng.choice([9, 9, 9, 13, 2**32 - 1]), lie(sum(1 for t, _ in inner if t == 9)), body)


def test_structured_hostile_headers_fail_cleanly_fast_and_small(tmp_path: Path) -> None:
    """Headers built field by field: array lengths, string lengths, nested arrays, unknown types,
    key and tensor counts and tensor shapes that lie. Each one reads or is refused naming the file,
    in well under a second, without memory growing with what it claims."""
    rng = random.Random(4321)
    rss_before = psutil.Process().memory_info().rss
    outcomes = {"read": 0, "refused": 0}
    slowest = 0.0
    for i in range(STRUCTURED_CASES):
        kvs = [gguf_kv("general.architecture", 8, gguf_string(b"llama"))]
        for k in range(rng.randrange(0, 6)):
            vtype, payload = _random_value(rng)
            if rng.random() < 0.05:
                vtype = rng.choice([13, 99, 2**32 - 1])
            kvs.append(gguf_kv(rng.choice(["llama.block_count", "general.name", "llama.attention.head_count_kv",
                                           "general.alignment", f"x.{k}"]), vtype, payload))
        dims = [rng.choice([1, 16, 32, 2**20, 2**40, 2**63]) for _ in range(rng.randrange(0, 6))]
        tensors = tensor_info(b"blk.0.w" if rng.random() < 0.8 else b"blk.99999999999.w", dims[:4],
                              ttype=rng.choice([0, 1, 2, 8, 12, 99, 2**31]), offset=rng.choice([0, 32, 2**62]),
                              n_dims=len(dims) if rng.random() < 0.8 else rng.choice([5, 2**31]))
        data = gguf_file(kvs, n_kv=len(kvs) if rng.random() < 0.9 else rng.choice([len(kvs) + 1, 2**40]),
                         tensors=tensors, n_tensors=1 if rng.random() < 0.9 else rng.choice([2, 2**50]))
        path = tmp_path / f"s{i}.gguf"
        path.write_bytes(data + bytes(rng.choice([0, 64, 4096])))
        took, outcome = timed_read(path)
        outcomes[outcome] += 1
        slowest = max(slowest, took)
        assert took < 1.0, f"case {i} took {took:.2f} s"
        path.unlink()
    print(f"\nstructured GGUF fuzz: {STRUCTURED_CASES} cases, {outcomes}, slowest parse {slowest * 1000:.1f} ms")
    assert outcomes["refused"] > STRUCTURED_CASES // 4 and outcomes["read"] > 0
    assert psutil.Process().memory_info().rss - rss_before < 100 * 2**20


def test_mutated_projector_headers_are_recognised_or_refused_cleanly(tmp_path: Path) -> None:
    """The projector checks (gguf.projector) on mutated copies of a real projector: is_projector_file
    always answers, read_projector answers or raises ModelFileError naming the file, fast."""
    from app.core.gguf.projector import is_projector_file, read_projector
    from tests.support.tiny_vision import tiny_vision_pair

    original = tiny_vision_pair().projector.read_bytes()
    header_end = original.index(b"v.blk.0.") + 200
    rng = random.Random(99)
    outcomes = {"projector": 0, "other": 0, "refused": 0}
    for i in range(MUTATIONS // 2):
        data = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(4, header_end)
            if rng.random() < 0.5:
                data[pos] = rng.randrange(256)
            else:
                data[pos:pos + 8] = rng.choice([2**32, 2**62, 2**64 - 1, 10**9]).to_bytes(8, "little")
        path = tmp_path / f"p{i}.gguf"  # not named mmproj: only the header can say
        path.write_bytes(bytes(data))
        start = time.perf_counter()
        assert isinstance(is_projector_file(path), bool)
        try:
            outcomes["projector" if read_projector(path) is not None else "other"] += 1
        except ModelFileError as exc:
            assert path.name in str(exc)
            outcomes["refused"] += 1
        assert time.perf_counter() - start < 2.0, f"mutation {i} took too long"
        path.unlink()
    assert outcomes["refused"] > 0 and outcomes["projector"] > 0
