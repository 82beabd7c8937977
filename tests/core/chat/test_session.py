"""ChatSession, the conversation rules the GUI and the CLI share, against the real engine: the
first message titles the conversation, replies are saved with their stats, regenerate and edit
replace the tail, a stopped reply keeps what came."""

from __future__ import annotations

import threading
from pathlib import Path

from app.core.chat.session import TITLE_CHARS, ChatSession, title_for
from app.core.chat.store import COMPLETE, STOPPED, ChatStore
from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, seed=1)


def test_titles_are_the_first_message_on_one_line() -> None:
    assert title_for("  Hello\n  there  ") == "Hello there"
    assert title_for("x" * 100) == "x" * TITLE_CHARS and title_for("   ") == "New chat"


def test_send_regenerate_edit_are_saved(engine: EngineClient, tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.sqlite3")
    session = ChatSession(store, engine, system_prompt="You are terse.", sampling=GREEDY)
    tokens: list[str] = []
    reply = session.send("What is 2 + 2?", on_token=tokens.append)
    conv = session.conversation
    assert conv is not None and conv.title == "What is 2 + 2?" and conv.system_prompt == "You are terse."
    assert reply.status == COMPLETE and reply.content == "".join(tokens) and reply.stats["completion_tokens"] > 0
    again = session.regenerate(reply.id)
    assert [m.role for m in store.messages(conv.id)] == ["user", "assistant"] and again.content == reply.content  # greedy
    user = store.messages(conv.id)[0]
    session.send("What is 3 + 3?", editing=user.id)
    assert [m.content for m in store.messages(conv.id) if m.role == "user"] == ["What is 3 + 3?"]
    assert store.get_conversation(conv.id).title == "What is 2 + 2?"  # a title is given once
    store.close()


def test_stop_keeps_the_partial_reply(engine: EngineClient, tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.sqlite3")
    session = ChatSession(store, engine, sampling=SamplingParams(temperature=0.0, max_tokens=400))
    first = threading.Event()

    def on_token(_text: str) -> None:
        if not first.is_set():
            first.set()
            threading.Thread(target=session.stop).start()

    reply = session.send("Count from one to two hundred in words.", on_token=on_token)
    assert reply.status == STOPPED and reply.content and reply.stats["finish_reason"] == "cancelled"
    store.close()
