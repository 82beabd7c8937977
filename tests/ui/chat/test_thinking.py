"""Reasoning in the chat window (pytest-qt, offscreen, real engine): the thinking section streams
open, collapses when the answer starts, stays apart from the answer (copy, storage), and the
per-model thinking options reach the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from app.core import settings as app_settings
from app.core.chat import store as chats
from app.core.engine import SamplingParams
from app.ui.chat.widgets import ThoughtSection
from app.ui.main_window import MainWindow
from tests.core.engine.test_reasoning import OPENS_WITH_SWITCH
from tests.core.engine.test_template_limits import with_template
from tests.ui.chat.test_chat_window import last, send, use_sampling, wait_reply, window_with

GREEDY = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, seed=0, max_tokens=60)
STORY = "Write a long story about a dragon who learns to bake bread."


@pytest.fixture
def thinker(starter_model: Path, tmp_path: Path) -> Path:
    return with_template(starter_model, tmp_path / "thinker.gguf", OPENS_WITH_SWITCH)


@pytest.fixture
def window(qtbot, thinker: Path) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    yield from window_with(qtbot, thinker)


def message(status: str, content: str, reasoning: str, stats: dict | None = None) -> chats.Message:
    return chats.Message(id=1, conversation_id=1, role="assistant", content=content, status=status,
                         stats=stats or {}, reasoning=reasoning)


def test_the_section_streams_open_then_collapses_when_the_answer_starts(qtbot) -> None:  # type: ignore[no-untyped-def]
    section = ThoughtSection()
    qtbot.addWidget(section)
    section.show_for(message(chats.STREAMING, "", "Let me think"))
    assert section.isVisibleTo(None) or not section.isHidden()
    assert section.is_open and section.toggle.text() == "Thinking…" and section.text.text() == "Let me think"
    section.show_for(message(chats.STREAMING, "The answer", "Let me think about it"))
    assert not section.is_open
    section.toggle.click()  # the user opens it: it stays open
    section.show_for(message(chats.COMPLETE, "The answer is 4.", "Let me think about it", {"thought_s": 2.4}))
    assert section.is_open and section.toggle.text() == "Thought for 2 s"
    section.show_for(message(chats.COMPLETE, "No thoughts here", ""))
    assert section.isHidden()


def test_a_reasoning_reply_in_the_window(qtbot, window: MainWindow, thinker: Path) -> None:  # type: ignore[no-untyped-def]
    assert window.chat.settings_panel.thinking.isVisibleTo(window)  # the model reasons: its options show
    app_settings.update(thinking={thinker.name: {"budget": 8}})
    use_sampling(window, GREEDY)
    send(qtbot, window, STORY)
    wait_reply(qtbot, window)
    reply = last(window, "assistant")
    assert reply.reasoning and reply.content and reply.stats["reasoning_tokens"] <= 9
    assert "<think>" not in reply.content + reply.reasoning
    widget = window.chat.messages.widget_for(reply.id)
    assert widget is not None
    assert widget.thought.isVisibleTo(window) and not widget.thought.is_open
    assert widget.thought.toggle.text().startswith("Thought for")
    with qtbot.waitSignal(widget.copy_requested, timeout=2000) as copied:
        widget.copy_button.click()
    assert copied.args == [reply.content]  # copy copies the answer only
    # the title comes from the user's message, never the reasoning; the next prompt drops it (this template's rule)
    assert window.chat.conversation is not None and window.chat.conversation.title.startswith("Write a long story")


def test_thinking_off_in_the_panel_reaches_the_engine(qtbot, window: MainWindow, thinker: Path) -> None:  # type: ignore[no-untyped-def]
    panel = window.chat.settings_panel.thinking
    panel.enabled.setChecked(False)
    assert app_settings.thinking_for(thinker)["enabled"] is False
    use_sampling(window, GREEDY)
    send(qtbot, window, "What is 2+2?")
    wait_reply(qtbot, window)
    reply = last(window, "assistant")
    assert reply.reasoning == "" and reply.content
