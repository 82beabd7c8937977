"""Strings from files and models printed on a terminal: control sequences removed, text kept."""

from __future__ import annotations

import io
import time

import pytest

from app.core.redact import SafeStream, terminal_safe


@pytest.mark.parametrize("hostile, shown", [
    ("\x1b]0;new title\x07ok", "ok"),  # OSC: retitles the window
    ("\x1b]8;;file:///etc/passwd\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink
    ("\x1b[2J\x1b[H\x1b[31mred\x1b[0m", "red"),  # CSI: clears the screen, colours
    ("\x9b2Jx", "x"),  # 8-bit CSI
    ("\x1bPq#0;2;0;0;0\x1b\\y", "y"),  # DCS (sixel)
    ("a\x00b\x08c\x7fd\x1be", "abcd"),  # NUL, backspace, DEL, ESC e (short sequence)
    ("line 1\nline 2\tend\r\n", "line 1\nline 2\tend\r\n"),
    ("Grüße, 你好 🙂", "Grüße, 你好 🙂"),
])
def test_control_sequences_are_removed_and_text_kept(hostile: str, shown: str) -> None:
    assert terminal_safe(hostile) == shown


def test_a_stream_filters_every_write_in_linear_time() -> None:
    out = io.StringIO()
    stream = SafeStream(out)
    stream.write("\x1b]0;x")  # a sequence cut between two tokens leaves only harmless text
    stream.write("\x07done\n")
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    start = time.perf_counter()
    terminal_safe("\x1b[" + "1;" * 500_000 + "\x1b]" + "x" * 1_000_000)
    assert time.perf_counter() - start < 1.0
