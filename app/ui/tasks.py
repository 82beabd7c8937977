"""The one bridge between the Qt GUI and the core's blocking engine client.

Every engine request runs on a background thread. The thread never touches Qt: it posts its
results to a queue, and a timer on the GUI thread drains the queue and emits the signals there
(emitting PySide signals from plain Python threads crashed the interpreter with a refcount error
in PySide6 6.12). A job's end is posted in ``finally`` so the UI never stays busy.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.engine import ModelInfo, Reply, SamplingParams
from app.core.engine.client import EngineClient
from app.core.errors import EngineCrashed, QuantDeskError
from app.core.planner.params import LoadParams

if TYPE_CHECKING:
    from app.core.hub.downloads import DownloadManager

log = logging.getLogger(__name__)

PUMP_INTERVAL_MS = 10
ENGINE_NICE = 5  # the window's thread wins the CPU over the engine's busy threads


class EngineBridge(QObject):
    model_loading = Signal(str)
    model_loaded = Signal(object)  # ModelInfo
    load_failed = Signal(str)
    model_unloaded = Signal()
    reply_started = Signal(dict)
    token_received = Signal(str)
    reply_finished = Signal(object)  # Reply
    reply_failed = Signal(str, bool, str)  # message, engine crashed, partial text
    tokens_counted = Signal(int, int)  # tokens, n_ctx
    busy_changed = Signal(bool)
    engine_notice = Signal(str)  # one line for the user, e.g. a step down to a safer CPU build

    def __init__(self, client: EngineClient | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client or EngineClient(nice=ENGINE_NICE)
        self._jobs = 0
        self._threads: list[threading.Thread] = []
        self._outbox: queue.SimpleQueue[tuple[str, tuple[Any, ...]]] = queue.SimpleQueue()
        self._pump = QTimer(self)
        self._pump.setInterval(PUMP_INTERVAL_MS)
        self._pump.timeout.connect(self._drain)

    @property
    def busy(self) -> bool:
        return self._jobs > 0

    def _post(self, signal_name: str, *args: Any) -> None:
        """From a worker thread: emit ``signal_name`` on the GUI thread."""
        self._outbox.put((signal_name, args))

    def _drain(self) -> None:
        while True:
            try:
                name, args = self._outbox.get_nowait()
            except queue.Empty:
                break
            if name == "__job_done__":
                self._jobs -= 1
                if self._jobs == 0:
                    self.busy_changed.emit(False)
            else:
                getattr(self, name).emit(*args)
        if self._jobs == 0:
            self._pump.stop()

    def _run(self, name: str, job: Callable[[], None]) -> None:
        def target() -> None:
            try:
                job()
            finally:
                for notice in self.client.take_notices():
                    self._post("engine_notice", notice)
                self._post("__job_done__")

        self._jobs += 1
        if self._jobs == 1:
            self.busy_changed.emit(True)
        self._pump.start()
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def load_model(self, path: str, *, ctx: int | None = None, gpu_layers: int | None = None,
                   params: LoadParams | None = None) -> None:
        """Load ``path`` with the planner's parameters ("Auto"), or exactly ``params``."""
        self.model_loading.emit(path)

        def job() -> None:
            try:
                if params is not None:
                    info: ModelInfo = self.client.load(path, params)
                else:
                    info = self.client.load_model(path, ctx=ctx, gpu_layers=gpu_layers)
            except QuantDeskError as exc:
                self._post("load_failed", str(exc))
            except Exception as exc:  # unexpected: still a message, never a dead window
                log.exception("model load failed")
                self._post("load_failed", f"{path}: cannot load model: {exc}")
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
            try:
                for event in self.client.stream(messages, sampling):
                    kind = event["ev"]
                    if kind == "start":
                        self._post("reply_started", event)
                    elif kind == "token":
                        partial.append(event["text"])
                        self._post("token_received", event["text"])
                    elif kind == "done":
                        reply: Reply = event["reply"]
                        self._post("reply_finished", reply)
            except EngineCrashed as exc:
                self._post("reply_failed", str(exc), True, "".join(partial))
            except QuantDeskError as exc:
                self._post("reply_failed", str(exc), False, "".join(partial))
            except Exception as exc:
                log.exception("chat failed")
                self._post("reply_failed", f"the reply failed: {exc}", False, "".join(partial))

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
        self.client.cancel()

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
        self._outbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pump = QTimer(self)
        self._pump.setInterval(PUMP_INTERVAL_MS)
        self._pump.timeout.connect(self._drain)
        self._running = 0
        self._threads: list[threading.Thread] = []

    @property
    def busy(self) -> bool:
        return self._running > 0

    def post(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the GUI thread."""
        self._outbox.put(callback)

    def _drain(self) -> None:
        while True:
            try:
                callback = self._outbox.get_nowait()
            except queue.Empty:
                break
            try:
                callback()
            except Exception:  # a GUI callback's bug is logged, the pump keeps running
                log.exception("task callback failed")
        if self._running == 0 and self._outbox.empty():
            self._pump.stop()

    def run(self, name: str, call: Callable[[], Any], done: Callable[[Any], None] | None = None,
            failed: Callable[[str], None] | None = None) -> None:
        def finish() -> None:
            self._running -= 1

        def target() -> None:
            try:
                result = call()
            except QuantDeskError as exc:
                message = str(exc)
                self.post(lambda: failed(message) if failed else log.warning("%s: %s", name, message))
            except Exception as exc:  # unexpected: a sentence for the user, the traceback in the log
                log.exception("%s failed", name)
                message = f"{name}: {type(exc).__name__}: {exc}"
                self.post(lambda: failed(message) if failed else None)
            else:
                self.post(lambda: done(result) if done else None)
            finally:
                self.post(finish)

        self._running += 1
        self._pump.start()
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
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        manager.listeners.append(self._outbox.put)
        self._pump = QTimer(self)
        self._pump.setInterval(50)
        self._pump.timeout.connect(self._drain)
        self._pump.start()

    def _drain(self) -> None:
        latest: dict[int, Any] = {}
        while True:
            try:
                d = self._outbox.get_nowait()
            except queue.Empty:
                break
            if d.id in latest and latest[d.id].state != d.state:
                self.download_changed.emit(latest[d.id])  # every state change is seen
            latest[d.id] = d
        for d in latest.values():
            self.download_changed.emit(d)

    def shutdown(self) -> None:
        self._pump.stop()
        self.manager.close()
