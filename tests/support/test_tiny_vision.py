"""The tiny vision pair (tests/support/tiny_vision.py): llama.cpp's converter wrote a text GGUF and a
projector GGUF whose header says what it is and which text model it fits."""

from __future__ import annotations

import gguf

from tests.support.tiny_vision import TEXT_EMBD, tiny_vision_pair


def _fields(path: object) -> dict[str, object]:
    reader = gguf.GGUFReader(path, "r")  # type: ignore[arg-type]
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.ggml.")}


def test_converter_writes_a_text_model_and_its_projector() -> None:
    pair = tiny_vision_pair()
    assert pair.projector.name.startswith("mmproj-")
    assert pair.model.stat().st_size + pair.projector.stat().st_size < 4 * 1024 * 1024

    proj = _fields(pair.projector)
    assert proj["general.architecture"] == "clip"
    assert proj["general.type"] == "mmproj"
    assert proj["clip.has_vision_encoder"] is True
    assert proj["clip.projector_type"] == "gemma3"
    assert proj["clip.vision.projection_dim"] == TEXT_EMBD

    text = _fields(pair.model)
    assert text["general.architecture"] == "gemma3"
    assert text["general.type"] == "model"
    assert text["gemma3.embedding_length"] == TEXT_EMBD
    assert "tokenizer.chat_template" in text
    assert not any(key.startswith("clip.") for key in text)


def test_another_embedding_size_gives_a_projector_that_does_not_fit() -> None:
    other = tiny_vision_pair(text_embd=96)
    assert _fields(other.projector)["clip.vision.projection_dim"] == 96
    assert _fields(other.model)["gemma3.embedding_length"] == 96
