"""Images through the engine (engine.vision on libmtmd): the tiny Gemma 3 pair made by llama.cpp's
converter, loaded with its projector found beside it; an image message answered as llama-cpp-python's
own multimodal handler answers it; the image counted in the prompt and kept in the KV cache for the
next turn; hostile images and a model without a projector refused with a sentence, the engine alive."""

from __future__ import annotations

import base64
import shutil
import struct
from pathlib import Path
from typing import Iterator

import pytest

from app.core.engine.client import EngineClient, EngineError
from app.core.engine.protocol import SamplingParams
from app.core.gguf.header import read_header
from app.core.planner.auto import plan_load
from app.core.planner.memory import projector_bytes
from tests.conftest import load_params
from tests.support.tiny_vision import IMAGE_TOKENS, png_bytes, tiny_vision_pair

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, seed=0)
QUESTION = "what is this?"


def image_message(*images: bytes, text: str = QUESTION) -> dict[str, object]:
    return {"role": "user", "content": text,
            "images": [{"data": base64.b64encode(data).decode(), "name": f"picture-{i}.png"} for i, data in enumerate(images)]}


@pytest.fixture(scope="module")
def seeing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineClient]:
    """An engine with the tiny vision model, loaded the way the app loads it (load_model: the
    planner finds the projector beside the model)."""
    client = EngineClient(log_path=tmp_path_factory.mktemp("engine") / "engine.log")
    client.load_model(tiny_vision_pair().model, ctx=256)
    yield client
    client.close()


def test_the_projector_beside_the_model_is_found_counted_and_loaded(seeing: EngineClient) -> None:
    pair = tiny_vision_pair()
    assert seeing.model is not None
    assert seeing.model.vision and Path(seeing.model.projector or "") == pair.projector.resolve()
    params = plan_load(read_header(pair.model), ctx=256)
    assert params.projector == str(pair.projector.resolve())
    assert any("vision projector mmproj-" in r for r in params.reasons)


def test_an_image_message_is_answered_as_llama_cpp_python_answers_it(seeing: EngineClient) -> None:
    """Greedy: the same text as MTMDChatHandler's for the same image and question, and the image's
    tokens counted in the prompt."""
    import llama_cpp
    from llama_cpp.llama_chat_format import MTMDChatHandler

    pair = tiny_vision_pair()
    image = png_bytes()
    reply = seeing.chat([image_message(image)], GREEDY)
    assert reply.image_tokens == IMAGE_TOKENS
    text_only = seeing.chat([{"role": "user", "content": QUESTION}], GREEDY)
    assert reply.prompt_tokens >= text_only.prompt_tokens + IMAGE_TOKENS

    handler = MTMDChatHandler(clip_model_path=str(pair.projector), verbose=False)
    llm = llama_cpp.Llama(model_path=str(pair.model), chat_handler=handler, n_ctx=256, n_threads=2, n_gpu_layers=0,
                          verbose=False)
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    theirs = llm.create_chat_completion(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},  # type: ignore[list-item]
                                               {"type": "text", "text": QUESTION}]}],
        max_tokens=8, temperature=0.0, top_k=1, seed=0)
    assert reply.text == theirs["choices"][0]["message"]["content"]  # type: ignore[index]
    assert reply.prompt_tokens == theirs["usage"]["prompt_tokens"]  # type: ignore[index]
    llm.close()


def test_a_follow_up_reuses_the_image_in_the_kv_cache_and_another_image_does_not(seeing: EngineClient) -> None:
    red, blue = png_bytes(rgb=(200, 30, 30)), png_bytes(rgb=(20, 40, 220))
    first = [image_message(red)]
    one = seeing.chat(first, GREEDY)
    follow = first + [{"role": "assistant", "content": one.text}, {"role": "user", "content": "and now?"}]
    two = seeing.chat(follow, GREEDY)
    assert two.cached_tokens >= one.prompt_tokens - 1  # the image was not encoded again
    other = seeing.chat([image_message(blue)] + follow[1:], GREEDY)
    assert other.cached_tokens < one.prompt_tokens - IMAGE_TOKENS  # cut at the image, before it


def _huge_png() -> bytes:
    header = png_bytes()
    return header[:16] + struct.pack(">II", 100_000, 100_000) + header[24:]


@pytest.mark.parametrize(("data", "says"), [
    (png_bytes()[:60], "truncated"),
    (_huge_png(), "100,000 × 100,000 pixels"),
    (b"#!/bin/sh\necho not an image\n", "not an image of a type"),
    (b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x00" + b"\x00" * 8, "WEBP is not read"),
    (b"", "empty"),
])
def test_a_hostile_image_gets_a_sentence_and_the_engine_stays_up(seeing: EngineClient, data: bytes, says: str) -> None:
    pid = seeing.pid
    with pytest.raises(EngineError, match=says) as caught:
        seeing.chat([image_message(data)], GREEDY)
    assert "picture-0.png" in str(caught.value)
    assert seeing.pid == pid and seeing.alive
    assert seeing.chat([{"role": "user", "content": "hello"}], GREEDY).finish_reason in ("stop", "length")


def test_a_model_without_a_projector_says_why_it_cannot_see(engine: EngineClient) -> None:
    with pytest.raises(EngineError, match="cannot see images: it was loaded without a vision projector"):
        engine.chat([image_message(png_bytes())], GREEDY)
    assert engine.chat([{"role": "user", "content": "hello"}], GREEDY).completion_tokens > 0


def test_a_projector_for_another_model_is_refused_and_the_model_runs_without_sight(tmp_path: Path) -> None:
    pair, other = tiny_vision_pair(), tiny_vision_pair(text_embd=96)
    model = Path(shutil.copy(pair.model, tmp_path / pair.model.name))
    stranger = Path(shutil.copy(other.projector, tmp_path / "mmproj-other-f16.gguf"))
    params = plan_load(read_header(model), ctx=256)
    assert params.projector is None
    from app.core.planner.auto import vision_projector

    chosen, note = vision_projector(read_header(model))
    assert chosen is None and note and "mmproj-other-f16.gguf" in note and "96 wide" in note

    with EngineClient(log_path=tmp_path / "engine.log") as client:  # forced: the engine refuses it itself
        from dataclasses import replace

        info = client.load(model, replace(load_params(256), projector=str(stranger)))
        assert not info.vision and "mmproj-other-f16.gguf" in info.vision_note
        with pytest.raises(EngineError, match="its vision projector did not load"):
            client.chat([image_message(png_bytes())], GREEDY)


def test_the_planner_counts_the_projector_as_llama_cpp_allocates_it(seeing: EngineClient) -> None:
    """The projector's weights and its encoder's compute buffer, against clip's log lines: never
    less than llama.cpp allocates, and over by at most the planner's fixed 1 MiB on this tiny one."""
    import re

    from app.core.gguf.projector import read_projector

    proj = read_projector(tiny_vision_pair().projector)
    assert proj is not None and (proj.image_size, proj.patch_size, proj.width) == (56, 14, 32)
    weights, compute = projector_bytes(proj)
    log = seeing.log_path.read_text(errors="replace")
    model_mib = float(re.findall(r"load_hparams: model size:\s+([\d.]+) MiB", log)[-1])
    compute_mib = float(re.findall(r"reserve_compute_meta:\s+CPU compute buffer size =\s+([\d.]+) MiB", log)[-1])
    assert model_mib * 2**20 <= weights <= model_mib * 2**20 + 64 * 1024  # the file: tensors and a small header
    assert compute_mib * 2**20 <= compute <= compute_mib * 2**20 + 1.1 * 2**20
