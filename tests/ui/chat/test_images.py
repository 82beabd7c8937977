"""Images in the chat window (pytest-qt, offscreen, the real engine with the tiny vision pair): an
image pasted and a file dropped on the input become attachments, the message shows their
thumbnails from the image store and the model answers it; the images go with their conversation;
a model that cannot see says why instead of taking the image."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage
from PySide6.QtWidgets import QApplication

from app.core.engine import SamplingParams
from app.ui.app import create_window
from app.ui.main_window import MainWindow
from tests.support.tiny_vision import png_bytes, tiny_vision_pair
from tests.ui.chat.test_chat_window import WAIT_MS, close_window, last, use_sampling, wait_reply, window_with

GREEDY = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=6)


@pytest.fixture
def seeing_window(qtbot, tmp_path: Path) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    pair = tiny_vision_pair()
    folder = tmp_path / "vision"
    folder.mkdir()
    model = Path(shutil.copy(pair.model, folder / pair.model.name))
    shutil.copy(pair.projector, folder / pair.projector.name)
    yield from window_with(qtbot, model)


def paste_image(win: MainWindow, image: QImage) -> None:
    mime = QMimeData()
    mime.setImageData(image)
    QApplication.clipboard().setMimeData(mime)
    win.chat.composer.input.setFocus()
    win.chat.composer.input.paste()


def drop_files(win: MainWindow, *paths: Path) -> None:
    """A real drop event on the input's viewport, as a file manager sends it."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    viewport = win.chat.composer.input.viewport()
    for kind in (QDropEvent.Type.DragEnter, QDropEvent.Type.DragMove):
        from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent

        cls = QDragEnterEvent if kind == QDropEvent.Type.DragEnter else QDragMoveEvent
        QApplication.sendEvent(viewport, cls(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                                             Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, drop)


def test_paste_and_drop_attach_images_the_model_answers_and_they_go_with_the_conversation(  # type: ignore[no-untyped-def]
        qtbot, seeing_window: MainWindow, tmp_path: Path) -> None:
    win = seeing_window
    composer = win.chat.composer
    assert composer.can_see and composer.attach_button.isEnabled()
    paste_image(win, QImage.fromData(png_bytes(rgb=(10, 200, 10))))
    picture = tmp_path / "photo.png"
    picture.write_bytes(png_bytes(rgb=(10, 10, 200)))
    drop_files(win, picture)
    assert len(composer.attachments.names) == 2
    assert composer.input.toPlainText() == ""  # neither went into the text
    use_sampling(win, GREEDY)
    composer.input.setPlainText("What colours are these?")
    composer.send_button.click()
    wait_reply(qtbot, win)
    user, reply = last(win, "user"), last(win, "assistant")
    assert len(user.images) == 2 and not composer.attachments.names
    assert reply.status == "complete" and reply.stats.get("image_tokens", 0) > 0
    stored = [win.chat.store.images.path(n) for n in user.images]
    assert all(p.is_file() and p.parent.parent == win.chat.store.path.parent / "images" for p in stored)
    widget = win.chat.messages.widget_for(user.id)
    assert widget is not None and widget.image_row is not None
    assert [label.pixmap().isNull() for label in widget.image_row.labels] == [False, False]

    conv = win.chat.conversation
    assert conv is not None
    win.chat.store.delete(conv.id)
    win.chat.store.purge_deleted()
    assert not any(p.exists() for p in stored)


def test_a_model_without_a_projector_says_why_it_cannot_take_an_image(qtbot, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    win = create_window()
    qtbot.addWidget(win)
    win.show()
    try:
        with qtbot.waitSignal(win.bridge.model_loaded, timeout=WAIT_MS):
            win.bridge.load_model(str(starter_model))
        composer = win.chat.composer
        assert not composer.attach_button.isEnabled()
        assert "cannot see images" in composer.attach_button.toolTip()
        paste_image(win, QImage.fromData(png_bytes()))
        assert composer.attachments.names == []
        qtbot.waitUntil(lambda: "cannot see images" in win.chat.notice.label.text(), timeout=2000)
    finally:
        close_window(win)


def test_a_file_that_is_not_an_image_is_refused_by_name(qtbot, seeing_window: MainWindow, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are my notes, not a picture")
    drop_files(seeing_window, bad)
    assert seeing_window.chat.composer.attachments.names == []
    qtbot.waitUntil(lambda: "notes.png" in seeing_window.chat.notice.label.text(), timeout=2000)
