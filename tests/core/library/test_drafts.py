"""Finding a draft model in the library: a much smaller model of the same vocabulary, from real GGUF
headers (the starter model and a tiny random model built with the starter's tokenizer)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

from app.core.gguf.header import read_header
from app.core.library.catalog import Library
from app.core.library.drafts import find_draft, library_draft, why_not_a_draft


def test_a_small_model_of_the_same_vocabulary_drafts_and_others_do_not(starter_model: Path, tiny_f16: Path,
                                                                      tmp_path: Path) -> None:
    main, tiny = read_header(starter_model), read_header(tiny_f16)
    assert why_not_a_draft(main, tiny) is None
    assert "too large" in (why_not_a_draft(tiny, main) or "")
    assert why_not_a_draft(main, main) == "it is the model itself"
    other = dataclasses.replace(tiny, n_vocab=tiny.n_vocab + 1)
    assert "another vocabulary" in (why_not_a_draft(main, other) or "")
    broken = tmp_path / "broken.gguf"
    broken.write_text("not a model")
    assert find_draft(main, [broken, starter_model, tmp_path / "gone.gguf", tiny_f16]) == tiny
    assert find_draft(tiny, [starter_model, broken]) is None


def test_chat_drafts_with_the_library_model_it_finds(starter_model: Path, tiny_f16: Path, tmp_path: Path) -> None:
    def chat() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", "chat", "starter", "--draft-model", "auto", "--prompt",
                               "Count from one to twenty.", "--temperature", "0", "--max-tokens", "40", "--json"],
                              capture_output=True, text=True, timeout=300)

    alone = chat()  # an empty library: a notice, and the reply without a draft
    assert alone.returncode == 0, alone.stderr
    assert "no model in the library can draft for" in alone.stderr
    assert json.loads(alone.stdout.splitlines()[-1])["drafted_tokens"] == 0
    lib = Library()
    lib.register(shutil.copy(tiny_f16, tmp_path / "tiny-draft.gguf"))
    lib.close()
    assert library_draft(read_header(starter_model)) is not None
    drafted = chat()
    assert drafted.returncode == 0, drafted.stderr
    assert "drafting with tiny-draft.gguf" in drafted.stderr
    assert json.loads(drafted.stdout.splitlines()[-1])["drafted_tokens"] > 0
