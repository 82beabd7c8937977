"""The real chat window (pytest-qt, offscreen) on the real engine and the starter model."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from app.core.chat import store as chats
from app.core.engine import SamplingParams
from app.ui.app import create_window
from app.ui.chat.widgets import MessageWidget
from app.ui.main_window import MainWindow
from tests.conftest import LONG_PROMPT

WAIT_MS = 120_000
SHORT = SamplingParams(temperature=0.0, max_tokens=24, repeat_penalty=1.0)
LONG = SamplingParams(temperature=0.8, max_tokens=3000, seed=7)


def close_window(window: MainWindow) -> None:
    window.close()
    window.bridge.shutdown()
    window.store.close()


def window_with(qtbot, model: Path | None = None) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    """The real main window, shown, with ``model`` loaded (None: the one it opens first), closed after."""
    win = create_window()
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.bridge.model_loaded, timeout=WAIT_MS):
        if model is None:
            win.open_initial_model()
        else:
            win.bridge.load_model(str(model))
    yield win
    close_window(win)


@pytest.fixture
def window(qtbot, starter_model: Path) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    yield from window_with(qtbot)


def use_sampling(win: MainWindow, sampling: SamplingParams) -> None:
    page = win.chat
    conv = page.conversation or page.new_conversation()
    page.store.update_conversation(conv.id, sampling=sampling)
    page.open_conversation(conv.id)


def send(qtbot, win: MainWindow, text: str) -> None:  # type: ignore[no-untyped-def]
    win.chat.composer.input.setPlainText(text)
    qtbot.mouseClick(win.chat.composer.send_button, Qt.MouseButton.LeftButton)


def wait_reply(qtbot, win: MainWindow) -> None:  # type: ignore[no-untyped-def]
    qtbot.waitUntil(lambda: win.chat.stream_id is None and not win.bridge.busy, timeout=WAIT_MS)


def last(win: MainWindow, role: str) -> chats.Message:
    assert win.chat.conversation is not None
    return [m for m in win.chat.store.messages(win.chat.conversation.id) if m.role == role][-1]


def test_starter_model_opens_on_first_run(window: MainWindow) -> None:
    assert "starter model" in window.model_label.text()
    assert "CPU" in window.model_label.text()
    assert "model's own template" in window.chat.template_label.text()


def test_send_streams_the_reply_and_saves_it(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    use_sampling(window, SamplingParams(temperature=0.0, max_tokens=120, repeat_penalty=1.0))
    send(qtbot, window, "Explain what a CPU does.")
    # text shows up while the reply is still streaming
    qtbot.waitUntil(lambda: window.chat.stream_id is not None and len(window.chat.stream_text) > 0, timeout=WAIT_MS)
    assert not window.chat.composer.send_button.isEnabled() and window.chat.composer.stop_button.isEnabled()
    wait_reply(qtbot, window)
    reply = last(window, "assistant")
    assert reply.status == chats.COMPLETE and reply.content
    assert reply.stats["completion_tokens"] > 0
    widget = window.chat.messages.widget_for(reply.id)
    assert widget is not None and "tok/s" in widget.stats_label.text()
    assert window.chat.conversation is not None and window.chat.conversation.title == "Explain what a CPU does."
    assert window.chat.context_meter.value() >= reply.stats["prompt_tokens"]


def test_stop_keeps_the_partial_reply_marked(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    use_sampling(window, LONG)
    send(qtbot, window, LONG_PROMPT)
    qtbot.waitUntil(lambda: len(window.chat.stream_text) > 20, timeout=WAIT_MS)
    qtbot.mouseClick(window.chat.composer.stop_button, Qt.MouseButton.LeftButton)
    wait_reply(qtbot, window)
    reply = last(window, "assistant")
    assert reply.status == chats.STOPPED
    assert len(reply.content) > 20 and reply.stats["finish_reason"] == "cancelled"
    widget = window.chat.messages.widget_for(reply.id)
    assert widget is not None and widget.badge.text() == "stopped"


def test_regenerate_replaces_the_last_reply(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    use_sampling(window, SamplingParams(temperature=1.0, max_tokens=24, seed=-1))
    send(qtbot, window, "Name an animal.")
    wait_reply(qtbot, window)
    first = last(window, "assistant")
    widget = window.chat.messages.widget_for(first.id)
    assert widget is not None
    qtbot.mouseClick(widget.regenerate_button, Qt.MouseButton.LeftButton)
    wait_reply(qtbot, window)
    assert window.chat.conversation is not None
    messages = window.chat.store.messages(window.chat.conversation.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].id != first.id and messages[1].status == chats.COMPLETE and messages[1].content


def test_edit_a_message_and_resend(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    use_sampling(window, SHORT)
    send(qtbot, window, "What is the capital of Italy?")
    wait_reply(qtbot, window)
    user = last(window, "user")
    widget = window.chat.messages.widget_for(user.id)
    assert widget is not None
    qtbot.mouseClick(widget.edit_button, Qt.MouseButton.LeftButton)
    assert window.chat.composer.input.toPlainText() == "What is the capital of Italy?"
    assert window.chat.composer.edit_banner.isVisibleTo(window)
    send(qtbot, window, "What is the capital of Spain?")
    wait_reply(qtbot, window)
    assert window.chat.conversation is not None
    messages = window.chat.store.messages(window.chat.conversation.id)
    assert [(m.role, m.content) for m in messages][0] == ("user", "What is the capital of Spain?")
    assert len(messages) == 2 and messages[1].content


def test_conversation_survives_an_app_restart(qtbot, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    win = create_window()
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.bridge.model_loaded, timeout=WAIT_MS):
        win.open_initial_model()
    use_sampling(win, SHORT)
    send(qtbot, win, "Remember the word pineapple.")
    wait_reply(qtbot, win)
    reply_text = last(win, "assistant").content
    close_window(win)

    again = create_window()
    qtbot.addWidget(again)
    again.show()
    try:
        assert again.chat.conversation is not None
        assert again.chat.conversation.title == "Remember the word pineapple."
        bodies = [w.message.content for w in again.chat.messages.widgets]
        assert bodies == ["Remember the word pineapple.", reply_text]
        assert again.settings.last_model == str(starter_model)
    finally:
        close_window(again)


def test_engine_killed_mid_reply_keeps_window_and_text(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    use_sampling(window, LONG)
    send(qtbot, window, LONG_PROMPT)
    qtbot.waitUntil(lambda: len(window.chat.stream_text) > 20, timeout=WAIT_MS)
    pid = window.bridge.client.pid
    assert pid is not None
    with qtbot.waitSignal(window.bridge.reply_failed, timeout=WAIT_MS):
        os.kill(pid, signal.SIGKILL)
    wait_reply(qtbot, window)
    assert window.isVisible()
    cut = last(window, "assistant")
    assert cut.status == chats.INTERRUPTED and len(cut.content) > 20
    assert window.chat.notice.isVisibleTo(window) and "engine" in window.chat.notice.label.text()
    widget = window.chat.messages.widget_for(cut.id)
    assert widget is not None and "interrupted" in widget.badge.text()
    # the next message restarts the engine and gets an answer
    use_sampling(window, SHORT)
    send(qtbot, window, "Are you back?")
    wait_reply(qtbot, window)
    assert last(window, "assistant").status == chats.COMPLETE
    assert window.bridge.client.restarts == 1 and window.bridge.client.pid != pid


def test_bad_model_file_shows_a_dialog_and_keeps_the_model(qtbot, window: MainWindow, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with qtbot.waitSignal(window.bridge.load_failed, timeout=WAIT_MS):
        window.load_model(str(bad))
    assert window.error_box is not None and window.error_box.isVisible()
    assert "broken.gguf" in window.error_box.text()
    assert "starter model" in window.model_label.text() or "SmolLM2" in window.model_label.text()


def test_context_overflow_tells_the_user(qtbot, window: MainWindow, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS):
        window.bridge.load_model(str(starter_model), ctx=320)
    page = window.chat
    conv = page.new_conversation()
    page.store.update_conversation(conv.id, system_prompt="Be brief.", sampling=SamplingParams(temperature=0, max_tokens=16))
    for i in range(6):
        page.store.add_message(conv.id, "user", f"Question {i}: " + "tell me about the sea and its waves. " * 5)
        page.store.add_message(conv.id, "assistant", "The sea is big.")
    page.open_conversation(conv.id)
    send(qtbot, window, "Summarize.")
    wait_reply(qtbot, window)
    assert page.notice.isVisibleTo(window)
    assert "left out" in page.notice.label.text() and "system prompt is kept" in page.notice.label.text()
    assert last(window, "assistant").status == chats.COMPLETE


def test_conversation_list_new_rename_search_delete_undo(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    page = window.chat
    a = page.new_conversation()
    page.store.add_message(a.id, "user", "a question about volcanoes")
    b = page.new_conversation()
    page.rename_conversation(b.id, "Holiday plans")
    assert page.store.get_conversation(b.id).title == "Holiday plans"
    qtbot.keyClicks(page.conversations.search, "volcano")
    assert page.conversations.ids() == [a.id]
    page.conversations.search.clear()
    page.delete_conversation(b.id)
    assert b.id not in page.conversations.ids()
    assert page.notice.action.text() == "Undo"
    qtbot.mouseClick(page.notice.action, Qt.MouseButton.LeftButton)
    assert b.id in page.conversations.ids()


def test_sampling_settings_are_per_conversation(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    page = window.chat
    a = page.new_conversation()
    page.settings_panel.preset.setCurrentText("Precise")
    page.settings_panel.system.setPlainText("You are a pirate.")
    page.settings_panel.seed.setValue(99)
    saved = page.store.get_conversation(a.id)
    assert saved.system_prompt == "You are a pirate."
    assert saved.sampling.temperature == 0.2 and saved.sampling.seed == 99 and saved.preset == "Custom"
    b = page.new_conversation()
    assert page.settings_panel.system.toPlainText() == "" and page.settings_panel.preset.currentText() == "Balanced"
    page.open_conversation(a.id)
    assert page.settings_panel.system.toPlainText() == "You are a pirate." and page.settings_panel.seed.value() == 99
    assert b.id != a.id


def show_assistant_message(window: MainWindow, text: str) -> MessageWidget:
    page = window.chat
    conv = page.new_conversation()
    msg = page.store.add_message(conv.id, "assistant", text)
    page.open_conversation(conv.id)
    widget = page.messages.widget_for(msg.id)
    assert widget is not None
    return widget


def test_code_block_copy_button(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    widget = show_assistant_message(window, "Try this:\n\n```python\nprint('hi')\n```\n")
    assert 'href="copy:0"' in widget.body_html()
    widget.labels[-1].linkActivated.emit("copy:0")
    assert QGuiApplication.clipboard().text() == "print('hi')"


def test_streaming_renders_only_the_changed_tail(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    widget = show_assistant_message(window, "First paragraph.")
    first_label = widget.labels[0]
    widget.set_text("First paragraph.\n\n```sh\nls\n```\n\nThird, still stre")
    assert widget.labels[0] is first_label and first_label.text().count("First paragraph") == 1
    assert len(widget.labels) == 3 and widget.code_blocks == ["ls"]
    widget.set_text("First paragraph.\n\n```sh\nls\n```\n\nThird, still streaming ```py\nx\n```")
    assert widget.code_blocks == ["ls"]  # a fence mid-line is text, not code
    assert "Third, still streaming" in widget.body_html()


def test_unload_then_send_says_no_model(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(window.bridge.model_unloaded, timeout=WAIT_MS):
        window.unload_action.trigger()
    assert window.model_label.text() == "No model loaded"
    send(qtbot, window, "Anyone there?")
    assert "No model is loaded" in window.chat.notice.label.text()
    assert window.chat.composer.input.toPlainText() == "Anyone there?"  # the draft is kept


def test_load_dialog_memory_bars_follow_the_settings(qtbot, window: MainWindow, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    dialog = window.open_load_dialog(str(starter_model))
    qtbot.waitUntil(lambda: dialog.header is not None, timeout=WAIT_MS)
    assert dialog.auto.isChecked() and dialog.ctx.value() == 4096
    assert "CPU only" in dialog.reasons.text()
    auto_total = sum(dialog.cpu_bar.parts)
    dialog.auto.setChecked(False)
    dialog.ctx.setValue(8192)
    assert sum(dialog.cpu_bar.parts) > auto_total and dialog.ctx_slider.value() == 32
    assert not dialog.cpu_bar.over
    with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS) as loaded:
        qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Ok), Qt.MouseButton.LeftButton)
    assert loaded.args[0].n_ctx == 8192 and "context 8192" in window.model_label.text()


def test_load_dialog_offers_a_draft_model_from_the_library(qtbot, window: MainWindow, starter_model: Path,  # type: ignore[no-untyped-def]
                                                          tiny_f16: Path, tmp_path: Path) -> None:
    import shutil

    from app.core.library.catalog import Library

    lib = Library()
    draft = Path(shutil.copy(tiny_f16, tmp_path / "tiny-draft.gguf"))
    lib.register(draft)
    lib.close()
    dialog = window.open_load_dialog(str(starter_model))
    qtbot.waitUntil(lambda: dialog.header is not None, timeout=WAIT_MS)
    assert not dialog.use_draft.isHidden() and "tiny-draft.gguf" in dialog.use_draft.text()
    dialog.use_draft.setChecked(True)
    assert "draft model tiny-llama" in dialog.reasons.text() and "in RAM" in dialog.reasons.text()
    try:
        with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS) as loaded:
            qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Ok), Qt.MouseButton.LeftButton)
        assert loaded.args[0].draft_model == str(draft)
    finally:
        with qtbot.waitSignal(window.bridge.model_loaded, timeout=WAIT_MS):
            window.bridge.load_model(str(starter_model))  # the module's later tests: the starter alone


def test_load_dialog_refuses_an_over_budget_choice(qtbot, window: MainWindow, starter_model: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from app.core import hardware
    from app.ui.dialogs.load import LoadDialog

    small = replace(hardware.detect(), ram_available_bytes=600 * 2**20, gpus=())
    dialog = LoadDialog(str(starter_model), gpu_offload=False, hw=small, parent=window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.header is not None, timeout=WAIT_MS)
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    assert ok.isEnabled()
    dialog.auto.setChecked(False)
    dialog.ctx.setValue(8192)
    assert dialog.cpu_bar.over and not ok.isEnabled()
    assert "over budget" in dialog.reasons.text() and "over budget" in dialog.cpu_bar.text()


def test_load_dialog_names_a_bad_file(qtbot, window: MainWindow, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model")
    dialog = window.open_load_dialog(str(bad))
    qtbot.waitUntil(lambda: bool(dialog.error), timeout=WAIT_MS)
    assert "notes.gguf" in dialog.status.text() and "not a GGUF file" in dialog.status.text()
    assert not dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()


def test_hardware_page(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    window.hardware_action.trigger()  # the hardware is detected off the GUI thread
    qtbot.waitUntil(lambda: "RAM" in window.hardware_dialog.view.toPlainText(), timeout=WAIT_MS)
    text = window.hardware_dialog.view.toPlainText()
    assert "CPU" in text and "RAM" in text and "GPU" in text and "Engine" in text


def test_a_cpu_build_that_dies_of_sigill_is_replaced_and_the_window_says_so(qtbot, starter_model: Path,  # type: ignore[no-untyped-def]
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.engine import cpu_variants as cv

    usable = cv.usable()
    if len(usable) < 2:
        pytest.skip("needs a CPU build above the baseline")
    monkeypatch.setenv("QUANTDESK_SIMULATE_CRASH", f"SIGILL:{usable[0].name}:decode")
    win = create_window()
    qtbot.addWidget(win)
    win.show()
    try:
        with qtbot.waitSignal(win.bridge.model_loaded, timeout=WAIT_MS):
            win.open_initial_model()
        use_sampling(win, SHORT)
        with qtbot.waitSignal(win.bridge.engine_notice, timeout=WAIT_MS) as notice:
            send(qtbot, win, "Say hello.")
        wait_reply(qtbot, win)
        assert "illegal instruction" in notice.args[0] and usable[0].name in notice.args[0]
        assert win.chat.notice.isVisible() and "illegal instruction" in win.chat.notice.label.text()
        reply = last(win, "assistant")
        assert reply.content.strip() and reply.status == chats.COMPLETE
    finally:
        close_window(win)
