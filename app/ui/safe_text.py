"""The one way the GUI shows text it did not write: plain text everywhere, and one Markdown view.

GGUF metadata, Hub names, file names, llama.cpp's error lines and a chat template's exception text
come from strangers. Qt guesses rich text from a leading tag (``Qt.mightBeRichText``), so a label,
message box or tooltip given such a string could render HTML and load images. Here:

- ``plain_label`` / ``make_plain`` / ``message`` set ``Qt.TextFormat.PlainText``;
- ``plain_tooltip`` escapes (a tooltip has no text-format setting);
- ``MarkdownView`` shows Markdown rendered by ``app.core.chat.markdown`` (raw HTML escaped, no
  images, http(s) links only), loads no resources at all, and opens a link only through
  ``open_link``: after a click, with the URL shown, and only for http(s).
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QLabel, QMessageBox, QTextBrowser, QWidget

from app.core.chat.markdown import MAX_CARD, MAX_CARD_LINES, render_markdown, safe_link


def make_plain(label: QLabel) -> QLabel:
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def plain_label(text: str = "", parent: QWidget | None = None) -> QLabel:
    return make_plain(QLabel(text, parent))


def plain_tooltip(text: str) -> str:
    """A tooltip string that shows ``text`` literally (escaped, line breaks kept)."""
    return f"<p style='white-space:pre-wrap'>{html.escape(text)}</p>" if text else ""


def message(parent: QWidget | None, icon: QMessageBox.Icon, title: str, text: str,
            buttons: QMessageBox.StandardButton = QMessageBox.StandardButton.Ok,
            default: QMessageBox.StandardButton | None = None) -> QMessageBox.StandardButton:
    """A modal message box whose text is plain; returns the button pressed."""
    box = QMessageBox(icon, title, text, buttons, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    if default is not None:
        box.setDefaultButton(default)
    return QMessageBox.StandardButton(box.exec())


def open_link(parent: QWidget | None, url: str) -> bool:
    """Open ``url`` in the browser after the user saw it and said yes; only http(s) links."""
    if not safe_link(url):
        message(parent, QMessageBox.Icon.Warning, "Link not opened",
                f"QuantDesk opens only http and https links; this one was not opened:\n\n{url}")
        return False
    answer = message(parent, QMessageBox.Icon.Question, "Open link?",
                     f"Open this address in your web browser?\n\n{url}",
                     QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel,
                     QMessageBox.StandardButton.Cancel)
    if answer != QMessageBox.StandardButton.Open:
        return False
    return QDesktopServices.openUrl(QUrl(url))


def card_html(text: str) -> str:
    """A model card's HTML through the safe renderer (Qt-free work: run it off the GUI thread)."""
    return render_markdown(text, max_markdown=MAX_CARD, max_lines=MAX_CARD_LINES).html


class MarkdownView(QTextBrowser):
    """Untrusted Markdown (model cards): the safe renderer's HTML, no resources, links on confirm."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(lambda url: open_link(self, url.toString()))
        self.resource_requests: list[str] = []  # what the document asked for (never loaded)

    def set_markdown(self, text: str) -> None:
        """Render and show ``text`` (callers with long texts render off the GUI thread with
        ``card_html`` and call ``setHtml``)."""
        self.setHtml(card_html(text))

    def loadResource(self, kind: int, url: QUrl) -> Any:  # noqa: N802 (Qt's name)
        self.resource_requests.append(url.toString())
        return None  # no images, style sheets or files, from anywhere


def rich_label(our_html: str, parent: QWidget | None = None) -> QLabel:
    """A label of QuantDesk's own markup (a bold heading): never give it a string from outside."""
    label = QLabel(our_html, parent)
    label.setTextFormat(Qt.TextFormat.RichText)
    return label
