"""Secrets never reach a log, a crash report or the screen: Hugging Face tokens are masked."""

from __future__ import annotations

import logging
import re

# Hugging Face user/org access tokens (hf_...), API tokens of the old form (api_...), and any
# bearer token in a header that gets printed
_PATTERNS = [
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"\bapi_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?bearer\s+)[^\s\"',}]+"),
]
MASK = "hf_***"


def redact(text: str) -> str:
    """``text`` with every token-looking string replaced by a mask."""
    text = _PATTERNS[0].sub(MASK, text)
    text = _PATTERNS[1].sub("api_***", text)
    return _PATTERNS[2].sub(r"\1***", text)


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
