"""The loaded models of the API server and the queue in front of each (asyncio side).

Each loaded model has its own engine process (an ``EngineClient``, the chat window's engine) and a
FIFO queue: one request runs on it at a time, the next waits its turn (fair: first come, first
served), and a full queue answers 429. A model is loaded with the planner's Auto parameters within
the memory budget that the models already loaded leave; when it would not fit, the least recently
used idle model is unloaded first (its process ends), so that a model is never loaded twice and
the budget is never exceeded. A busy model is waited for, never unloaded under a running request.

``Generation`` runs one request's ``EngineClient.stream`` in a worker thread and hands its events to
the event loop; ``cancel()`` (a client that went away) stops the engine within one decode step, and
the model's turn passes on only when the engine has finished.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from app.core import hardware
from app.core.engine.client import EngineClient
from app.core.engine.protocol import ModelInfo, SamplingParams
from app.core.errors import ApiError, BadValueError, QuantDeskError
from app.core.gguf.header import read_header
from app.core.planner import memory
from app.core.planner.auto import plan_load
from app.core.planner.params import LoadParams
from app.core.server import DEFAULT_QUEUE
from app.core.server.catalog import EMBEDDING, ServedModel

log = logging.getLogger(__name__)

WAIT_FOR_MEMORY_S = 300.0  # a load waits this long for busy models to finish before giving up
_END = object()


@dataclass
class Slot:
    """One model: its engine (while loaded), its memory, its queue."""

    model: ServedModel
    client: EngineClient | None = None
    info: ModelInfo | None = None
    params: LoadParams | None = None
    gpu_bytes: int = 0
    cpu_bytes: int = 0
    busy: bool = False
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    last_used: float = 0.0
    generation: "Generation | None" = None
    shared: bool = False  # served on the chat window's engine (SharedEngine), not one of the pool's

    @property
    def loaded(self) -> bool:
        return self.client is not None and self.info is not None


class SharedEngine:
    """The chat window's engine, lent to the in-app server: the model the window has loaded is
    served on it (never loaded a second time), and the memory it holds is kept out of the server's
    budget. The window's model can change at any time; the pool looks at each turn."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self._bytes: tuple[str, int, int] | None = None  # (path, GPU, CPU) of the last estimate

    def loaded(self) -> tuple[Path, ModelInfo] | None:
        info = self.client.model
        if info is None or not self.client.alive:
            return None
        return Path(info.path), info

    def memory(self) -> tuple[int, int]:
        """GPU and CPU bytes the window's model holds (the planner's estimate for its parameters)."""
        now = self.loaded()
        if now is None:
            return 0, 0
        path, info = now
        if self._bytes is None or self._bytes[0] != str(path):
            known = {k: v for k, v in info.params.items() if k in LoadParams.__dataclass_fields__ and k != "reasons"}
            try:
                m = memory.estimate(read_header(path), LoadParams(**known), gpu_offload=self.client.gpu_offload)
                self._bytes = (str(path), m.gpu_bytes, m.cpu_bytes)
            except (QuantDeskError, OSError, TypeError) as exc:
                log.info("the window's model: no estimate (%s)", exc)
                self._bytes = (str(path), 0, 0)
        return self._bytes[1], self._bytes[2]


@dataclass(frozen=True)
class PoolOptions:
    ctx: int | None = None  # every load's context (None: the planner's)
    gpu_mem: int | None = None  # the memory budget; None: what is free when the server starts
    ram: int | None = None
    queue: int = DEFAULT_QUEUE
    threads: int | None = None  # engine threads (None: the planner's)
    engine_env: dict[str, str] | None = None
    log_path: Path | None = None
    workers: tuple[str, ...] = ()  # RPC workers for a model that does not fit here (one split model at a time)


class ModelPool:
    """Owned by one event loop (the server's); engine work runs in threads."""

    def __init__(self, options: PoolOptions | None = None, *, hw: hardware.Hardware | None = None,
                 shared: SharedEngine | None = None) -> None:
        self.options = options or PoolOptions()
        hw = hw or hardware.detect()
        self.budget = memory.budget(hw, self.options.gpu_mem, self.options.ram)
        self.shared = shared
        # the window's model when the free memory was measured: already outside the budget
        self._shared_at_start = shared.memory() if shared is not None else (0, 0)
        self._slots: dict[Path, Slot] = {}
        self._draining: set[Path] = set()  # busy models a load waits for: their next turn waits until it is done
        self._load_lock: asyncio.Lock | None = None
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loads = 0  # models loaded since start (tests and the Server page)
        self.unloads = 0
        self.max_loaded = 0  # the most models loaded at once

    # -- state -----------------------------------------------------------------------------------
    def _bind(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._load_lock = asyncio.Lock()
            self._released = asyncio.Event()

    def loaded(self) -> list[Slot]:
        now = self.shared.loaded() if self.shared is not None else None
        for s in self._slots.values():
            if not s.busy:
                _let_go_if_moved(s, now)
        return [s for s in self._slots.values() if s.loaded]

    def status(self) -> list[dict[str, Any]]:
        return [{"id": s.model.id, "path": str(s.model.path), "busy": s.busy, "queued": len(s.waiters),
                 "n_ctx": s.info.n_ctx if s.info else None, "gpu_bytes": s.gpu_bytes, "cpu_bytes": s.cpu_bytes,
                 "pid": s.client.pid if s.client else None} for s in self.loaded()]

    # -- the queue -------------------------------------------------------------------------------
    async def acquire(self, model: ServedModel) -> Slot:
        """Wait for ``model``'s turn (429 when its queue is full), load it if needed, and hold it;
        the caller must ``release`` it (a ``Generation`` does, when the engine has finished)."""
        self._bind()
        slot = self._slots.setdefault(model.path, Slot(model))
        if slot.busy or slot.waiters:
            if len(slot.waiters) >= self.options.queue:
                raise ApiError(429, f"The queue for model '{model.id}' is full ({self.options.queue} requests waiting); "
                               "try again shortly.", code="queue_full", kind="rate_limit_error", retry_after=2)
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            slot.waiters.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn in slot.waiters:
                    slot.waiters.remove(turn)
                elif turn.done() and not turn.cancelled():
                    self.release(slot)  # the turn was handed to us as we were cancelled: pass it on
                raise
        slot.busy = True
        try:
            await self._ensure_loaded(slot)
        except BaseException:
            self.release(slot)
            raise
        return slot

    def release(self, slot: Slot) -> None:
        """End the holder's turn: the next waiter gets it (still busy), or the model is idle. When
        another model's load waits for this one's memory, its waiters keep their places until that
        load is done (models take turns instead of one model's queue starving the other)."""
        slot.last_used = time.monotonic()
        slot.generation = None
        if slot.model.path not in self._draining and self._hand_over(slot):
            return
        slot.busy = False
        if self._released is not None:
            self._released.set()

    @staticmethod
    def _hand_over(slot: Slot) -> bool:
        while slot.waiters:
            turn = slot.waiters.popleft()
            if not turn.done():
                slot.busy = True
                turn.set_result(None)
                return True
        return False

    # -- loading ---------------------------------------------------------------------------------
    def _shared_now(self) -> tuple[int, int]:
        """What the window's model holds beyond what it held when the budget was measured."""
        if self.shared is None:
            return 0, 0
        gpu, cpu = self.shared.memory()
        return gpu - self._shared_at_start[0], cpu - self._shared_at_start[1]

    async def _use_shared(self, slot: Slot) -> bool:
        """Serve ``slot`` on the window's engine when the window has its model loaded (the pool's
        own copy, if any, is unloaded: never two copies); let go of the window's engine when the
        window has moved to another model. True when the slot is served by the window's engine."""
        if self.shared is None:
            return False
        now = self.shared.loaded()
        _let_go_if_moved(slot, now)
        if now is not None and now[0] == slot.model.path and slot.model.kind != EMBEDDING:
            if slot.loaded and not slot.shared:
                await self._unload(slot, why="(the chat window has it loaded: served on the window's engine)")
            slot.client, slot.info, slot.shared = self.shared.client, now[1], True
            slot.gpu_bytes = slot.cpu_bytes = 0
            return True
        return False

    async def drop_copy(self, path: Path) -> None:
        """The window is about to load ``path``: unload the pool's own idle copy first (a busy one
        goes when its turn ends: its next turn finds the window's)."""
        slot = self._slots.get(path)
        if slot is not None and slot.loaded and not slot.shared and not slot.busy:
            await self._unload(slot, why="(the chat window is loading it)")

    async def _ensure_loaded(self, slot: Slot) -> None:
        if await self._use_shared(slot) or slot.loaded:
            return
        assert self._load_lock is not None and self._released is not None
        async with self._load_lock:
            try:
                await self._load_within_budget(slot)
            finally:
                self._draining.clear()
                for other in self._slots.values():  # turns held back while this load waited
                    if not other.busy and other is not slot:
                        self._hand_over(other)

    async def _load_within_budget(self, slot: Slot) -> None:
        assert self._released is not None
        if slot.loaded:
            return
        deadline = time.monotonic() + WAIT_FOR_MEMORY_S
        client = slot.client or EngineClient(log_path=self.options.log_path, env=self.options.engine_env)
        slot.client = client
        header = await asyncio.to_thread(_start_and_read, client, slot.model.path)
        while True:
            ideal = self._plan(header, client.gpu_offload, whole=True)
            others = [s for s in self.loaded() if s is not slot]
            if self._fits(ideal[1], ideal[2]):
                params, gpu, cpu = ideal
                break
            idle = sorted((s for s in others if not s.busy), key=lambda s: s.last_used)
            if idle:
                await self._unload(idle[0], why=f"to make room for {slot.model.id}")
                continue
            if any(s.busy for s in others) and time.monotonic() < deadline:
                self._draining = {s.model.path for s in others if s.busy}
                self._released.clear()
                try:
                    await asyncio.wait_for(self._released.wait(), timeout=5.0)
                except asyncio.TimeoutError:
                    pass
                continue
            params, gpu, cpu = self._plan(header, client.gpu_offload, whole=False)
            break
        t0 = time.perf_counter()
        try:
            info = await asyncio.to_thread(client.load, slot.model.path, params, embedding=slot.model.kind == EMBEDDING)
        except QuantDeskError as exc:
            await asyncio.to_thread(client.close)
            slot.client = None
            raise ApiError(500, f"Model '{slot.model.id}' could not be loaded: {exc}", code="model_load_failed",
                           kind="server_error") from None
        slot.info, slot.params, slot.gpu_bytes, slot.cpu_bytes = info, params, gpu, cpu
        self.loads += 1
        self.max_loaded = max(self.max_loaded, len(self.loaded()))
        log.info("loaded %s (context %s, %s GPU layers, ~%s) in %.1f s", slot.model.id, info.n_ctx, info.n_gpu_layers,
                 memory.human_bytes(gpu + cpu), time.perf_counter() - t0)

    def _plan(self, header: Any, gpu_offload: bool, *, whole: bool) -> tuple[LoadParams, int, int]:
        """Auto parameters within the whole budget (``whole``) or within what the loaded models
        leave, and the memory they take (GPU, CPU)."""
        used_gpu = sum(s.gpu_bytes for s in self.loaded())
        used_cpu = sum(s.cpu_bytes for s in self.loaded())
        window_gpu, window_cpu = self._shared_now()
        gpu = self.budget.gpu - window_gpu - (0 if whole else used_gpu)
        cpu = self.budget.cpu - window_cpu - (0 if whole else used_cpu)
        try:
            busy = any(s.params is not None and s.params.rpc for s in self.loaded())  # the workers are taken
            params = plan_load(header, ctx=self.options.ctx, gpu_offload_supported=gpu_offload,
                               gpu_mem=gpu + memory.GPU_MARGIN if gpu > 0 else 0, ram=max(cpu, 0),
                               workers=list(self.options.workers) if self.options.workers and not busy else None)
        except BadValueError as exc:
            raise ApiError(400, f"{exc}" + ("" if whole else " beside the models being used"), param="model",
                           code="model_does_not_fit") from None
        if self.options.threads:
            from dataclasses import replace

            params = replace(params, n_threads=self.options.threads)
        m = memory.estimate(header, params, gpu_offload=gpu_offload)
        return params, m.gpu_bytes, m.cpu_bytes

    def _fits(self, gpu: int, cpu: int) -> bool:
        window_gpu, window_cpu = self._shared_now()
        used_gpu = sum(s.gpu_bytes for s in self.loaded()) + window_gpu
        used_cpu = sum(s.cpu_bytes for s in self.loaded()) + window_cpu
        return used_gpu + gpu <= self.budget.gpu + (memory.GPU_MARGIN if gpu else 0) and used_cpu + cpu <= self.budget.cpu

    async def _unload(self, slot: Slot, *, why: str) -> None:
        client, slot.client, slot.info = slot.client, None, None
        slot.gpu_bytes = slot.cpu_bytes = 0
        if slot.shared:  # the window's engine is the window's: let go of it only
            slot.shared = False
            return
        if client is not None:
            await asyncio.to_thread(client.close)
        self.unloads += 1
        log.info("unloaded %s %s", slot.model.id, why)

    # -- generating ------------------------------------------------------------------------------
    def generate(self, slot: Slot, messages: list[dict[str, Any]], sampling: SamplingParams, **options: Any) -> "Generation":
        gen = Generation(self, slot, messages, sampling, options)
        slot.generation = gen
        gen.start()
        return gen

    def cancel_all(self) -> None:
        """Stop every running generation (the server is stopping); safe from any thread."""
        for slot in list(self._slots.values()):
            gen = slot.generation
            if gen is not None:
                gen.cancel()

    def close(self) -> None:
        """Stop every engine process (blocking)."""
        self.cancel_all()
        for slot in list(self._slots.values()):
            client, slot.client, slot.info = slot.client, None, None
            if client is not None and not slot.shared:
                client.close()


def _let_go_if_moved(slot: Slot, window: tuple[Path, ModelInfo] | None) -> None:
    """A slot served on the window's engine is no longer loaded once the window has another model."""
    if slot.shared and (window is None or window[0] != slot.model.path):
        slot.client, slot.info, slot.shared = None, None, False


def _start_and_read(client: EngineClient, path: Path) -> Any:
    client.start()
    return read_header(path)


class Generation:
    """One request's reply, streamed from a worker thread into the event loop."""

    def __init__(self, pool: ModelPool, slot: Slot, messages: list[dict[str, Any]], sampling: SamplingParams,
                 options: dict[str, Any]) -> None:
        self.pool, self.slot = pool, slot
        self.messages, self.sampling, self.options = messages, sampling, options
        assert pool._loop is not None
        self.loop = pool._loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.request_id: int | None = None  # the engine's id of this reply (a shared engine serves others too)
        self.started = time.perf_counter()
        self.on_finish: list[Callable[[], None]] = []

    def start(self) -> None:
        threading.Thread(target=self._work, name=f"api-{self.slot.model.id}", daemon=True).start()

    def _put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    def _work(self) -> None:
        client = self.slot.client
        try:
            assert client is not None
            shared: dict[str, Any] = {"expect_model": str(self.slot.model.path)} if self.slot.shared else {}
            for event in client.stream(self.messages, self.sampling, **self.options, **shared):
                if self.request_id is None:
                    self.request_id = event.get("id")
                if self.cancelled.is_set():
                    client.cancel(self.request_id)  # again: a cancel that came before the request had its id is lost
                self._put(event)
        except BaseException as exc:  # delivered to the request's handler
            self._put(exc)
        finally:
            self.finished.set()
            self._put(_END)
            try:
                self.loop.call_soon_threadsafe(self.pool.release, self.slot)
            except RuntimeError:
                pass

    def cancel(self) -> None:
        """Stop generating (the client went away); the model's turn passes on when the engine stops."""
        if not self.finished.is_set():
            self.cancelled.set()
            client = self.slot.client
            if client is not None and self.request_id is not None:  # not yet running: cancelled at its first event
                client.cancel(self.request_id)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """``start``, ``token`` ... and ``done`` events; an engine error is raised here."""
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
