"""A draft model for speculative decoding from the library: a much smaller model that speaks the
main model's vocabulary (same tokenizer and vocabulary size; the engine checks token for token
when it loads the pair)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from app.core.errors import QuantDeskError
from app.core.gguf.header import GGUFHeader, read_header

MAX_SHARE = 0.25  # a draft has at most this share of the main model's parameters, or it saves nothing


def why_not_a_draft(main: GGUFHeader, small: GGUFHeader) -> str | None:
    """Why ``small`` cannot draft for ``main`` (from the headers), or None when it may."""
    if small.path.resolve() == main.path.resolve():
        return "it is the model itself"
    if not small.n_vocab or small.n_vocab != main.n_vocab or small.tokenizer_model != main.tokenizer_model:
        return (f"another vocabulary ({small.tokenizer_model or '?'}, {small.n_vocab} tokens; the model has "
                f"{main.tokenizer_model or '?'}, {main.n_vocab})")
    if not small.n_params or small.n_params > main.n_params * MAX_SHARE:
        return f"too large to save time ({small.n_params:,} parameters beside {main.n_params:,})"
    return None


def find_draft(main: GGUFHeader, candidates: Iterable[str | Path]) -> GGUFHeader | None:
    """The largest candidate that may draft for ``main`` (larger drafts guess better), or None.
    Files that cannot be read are passed over."""
    best: GGUFHeader | None = None
    for path in candidates:
        try:
            small = read_header(path)
        except QuantDeskError:
            continue
        if why_not_a_draft(main, small) is None and (best is None or small.n_params > best.n_params):
            best = small
    return best


def library_draft(main: GGUFHeader) -> GGUFHeader | None:
    """``find_draft`` over the library's models."""
    from app.core.library.catalog import Library

    lib = Library()
    try:
        paths = [e.path for e in lib.entries() if not e.error]
    finally:
        lib.close()
    return find_draft(main, paths)
