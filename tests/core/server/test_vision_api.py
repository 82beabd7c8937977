"""Images through the API server, over the official clients against a real server process: an
OpenAI ``image_url`` part (a base64 data URL) and an Anthropic ``image`` block answered by the tiny
vision model, the image counted in the usage; a URL the server would have to fetch, a damaged
image and an image for a model that cannot see are each a 400 with the reason."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Iterator

import anthropic
import openai
import pytest

from tests.conftest import THREADS
from tests.core.server.conftest import API_CTX
from tests.support.api_server import ServerProcess
from tests.support.tiny_vision import IMAGE_TOKENS, png_bytes, tiny_vision_pair

PNG = base64.b64encode(png_bytes()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, starter_model: Path) -> Iterator[ServerProcess]:
    pair = tiny_vision_pair()
    folder = tmp_path_factory.mktemp("models")
    model = Path(shutil.copy(pair.model, folder / pair.model.name))
    shutil.copy(pair.projector, folder / pair.projector.name)
    proc = ServerProcess(tmp_path_factory.mktemp("serve-home"), "--model", str(model), "--model", str(starter_model),
                         "--ctx", str(API_CTX), "--threads", str(THREADS))
    yield proc
    proc.stop()


def ids(server: ServerProcess) -> tuple[str, str]:
    listed = [m.id for m in openai.OpenAI(base_url=server.root + "/v1", api_key="x").models.list().data]
    seeing = next(i for i in listed if "vision" in i)
    blind = next(i for i in listed if i != seeing)
    return seeing, blind


def oai(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.root + "/v1", api_key="unused", max_retries=0, timeout=120)


def image_part(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_openai_image_url_part_is_seen_and_counted(server: ServerProcess) -> None:
    seeing, _ = ids(server)
    text = oai(server).chat.completions.create(model=seeing, max_tokens=4, temperature=0,
                                               messages=[{"role": "user", "content": "what is this?"}])
    r = oai(server).chat.completions.create(model=seeing, max_tokens=4, temperature=0, messages=[  # type: ignore[list-item]
        {"role": "user", "content": [image_part("data:image/png;base64," + PNG), {"type": "text", "text": "what is this?"}]}])
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and text.usage is not None
    assert r.usage.prompt_tokens >= text.usage.prompt_tokens + IMAGE_TOKENS


def test_anthropic_image_block_is_seen(server: ServerProcess) -> None:
    seeing, _ = ids(server)
    client = anthropic.Anthropic(base_url=server.root, api_key="unused", max_retries=0, timeout=120)
    r = client.messages.create(model=seeing, max_tokens=4, messages=[{"role": "user", "content": [  # type: ignore[list-item]
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is this?"}]}])
    text = client.messages.create(model=seeing, max_tokens=4, messages=[{"role": "user", "content": "what is this?"}])
    assert r.stop_reason in ("end_turn", "max_tokens")

    def prompt(u: anthropic.types.Usage) -> int:  # the part read from the KV cache is counted apart
        return u.input_tokens + (u.cache_read_input_tokens or 0)

    assert prompt(r.usage) >= prompt(text.usage) + IMAGE_TOKENS


@pytest.mark.parametrize(("url", "says"), [
    ("https://example.com/cat.png", "never fetches a URL"),
    ("data:image/png;base64," + base64.b64encode(png_bytes()[:50]).decode(), "truncated"),
    ("data:image/png;base64,@@@@", "does not decode"),
])
def test_openai_bad_images_are_a_400_with_the_reason(server: ServerProcess, url: str, says: str) -> None:
    seeing, _ = ids(server)
    with pytest.raises(openai.BadRequestError, match=says):
        oai(server).chat.completions.create(model=seeing, max_tokens=4, messages=[  # type: ignore[list-item]
            {"role": "user", "content": [image_part(url), {"type": "text", "text": "what is this?"}]}])


def test_an_image_for_a_model_that_cannot_see_is_a_400_saying_why(server: ServerProcess) -> None:
    _, blind = ids(server)
    with pytest.raises(openai.BadRequestError, match="cannot see images"):
        oai(server).chat.completions.create(model=blind, max_tokens=4, messages=[  # type: ignore[list-item]
            {"role": "user", "content": [image_part("data:image/png;base64," + PNG), {"type": "text", "text": "hi"}]}])
