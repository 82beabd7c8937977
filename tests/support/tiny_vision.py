"""A tiny vision model and its projector, made by llama.cpp's own converter.

A random-weight Gemma 3 (``Gemma3ForConditionalGeneration``: a 2-layer Gemma 3 text model and a
2-layer SigLIP vision tower, 56x56 images in 14x14 patches pooled to 4 image tokens) is saved as a
Hugging Face folder with the small SentencePiece tokenizer of ``hf_models`` and a Gemma-style chat
template that renders list contents (what ``MTMDChatHandler`` needs), then converted twice with
``convert_hf_to_gguf.py``: once to the text GGUF, once with ``--mmproj`` to the projector GGUF
(``general.type = mmproj``, ``clip.projector_type = gemma3``, ``clip.vision.projection_dim`` = the
text model's embedding size). Both together are about 350 KB; llama-cpp-python 0.3.36 loads the
pair and answers an image message with them (4 image tokens per image).

Two details the converter of llama-cpp-python 0.3.36 needs from a folder written by transformers 5:
the vision tower's weights are saved as ``vision_tower.*`` where the converter (and the checkpoints
on the Hub) use ``vision_tower.vision_model.*``, so the keys are renamed back; and a
``preprocessor_config.json`` with ``image_seq_length`` and the image mean/std.

Built pairs are cached under the test cache folder (``hf_models.cache_root``), keyed by the text
embedding size, transformers and converter versions; a build takes ~20 s, a cached one nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.hf_models import SPM_VOCAB, cache_root, spm_tokenizer, staged

IMAGE_SIZE = 56
PATCH_SIZE = 14
IMAGE_TOKENS = 4  # per image: (56 / 14)^2 = 16 patches, average-pooled 2x2
TEXT_EMBD = 64
BUILD_VERSION = 1  # bump when the folder or the conversion changes

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class VisionPair:
    """A text GGUF and the projector GGUF made from the same Hugging Face folder."""

    model: Path
    projector: Path


def tiny_vision_config(*, text_embd: int = TEXT_EMBD) -> object:
    from transformers import Gemma3Config

    return Gemma3Config(
        text_config=dict(vocab_size=SPM_VOCAB, hidden_size=text_embd, intermediate_size=2 * text_embd,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=256, sliding_window=64, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False),
        mm_tokens_per_image=IMAGE_TOKENS, boi_token_index=3, eoi_token_index=4, image_token_index=5,
        architectures=["Gemma3ForConditionalGeneration"],
    )


def tiny_vision_hf_folder(folder: Path, *, text_embd: int = TEXT_EMBD, seed: int = 0) -> Path:
    """A random-weight Gemma 3 vision model saved as a Hugging Face folder the converter reads."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Gemma3ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(tiny_vision_config(text_embd=text_embd))  # type: ignore[arg-type]
    model.save_pretrained(folder, safe_serialization=True)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    prefix = "vision_tower."
    renamed = {(f"{prefix}vision_model.{k[len(prefix):]}" if k.startswith(prefix) and not k.startswith(prefix + "vision_model.")
                else k): v for k, v in tensors.items()}
    save_file(renamed, weights, metadata={"format": "pt"})
    spm_tokenizer(folder)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["chat_template"] = CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_seq_length": IMAGE_TOKENS, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}))
    return folder


def png_bytes(width: int = IMAGE_SIZE, height: int = IMAGE_SIZE, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A plain-colour RGB PNG, written by hand (no imaging library in the test environment)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _convert(folder: Path, out: Path, *, mmproj: bool) -> Path:
    from app.core.quant.convert import converter_dir

    cmd = [sys.executable, str(converter_dir() / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f16",
           "--outfile", str(out), *(["--mmproj"] if mmproj else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({' '.join(cmd[1:])}):\n{done.stderr[-3000:]}")
    return out


def tiny_vision_pair(*, text_embd: int = TEXT_EMBD) -> VisionPair:
    """The cached pair ``tiny-vision-e<embd>-f16.gguf`` + ``mmproj-tiny-vision-e<embd>-f16.gguf``
    (shared between tests: copy before changing)."""
    import transformers

    from app.core.quant.convert import engine_version

    key = f"vision-gemma3-e{text_embd}-v{BUILD_VERSION}-tf{transformers.__version__}-llama{engine_version()}"
    out = cache_root() / key
    name = f"tiny-vision-e{text_embd}"
    pair = VisionPair(out / f"{name}-f16.gguf", out / f"mmproj-{name}-f16.gguf")
    if (out / "done").exists() and pair.model.exists() and pair.projector.exists():
        return pair
    with staged(key) as staging:
        folder = tiny_vision_hf_folder(staging / "hf", text_embd=text_embd)
        _convert(folder, staging / pair.model.name, mmproj=False)
        _convert(folder, staging / pair.projector.name, mmproj=True)
        shutil.rmtree(folder)
    return pair
