"""The one way the GUI runs core work off its thread and hears back.

A ``Dispatcher`` is the single path from worker threads to the GUI thread: workers never touch Qt,
they post callbacks to its queue, and its timer on the GUI thread runs them (emitting PySide
signals from plain Python threads crashed the interpreter with a refcount error in PySide6 6.12).
On top of it:

- ``TaskRunner.run(name, call, done, failed, key=...)``: any core call on a worker thread; ``done``
  or ``failed`` runs on the GUI thread, the end is posted in ``finally``; a newer call with the
  same ``key`` (or ``invalidate(key)``) drops the older one's result, so no page keeps its own
  generation counter.
- ``EngineBridge``: the engine client's requests as signals (load, chat stream, token count).
- ``DownloadsBridge``: the download manager's events as one signal, coalesced per download.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.engine import ModelInfo, Reply, SamplingParams
from app.core.engine.client import EngineClient
from app.core.errors import QuantDeskError
from app.core.planner.params import LoadParams

if TYPE_CHECKING:
    from app.core.hub.downloads import DownloadManager

log = logging.getLogger(__name__)

PUMP_INTERVAL_MS = 10
IDLE_INTERVAL_MS = 50
ENGINE_NICE = 5  # the window's thread wins the CPU over the engine's busy threads


class Dispatcher(QObject):
    """Callbacks posted from any thread, run on the GUI thread by a timer: every 10 ms while work
    is in flight (``begin``/``end``, called on the GUI thread), else every 50 ms when ``idle_ms``
    is given (a listener that can post at any time), else not at all."""

    def __init__(self, parent: QObject | None = None, *, idle_ms: int | None = None) -> None:
        super().__init__(parent)
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._active = 0
        self._idle_ms = idle_ms
        self._timer = QTimer(self)
        self._timer.setInterval(idle_ms or PUMP_INTERVAL_MS)
        self._timer.timeout.connect(self.drain)
        if idle_ms:
            self._timer.start()

    @property
    def active(self) -> int:
        return self._active

    def post(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the GUI thread."""
        self._queue.put(callback)

    def begin(self) -> None:
        self._active += 1
        self._timer.setInterval(PUMP_INTERVAL_MS)
        if not self._timer.isActive():
            self._timer.start()

    def end(self) -> None:
        self._active -= 1

    def stop(self) -> None:
        """No more deliveries (the window is closing)."""
        self._timer.stop()
        self._idle_ms = None

    def drain(self) -> None:
        while True:
            try:
                callback = self._queue.get_nowait()
            except queue.Empty:
                break
            try:
                callback()
            except Exception:  # a GUI callback's bug is logged, the pump keeps running
                log.exception("GUI callback failed")
        if self._active == 0 and self._queue.empty():
            if self._idle_ms:
                self._timer.setInterval(self._idle_ms)
            else:
                self._timer.stop()


class EngineBridge(QObject):
    model_loading = Signal(str)
    model_loaded = Signal(object)  # ModelInfo
    load_failed = Signal(object)  # the exception (a QuantDeskError, or a bug's exception)
    model_unloaded = Signal()
    reply_started = Signal(dict)
    token_received = Signal(str)
    reasoning_received = Signal(str)  # the reply's reasoning as it streams (apart from the answer)
    reply_finished = Signal(object)  # Reply
    reply_failed = Signal(object, str)  # the exception (EngineCrashed when the engine died), partial text
    tokens_counted = Signal(int, int)  # tokens, n_ctx
    busy_changed = Signal(bool)
    engine_notice = Signal(str)  # one line for the user, e.g. a step down to a safer CPU build

    def __init__(self, client: EngineClient | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client or EngineClient(nice=ENGINE_NICE)
        self.before_load: list[Callable[[str], None]] = []  # in the load's thread, before it (the API server's copy goes)
        self._reply_id: int | None = None  # the engine's id of the window's running reply
        self._stop_asked = False  # Stop before the reply had its id (it waited for the engine)
        self._threads: list[threading.Thread] = []
        self._dispatch = Dispatcher(self)

    @property
    def busy(self) -> bool:
        return self._dispatch.active > 0

    def _post(self, signal_name: str, *args: Any) -> None:
        """From a worker thread: emit ``signal_name`` on the GUI thread."""
        self._dispatch.post(lambda: getattr(self, signal_name).emit(*args))

    def _job_done(self) -> None:
        self._dispatch.end()
        if self._dispatch.active == 0:
            self.busy_changed.emit(False)

    def _run(self, name: str, job: Callable[[], None]) -> None:
        def target() -> None:
            try:
                job()
            finally:
                for notice in self.client.take_notices():
                    self._post("engine_notice", notice)
                self._dispatch.post(self._job_done)

        self._dispatch.begin()
        if self._dispatch.active == 1:
            self.busy_changed.emit(True)
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def load_model(self, path: str, *, ctx: int | None = None, gpu_layers: int | None = None,
                   params: LoadParams | None = None, draft: dict[str, Any] | None = None) -> None:
        """Load ``path`` with the planner's parameters ("Auto"), or exactly ``params`` (and a draft
        model for speculative decoding placed by the planner: memory.DraftPlan.to_dict())."""
        self.model_loading.emit(path)

        def job() -> None:
            for hook in self.before_load:
                hook(path)
            try:
                if params is not None:
                    info: ModelInfo = self.client.load(path, params, draft)
                else:
                    from app.core import settings

                    info = self.client.load_model(path, ctx=ctx, gpu_layers=gpu_layers,
                                                  workers=settings.load().workers or None, strict=False)
            except Exception as exc:  # a bug's exception too: a message, never a dead window
                if not isinstance(exc, QuantDeskError):
                    log.exception("model load failed")
                self._post("load_failed", exc)
            else:
                self._post("model_loaded", info)

        self._run("engine-load", job)

    def unload_model(self) -> None:
        def job() -> None:
            try:
                self.client.unload()
            except QuantDeskError as exc:
                log.info("unload: %s", exc)
            self._post("model_unloaded")

        self._run("engine-unload", job)

    def chat(self, messages: list[dict[str, str]], sampling: SamplingParams) -> None:
        def job() -> None:
            partial: list[str] = []
            self._reply_id, self._stop_asked = None, False
            try:
                for event in self.client.stream(messages, sampling):
                    kind = event["ev"]
                    if self._reply_id is None:
                        self._reply_id = event.get("id")
                        if self._stop_asked:
                            self.client.cancel(self._reply_id)
                    if kind == "start":
                        self._post("reply_started", event)
                    elif kind == "token":
                        if event.get("reasoning"):
                            self._post("reasoning_received", event["reasoning"])
                        if event["text"]:
                            partial.append(event["text"])
                            self._post("token_received", event["text"])
                    elif kind == "done":
                        reply: Reply = event["reply"]
                        self._post("reply_finished", reply)
            except Exception as exc:
                if not isinstance(exc, QuantDeskError):
                    log.exception("chat failed")
                self._post("reply_failed", exc, "".join(partial))

        self._run("engine-chat", job)

    def count_tokens(self, messages: list[dict[str, str]]) -> None:
        def job() -> None:
            try:
                n = self.client.count_tokens(messages)
            except Exception as exc:  # the meter is informative only
                log.info("token count unavailable: %s", exc)
                return
            model = self.client.model
            self._post("tokens_counted", n, model.n_ctx if model else 0)

        self._run("engine-count", job)

    def cancel(self) -> None:
        """Stop the window's reply (never another request on a shared engine: the API server's)."""
        if self._reply_id is None:
            self._stop_asked = True
        else:
            self.client.cancel(self._reply_id)

    def shutdown(self) -> None:
        self.client.cancel()
        self.client.close()
        for thread in self._threads:
            thread.join(timeout=5)


class TaskRunner(QObject):
    """Runs core calls on background threads; results, errors and progress come back on the GUI
    thread through one queue and a timer (the same rule as the engine bridge: no signal is emitted
    from a plain Python thread). A call's ``done`` or ``failed`` always runs, in ``finally`` order."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._dispatch = Dispatcher(self)
        self._threads: list[threading.Thread] = []
        self._generations: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        return self._dispatch.active > 0

    def post(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the GUI thread."""
        self._dispatch.post(callback)

    def invalidate(self, key: str) -> None:
        """Drop the result of the call running under ``key``, if any (the page moved on)."""
        self._generations[key] = self._generations.get(key, 0) + 1

    def run(self, name: str, call: Callable[[], Any], done: Callable[[Any], None] | None = None,
            failed: Callable[[BaseException], None] | None = None, *, key: str | None = None) -> None:
        """Run ``call`` on a worker thread; then ``done(result)`` or ``failed(exception)`` on the GUI
        thread, unless a newer call with the same ``key`` started meanwhile. The exception keeps its
        type (``app.ui.messages`` picks the channel from it); without ``failed`` it is logged."""
        if key is not None:
            self.invalidate(key)
        generation = self._generations.get(key, 0) if key is not None else 0

        def current() -> bool:
            return key is None or self._generations.get(key, 0) == generation

        def target() -> None:
            try:
                result = call()
            except Exception as exc:  # a bug's too: its traceback goes to the log, the exception to ``failed``
                if not isinstance(exc, QuantDeskError):
                    log.exception("%s failed", name)
                error = exc
                self.post(lambda: current() and (failed(error) if failed else log.warning("%s: %s", name, error)))
            else:
                self.post(lambda: current() and done(result) if done else None)
            finally:
                self.post(self._dispatch.end)

        self._dispatch.begin()
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def wait_idle(self, timeout: float = 10.0) -> None:
        for thread in list(self._threads):
            thread.join(timeout)


class DownloadsBridge(QObject):
    """The download manager's events on the GUI thread."""

    download_changed = Signal(object)  # Download

    def __init__(self, manager: "DownloadManager", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.manager = manager
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._dispatch = Dispatcher(self, idle_ms=IDLE_INTERVAL_MS)
        manager.listeners.append(self._on_event)

    def _on_event(self, d: Any) -> None:
        """On a download's thread: queue the event; one delivery per batch (progress coalesced)."""
        with self._lock:
            first = not self._pending
            self._pending.append(d)
        if first:
            self._dispatch.post(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        latest: dict[int, Any] = {}
        for d in events:
            if d.id in latest and latest[d.id].state != d.state:
                self.download_changed.emit(latest[d.id])  # every state change is seen
            latest[d.id] = d
        for d in latest.values():
            self.download_changed.emit(d)

    def shutdown(self) -> None:
        self._dispatch.stop()
        self.manager.close()
