"""Conversations in real SQLite: migrations, CRUD, search, trash with undo, crash recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.core.chat import store as chats
from app.core.chat.store import ChatStore
from app.core.engine import SamplingParams
from app.core.errors import BadValueError, SchemaTooNewError


@pytest.fixture
def store(tmp_path: Path) -> ChatStore:
    return ChatStore(tmp_path / "chats.sqlite3")


def test_schema_is_migrated_to_latest_and_uses_wal(store: ChatStore) -> None:
    assert store.schema_version == len(chats.MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_old_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(chats.MIGRATIONS[0])
    db.execute("INSERT INTO conversations (title, created, updated) VALUES ('kept', 1, 1)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = ChatStore(path)
    assert store.schema_version == len(chats.MIGRATIONS)
    [conv] = store.list_conversations()
    assert conv.title == "kept" and conv.preset == "Balanced"


def test_a_replys_reasoning_is_kept_apart_and_goes_back_as_reasoning_content(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    db = sqlite3.connect(path)  # a database from before reasoning was stored (schema 2)
    for script in chats.MIGRATIONS[:2]:
        db.executescript(script)
    db.execute("INSERT INTO conversations (title, created, updated) VALUES ('old', 1, 1)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'assistant', 'Hi', 1)")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    store = ChatStore(path)
    [old] = store.messages(1)
    assert old.content == "Hi" and old.reasoning == ""
    store.add_message(1, "user", "Why?")
    reply = store.add_message(1, "assistant", "")
    store.update_message(reply.id, content="Because.", reasoning="The user asks why.")
    assert store.get_message(reply.id).reasoning == "The user asks why."
    assert store.engine_messages(1)[-1] == {"role": "assistant", "content": "Because.", "reasoning_content": "The user asks why."}
    assert [c.title for c in store.list_conversations("user asks")] == []  # search hits the answers, not the reasoning


def test_images_are_stored_once_by_content_and_go_with_the_last_conversation_using_them(tmp_path: Path) -> None:
    """Schema 4 (a database of schema 3 gains the column); the same picture in two conversations is
    one file, kept until neither refers to it; a name that is not the store's is refused."""
    import pytest

    from app.core.engine.images import ImageError
    from app.core.errors import BadValueError
    from tests.support.tiny_vision import png_bytes

    path = tmp_path / "v3.sqlite3"
    db = sqlite3.connect(path)
    for script in chats.MIGRATIONS[:3]:
        db.executescript(script)
    db.execute("INSERT INTO conversations (title, created, updated) VALUES ('old', 1, 1)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'user', 'Hi', 1)")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = ChatStore(path)
    assert store.schema_version == 4 and store.messages(1)[0].images == []
    picture = png_bytes()
    name = store.images.put(picture, "picture.png")
    assert store.images.put(picture, "again.png") == name and len(store.images.names()) == 1
    second = store.create_conversation()
    store.add_message(1, "user", "Look", images=[name])
    store.add_message(second.id, "user", "", images=[name])
    [turn] = [m for m in store.engine_messages(1) if m.get("images")]
    assert turn["images"][0]["path"] == str(store.images.path(name)) and Path(turn["images"][0]["path"]).read_bytes() == picture
    with pytest.raises(BadValueError, match="not in the image store"):
        store.add_message(1, "user", "x", images=["0" * 64 + ".png"])
    with pytest.raises(ValueError, match="not the name of a stored image"):
        store.images.path("../../etc/passwd")
    with pytest.raises(ImageError, match="notes.txt: not an image"):
        store.images.put(b"hello", "notes.txt")
    store.delete(1)
    store.purge_deleted()
    assert store.images.path(name).exists()  # the other conversation still has it
    store.delete(second.id)
    store.purge_deleted()
    assert not store.images.path(name).exists()
    store.close()


def test_newer_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    sqlite3.connect(path).execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNewError, match="newer QuantDesk"):
        ChatStore(path)


def test_conversation_round_trip(store: ChatStore) -> None:
    sp = SamplingParams(temperature=0.3, top_k=7, seed=42, max_tokens=None)
    conv = store.create_conversation("Trip", system_prompt="Be brief.", sampling=sp, preset="Custom")
    store.add_message(conv.id, "user", "Hello")
    store.add_message(conv.id, "assistant", "Hi!")
    again = store.get_conversation(conv.id)
    assert again.sampling == sp and again.system_prompt == "Be brief." and again.preset == "Custom"
    assert store.engine_messages(conv.id) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
    ]


def test_rename_rejects_empty_title(store: ChatStore) -> None:
    conv = store.create_conversation()
    assert store.rename(conv.id, "  Paris  ").title == "Paris"
    with pytest.raises(BadValueError):
        store.rename(conv.id, "   ")


def test_search_matches_titles_and_message_text(store: ChatStore) -> None:
    a = store.create_conversation("Cooking")
    b = store.create_conversation("Travel")
    store.add_message(b.id, "user", "Best time to visit Kyoto?")
    store.add_message(a.id, "user", "100% whole_wheat bread")
    assert [c.id for c in store.list_conversations("kyoto")] == [b.id]
    assert [c.id for c in store.list_conversations("cook")] == [a.id]
    assert [c.id for c in store.list_conversations("100%")] == [a.id]
    assert [c.id for c in store.list_conversations("_")] == [a.id]  # LIKE wildcards are literal
    assert store.list_conversations("nothing like this") == []


def test_delete_can_be_undone_until_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ChatStore(path)
    keep, gone = store.create_conversation("keep"), store.create_conversation("gone")
    store.add_message(gone.id, "user", "bye")
    store.delete(keep.id)
    store.undo_delete(keep.id)
    store.delete(gone.id)
    assert [c.title for c in store.list_conversations()] == ["keep"]
    store.close()
    reopened = ChatStore(path)
    assert [c.title for c in reopened.list_conversations()] == ["keep"]
    assert reopened.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_reply_left_streaming_by_a_crash_is_marked_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ChatStore(path)
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "Tell me a story")
    reply = store.add_message(conv.id, "assistant", "", status=chats.STREAMING)
    store.update_message(reply.id, content="Once upon a")  # the incremental save
    del store  # the app dies without closing anything
    reopened = ChatStore(path)
    assert reopened.recovered == 1
    msg = reopened.get_message(reply.id)
    assert (msg.content, msg.status) == ("Once upon a", chats.INTERRUPTED)


def test_delete_from_removes_the_message_and_what_follows(store: ChatStore) -> None:
    conv = store.create_conversation()
    ids = [store.add_message(conv.id, r, t).id for r, t in [("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]]
    assert store.delete_from(conv.id, ids[2]) == 2
    assert [m.content for m in store.messages(conv.id)] == ["a", "b"]
