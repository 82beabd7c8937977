"""The one bridge between the Qt GUI and the core's blocking engine client.

Every engine request runs on a background thread; results come back as Qt signals, which Qt
delivers on the GUI thread. ``finished`` is emitted in ``finally`` so the UI never stays busy.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from app.core.engine import EngineClient, ModelInfo, Reply, SamplingParams
from app.core.errors import EngineCrashed, QuantDeskError

log = logging.getLogger(__name__)


class EngineBridge(QObject):
    model_loading = Signal(str)
    model_loaded = Signal(object)  # ModelInfo
    load_failed = Signal(str)
    reply_started = Signal(dict)
    token_received = Signal(str)
    reply_finished = Signal(object)  # Reply
    reply_failed = Signal(str, bool, str)  # message, engine crashed, partial text
    tokens_counted = Signal(int, int)  # tokens, n_ctx
    busy_changed = Signal(bool)

    def __init__(self, client: EngineClient | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client or EngineClient()
        self._busy = False
        self._threads: list[threading.Thread] = []

    @property
    def busy(self) -> bool:
        return self._busy

    def _run(self, name: str, job: Callable[[], None]) -> None:
        def target() -> None:
            self._set_busy(True)
            try:
                job()
            finally:
                self._set_busy(False)

        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.busy_changed.emit(busy)

    def load_model(self, path: str, *, ctx: int | None = None, gpu_layers: int | None = None) -> None:
        self.model_loading.emit(path)

        def job() -> None:
            try:
                info: ModelInfo = self.client.load_model(path, ctx=ctx, gpu_layers=gpu_layers)
            except QuantDeskError as exc:
                self.load_failed.emit(str(exc))
            except Exception as exc:  # unexpected: still a message, never a dead window
                log.exception("model load failed")
                self.load_failed.emit(f"{path}: cannot load model: {exc}")
            else:
                self.model_loaded.emit(info)

        self._run("engine-load", job)

    def chat(self, messages: list[dict[str, str]], sampling: SamplingParams) -> None:
        def job() -> None:
            partial: list[str] = []
            try:
                for event in self.client.stream(messages, sampling):
                    kind = event["ev"]
                    if kind == "start":
                        self.reply_started.emit(event)
                    elif kind == "token":
                        partial.append(event["text"])
                        self.token_received.emit(event["text"])
                    elif kind == "done":
                        reply: Reply = event["reply"]
                        self.reply_finished.emit(reply)
            except EngineCrashed as exc:
                self.reply_failed.emit(str(exc), True, "".join(partial))
            except QuantDeskError as exc:
                self.reply_failed.emit(str(exc), False, "".join(partial))
            except Exception as exc:
                log.exception("chat failed")
                self.reply_failed.emit(f"the reply failed: {exc}", False, "".join(partial))

        self._run("engine-chat", job)

    def count_tokens(self, messages: list[dict[str, str]]) -> None:
        def job() -> None:
            try:
                n = self.client.count_tokens(messages)
            except Exception as exc:  # the meter is informative only
                log.info("token count unavailable: %s", exc)
                return
            model = self.client.model
            self.tokens_counted.emit(n, model.n_ctx if model else 0)

        self._run("engine-count", job)

    def cancel(self) -> None:
        self.client.cancel()

    def shutdown(self) -> None:
        self.client.cancel()
        self.client.close()
        for thread in self._threads:
            thread.join(timeout=5)
