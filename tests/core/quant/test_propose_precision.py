"""Which levels are worth making from a source: never one at or above a quantized source's bits
per weight; the whole ladder from unquantized weights."""

from __future__ import annotations

from pathlib import Path

from app.core.gguf.header import read_header
from app.core.gguf.origin import original_repo
from app.core.gguf.quant_types import LADDER, quant_type
from app.core.quant.pipeline import below_source, propose_levels, source_bits


def test_a_q4_1_source_gets_only_levels_below_its_precision(starter_model: Path) -> None:
    h = read_header(starter_model)
    bits = source_bits(h)
    assert bits is not None and h.file_type_name == "Q4_1"
    kept = below_source(h)
    assert kept and all(quant_type(n).bits_per_weight < bits for n in kept)
    assert {"Q8_0", "Q6_K", "Q5_K_M"}.isdisjoint(kept)
    levels = propose_levels(h, ctx=2048)
    assert [lp.qtype.name for lp in levels] == list(kept)
    assert sum(lp.proposed for lp in levels) == 1


def test_an_f16_source_gets_the_whole_ladder(tiny_f16: Path) -> None:
    assert below_source(read_header(tiny_f16)) == LADDER


def test_the_starter_names_no_original_weights(starter_model: Path) -> None:
    assert original_repo(starter_model) is None


def test_original_repo_reads_a_hostile_header_through_the_bounded_walk(tmp_path: Path) -> None:
    import struct

    hostile = tmp_path / "hostile.gguf"  # claims 2**62 metadata pairs in 41 bytes
    hostile.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**62) + b"\xff" * 21)
    assert original_repo(hostile) is None
