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
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from app.core.errors import Cancelled
from app.core.jobs import CancelToken
from app.core.proc.failure import Failure, classify
from app.core.proc.launch import child_env, popen_options

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

    @property
    def failure(self) -> Failure | None:
        """None when the child succeeded, else how it failed (crashed with which signal, out of
        memory, bad input, failed)."""
        return classify(self.returncode, self.tail, self.events)

    def reason(self) -> str:
        """A sentence for the user: the telling log line, and how the process ended when it died."""
        failure = self.failure
        if failure is not None and failure.signal:
            return failure.describe()
        return self.last_error()

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
              cwd: Path | None = None, timeout: float | None = None) -> ChildResult:
    """Run ``cmd`` to its end, feeding events and log lines to the callbacks (on this thread).
    Raises ``Cancelled`` after terminating the child when ``cancel`` is set, ``TimeoutError``
    when it runs past ``timeout`` seconds."""
    env = dict(env or child_env())
    options = popen_options(env)
    if cwd is not None:
        options["cwd"] = str(cwd)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env,
                            start_new_session=True, **options)  # type: ignore[call-overload]
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
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            if cancel.cancelled:
                raise Cancelled(what)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{what}: no result after {timeout:.0f} s")
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


@contextmanager
def output_file(out: Path, needed: int, what: str) -> Iterator[Path]:
    """The parent side of every job that writes a file: refuse without ``needed`` bytes free,
    yield the partial name to write under, rename it into place when the block succeeds, and
    leave nothing behind when it fails or is cancelled."""
    out.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(out.parent, needed, what)
    tmp = partial_path(out)
    remove_quietly(tmp)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        remove_quietly(tmp)


def partial_path(out: Path) -> Path:
    """The temporary name an output is written under, next to it (renamed only on success); it
    names the writing process, so a sweep knows whether anyone still owns it."""
    return out.with_name(f".{out.name}.{os.getpid()}.partial")


def sweep_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial outputs under ``folder`` whose writer is gone (a crash, a kill); those of
    a live process (a second window, a CLI run on the same data folder) stay. Returns the removed."""
    import psutil

    removed = []
    for p in folder.rglob(".*.partial"):
        pid = p.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        remove_quietly(p)
        removed.append(p)
    return removed


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
