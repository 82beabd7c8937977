"""ChatSession, the conversation rules the GUI and the CLI share, against the real engine: the
first message titles the conversation, replies are saved with their stats, regenerate and edit
replace the tail, a stopped reply keeps what came."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from app.core.chat.session import TITLE_CHARS, ChatSession, ReplyTurn, title_for
from app.core.chat.store import COMPLETE, FAILED, INTERRUPTED, STOPPED, STREAMING, ChatStore
from app.core.engine import SamplingParams
from app.core.engine.client import EngineClient
from app.core.errors import EngineCrashed
from tests.conftest import load_params

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


def test_a_streaming_reply_is_saved_as_it_comes(engine: EngineClient, tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.sqlite3")
    session = ChatSession(store, engine, sampling=SamplingParams(temperature=0.0, max_tokens=300, repeat_penalty=1.0))
    turn = session.begin_send("Count from one to a hundred in words.")
    saved: list[str] = []
    for event in engine.stream(turn.history, turn.sampling):
        if event["ev"] == "token":
            turn.add(event["text"])
            saved.append(store.get_message(turn.message_id).content)
        elif event["ev"] == "done":
            final = turn.finish(event["reply"])
    assert store.get_message(turn.message_id).status == COMPLETE and final.content == turn.text
    mid = [s for s in saved if s]
    assert mid and all(final.content.startswith(s) for s in mid)  # saved while streaming, every SAVE_INTERVAL_S
    assert len(set(mid)) < len(saved)  # ... not at every token
    store.close()


def test_a_failed_reply_keeps_the_longest_text_and_its_cause(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.sqlite3")
    conv = store.create_conversation(model_path=None)
    store.add_message(conv.id, "user", "hi")
    crashed = ReplyTurn(store, store.add_message(conv.id, "assistant", "", status=STREAMING).id, [], GREEDY)
    crashed.add("Hel")
    assert crashed.fail(crashed=True, partial="Hello th").content == "Hello th"  # the streaming side was ahead
    assert store.get_message(crashed.message_id).status == INTERRUPTED
    failed = ReplyTurn(store, store.add_message(conv.id, "assistant", "", status=STREAMING).id, [], GREEDY)
    failed.add("Hello there")
    message = failed.fail(crashed=False, partial="Hello")
    assert message.content == "Hello there" and message.status == FAILED
    store.close()


def test_an_engine_crash_mid_reply_keeps_the_text_marked_interrupted(starter_model: Path, tmp_path: Path) -> None:
    client = EngineClient(log_path=tmp_path / "engine.log")
    client.load(starter_model, load_params())
    store = ChatStore(tmp_path / "chats.sqlite3")
    session = ChatSession(store, client, sampling=SamplingParams(temperature=0.8, max_tokens=3000, seed=7))
    got: list[str] = []

    def on_token(text: str) -> None:
        got.append(text)
        if len(got) == 10 and client.pid is not None:
            os.kill(client.pid, signal.SIGKILL)

    try:
        with pytest.raises(EngineCrashed):
            session.send("Tell me a long story about the sea.", on_token=on_token)
        assert session.conversation is not None
        cut = store.messages(session.conversation.id)[-1]
        assert cut.role == "assistant" and cut.status == INTERRUPTED and cut.content.startswith("".join(got[:10]))
    finally:
        store.close()
        client.close()
