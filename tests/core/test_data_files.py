"""Data that survives a bad start and a second process: real files, real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.core import paths
from app.core import settings as app_settings
from app.core.chat import store as chats
from app.core.chat.store import ChatStore
from app.core.db import owner_lock, take_notices
from app.core.errors import QuantDeskError
from app.core.hub.downloads import part_lock_path
from app.core.library.catalog import Library
from app.core.settings import models_dir

GARBAGE = b"SQLite format 3\x00" + os.urandom(4096)  # a torn or hostile file


def quantdesk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=timeout)


def test_corrupt_library_and_settings_do_not_stop_a_cli_command(tmp_path: Path) -> None:
    home = paths.home()
    (home / "library.sqlite3").write_bytes(GARBAGE)
    (home / "settings.json").write_text('{"schema_version": 2, "models_dir": ', encoding="utf-8")
    result = quantdesk("list")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("library.sqlite3", "settings.json"):
        assert f"{home / name}: the" in result.stderr and "moved to" in result.stderr
        assert list(home.glob(f"{name}.bad-*")), f"{name} was not kept aside"
    assert Library().execute("PRAGMA quick_check").fetchone()[0] == "ok"  # a fresh, working file
    assert quantdesk("list").stderr.count("moved to") == 0  # said once, not at every start


def test_an_unreadable_database_is_moved_aside_and_a_cli_command_still_runs(tmp_path: Path) -> None:
    """A database path that cannot be opened at all (here a folder where the file should be: what a
    sync tool or a bad restore leaves; as root, permissions cannot make a file unreadable)."""
    home = paths.home()
    (home / "library.sqlite3").mkdir()
    (home / "library.sqlite3" / "junk").write_text("x")
    result = quantdesk("list")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"{home / 'library.sqlite3'}: the" in result.stderr and "moved to" in result.stderr
    [aside] = home.glob("library.sqlite3.bad-*")
    assert (aside / "junk").read_text() == "x"  # kept as it was, nothing deleted
    take_notices()
    chat_path = tmp_path / "chats.sqlite3"
    chat_path.mkdir()
    store = ChatStore(chat_path)
    [note] = take_notices()
    assert str(chat_path) in note and "moved to" in note
    assert store.create_conversation("still works").id > 0
    store.close()


def test_a_data_folder_that_cannot_be_written_keeps_the_session_in_memory(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    take_notices()
    store = ChatStore(blocked / "chats.sqlite3")
    [note] = take_notices()
    assert str(blocked / "chats.sqlite3") in note and "in memory only" in note
    conv = store.create_conversation("typed anyway")
    store.add_message(conv.id, "user", "hello")
    assert [m.content for m in store.messages(conv.id)] == ["hello"]
    store.close()
    assert blocked.read_text() == "not a folder"


def test_a_corrupt_chat_database_does_not_stop_the_window(qtbot) -> None:  # type: ignore[no-untyped-def]
    from app.ui.app import create_window

    paths.database_path().write_bytes(GARBAGE)
    win = create_window()
    qtbot.addWidget(win)
    win.show()
    try:
        assert any("chat history" in n and "moved to" in n for n in win.startup_notices)
        qtbot.waitUntil(lambda: getattr(win, "error_box", None) is not None, timeout=5000)
        assert "chat history" in win.error_box.text()
        assert win.store.list_conversations()  # a fresh store, a new chat to type in
    finally:
        win._quit_confirmed = True
        win.close()
        win.bridge.shutdown()
        win.store.close()


def test_what_a_damaged_database_still_holds_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = ChatStore(path)
    conv = store.create_conversation("keep me")
    store.add_message(conv.id, "user", "hello")
    store.close()
    data = bytearray(path.read_bytes())
    data[1024 * 8:] = b"\xff" * (len(data) - 1024 * 8) if len(data) > 8192 else data[8192:]
    data[100:104] = b"\xff\xff\xff\xff"  # break the header's page count: quick_check fails
    path.write_bytes(bytes(data))
    take_notices()
    reopened = ChatStore(path)
    [note] = take_notices()
    assert str(path) in note and "moved to" in note
    assert reopened.db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    reopened.close()


def test_settings_are_written_atomically_and_a_read_only_folder_is_a_message(tmp_path: Path) -> None:
    path = tmp_path / "s" / "settings.json"
    app_settings.save(app_settings.Settings(), path)
    assert app_settings.load(path) == app_settings.Settings()
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # no temporary left
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    with pytest.raises(QuantDeskError, match="settings could not be saved"):
        app_settings.save(app_settings.Settings(), blocked / "settings.json")


HOLDER = textwrap.dedent("""
    import sys
    from app.core.chat import store as chats
    from app.core.chat.store import ChatStore
    store = ChatStore(sys.argv[1])
    conv = store.create_conversation("live")
    store.add_message(conv.id, "user", "tell me")
    reply = store.add_message(conv.id, "assistant", "Once", status=chats.STREAMING)
    trash = store.create_conversation("in the trash")
    store.delete(trash.id)
    print(reply.id, trash.id, flush=True)
    sys.stdin.readline()
""")


def test_a_second_store_leaves_the_first_ones_live_reply_and_trash_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        reply_id, trash_id = map(int, first.stdout.readline().split())  # type: ignore[union-attr]
        second = ChatStore(path)  # the CLI or a second GUI on the same data folder
        assert not second.primary and second.recovered == 0
        assert second.get_message(reply_id).status == chats.STREAMING
        second.undo_delete(trash_id)  # the first one's undo still works: nothing was purged
        assert "in the trash" in [c.title for c in second.list_conversations()]
        second.close()
    finally:
        first.stdin.close()  # type: ignore[union-attr]
        first.wait(30)
    third = ChatStore(path)  # the first process is gone: its reply is now a leftover
    assert third.primary and third.recovered == 1
    assert third.get_message(reply_id).status == chats.INTERRUPTED
    third.close()


def test_two_processes_never_write_the_same_part_file(tmp_path: Path) -> None:
    part = tmp_path / "m.gguf.part"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from app.core.db import owner_lock
        from app.core.hub.downloads import part_lock_path
        lock = owner_lock(Path({str(part)!r}), lock_path=part_lock_path(Path({str(part)!r})))
        print("held" if lock else "refused", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        assert owner_lock(part, lock_path=part_lock_path(part)) is None
        from app.core.hub.downloads import DownloadManager  # noqa: F401 (the manager uses this lock)
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(30)
    lock = owner_lock(part, lock_path=part_lock_path(part))
    assert lock is not None  # the holder died: the lock went with it
    lock.close()


def test_delete_never_follows_a_folder_link_out_of_the_models_folder(tmp_path: Path) -> None:
    other_app = tmp_path / "other-app"
    other_app.mkdir()
    theirs = other_app / "their-model.gguf"
    theirs.write_bytes(b"GGUF not ours")
    link = models_dir() / "linked"
    link.symlink_to(other_app, target_is_directory=True)
    lib = Library()
    lib.execute("INSERT INTO models (path, name, size, origin, owned, added) VALUES (?,?,?,?,?,?)",
                (str(link / "their-model.gguf"), "their-model", 13, "added", 1, 0.0))
    entry_id = lib.execute("SELECT id FROM models").fetchone()[0]
    with pytest.raises(QuantDeskError, match="outside the models folder"):
        lib.delete(entry_id)
    assert theirs.read_bytes() == b"GGUF not ours"
