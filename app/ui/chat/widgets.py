"""The message list and the composer of the chat page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QMimeData, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QKeyEvent, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.core.chat import store as chats
from app.core.chat.images import ImageStore
from app.core.chat.markdown import render_markdown, split_blocks
from app.ui.icons import set_icon
from app.ui.safe_text import image_for_store, open_link, plain_label, plain_tooltip, png_bytes, thumbnail

STATUS_BADGES = {
    chats.STOPPED: "stopped",
    chats.INTERRUPTED: "interrupted: the engine stopped mid-reply",
    chats.FAILED: "failed",
    chats.STREAMING: "…",
}


def format_stats(stats: dict[str, Any]) -> str:
    if not stats:
        return ""
    parts = [
        f"{stats.get('tokens_per_s', 0):.1f} tok/s",
        f"first token {stats.get('ttft_s', 0):.2f} s",
        f"{stats.get('completion_tokens', 0)} tokens",
        f"prompt {stats.get('prompt_tokens', 0)} ({stats.get('cached_tokens', 0)} cached"
        + (f", {stats['image_tokens']} of images)" if stats.get("image_tokens") else ")"),
    ]
    if stats.get("drafted_tokens"):
        parts.append(f"drafts {stats.get('accepted_tokens', 0)}/{stats['drafted_tokens']} accepted")
    if stats.get("finish_reason") == "length":
        parts.append("max tokens reached")
    elif stats.get("finish_reason") == "context":
        parts.append("context full")
    return " · ".join(parts)


def is_dark() -> bool:
    """Whether the app's palette is dark (the theme chosen in Settings, or the desktop's)."""
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved a fraction ``t`` towards ``b``: tints that follow the palette, light or dark."""
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


def bubble_color(palette: QPalette, role: str) -> QColor:
    """A message's background: the user's tinted with the highlight colour, the model's a shade off the base."""
    base = palette.color(QPalette.ColorRole.Base)
    if role == "user":
        return mix(base, palette.color(QPalette.ColorRole.Highlight), 0.13)
    return mix(base, palette.color(QPalette.ColorRole.Text), 0.035)


class BodyLabel(QLabel):
    """A chunk of a rendered reply. A word-wrapped rich-text QLabel lays its document out again for
    every size question the layout asks (the minimum size at width 0 alone costs more than a paint
    for a long table); this one answers the minimum with one line and the preferred size from the
    height at its width, each laid out once per text and width. The text is set by the renderer
    only (``render_markdown``: escaped, no images, links checked on click)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._heights: dict[int, int] = {}

    def setText(self, text: str) -> None:  # noqa: N802 (Qt name)
        self._heights.clear()
        super().setText(text)

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt name)
        if width not in self._heights:
            self._heights[width] = super().heightForWidth(width)
        return self._heights[width]

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        return QSize(10, self.fontMetrics().height())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt name)
        width = self.width() if self.width() > 0 else 600
        return QSize(width, self.heightForWidth(width))


class ThoughtSection(QWidget):
    """A reply's reasoning above its answer: "Thinking…" and open while it streams, collapsed to
    "Thought for N s" once the answer starts (a click opens it again). Plain text: the reasoning
    is the model's, untrusted, and not rendered."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setAutoRaise(True)
        self.toggle.toggled.connect(self._set_open)
        self.text = plain_label()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setContentsMargins(14, 0, 0, 0)
        self.text.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # quieter than the answer, in either theme
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.text)
        self._answered = False  # the answer has started: collapse once, then leave it to the user
        self._began = 0.0  # when the reasoning began to stream (monotonic), for the label until the stats come
        self._took = 0.0
        self._set_open(False)
        self.hide()

    @property
    def is_open(self) -> bool:
        return self.toggle.isChecked()

    def _set_open(self, on: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.text.setVisible(on)
        if self.toggle.isChecked() != on:
            self.toggle.setChecked(on)

    def show_for(self, m: chats.Message) -> None:
        reasoning = m.reasoning.strip()
        self.setVisible(bool(reasoning))
        if not reasoning:
            return
        if self.text.text() != reasoning:
            self.text.setText(reasoning)
        thinking = m.status == chats.STREAMING and not m.content
        if thinking:
            self._began = self._began or time.monotonic()
            self.toggle.setText("Thinking…")
            self._set_open(True)
            return
        seconds = m.stats.get("thought_s")
        if seconds is None and self._began:  # still streaming the answer: the time seen here
            self._took = self._took or time.monotonic() - self._began
            seconds = self._took
        self.toggle.setText(f"Thought for {max(1, round(seconds))} s" if isinstance(seconds, (int, float)) else "Thoughts")
        if not self._answered:
            self._answered = True
            self._set_open(False)


class MessageWidget(QFrame):
    """One message: a header (author, status badge, actions), the body labels the reply streams
    into, and the reply's stats; drawn as a rounded bubble in palette colours."""

    copy_requested = Signal(str)
    edit_requested = Signal(int)
    regenerate_requested = Signal(int)

    def __init__(self, message: chats.Message, parent: QWidget | None = None, *, author: str | None = None,
                 images: ImageStore | None = None) -> None:
        super().__init__(parent)
        self.message = message
        self.author = author  # the model's name for a reply whose stats do not name it (an older or cut reply)
        self.code_blocks: list[str] = []
        self._rendered_text: str | None = None
        self._dark = is_dark()  # the palette the body was rendered for
        self._chunks: list[tuple[str, int]] = []  # (markdown chunk, index of its first code block)
        self._chunk_blocks: list[list[str]] = []
        self.labels: list[QLabel] = []
        self.setObjectName("message")
        self.setProperty("role", message.role)
        self.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 8, 14, 10)
        layout.setSpacing(4)
        header = QHBoxLayout()
        header.setSpacing(6)
        self.role_label = plain_label()  # a model's name comes from a file: plain text, bold by font
        bold = self.role_label.font()
        bold.setBold(True)
        self.role_label.setFont(bold)
        self.badge = plain_label()
        self.badge.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        header.addWidget(self.role_label)
        header.addWidget(self.badge)
        header.addStretch(1)
        self.copy_button = self._action("Copy", "copy", "Copy the message")
        self.copy_button.clicked.connect(lambda: self.copy_requested.emit(self.message.content))
        header.addWidget(self.copy_button)
        if message.role == "user":
            self.edit_button = self._action("Edit", "edit", "Edit and resend (the messages after it are replaced)")
            self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.message.id))
            header.addWidget(self.edit_button)
        else:
            self.regenerate_button = self._action("Regenerate", "regenerate", "Answer again")
            self.regenerate_button.clicked.connect(lambda: self.regenerate_requested.emit(self.message.id))
            header.addWidget(self.regenerate_button)
        layout.addLayout(header)
        self.thought = ThoughtSection()
        layout.addWidget(self.thought)
        self.image_row = ImageRow(images, message.images) if images is not None and message.images else None
        if self.image_row is not None:
            layout.addWidget(self.image_row)
        self.body = QVBoxLayout()
        self.body.setSpacing(2)
        layout.addLayout(self.body)
        self.stats_label = plain_label()
        self.stats_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        small = self.stats_label.font()
        small.setPointSizeF(max(small.pointSizeF() - 1.5, 7.0))
        self.stats_label.setFont(small)
        layout.addWidget(self.stats_label)
        self.refresh()

    def _action(self, text: str, icon_name: str, tip: str) -> QPushButton:
        button = QPushButton(text)
        set_icon(button, icon_name)
        button.setFlat(True)
        button.setToolTip(tip)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        return button

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and is_dark() != self._dark:
            self._rendered_text = None
            self.refresh()

    def author_text(self) -> str:
        if self.message.role == "user":
            return "You"
        model = self.message.stats.get("model") or self.author
        return Path(str(model)).stem if model else "Assistant"

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(bubble_color(self.palette(), self.message.role))
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 10, 10)
        painter.end()
        super().paintEvent(event)

    def set_text(self, text: str, reasoning: str | None = None) -> None:
        self.message.content = text
        if reasoning is not None:
            self.message.reasoning = reasoning
        self.refresh()

    def body_html(self) -> str:
        return "".join(label.text() for label in self.labels)

    def _label(self, index: int) -> QLabel:
        while len(self.labels) <= index:
            label = BodyLabel()
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
            label.setOpenExternalLinks(False)
            label.linkActivated.connect(self.activate_link)
            label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
            self.body.addWidget(label)
            self.labels.append(label)
        return self.labels[index]

    def _render_body(self, text: str) -> None:
        """Render only the chunks that changed: while streaming, that is the last one."""
        dark = is_dark()
        if dark != self._dark:  # a theme switch: code blocks are highlighted for the other background
            self._dark, self._chunks, self._chunk_blocks = dark, [], []
        chunks = split_blocks(text)
        first = 0
        for i, chunk in enumerate(chunks):
            key = (chunk, first)
            if i >= len(self._chunks) or self._chunks[i] != key:
                rendered = render_markdown(chunk, dark=dark, first_index=first)
                self._label(i).setText(rendered.html or "<i>…</i>")
                self._chunks[i:i + 1] = [key]
                self._chunk_blocks[i:i + 1] = [rendered.code_blocks]
            first += len(self._chunk_blocks[i])
        for label in self.labels[len(chunks):]:
            label.setParent(None)
            label.deleteLater()
        del self.labels[len(chunks):], self._chunks[len(chunks):], self._chunk_blocks[len(chunks):]
        self.code_blocks = [code for blocks in self._chunk_blocks for code in blocks]

    def refresh(self) -> None:
        m = self.message
        self.thought.show_for(m)
        if m.content != self._rendered_text:
            self._render_body(m.content)
            self._rendered_text = m.content
        self.role_label.setText(self.author_text())
        self.badge.setText(STATUS_BADGES.get(m.status, ""))
        self.stats_label.setText(format_stats(m.stats))
        self.stats_label.setVisible(bool(m.stats))

    def activate_link(self, link: str) -> None:
        if link.startswith("copy:"):
            index = int(link.split(":", 1)[1])
            if 0 <= index < len(self.code_blocks):
                self.copy_requested.emit(self.code_blocks[index])
        else:  # a link in a reply: http(s) only, after the user saw the address
            open_link(self, link)


class EmptyState(QWidget):
    """What an empty conversation shows: which model is loaded, what to type, and where more models are."""

    discover_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = plain_label("Start a conversation")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.title.setFont(font)
        self.model_line = plain_label()
        self.hint = plain_label("Type a message below and press Enter to send it; Shift+Enter starts a new line.")
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.discover_button = QPushButton("Find more models on Discover")
        set_icon(self.discover_button, "discover")
        self.discover_button.clicked.connect(self.discover_requested.emit)
        column = QVBoxLayout(self)
        column.addStretch(1)
        for widget in (self.title, self.model_line, self.hint):
            widget.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            widget.setWordWrap(True)
            column.addWidget(widget)
        column.addSpacing(8)
        column.addWidget(self.discover_button, 0, Qt.AlignmentFlag.AlignHCenter)
        column.addStretch(2)
        self.set_model(None)

    def set_model(self, name: str | None, *, starter: bool = False) -> None:
        """``name``: the loaded model's, None while none is (``starter``: it is the bundled one)."""
        if name is None:
            text = "No model is loaded yet: pick one in the list above, in My models, or with File → Open model…"
        elif starter:
            text = (f"The starter model, {name}, is loaded: a small model that answers quickly, "
                    "made for trying QuantDesk out. Larger models answer much better.")
        else:
            text = f"{name} is loaded and ready."
        self.model_line.setText(text)

    def set_loading(self, file_name: str) -> None:
        self.model_line.setText(f"Loading {file_name}…")


class MessageList(QScrollArea):
    """The conversation's messages; follows the bottom while the user has not scrolled away."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.container = QWidget()
        self.container.setBackgroundRole(QPalette.ColorRole.Base)
        self.container.setAutoFillBackground(True)
        self.column = QVBoxLayout(self.container)
        self.column.setContentsMargins(16, 12, 16, 12)
        self.column.setSpacing(12)
        self.column.addStretch(1)
        self.setWidget(self.container)
        self.widgets: list[MessageWidget] = []
        self._follow = True
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)

    def clear(self) -> None:
        for w in self.widgets:
            w.setParent(None)
            w.deleteLater()
        self.widgets = []
        self._follow = True

    def add(self, widget: MessageWidget) -> None:
        self.column.insertWidget(self.column.count() - 1, widget)
        self.widgets.append(widget)

    def widget_for(self, message_id: int) -> MessageWidget | None:
        return next((w for w in self.widgets if w.message.id == message_id), None)

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    def _on_range_changed(self, _min: int, maximum: int) -> None:
        if self._follow:
            QTimer.singleShot(0, lambda: self.verticalScrollBar().setValue(self.verticalScrollBar().maximum()))


THUMB_SIDE = 160  # a message's image thumbnails
CHIP_SIDE = 56  # an attachment's, in the composer
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.gif *.bmp *.webp *.tif *.tiff)"


class ImageRow(QWidget):
    """A message's images: thumbnails of the stored files (safe_text.thumbnail)."""

    def __init__(self, store: ImageStore, names: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 2, 0, 2)
        self.labels: list[QLabel] = []
        for name in names:
            label = plain_label()
            pixmap = thumbnail(store.path(name), THUMB_SIDE)
            if pixmap is None:
                label.setText("[image missing]")
            else:
                label.setPixmap(pixmap)
            label.setToolTip(plain_tooltip(f"Image {name[:12]}… (in the conversation's image store)"))
            row.addWidget(label)
            self.labels.append(label)
        row.addStretch(1)


class Attachments(QWidget):
    """The images attached to the message being written, each with a remove button."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.addStretch(1)
        self.names: list[str] = []
        self.chips: list[QWidget] = []
        self.hide()

    def add(self, name: str, path: Path, label: str) -> None:
        if name in self.names:
            return
        chip = QFrame()
        chip.setFrameShape(QFrame.Shape.StyledPanel)
        inner = QHBoxLayout(chip)
        inner.setContentsMargins(2, 2, 2, 2)
        picture = plain_label()
        pixmap = thumbnail(path, CHIP_SIDE)
        if pixmap is not None:
            picture.setPixmap(pixmap)
        picture.setToolTip(plain_tooltip(label))
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip(plain_tooltip(f"Remove {label}"))
        remove.setAccessibleName(f"Remove {label}")
        remove.clicked.connect(lambda _=False, n=name: self.remove(n))
        inner.addWidget(picture)
        inner.addWidget(remove)
        self.row.insertWidget(len(self.chips), chip)
        self.names.append(name)
        self.chips.append(chip)
        self.show()
        self.changed.emit()

    def remove(self, name: str) -> None:
        i = self.names.index(name)
        chip = self.chips.pop(i)
        del self.names[i]
        chip.setParent(None)
        chip.deleteLater()
        self.setVisible(bool(self.names))
        self.changed.emit()

    def take(self) -> list[str]:
        names = list(self.names)
        for name in names:
            self.remove(name)
        return names


class Composer(QWidget):
    """Message input with Send and Stop. Enter sends; Shift+Enter starts a new line. Images are
    attached by the Image button, by pasting and by dropping files or pictures on the input, when
    the loaded model sees images; otherwise the reason is shown instead."""

    send_requested = Signal(str)
    stop_requested = Signal()
    edit_cancelled = Signal()
    attach_failed = Signal(str)  # why an image was not attached (shown as the page's notice)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.images: ImageStore | None = None  # where attached images are stored (the chat store's)
        self.can_see = False
        self.cannot_see = "No model is loaded."
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.edit_banner = QWidget()
        banner = QHBoxLayout(self.edit_banner)
        banner.setContentsMargins(0, 0, 0, 0)
        self.edit_label = plain_label("Editing a message: Send replaces it and every message after it.")
        cancel = QPushButton("Cancel edit")
        cancel.clicked.connect(self.edit_cancelled.emit)
        banner.addWidget(self.edit_label, 1)
        banner.addWidget(cancel)
        self.edit_banner.hide()
        layout.addWidget(self.edit_banner)
        self.attachments = Attachments()
        layout.addWidget(self.attachments)
        row = QHBoxLayout()
        self.input = _Input(self)
        self.input.files_dropped.connect(self.add_files)
        self.input.image_pasted.connect(lambda image: self.add_image(png_bytes(image), "the pasted image"))
        self.input.setPlaceholderText("Message the model (Enter to send, Shift+Enter for a new line)")
        self.input.setFixedHeight(80)
        self.input.submitted.connect(self._submit)
        self.send_button = QPushButton("Send")
        set_icon(self.send_button, "send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._submit)
        self.stop_button = QPushButton("Stop")
        set_icon(self.stop_button, "stop")
        self.stop_button.clicked.connect(self.stop_requested.emit)
        self.stop_button.setEnabled(False)
        self.attach_button = QPushButton("Image")
        set_icon(self.attach_button, "attach")
        self.attach_button.clicked.connect(self.choose_images)
        self.set_vision(False, self.cannot_see)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.attach_button)
        row.addWidget(self.input, 1)
        row.addLayout(buttons)
        layout.addLayout(row)

    def set_vision(self, can_see: bool, why: str = "") -> None:
        """Whether the loaded model takes images; ``why`` it does not, for the tooltip and notices."""
        self.can_see, self.cannot_see = can_see, why
        self.attach_button.setEnabled(can_see)
        self.attach_button.setToolTip(plain_tooltip("Attach images (or paste or drop them on the input)" if can_see else why))

    def choose_images(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Attach images", "", IMAGE_FILTER)
        self.add_files(paths)

    def add_files(self, paths: list[str]) -> None:
        from app.core.engine.images import MAX_BYTES

        for path in paths:
            name = Path(path).name
            try:
                with open(path, "rb") as fh:
                    data = fh.read(MAX_BYTES + 1)
            except OSError as exc:
                self.attach_failed.emit(f"{path}: cannot read it ({exc.strerror})")
                continue
            self.add_image(data, name)

    def add_image(self, data: bytes, label: str) -> bool:
        """Check, convert where needed and store ``data``, then show it as an attachment."""
        from app.core.engine.images import ImageError

        if not self.can_see:
            self.attach_failed.emit(f"{label} was not attached: {self.cannot_see}")
            return False
        if self.images is None:
            return False
        try:
            name = self.images.put(image_for_store(data, label), label)
        except (ImageError, OSError) as exc:
            self.attach_failed.emit(str(exc))
            return False
        self.attachments.add(name, self.images.path(name), label)
        return True

    def _submit(self) -> None:
        text = self.input.toPlainText().strip()
        if (text or self.attachments.names) and self.send_button.isEnabled():
            self.send_requested.emit(text)

    def set_generating(self, generating: bool) -> None:
        self.send_button.setEnabled(not generating)
        self.stop_button.setEnabled(generating)


class _Input(QPlainTextEdit):
    """The message input: Enter submits; pasted or dropped images and image files go to the
    composer instead of into the text."""

    submitted = Signal()
    files_dropped = Signal(list)  # local file paths
    image_pasted = Signal(QImage)

    @staticmethod
    def _files(source: QMimeData) -> list[str]:
        return [u.toLocalFile() for u in source.urls() if u.isLocalFile()] if source.hasUrls() else []

    def canInsertFromMimeData(self, source: QMimeData) -> bool:  # noqa: N802 (Qt name)
        return bool(self._files(source)) or source.hasImage() or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:  # noqa: N802 (Qt name)
        files = self._files(source)
        if files:
            self.files_dropped.emit(files)
        elif source.hasImage():
            image = source.imageData()
            if isinstance(image, QImage) and not image.isNull():
                self.image_pasted.emit(image)
        else:
            super().insertFromMimeData(source)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt name)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)
