"""Conversations in SQLite (stdlib sqlite3, WAL) with versioned schema migrations.

A message is written when it completes; a streaming reply is written incrementally (the caller
saves at most every ``SAVE_INTERVAL_S``), so a crash loses at most the last second. A reply cut by
Stop or by an engine crash is kept with its status; one left ``streaming`` by an app crash is
marked ``interrupted`` when the store is opened again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.chat.images import NAME, ImageStore
from app.core.db import open_database, owner_lock
from app.core.engine.protocol import SamplingParams
from app.core.errors import BadValueError, SchemaTooNewError

SAVE_INTERVAL_S = 0.5

# Message statuses
COMPLETE = "complete"
STREAMING = "streaming"
STOPPED = "stopped"  # the user pressed Stop
INTERRUPTED = "interrupted"  # the engine or the app died mid-reply
FAILED = "failed"

MIGRATIONS: list[str] = [
    # 1: conversations and messages
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        sampling TEXT NOT NULL DEFAULT '{}',
        model_path TEXT,
        deleted REAL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'complete',
        stats TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    """,
    # 2: the preset name shown in the settings panel
    "ALTER TABLE conversations ADD COLUMN preset TEXT NOT NULL DEFAULT 'Balanced';",
    # 3: a reply's reasoning, kept apart from its answer (content)
    "ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT '';",
    # 4: a message's images: names in the image store (chat.images), a JSON list
    "ALTER TABLE messages ADD COLUMN images TEXT NOT NULL DEFAULT '[]';",
]


@dataclass
class Conversation:
    id: int
    title: str
    created: float
    updated: float
    system_prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    preset: str = "Balanced"
    model_path: str | None = None


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    status: str = COMPLETE
    stats: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    reasoning: str = ""  # what the model thought before the answer (``content``)
    images: list[str] = field(default_factory=list)  # names in the store's ImageStore, in order


class ChatStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

        def setup(db: sqlite3.Connection) -> None:
            self.db = db
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate()

        self.db = open_database(self.path, "chat history", setup, isolation_level=None)
        self.images = ImageStore(self.path.parent / "images")
        # Only the first store open on this file (in any process) owns the leftovers: a reply still
        # streaming and the undo trash may belong to a live GUI, so a second store touches neither.
        self._owner = owner_lock(self.path)
        self.primary = self._owner is not None
        self.recovered = self._recover_interrupted() if self.primary else 0
        if self.primary:
            self.purge_deleted()

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise SchemaTooNewError(
                f"{self.path}: the database was written by a newer QuantDesk (schema {version}); "
                "update QuantDesk to open it"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.db:
                self.db.execute("BEGIN")
                for statement in script.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number}")

    def _recover_interrupted(self) -> int:
        cur = self.db.execute("UPDATE messages SET status = ? WHERE status = ?", (INTERRUPTED, STREAMING))
        return cur.rowcount

    def close(self) -> None:
        self.db.close()
        if self._owner is not None:
            self._owner.close()  # releases the lock
            self._owner = None

    # -- conversations --------------------------------------------------------------------------
    def _conversation(self, row: sqlite3.Row) -> Conversation:
        return Conversation(
            id=row["id"],
            title=row["title"],
            created=row["created"],
            updated=row["updated"],
            system_prompt=row["system_prompt"],
            sampling=SamplingParams.from_dict(json.loads(row["sampling"] or "{}")),
            preset=row["preset"],
            model_path=row["model_path"],
        )

    def create_conversation(
        self,
        title: str = "New chat",
        *,
        system_prompt: str = "",
        sampling: SamplingParams | None = None,
        preset: str = "Balanced",
        model_path: str | None = None,
    ) -> Conversation:
        now = time.time()
        sp = sampling or SamplingParams()
        cur = self.db.execute(
            "INSERT INTO conversations (title, created, updated, system_prompt, sampling, preset, model_path)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, now, now, system_prompt, json.dumps(sp.to_dict()), preset, model_path),
        )
        return self.get_conversation(int(cur.lastrowid or 0))

    def get_conversation(self, conversation_id: int) -> Conversation:
        row = self.db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise KeyError(conversation_id)
        return self._conversation(row)

    def list_conversations(self, search: str = "") -> list[Conversation]:
        """Newest first; ``search`` matches titles and message text (case-insensitive)."""
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{escaped}%"
            rows = self.db.execute(
                "SELECT * FROM conversations c WHERE deleted IS NULL AND (title LIKE ? ESCAPE '\\' OR EXISTS"
                " (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ? ESCAPE '\\'))"
                " ORDER BY updated DESC, id DESC",
                (like, like),
            )
        else:
            rows = self.db.execute("SELECT * FROM conversations WHERE deleted IS NULL ORDER BY updated DESC, id DESC")
        return [self._conversation(r) for r in rows]

    def update_conversation(self, conversation_id: int, **changes: Any) -> Conversation:
        allowed = {"title", "system_prompt", "sampling", "preset", "model_path"}
        sets, values = [], []
        for key, value in changes.items():
            if key not in allowed:
                raise BadValueError(f"unknown conversation field {key!r}")
            if key == "sampling":
                value = json.dumps(value.to_dict())
            sets.append(f"{key} = ?")
            values.append(value)
        if sets:
            self.db.execute(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", (*values, conversation_id))
        return self.get_conversation(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        title = title.strip()
        if not title:
            raise BadValueError("a conversation title cannot be empty")
        return self.update_conversation(conversation_id, title=title)

    def delete(self, conversation_id: int) -> None:
        """Move to the trash: ``undo_delete`` brings it back until the store is next opened."""
        self.db.execute("UPDATE conversations SET deleted = ? WHERE id = ?", (time.time(), conversation_id))

    def undo_delete(self, conversation_id: int) -> None:
        self.db.execute("UPDATE conversations SET deleted = NULL WHERE id = ?", (conversation_id,))

    def purge_deleted(self) -> None:
        """Delete the trash for good, and the images only its conversations had."""
        self.db.execute("DELETE FROM conversations WHERE deleted IS NOT NULL")
        self.collect_images()

    def collect_images(self) -> int:
        """Remove the stored images no message refers to (the primary store only: another one's
        reply may be adding them)."""
        if not self.primary:
            return 0
        referenced: set[str] = set()
        for (names,) in self.db.execute("SELECT images FROM messages WHERE images != '[]'"):
            referenced.update(n for n in _names(names))
        return self.images.collect(referenced)

    def _touch(self, conversation_id: int) -> None:
        self.db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id))

    # -- messages -------------------------------------------------------------------------------
    def _message(self, row: sqlite3.Row) -> Message:
        return Message(
            id=row["id"],
            conversation_id=row["conversation_id"],
            role=row["role"],
            content=row["content"],
            status=row["status"],
            stats=json.loads(row["stats"] or "{}"),
            created=row["created"],
            reasoning=row["reasoning"] or "",
            images=_names(row["images"]),
        )

    def add_message(self, conversation_id: int, role: str, content: str, *, status: str = COMPLETE,
                    images: list[str] | None = None) -> Message:
        """``images``: names in ``self.images`` (ImageStore.put), shown and sent with the message."""
        for name in images or []:
            if not self.images.path(name).is_file():
                raise BadValueError(f"image {name}: not in the image store {self.images.root}")
        cur = self.db.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created, images) VALUES (?, ?, ?, ?, ?, ?)",
            (conversation_id, role, content, status, time.time(), json.dumps(list(images or []))),
        )
        self._touch(conversation_id)
        return self.get_message(int(cur.lastrowid or 0))

    def get_message(self, message_id: int) -> Message:
        row = self.db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise KeyError(message_id)
        return self._message(row)

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [self._message(r) for r in rows]

    def update_message(
        self, message_id: int, *, content: str | None = None, status: str | None = None, stats: dict[str, Any] | None = None,
        reasoning: str | None = None,
    ) -> None:
        sets, values = [], []
        if reasoning is not None:
            sets.append("reasoning = ?")
            values.append(reasoning)
        if content is not None:
            sets.append("content = ?")
            values.append(content)
        if status is not None:
            sets.append("status = ?")
            values.append(status)
        if stats is not None:
            sets.append("stats = ?")
            values.append(json.dumps(stats))
        if sets:
            self.db.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", (*values, message_id))

    def delete_from(self, conversation_id: int, message_id: int) -> int:
        """Remove ``message_id`` and every later message (for regenerate and edit-and-resend)."""
        cur = self.db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))
        self._touch(conversation_id)
        return cur.rowcount  # the images only these messages had go at the next purge (an edit resends them)

    def engine_messages(self, conversation_id: int) -> list[dict[str, Any]]:
        """The conversation as the engine sees it: system prompt, then the turns with text. A
        reply's reasoning goes along as ``reasoning_content``: the model's template passes it back
        or drops it by its own rule; a message's images as ``images`` (their files in the store)."""
        conv = self.get_conversation(conversation_id)
        out: list[dict[str, Any]] = []
        if conv.system_prompt.strip():
            out.append({"role": "system", "content": conv.system_prompt})
        for m in self.messages(conversation_id):
            if m.content or m.role == "user":
                turn: dict[str, Any] = {"role": m.role, "content": m.content}
                if m.reasoning and m.role == "assistant":
                    turn["reasoning_content"] = m.reasoning
                if m.images:
                    turn["images"] = [{"path": str(self.images.path(n)), "name": f"image {i + 1} of this message"}
                                      for i, n in enumerate(m.images)]
                out.append(turn)
        return out


def _names(column: str | None) -> list[str]:
    """A message's image names from its column (only well-formed names: the file is ours to read)."""
    try:
        names = json.loads(column or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str) and NAME.match(n)] if isinstance(names, list) else []
