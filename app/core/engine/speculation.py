"""Prompt-lookup speculative decoding switched on per model only where it wins, measured on this
machine (host side: the engine calls it for requests that ask for ``lookup="auto"``).

Whether drafting pays depends on the model, the build and the CPU or GPU (a verify batch costs more
than one token on a slow CPU, little on a GPU) and on what the user asks (code edits repeat their
prompt, stories do not). So nothing is assumed: until a model is decided, its replies alternate
between lookup on and off, and each reply's decode speed is recorded; after ``SAMPLES`` replies of
each kind the medians decide (on when it is at least ``MARGIN`` faster) and the decision is kept in
``$QUANTDESK_SPECULATION_FILE`` (the client points it at the data folder's ``speculation.json``),
keyed by the model file and the engine's CPU build. Short replies (under ``MIN_TOKENS``) say too
little about speed and are not counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

SAMPLES = 3  # replies measured each way before deciding
MIN_TOKENS = 32
MARGIN = 1.03  # lookup must be this much faster to be switched on
DRAFT = 8  # draft length when on


def model_key(model_path: str, build: str) -> str:
    st = os.stat(model_path)
    raw = json.dumps([os.path.realpath(model_path), st.st_size, int(st.st_mtime), build])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


class Tuner:
    def __init__(self, path: Path | None, model_path: str, build: str) -> None:
        self.path = path
        self.name = os.path.basename(model_path)
        self.key = model_key(model_path, build)
        self.state: dict[str, Any] = self._read().get(self.key) or {"on": [], "off": []}

    @classmethod
    def from_env(cls, model_path: str, build: str) -> "Tuner":
        where = os.environ.get("QUANTDESK_SPECULATION_FILE")
        return cls(Path(where) if where else None, model_path, build)

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: measure again
        return data if isinstance(data, dict) else {}

    @property
    def decided(self) -> bool:
        return "decision" in self.state

    def lookup(self) -> int:
        """The draft length for the next reply: the decision, or the next measurement."""
        if self.decided:
            return DRAFT if self.state["decision"] == "on" else 0
        on, off = len(self.state["on"]), len(self.state["off"])
        return DRAFT if on < off else 0  # off first, then alternate

    def record(self, lookup: int, completion_tokens: int, tokens_per_s: float) -> None:
        if self.decided or completion_tokens < MIN_TOKENS or tokens_per_s <= 0:
            return
        self.state["on" if lookup else "off"].append(round(tokens_per_s, 2))
        on, off = self.state["on"], self.state["off"]
        if len(on) >= SAMPLES and len(off) >= SAMPLES:
            ratio = statistics.median(on) / statistics.median(off)
            self.state["speedup"] = round(ratio, 3)
            self.state["decision"] = "on" if ratio >= MARGIN else "off"
        self._write()

    def describe(self) -> str:
        """One line for the reply's stats."""
        if not self.decided:
            return f"prompt lookup: measuring ({len(self.state['on'])}+{len(self.state['off'])} of {2 * SAMPLES} replies)"
        return f"prompt lookup: {self.state['decision']} (measured {self.state['speedup']:.2f}x on this machine)"

    def _write(self) -> None:
        if self.path is None:
            return
        data = self._read()
        data[self.key] = {**self.state, "model": self.name}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".speculation-", suffix=".tmp",
                                             delete=False, encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(f.name, self.path)
        except OSError:
            pass  # a read-only data folder: the decision lives for this engine only
