"""Messages and icons in the light and the dark theme: authorship, bubbles that follow the palette,
code highlighted for the background it is on, icons redrawn when the theme switches."""

from __future__ import annotations

from typing import Iterator

import pytest
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from app.core.chat import store as chats
from app.ui.chat.widgets import Composer, MessageWidget, bubble_color
from app.ui.theme import apply_theme

REPLY = "Here it is:\n\n```python\nprint('hello')\n```\n"


@pytest.fixture
def themes(qapp) -> Iterator[None]:  # type: ignore[no-untyped-def]
    yield
    apply_theme("system")


def contrast(a: QColor, b: QColor) -> float:
    """The WCAG contrast ratio of two colours (1: none, 21: black on white)."""
    def lum(c: QColor) -> float:
        channels = [x / 255 for x in (c.red(), c.green(), c.blue())]
        r, g, b_ = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b_
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_bubbles_differ_by_author_and_keep_text_readable(themes: None, theme: str) -> None:
    apply_theme(theme)
    palette = QApplication.palette()
    base, text = palette.color(QPalette.ColorRole.Base), palette.color(QPalette.ColorRole.Text)
    user, model = bubble_color(palette, "user"), bubble_color(palette, "assistant")
    assert user != model and user != base and model != base  # who wrote what shows at a glance
    assert contrast(text, user) > 7 and contrast(text, model) > 7  # and the text stays readable on both


def test_a_theme_switch_redraws_code_and_icons(qtbot, themes: None) -> None:  # type: ignore[no-untyped-def]
    apply_theme("light")
    reply = MessageWidget(chats.Message(2, 1, "assistant", REPLY, stats={"model": "SmolLM2-135M-Instruct.Q4_1.gguf"}))
    mine = MessageWidget(chats.Message(1, 1, "user", "Show me some code."))
    composer = Composer()
    for widget in (reply, mine, composer):
        qtbot.addWidget(widget)
        widget.show()
    assert (mine.role_label.text(), reply.role_label.text()) == ("You", "SmolLM2-135M-Instruct.Q4_1")
    light_html = reply.body_html()
    light_icon = composer.send_button.icon().pixmap(16, 16).toImage()
    apply_theme("dark")
    qtbot.waitUntil(lambda: reply.body_html() != light_html, timeout=2000)  # code highlighted for a dark background
    assert "print" in reply.body_html()
    assert composer.send_button.icon().pixmap(16, 16).toImage() != light_icon  # drawn in the dark palette's colours
