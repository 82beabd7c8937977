"""Images in the prompt, through llama.cpp's libmtmd (host side; imports llama_cpp).

A model loaded with its vision projector gets a ``Vision``: ``mtmd_init_from_file`` beside the text
model. A prompt with images is the template's text with one media marker per image;
``mtmd_tokenize`` turns it into text chunks and image chunks. The decode loop (engine.decode) keeps
one flat token list per conversation for KV reuse, so each image chunk stands there as a run of
placeholder ids (negative, derived from the image's SHA-256 and the position in it): the same image
at the same place matches the cache and is not encoded again; another image never does. An image
chunk is evaluated by ``mtmd_helper_eval_chunk_single`` (the vision encoder, then its embeddings
into the KV cache), one run of ``n_pos`` positions.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

from app.core.engine.images import ImageError, for_engine

PLACEHOLDER_SPACE = 2**31 - 2  # placeholders are -1 .. -(2**31 - 1): never a vocabulary id, an int32 still


@dataclass
class Span:
    """An image's run in the prompt's token list: ``length`` positions from ``start``."""

    start: int
    length: int
    evaluate: Callable[[int], None]  # (n_past) -> None: the image's embeddings into the KV cache


@dataclass
class Tokenized:
    tokens: list[int]  # text ids, and each image's placeholder run
    spans: list[Span]
    image_tokens: int
    keep: Any  # the mtmd chunks (freed by close)
    close: Callable[[], None]


def placeholders(sha256: str, n: int) -> list[int]:
    h = int(sha256[:16], 16)
    return [-(1 + (h * 1_000_003 + j) % PLACEHOLDER_SPACE) for j in range(n)]


class Vision:
    """One loaded model's projector context."""

    def __init__(self, llm: Any, projector: str, *, use_gpu: bool, n_threads: int | None) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        self.lib, self.mtmd, self.llm = llama_cpp, mtmd, llm
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.n_threads = int(n_threads or llm.n_threads)
        params.warmup = True  # reserve the encoder's compute buffer at load (and log its size), as llama-server does
        flash = llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = mtmd.mtmd_init_from_file(projector.encode(), llm.model, params)
        if not self.ctx:
            raise RuntimeError(f"{projector}: llama.cpp could not load this vision projector for the model")
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise RuntimeError(f"{projector}: this projector has no vision encoder (audio only?)")
        marker = mtmd.mtmd_default_marker()
        self.marker = marker.decode() if isinstance(marker, bytes) else str(marker)
        self.path = projector

    def close(self) -> None:
        if self.ctx:
            self.mtmd.mtmd_free(self.ctx)
            self.ctx = None

    def tokenize(self, prompt: str, images: list[bytes], *, add_special: bool, n_batch: int,
                 names: list[str] | None = None) -> Tokenized:
        """The prompt (``self.marker`` where each image goes, in order) as tokens and image spans.
        A damaged or hostile image raises ImageError naming it (``names``), before the engine decodes it."""
        mtmd = self.mtmd
        labels = names if names and len(names) == len(images) else [f"image {i + 1}" for i in range(len(images))]
        n_markers = prompt.count(self.marker)
        if n_markers != len(images):
            raise ValueError(f"the prompt has {n_markers} image places for {len(images)} images (a message's "
                             f"text contains the reserved marker {self.marker!r}?)")
        facts = [for_engine(data, labels[i]) for i, data in enumerate(images)]
        bitmaps: list[Any] = []
        chunks = None
        try:
            for i, data in enumerate(images):
                buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False)
                if not bitmap:
                    raise ImageError(f"{labels[i]}: llama.cpp's image loader could not decode this "
                                     f"{facts[i].kind.upper()} (damaged?)")
                mtmd.mtmd_bitmap_set_id(bitmap, facts[i].sha256.encode())
                bitmaps.append(bitmap)
            text = mtmd.mtmd_input_text()
            encoded = prompt.encode("utf-8")
            text.text, text.text_len = encoded, len(encoded)
            text.add_special, text.parse_special = add_special, True
            chunks = mtmd.mtmd_input_chunks_init()
            array = (mtmd.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*bitmaps)
            rc = mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), array, len(bitmaps))
            if rc != 0:
                raise ImageError(f"llama.cpp could not prepare the images for this model (mtmd_tokenize returned {rc})")
        except BaseException:
            if chunks:
                mtmd.mtmd_input_chunks_free(chunks)
            raise
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        tokens: list[int] = []
        spans: list[Span] = []
        image_tokens = 0
        seen = 0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens.extend(ptr[j] for j in range(n.value))
                continue
            if kind != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                raise ImageError("this projector turned the input into audio chunks, which QuantDesk does not send")
            n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
            image_tokens += int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            sha = facts[min(seen, len(facts) - 1)].sha256
            seen += 1
            spans.append(Span(len(tokens), n_pos, self._evaluator(chunk, n_pos, n_batch)))
            tokens.extend(placeholders(sha, n_pos))

        def close() -> None:
            mtmd.mtmd_input_chunks_free(chunks)

        return Tokenized(tokens, spans, image_tokens, chunks, close)

    def _evaluator(self, chunk: Any, n_pos: int, n_batch: int) -> Callable[[int], None]:
        def evaluate(n_past: int) -> None:
            new_n_past = self.lib.llama_pos(0)
            rc = self.mtmd.mtmd_helper_eval_chunk_single(self.ctx, self.llm._ctx.ctx, chunk, n_past, 0, n_batch,
                                                         False, ctypes.byref(new_n_past))
            if rc != 0:
                raise RuntimeError(f"llama.cpp could not evaluate an image (mtmd_helper_eval_chunk_single returned {rc})")
            if new_n_past.value != n_past + n_pos:
                raise RuntimeError(f"an image took {new_n_past.value - n_past} positions, {n_pos} were expected")

        return evaluate
