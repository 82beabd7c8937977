"""Opening the app's data files so that a bad one never stops the app from starting.

A chat database, library database or settings file can be corrupt (a crash, a full disk, a
stranger's file), unreadable or read-only. ``open_database`` checks the file (``quick_check`` and
a write probe), and when it fails moves it aside (``<name>.bad-<time>``), starts a fresh one,
copies into it what the old one still gives (table by table, the columns both have) and records a
notice that names the file, the cause and where the old one went. When not even a fresh file can
be written (a read-only folder), the session runs on an in-memory database and says so.

``notices()`` is the one list the CLI prints on stderr and the GUI shows at start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

_NOTICES: list[str] = []


def notices() -> list[str]:
    """What was moved aside or could not be saved since the process started."""
    return list(_NOTICES)


def take_notices() -> list[str]:
    out = list(_NOTICES)
    _NOTICES.clear()
    return out


def notice(text: str) -> None:
    log.warning("%s", text)
    _NOTICES.append(text)


def move_aside(path: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """Rename ``path`` (and its ``suffixes`` companions, e.g. -wal, -shm) to ``<name>.bad-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.bad-{stamp}-{n}")
    os.replace(path, aside)
    for suffix in suffixes:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            try:
                os.replace(companion, aside.with_name(aside.name + suffix))
            except OSError:
                pass
    return aside


def _check(db: sqlite3.Connection) -> None:
    row = db.execute("PRAGMA quick_check").fetchone()
    if row is None or row[0] != "ok":
        raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else 'no answer'}")
    try:  # can we write? (a read-only file opens, then fails on the first write)
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):  # another process writing is fine
            raise


def open_database(path: Path, what: str, setup: Callable[[sqlite3.Connection], None], **connect: Any) -> sqlite3.Connection:
    """A connection to ``path`` after ``setup`` (pragmas, migrations) ran on it; a bad file is
    moved aside and replaced (see the module's text). Errors that are not the file's fault (a
    newer schema) propagate from ``setup``."""
    connect.setdefault("timeout", 10)
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made: kept in memory below
        db = sqlite3.connect(path, **connect)
        _check(db)
        setup(db)
        return db
    except (sqlite3.DatabaseError, OSError) as exc:
        cause = f"{type(exc).__name__}: {exc}"
        if db is not None:
            db.close()
    try:
        aside = move_aside(path, ("-wal", "-shm", "-journal")) if path.exists() else None
        db = sqlite3.connect(path, **connect)
        _check(db)
        setup(db)
    except (sqlite3.DatabaseError, OSError) as exc:
        notice(f"{path}: the {what} could not be opened ({cause}) nor a new one created there "
               f"({type(exc).__name__}: {exc}); this session keeps it in memory only, nothing is saved")
        db = sqlite3.connect(":memory:", **connect)
        setup(db)
        return db
    saved = _salvage(db, aside) if aside else {}
    kept = ", ".join(f"{n} {t}" for t, n in saved.items() if n) or "nothing could be read from it"
    notice(f"{path}: the {what} was damaged or unreadable ({cause}); it was moved to {aside} "
           f"and a new one started (recovered: {kept})")
    return db


def _salvage(db: sqlite3.Connection, old: Path) -> dict[str, int]:
    """Copy the rows the old file still gives into the new one: {table: rows copied}."""
    copied: dict[str, int] = {}
    try:
        db.execute("ATTACH DATABASE ? AS old", (str(old),))
    except sqlite3.DatabaseError:
        return copied
    try:
        db.execute("PRAGMA foreign_keys=OFF")
        tables = [r[0] for r in db.execute("SELECT name FROM main.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            try:
                mine = [r[1] for r in db.execute(f'PRAGMA main.table_info("{table}")')]
                theirs = {r[1] for r in db.execute(f'PRAGMA old.table_info("{table}")')}
                cols = ", ".join(f'"{c}"' for c in mine if c in theirs)
                if not cols:
                    continue
                cur = db.execute(f'INSERT OR IGNORE INTO main."{table}" ({cols}) SELECT {cols} FROM old."{table}"')
                copied[table] = max(cur.rowcount, 0)
            except sqlite3.DatabaseError as exc:
                log.info("%s: table %s not recovered (%s)", old, table, exc)
    finally:
        try:
            db.execute("DETACH DATABASE old")
        except sqlite3.DatabaseError:
            pass
        db.execute("PRAGMA foreign_keys=ON")
    return copied


def owner_lock(path: Path, *, lock_path: Path | None = None) -> Any:
    """An exclusive lock on ``<path>.lock`` (or ``lock_path``) held while the returned file stays
    open, or None when another holder (this process or another) has it. The OS drops it when its
    holder dies."""
    lock_path = lock_path or path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a+b")
    except OSError:
        return None
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh
