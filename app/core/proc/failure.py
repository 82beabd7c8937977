"""How a child process failed, classified from its exit status and the end of its log, so that
callers act on a kind rather than on scraped text: ``crashed`` (with the signal: SIGILL, an
illegal instruction, means the engine build uses CPU instructions this processor lacks and feeds
the CPU-variant fallback), ``out_of_memory``, ``bad_input`` (exit status 2, the CLI's convention,
or an ``error`` event of kind ``bad_input``) or ``failed``. Cancellation never gets here: the
runner raises ``Cancelled``."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Sequence

CRASHED, OUT_OF_MEMORY, BAD_INPUT, FAILED = "crashed", "out_of_memory", "bad_input", "failed"
EXIT_BAD_INPUT = 2
SIGNAL_MEANING = {
    "SIGILL": "illegal instruction: this build uses CPU instructions this processor does not have",
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error (a file changed or vanished while mapped?)",
    "SIGABRT": "aborted",
    "SIGFPE": "arithmetic fault",
    "SIGKILL": "killed (by the system, most likely for lack of memory)",
}
OOM_MARKERS = ("MemoryError", "std::bad_alloc", "out of memory", "Cannot allocate memory", "failed to allocate")


@dataclass(frozen=True)
class Failure:
    kind: str  # CRASHED, OUT_OF_MEMORY, BAD_INPUT or FAILED
    returncode: int
    signal: str | None = None  # "SIGILL" ... when the process died of a signal

    def describe(self) -> str:
        if self.signal:
            meaning = SIGNAL_MEANING.get(self.signal)
            return f"crashed with {self.signal}" + (f" ({meaning})" if meaning else "")
        if self.kind == OUT_OF_MEMORY:
            return "ran out of memory"
        return f"exit status {self.returncode}"


def signal_name(returncode: int) -> str | None:
    """``-4`` (how subprocess reports a death by signal 4) -> ``"SIGILL"``."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def classify(returncode: int, tail: Sequence[str] = (), events: Sequence[dict[str, Any]] = ()) -> Failure | None:
    """None for success (status 0), else what kind of failure it was."""
    if returncode == 0:
        return None
    name = signal_name(returncode)
    text = "\n".join(tail[-20:])
    if name == "SIGKILL" or any(m in text for m in OOM_MARKERS):
        return Failure(OUT_OF_MEMORY, returncode, name)
    if name is not None:
        return Failure(CRASHED, returncode, name)
    if returncode == EXIT_BAD_INPUT or any(e.get("ev") == "error" and e.get("kind") == BAD_INPUT for e in events):
        return Failure(BAD_INPUT, returncode)
    return Failure(FAILED, returncode)
