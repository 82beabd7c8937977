"""Text made safe to show: secrets never reach a log, a crash report or the screen (Hugging Face
tokens are masked), and text from files and models is made safe to print on a terminal.

Text from files and models, made safe to print on a terminal.

A GGUF's ``general.name``, a Hub file name or a model's reply can hold escape sequences that
retitle the terminal window, hide text, rewrite the screen or (on some terminals) write files.
Every CLI write goes through ``terminal_safe``: escape sequences (CSI, OSC, DCS and the short
ones) are removed whole, other C0 and C1 controls and DEL are dropped; newline, tab and carriage
return (our own progress lines) stay.
"""

from __future__ import annotations

import logging
import re
from typing import Any, TextIO

# Hugging Face user/org access tokens (hf_...), API tokens of the old form (api_...), and any
# bearer token in a header that gets printed
_PATTERNS = [
    re.compile(r"\bhf_oauth_[A-Za-z0-9_]{20,}"),  # OAuth access and refresh tokens
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # user and org access tokens
    re.compile(r"\bapi_(?:org_)?[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?bearer\s+)[^\s\"',}]+"),
]
MASK = "hf_***"


def redact(text: str) -> str:
    """``text`` with every token-looking string replaced by a mask."""
    text = _PATTERNS[0].sub(MASK, text)
    text = _PATTERNS[1].sub(MASK, text)
    text = _PATTERNS[2].sub("api_***", text)
    return _PATTERNS[3].sub(r"\1***", text)


class RedactFilter(logging.Filter):
    """A handler filter: the record's message, arguments and traceback, masked. Put it on the
    handler (a filter on a logger does not see records from its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the formatter to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True

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
