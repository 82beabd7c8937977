"""Text from files and models, made safe to print on a terminal.

A GGUF's ``general.name``, a Hub file name or a model's reply can hold escape sequences that
retitle the terminal window, hide text, rewrite the screen or (on some terminals) write files.
Every CLI write goes through ``terminal_safe``: escape sequences (CSI, OSC, DCS and the short
ones) are removed whole, other C0 and C1 controls and DEL are dropped; newline, tab and carriage
return (our own progress lines) stay.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: ESC [ parameters intermediates final
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS, SOS, PM, APC up to BEL or ST
    r"|\x1b[ -/]*[0-~]?"  # the short ones (ESC c, ESC ( B, ...) and a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # the 8-bit CSI
    r"|[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f\x80-\x9f]"
)


def terminal_safe(text: str) -> str:
    """``text`` without terminal control sequences (linear time)."""
    return _SEQUENCE.sub("", text)


class SafeStream:
    """A text stream that writes ``terminal_safe`` text to the one it wraps."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(terminal_safe(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
