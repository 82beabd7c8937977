"""Untrusted text on screen: the real widgets offscreen. Markdown from strangers loads nothing,
opens only http(s) links after the user saw the address, and never stalls the GUI thread;
every label of the real window shows plain text."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from PySide6.QtCore import QObject, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from app.core.chat import store as chats
from app.ui.chat.widgets import MessageWidget
from app.ui.safe_text import MarkdownView, card_html, plain_tooltip

HOSTILE_CARD = """# A card
![zero](/dev/zero) ![share](file://host/share/x.png) ![web](https://example.com/a.png)
<img src="/dev/zero"> <div style="background-image:url(/dev/zero)">raw</div>
[local](file:///etc/passwd) [js](javascript:alert(1)) [handler](ms-settings:privacy) [web](https://huggingface.co/x)
"""


class Opened(QObject):
    """Catches what QDesktopServices would open in the browser (Qt's own URL-handler hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url.toString())


@pytest.fixture
def opened() -> Iterator[Opened]:
    catcher = Opened()
    for scheme in ("http", "https", "file"):
        QDesktopServices.setUrlHandler(scheme, catcher, "open")
    yield catcher
    for scheme in ("http", "https", "file"):
        QDesktopServices.unsetUrlHandler(scheme)


def answer_next_box(button: QMessageBox.StandardButton, seen: list[str]) -> None:
    """Press ``button`` on the next message box, noting its text."""
    def press() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(10, press)
            return
        seen.append(box.text())
        box.button(button).click()

    QTimer.singleShot(10, press)


def test_a_hostile_model_card_loads_no_image_and_keeps_only_web_links(qtbot) -> None:  # type: ignore[no-untyped-def]
    view = MarkdownView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    view.set_markdown(HOSTILE_CARD)
    view.grab()  # paint it
    body = view.toHtml().split("<body", 1)[1]
    assert view.resource_requests == []  # Qt asked for no image, style sheet or file
    assert "<img" not in body and "url(" not in body.replace("background-image:url(/dev/zero)", "")
    assert "[image: zero]" in body and "&lt;img src=&quot;/dev/zero&quot;&gt;" in body  # raw HTML shown as text
    hrefs = [part.split('"', 1)[0] for part in body.split('href="')[1:]]
    assert hrefs == ["https://example.com/a.png", "https://huggingface.co/x"]  # web links only


def test_a_1_mb_card_is_shown_in_bounded_time(qtbot) -> None:  # type: ignore[no-untyped-def]
    view = MarkdownView()
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    card = "# Big\n\n" + ("A paragraph of a long card. " * 40 + "\n\n") * 900
    assert len(card) > 1_000_000
    html = card_html(card)  # the Hub page renders off the GUI thread; setHtml and paint are on it
    start = time.perf_counter()
    view.setHtml(html)
    view.grab()
    took = time.perf_counter() - start
    print(f"\n1 MB card: render and paint {took * 1000:.0f} ms")
    assert took < 1.0 and "more characters not shown" in view.toPlainText()


def test_a_link_opens_only_after_the_user_saw_it_and_only_for_the_web(qtbot, opened: Opened) -> None:  # type: ignore[no-untyped-def]
    view = MarkdownView()
    qtbot.addWidget(view)
    seen: list[str] = []
    answer_next_box(QMessageBox.StandardButton.Cancel, seen)
    view.anchorClicked.emit(QUrl("https://huggingface.co/x"))
    assert "https://huggingface.co/x" in seen[-1] and opened.urls == []
    answer_next_box(QMessageBox.StandardButton.Open, seen)
    view.anchorClicked.emit(QUrl("https://huggingface.co/x"))
    assert opened.urls == ["https://huggingface.co/x"]
    answer_next_box(QMessageBox.StandardButton.Ok, seen)
    view.anchorClicked.emit(QUrl("file:///etc/passwd"))
    assert "file:///etc/passwd" in seen[-1] and "not opened" in seen[-1]
    assert opened.urls == ["https://huggingface.co/x"]


def _slowest_update(widget: MessageWidget, steps: list[str]) -> float:
    slowest = 0.0
    for text in steps:
        start = time.perf_counter()
        widget.set_text(text)
        widget.grab()  # layout and paint, as the window would
        slowest = max(slowest, time.perf_counter() - start)
    return slowest


@pytest.mark.parametrize("kind", ["one 400 KB code block", "a 1 MB paragraph", "1 MB of images and links"])
def test_hostile_replies_never_stall_the_gui_thread(qtbot, kind: str) -> None:  # type: ignore[no-untyped-def]
    if kind == "one 400 KB code block":
        full = "```python\n" + "print('x' * 40)  # a line\n" * 16_000
    elif kind == "a 1 MB paragraph":
        full = "word " * 200_000
    else:
        full = "![a](/dev/zero) [b](file:///x) " * 32_000
    message = chats.Message(1, 1, "assistant", "", status=chats.COMPLETE)
    widget = MessageWidget(message)
    qtbot.addWidget(widget)
    widget.resize(900, 700)
    widget.show()
    steps = [full[: len(full) * k // 8] for k in range(1, 9)]  # a reply streaming in
    slowest = _slowest_update(widget, steps)
    print(f"\n{kind}: slowest update and paint {slowest * 1000:.1f} ms")
    assert slowest < 0.25, f"{kind}: {slowest * 1000:.0f} ms on the GUI thread"
    assert "<img" not in widget.body_html() and 'href="file' not in widget.body_html()
    if "code" in kind:
        assert widget.code_blocks[0] == full.split("\n", 1)[1].rstrip("\n")  # Copy copies all of it


def test_every_label_of_the_real_window_is_plain_text(qtbot) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import Qt

    from app.ui.app import create_window

    win = create_window()
    qtbot.addWidget(win)
    win.show()
    try:
        labels = win.findChildren(QLabel)
        assert labels
        loose = [f"{type(label.parent()).__name__}: {label.text()[:40]!r}" for label in labels
                 if label.textFormat() == Qt.TextFormat.AutoText and label.buddy() is None]  # form-row names are ours
        assert loose == [], "labels that guess rich text"
        rich = [label.text() for label in labels if label.textFormat() == Qt.TextFormat.RichText]
        assert all(text.startswith(("<b>", "<h2>")) or text == "" for text in rich), rich
    finally:
        win._quit_confirmed = True
        win.close()
        win.bridge.shutdown()
        win.store.close()
    assert plain_tooltip("<img src='/dev/zero'>") == "<p style='white-space:pre-wrap'>&lt;img src=&#x27;/dev/zero&#x27;&gt;</p>"
