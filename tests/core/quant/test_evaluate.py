"""Quality: perplexity as llama.cpp computes it, KL divergence and top-token agreement against the
baseline on the same tokens, end to end from the starter HF folder's F16 conversion."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from app.core.errors import EvalError
from app.core.quant.evaluate import evaluate
from app.core.quant.quantize import quantize


def test_quantized_model_against_its_f16_baseline(starter_f16: Path, tmp_path: Path) -> None:
    q = quantize(starter_f16, tmp_path / "SmolLM2-135M-Q4_K_M.gguf", "Q4_K_M").path
    base, q_row = evaluate([q], baseline=starter_f16, max_chunks=2)
    assert base.baseline and base.path == str(starter_f16) and base.kl_divergence == 0.0
    assert q_row.path == str(q) and not q_row.baseline
    assert math.isfinite(base.perplexity) and 1 < base.perplexity < 200
    assert q_row.tokens == base.tokens == 2 * (256 - 1 - 128)  # second half of each chunk, as llama-perplexity
    assert q_row.kl_divergence is not None and 0 < q_row.kl_divergence < 1
    assert q_row.top1_agreement is not None and 0.5 < q_row.top1_agreement < 1
    assert q_row.quant == "Q4_K_M" and q_row.bits_per_weight < base.bits_per_weight and q_row.seconds > 0


def test_text_too_short_is_explained(starter_model: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.")
    with pytest.raises(EvalError, match="short.txt gives only .* tokens"):
        evaluate([starter_model], text=short)
