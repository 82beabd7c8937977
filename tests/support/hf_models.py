"""Hugging Face-format model folders for conversion tests, built without the Hub.

- ``starter_hf_folder``: the starter GGUF (SmolLM2-135M Q4_1) loaded by transformers (dequantized),
  copied into a fresh model built from its config (transformers refuses to save a GGUF-loaded
  model) and saved as safetensors with its tokenizer. Cached under the temp folder between runs,
  keyed by the starter file and the transformers version (it takes ~40 s to build).
- ``tiny_hf_folder``: a tiny random model of llama, qwen2, gemma or phi3 from a transformers
  config, with a small SentencePiece tokenizer trained on the bundled calibration text (every one
  of these converters reads a ``tokenizer.model``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
TINY_ARCHS = ("llama", "qwen2", "gemma", "phi3")
SPM_VOCAB = 512


def cache_root() -> Path:
    root = Path(os.environ.get("QUANTDESK_TEST_CACHE", Path(tempfile.gettempdir()) / "quantdesk-test-cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def staged(key: str) -> Iterator[Path]:
    """A fresh folder under the cache that becomes ``cache_root() / key``, marked done, only when
    the block completes: a build that fails or is killed never leaves a half-made entry."""
    out = cache_root() / key
    staging = Path(tempfile.mkdtemp(prefix=key + ".", dir=cache_root()))
    try:
        yield staging
        (staging / "done").write_text("ok")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def starter_hf_folder(starter: Path) -> Path:
    import transformers

    st = starter.stat()
    key = f"smollm2-hf-{st.st_size}-{st.st_mtime_ns}-tf{transformers.__version__}"
    out = cache_root() / key
    if (out / "done").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with staged(key) as staging:
        tok = AutoTokenizer.from_pretrained(str(starter.parent), gguf_file=starter.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(starter.parent), gguf_file=starter.name, dtype=torch.float32)
        config = loaded.config
        config.architectures = ["LlamaForCausalLM"]
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the GGUF origin; the converter would take it for a quant method
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing = fresh.load_state_dict(loaded.state_dict(), strict=False)
        assert not missing.missing_keys, missing
        fresh.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        cfg = json.loads((staging / "config.json").read_text())
        cfg.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def spm_tokenizer(folder: Path) -> Path:
    """A small SentencePiece model (BPE, byte fallback) trained on the calibration text."""
    import sentencepiece as spm

    target = cache_root() / f"spm-{SPM_VOCAB}"
    model = target.with_suffix(".model")
    if not model.exists():
        spm.SentencePieceTrainer.train(input=str(ROOT / "resources" / "calibration.txt"), model_prefix=str(target),
                                       vocab_size=SPM_VOCAB, model_type="bpe", byte_fallback=True, minloglevel=2,
                                       bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    shutil.copy(model, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                                              "add_bos_token": True, "add_eos_token": False,
                                                              "tokenizer_class": "LlamaTokenizer"}))
    return folder / "tokenizer.model"


def tiny_config(arch: str) -> object:
    from transformers import GemmaConfig, LlamaConfig, Phi3Config, Qwen2Config

    common = dict(vocab_size=SPM_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        return LlamaConfig(**common, architectures=["LlamaForCausalLM"])
    if arch == "qwen2":
        return Qwen2Config(**common, architectures=["Qwen2ForCausalLM"])
    if arch == "gemma":
        return GemmaConfig(**common, head_dim=16, architectures=["GemmaForCausalLM"])
    if arch == "phi3":
        return Phi3Config(**{**common, "num_key_value_heads": 4}, architectures=["Phi3ForCausalLM"], pad_token_id=0)
    raise ValueError(arch)


def tiny_hf_folder(arch: str, folder: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    spm_tokenizer(folder)
    return folder
