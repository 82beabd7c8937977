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


def test_llama_cpp_answers_an_image_with_the_pair_and_refuses_a_mismatched_projector() -> None:
    """llama-cpp-python's own multimodal path (MTMDChatHandler), no QuantDesk code: the pair works,
    each image is IMAGE_TOKENS prompt tokens, and a projector for another width is refused."""
    import base64

    import llama_cpp
    import pytest
    from llama_cpp.llama_chat_format import MTMDChatHandler

    from tests.support.tiny_vision import IMAGE_TOKENS, png_bytes

    pair, other = tiny_vision_pair(), tiny_vision_pair(text_embd=96)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()}}

    def prompt_tokens(projector: object, content: object) -> int:
        handler = MTMDChatHandler(clip_model_path=str(projector), verbose=False)
        llm = llama_cpp.Llama(model_path=str(pair.model), chat_handler=handler, n_ctx=256, n_threads=2,
                              n_gpu_layers=0, verbose=False)
        reply = llm.create_chat_completion(messages=[{"role": "user", "content": content}], max_tokens=2, seed=0)  # type: ignore[list-item]
        return int(reply["usage"]["prompt_tokens"])  # type: ignore[index]

    text_only = prompt_tokens(pair.projector, [{"type": "text", "text": "what is this?"}])
    with_image = prompt_tokens(pair.projector, [{"type": "text", "text": "what is this?"}, image])
    # the image's IMAGE_TOKENS embeddings plus mtmd's <start_of_image>/<end_of_image> markers, which the
    # tiny 512-piece tokenizer has no special tokens for and spells as text (~20 tokens in all)
    assert with_image - text_only >= IMAGE_TOKENS
    with pytest.raises(ValueError, match="Failed to load mtmd context"):
        prompt_tokens(other.projector, [{"type": "text", "text": "what is this?"}, image])
