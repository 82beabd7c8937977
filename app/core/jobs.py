"""The contract every long job follows: it reports ``Progress`` and checks a ``CancelToken``.

A job is a plain function that takes ``progress`` (a callable receiving ``Progress``) and
``cancel`` (a ``CancelToken``) keyword arguments. It calls ``cancel.check()`` at safe points, which
raises ``Cancelled``; the caller (CLI or the Qt bridge) decides how to show it. No Qt here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from app.core.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress report. ``total`` is 0 when unknown."""

    stage: str  # short name: "download", "convert", "imatrix", "quantize", "eval", ...
    done: float = 0.0
    total: float = 0.0
    unit: str = ""  # "B" for bytes, "tensor", "chunk", ...
    message: str = ""
    rate: float = 0.0  # units per second, 0 when unknown
    eta_s: float | None = None

    @property
    def fraction(self) -> float | None:
        if self.total <= 0:
            return None
        return max(0.0, min(1.0, self.done / self.total))


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress sink that drops every report."""


class CancelToken:
    """Thread-safe cancel flag, with an optional pause flag for jobs that can pause."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._pause = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    def check(self, what: str = "job") -> None:
        if self._cancel.is_set():
            raise Cancelled(what)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True early when cancelled."""
        return self._cancel.wait(seconds)


@dataclass
class RateMeter:
    """Smoothed rate and ETA for byte- or item-counting jobs."""

    window_s: float = 3.0
    _samples: list[tuple[float, float]] = field(default_factory=list)

    def update(self, done: float) -> float:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.pop(0)
        t0, d0 = self._samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    @staticmethod
    def eta(done: float, total: float, rate: float) -> float | None:
        if rate <= 0 or total <= 0:
            return None
        return max(0.0, (total - done) / rate)
