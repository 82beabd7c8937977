"""The one way the GUI shows text it did not write: plain text everywhere, and one Markdown view.

GGUF metadata, Hub names, file names, llama.cpp's error lines and a chat template's exception text
come from strangers. Qt guesses rich text from a leading tag (``Qt.mightBeRichText``), so a label,
message box or tooltip given such a string could render HTML and load images. Here:

- ``plain_label`` / ``make_plain`` / ``message`` set ``Qt.TextFormat.PlainText``;
- ``plain_tooltip`` escapes (a tooltip has no text-format setting);
- ``thumbnail`` is the one place the GUI decodes an image: a stored chat image (chat.images), by
  Qt's reader with an allocation limit and a scaled read, never a path or URL from message text;
- ``MarkdownView`` shows Markdown rendered by ``app.core.chat.markdown`` (raw HTML escaped, no
  images, http(s) links only), loads no resources at all, and opens a link only through
  ``open_link``: after a click, with the URL shown, and only for http(s).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSize, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QImage, QImageReader, QPixmap
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


IMAGE_ALLOCATION_MB = 256  # Qt refuses to decode an image that would need more


def thumbnail(path: Path, side: int) -> QPixmap | None:
    """A stored image scaled to fit ``side`` pixels (decoded at that size), or None when Qt cannot read it."""
    reader = QImageReader(str(path))
    reader.setAllocationLimit(IMAGE_ALLOCATION_MB)
    reader.setDecideFormatFromContent(True)
    size = reader.size()
    if not size.isValid() or size.isEmpty():
        return None
    scaled = size.scaled(QSize(side, side), Qt.AspectRatioMode.KeepAspectRatio)
    if scaled.width() < size.width():
        reader.setScaledSize(scaled)
    image = reader.read()
    return None if image.isNull() else QPixmap.fromImage(image)


def image_for_store(data: bytes, name: str) -> bytes:
    """An attached file or pasted image as bytes the engine reads: PNG, JPEG, GIF and BMP as they
    are (checked), anything else Qt decodes (WebP, TIFF ...) re-encoded as PNG. ImageError naming
    ``name`` and the cause for what is not an image or is too large."""
    from app.core.engine.images import ENGINE_TYPES, ImageError, inspect

    try:
        if inspect(data, name).kind in ENGINE_TYPES:
            return data
    except ImageError as exc:
        if "not an image of a type" not in str(exc):
            raise
    buffer = QBuffer()
    buffer.setData(QByteArray(data))
    reader = QImageReader(buffer)
    reader.setAllocationLimit(IMAGE_ALLOCATION_MB)
    image = reader.read()
    if image.isNull():
        raise ImageError(f"{name}: not an image QuantDesk can read ({reader.errorString()})")
    return png_bytes(image)


def png_bytes(image: QImage) -> bytes:
    out = QBuffer()
    out.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(out, "PNG")
    return bytes(out.data().data())


def rich_label(our_html: str, parent: QWidget | None = None) -> QLabel:
    """A label of QuantDesk's own markup (a bold heading): never give it a string from outside."""
    label = QLabel(our_html, parent)
    label.setTextFormat(Qt.TextFormat.RichText)
    return label
