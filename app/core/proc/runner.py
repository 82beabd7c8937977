"""Long native work (conversion, quantization, imatrix, perplexity) runs in a child process:
cancel is a terminate, a crash is a message, and output files are only renamed into place by the
parent once the child succeeded.

The child's stdout and stderr are read as one stream of lines ('\\r' ends a line too, so tqdm
bars arrive as lines). Lines starting with ``EVENT_PREFIX`` carry a JSON event from our own child
modules; the rest is the tool's log, of which a tail is kept for error messages.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.core.jobs import Cancelled, CancelToken
from app.core.proc.launch import child_env

EVENT_PREFIX = "@qd "
TAIL_LINES = 60


def emit(event: str, **fields: Any) -> None:
    """In a child: send one event to the parent (flushed at once)."""
    sys.stdout.write(EVENT_PREFIX + json.dumps({"ev": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass
class ChildResult:
    returncode: int
    tail: list[str]
    events: list[dict[str, Any]]

    def last_error(self) -> str:
        """The most telling line of the log: an exception line or an error message."""
        for line in reversed(self.tail):
            text = line.strip()
            if not text or text.startswith(("File ", "^", "~", "Traceback")):
                continue
            if "Error" in text or "error" in text or "not supported" in text or "failed" in text:
                return text.removeprefix("ERROR:hf-to-gguf:").strip()
        return next((t.strip() for t in reversed(self.tail) if t.strip()), f"exit status {self.returncode}")


def run_child(cmd: list[str], *, cancel: CancelToken, what: str, on_event: Callable[[dict[str, Any]], None] | None = None,
              on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> ChildResult:
    """Run ``cmd`` to its end, feeding events and log lines to the callbacks (on this thread).
    Raises ``Cancelled`` after terminating the child when ``cancel`` is set."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env or child_env(),
                            cwd=cwd, start_new_session=True)
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name=f"{what}-output", daemon=True)
    reader.start()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    events: list[dict[str, Any]] = []
    try:
        while True:
            if cancel.cancelled:
                raise Cancelled(what)
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            line = line.rstrip("\n")
            if line.startswith(EVENT_PREFIX):
                try:
                    event = json.loads(line[len(EVENT_PREFIX):])
                except json.JSONDecodeError:
                    tail.append(line)
                    continue
                events.append(event)
                if on_event is not None:
                    on_event(event)
            else:
                tail.append(line)
                if on_line is not None:
                    on_line(line)
        proc.wait()
    finally:
        if proc.poll() is None:
            _terminate(proc)
        reader.join(timeout=5)
    return ChildResult(proc.returncode, list(tail), events)


def _terminate(proc: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def partial_path(out: Path) -> Path:
    """The temporary name an output is written under, next to it (renamed only on success)."""
    return out.with_name(f".{out.name}.partial")


def remove_quietly(*paths: Path) -> None:
    for p in paths:
        with suppress(FileNotFoundError):
            p.unlink()


def ensure_free_space(folder: Path, needed: int, what: str, *, then: str = "") -> None:
    """Refuse before starting when ``folder``'s disk has less than ``needed`` bytes free; ``then``
    is appended to the message (what was, or was not, done)."""
    import shutil

    from app.core.errors import DiskSpaceError
    from app.core.hardware import human_bytes

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(f"{folder}: not enough free disk space: {what} needs about {human_bytes(needed)}, "
                             f"but only {human_bytes(free)} is free there" + (f"; {then}" if then else ""))
