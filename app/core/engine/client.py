"""The parent side of the engine: starts the host process and talks to it.

One ``EngineClient`` owns one host process. Requests (load, chat, count) are serialised; ``cancel``
may be called from any thread while a chat runs. When the host dies (a native crash, an abort, out of
memory, killed), the running request raises ``EngineCrashed`` with what the reply had so far, and
the next request starts a new host and loads the same model again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

from app.core import paths
from app.core.engine import cpu_policy
from app.core.engine import cpu_variants as cv
from app.core.engine.protocol import ModelInfo, Reply, SamplingParams, send
from app.core.errors import Cancelled, ContextOverflow, EngineCrashed, EngineError, ImageRefused, ModelFileError
from app.core.gguf.header import read_header
from app.core.planner.auto import plan_load
from app.core.planner.params import LoadParams
from app.core.proc.launch import child_env, popen_options, python_command

log = logging.getLogger(__name__)

_EOF = {"ev": "__eof__"}


def host_command() -> list[str]:
    """How to start the host: ``python -m app.core.engine.host``, or the frozen app running itself."""
    return python_command("app.core.engine.host")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class EngineClient:
    def __init__(self, *, log_path: Path | None = None, env: dict[str, str] | None = None, nice: int = 0) -> None:
        """``nice`` > 0 lowers the engine's CPU priority, so that a GUI sharing the cores stays
        responsive while the engine's threads are busy (it costs nothing when the GUI is idle)."""
        self.log_path = log_path or paths.logs_dir() / "engine.log"
        self._env = env
        self._nice = nice
        self._proc: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._write_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._current_id: int | None = None
        self.model: ModelInfo | None = None
        self._wanted: tuple[str, LoadParams, dict[str, Any] | None] | None = None
        self.restarts = 0
        self.last_crash: str | None = None
        self.gpu_offload = False  # reported by the host: can this llama.cpp build offload layers?
        self._load_aborted = False
        self._loading = False
        self.build_info: dict[str, str] = {}  # reported by the host: llama_cpp_version, system_info
        self.cpu_variant: cv.Variant | None = None  # the CPU build the host runs (cpu_variants)
        self.cpu_reason = ""
        self._decoded = False  # has this host process produced a token yet (the SIGILL fallback's window)
        self._last_exit: int | None = None
        self._notices: list[str] = []
        self._plan_options: dict[str, Any] = {}  # load_model's workers and memory overrides, for a re-plan
        # prompt-lookup speculative decoding for requests that do not say: "auto" (on per model once
        # measured to win here, engine.speculation), 0 (off), a draft length, or None: the setting
        self.lookup: int | str | None = None
        # thinking options for requests that do not say (None: those saved for the model in Settings)
        self.thinking: dict[str, Any] | None = None
        self._embedding = False  # the model was loaded for embeddings (load(embedding=True))

    # -- process --------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def wanted_model(self) -> str | None:
        """The model the next request runs on (loaded now, or reloaded after a crash)."""
        return self._wanted[0] if self._wanted else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the host process if it is not running (safe from any thread). A host that dies of
        an illegal instruction while starting is started again on the next safer CPU build."""
        with self._start_lock:
            while not self.alive:
                try:
                    self._start()
                except EngineCrashed:
                    if not self._fall_back_after_sigill("while starting"):
                        raise

    def take_notices(self) -> list[str]:
        """One-line notices for the user since the last call (e.g. a CPU-build fallback)."""
        out, self._notices = self._notices, []
        return out

    def _fall_back_after_sigill(self, stage: str) -> bool:
        """After the host died: when it was SIGILL before its first token, step down to the next
        safer CPU build and return True. The build is marked bad for this machine only when the
        starter model's self-check dies on it too (one hostile file must not downgrade the machine)."""
        bad = self.cpu_variant
        if self._last_exit != -signal.SIGILL or self._decoded or bad is None:
            return False
        from app.core.engine import selfcheck

        state = cpu_policy.state_path()
        result = selfcheck.check(bad.name)
        if result.died_of_signal:
            cv.mark_bad(state, bad, f"the starter model's self-check {result.detail}")
        nxt = cv.next_safer(bad, state)
        if nxt is None:
            return False
        self.cpu_variant, self.cpu_reason = nxt, f"{bad.name} died of an illegal instruction here"
        kept = ("; its self-check died too, so it is not used on this machine again" if result.died_of_signal
                else "; the starter model runs on it, so only this session steps down")
        notice = (f"The engine died of an illegal instruction {stage} on the {bad.describe()} CPU build "
                  f"and now runs on {nxt.describe()}{kept}.")
        log.warning("%s", notice)
        self._notices.append(notice)
        self.restarts += 1
        return True

    def _start(self) -> None:
        if self.cpu_variant is None:
            try:
                choice = cpu_policy.current(self._env)
            except cv.VariantError as exc:
                raise EngineError(str(exc)) from None
            self.cpu_variant, self.cpu_reason = choice.variant, choice.reason
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = open(self.log_path, "a", encoding="utf-8")
        env = child_env(self._env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["QUANTDESK_ENGINE_NICE"] = str(self._nice)
        env[cv.ENV] = self.cpu_variant.name
        env.setdefault("QUANTDESK_KV_CACHE_DIR", str(paths.home() / "kv-cache"))  # saved KV caches (engine.kvstore)
        env.setdefault("QUANTDESK_SPECULATION_FILE", str(paths.home() / "speculation.json"))  # engine.speculation
        self._decoded = False
        self._last_exit = None
        self._proc = subprocess.Popen(  # type: ignore[call-overload]
            host_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logfile,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env=env,
            **popen_options(env),
        )
        logfile.close()
        self._events = queue.Queue()
        threading.Thread(target=self._read, args=(self._proc, self._events), name="engine-reader", daemon=True).start()
        event = self._next_event(None)
        if event.get("ev") != "ready":
            raise EngineError(f"the engine did not start: {event.get('message', event)}")
        self.gpu_offload = bool(event.get("gpu_offload"))
        self.build_info = {k: event[k] for k in ("llama_cpp_version", "system_info", "cpu_variant") if k in event}
        self.model = None
        log.info("engine host started, pid %s", self._proc.pid)

    @staticmethod
    def _read(proc: subprocess.Popen[str], events: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(json.loads(line))
            except json.JSONDecodeError:
                log.warning("engine: unreadable line %r", line[:200])
        events.put(_EOF)

    def _send(self, message: dict[str, Any]) -> None:
        with self._write_lock:
            if not self.alive or self._proc is None or self._proc.stdin is None:
                raise self._crashed("")
            try:
                send(self._proc.stdin, message)
            except (BrokenPipeError, OSError):
                raise self._crashed("") from None

    def _log_tail(self, n: int = 8) -> list[str]:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines[-n:] if line.strip()]

    def _crashed(self, partial: str) -> EngineCrashed:
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
        self._last_exit = code
        tail = self._log_tail(4)
        reason = f"The engine process {_describe_exit(code)}"
        if tail:
            reason += f"; its last log line: {tail[-1][:300]}"
        reason += ". Your conversation is kept; the engine restarts with the next message."
        self.last_crash = reason
        self.model = None
        err = EngineCrashed(reason)
        err.partial_text = partial  # type: ignore[attr-defined]
        return err

    def _next_event(self, rid: int | None, partial: str = "") -> dict[str, Any]:
        while True:
            event = self._events.get()
            if event is _EOF:
                raise self._crashed(partial)
            if rid is None or event.get("id") in (rid, None):
                return event

    def close(self) -> None:
        proc, self._proc = self._proc, None
        self.model = None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin:
                send(proc.stdin, {"op": "shutdown"})
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def abort_load(self) -> None:
        """From any thread: abandon the load in progress (it raises Cancelled); a load already
        inside the engine is stopped by killing the engine, and the next request starts a fresh one."""
        self._load_aborted = True
        proc = self._proc
        if self._loading and proc is not None and proc.poll() is None:
            proc.kill()

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------
    def load_model(self, path: str | Path, *, ctx: int | None = None, gpu_layers: int | None = None,
                   draft_model: str | Path | None = None, workers: list[str] | None = None,
                   gpu_mem: int | None = None, ram: int | None = None, strict: bool = True) -> ModelInfo:
        """Check the file, choose load parameters for it, and load it; ``draft_model``: a small
        model of the same vocabulary for speculative decoding, placed by the planner beside it;
        ``workers``: RPC workers (HOST:PORT) the planner may split it over when it does not fit
        here (``gpu_mem``/``ram`` replace the detected memory, to force a split); ``strict=False``:
        a worker that cannot be used is left out instead of stopping the load (the app's saved ones)."""
        self._load_aborted = False
        self._embedding = False
        header = read_header(path)
        self.start()
        self._plan_options = {"workers": workers, "gpu_mem": gpu_mem, "ram": ram}
        params = plan_load(header, ctx=ctx, gpu_layers=gpu_layers, gpu_offload_supported=self.gpu_offload,
                           workers=workers, gpu_mem=gpu_mem, ram=ram, strict=strict)
        draft = None
        if draft_model is not None:
            from app.core import hardware
            from app.core.planner import memory

            small = read_header(draft_model)
            main = memory.plan(header, hardware.detect(), ctx=params.n_ctx, gpu_offload=self.gpu_offload)
            main = replace(main, params=params)
            placed = memory.plan_draft(main, small, hardware.detect())
            if placed is None:
                raise ModelFileError(f"{draft_model}: the draft model does not fit beside {Path(path).name} "
                                     f"at context {params.n_ctx:,}")
            params = replace(params, reasons=params.reasons + (placed.reason,))
            draft = placed.to_dict()
        return self._load_locked(str(header.path), params, draft)

    def load(self, path: str | Path, params: LoadParams, draft: dict[str, Any] | None = None, *,
             embedding: bool = False) -> ModelInfo:
        """Load ``path`` with ``params`` (replacing any loaded model); raise with the cause.
        ``draft``: {"path", "n_gpu_layers"} of a draft model for speculative decoding;
        ``embedding``: load an embedding model, for ``embed``."""
        self._load_aborted = False
        self._embedding = embedding
        return self._load_locked(str(Path(path).expanduser().absolute()), params, draft)

    def _load_locked(self, path: str, params: LoadParams, draft: dict[str, Any] | None = None) -> ModelInfo:
        with self._request_lock:
            if self._load_aborted:
                raise Cancelled("loading")
            return self._load(path, params, abortable=True, draft=draft)

    def _load(self, path: str, params: LoadParams, abortable: bool = False, draft: dict[str, Any] | None = None) -> ModelInfo:
        self._wanted = (path, params, draft)
        self.start()
        rid = next(self._ids)
        self._send({"op": "load", "id": rid, "path": path, "params": params.to_dict(), "draft": draft,
                    **({"embedding": True} if self._embedding else {})})
        try:
            self._loading = abortable
            if abortable and self._load_aborted:
                self.abort_load()
            event = self._next_event(rid)
        except EngineCrashed as exc:
            if abortable and self._load_aborted:
                self._wanted = None
                raise Cancelled("loading") from None
            if self._fall_back_after_sigill("while loading a model"):
                return self._load(path, params, abortable, draft)
            self._wanted = None  # a model that kills the engine on load is not reloaded by itself
            raise ModelFileError(f"{path}: cannot load model: the engine crashed while loading it ({exc})") from None
        finally:
            self._loading = False
        if event["ev"] == "error":
            self._wanted = None
            raise ModelFileError(event["message"])
        self.model = ModelInfo.from_dict(event["info"])
        return self.model

    def unload(self) -> None:
        """Free the model's memory; the engine process stays up for the next load."""
        with self._request_lock:
            self._wanted = None
            if not self.alive:
                self.model = None
                return
            rid = next(self._ids)
            self._send({"op": "unload", "id": rid})
            self._next_event(rid)
            self.model = None

    def _ensure_loaded(self) -> None:
        if self.alive and self.model is not None:
            return
        if self._wanted is None:
            raise EngineError("no model is loaded")
        if not self.alive and self._proc is not None:
            self.restarts += 1
            log.warning("engine restarting after: %s", self.last_crash)
        path, params, draft = self._wanted
        if params.rpc:
            params = self._without_dead_workers(path, params)
        self._load(path, params, draft=draft)

    def _without_dead_workers(self, path: str, params: LoadParams) -> LoadParams:
        """Before a reload: the workers of the split that still answer; when one is gone the model
        is planned again without it, and a notice says so (llama.cpp would abort on it)."""
        from app.core.errors import WorkerError
        from app.core.rpc.client import probe

        alive, gone = [], []
        for address in params.rpc:
            try:
                probe(address)
                alive.append(address)
            except WorkerError as exc:
                gone.append(str(exc))
        if not gone:
            return params
        options = self._plan_options
        replanned = plan_load(read_header(path), ctx=params.n_ctx, gpu_offload_supported=self.gpu_offload,
                              workers=alive or None, gpu_mem=options.get("gpu_mem"), ram=options.get("ram"),
                              strict=False)  # just probed: asked again only if the model does not fit here
        self._notices.append(f"reloaded {Path(path).name} without a worker that is gone ({'; '.join(gone)})")
        self._wanted = (path, replanned, self._wanted[2] if self._wanted else None)
        return replanned

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        with self._request_lock:
            self._ensure_loaded()
            rid = next(self._ids)
            self._send({"op": "count", "id": rid, "messages": messages})
            event = self._next_event(rid)
            if event["ev"] == "error":
                raise EngineError(event["message"])
            return int(event["tokens"])

    def embed(self, texts: list[str], *, normalize: bool = True) -> tuple[list[list[float]], int]:
        """Embeddings of ``texts`` and the tokens they took (the model loaded with ``embedding``)."""
        with self._request_lock:
            self._ensure_loaded()
            rid = next(self._ids)
            self._send({"op": "embed", "id": rid, "texts": texts, "normalize": normalize})
            event = self._next_event(rid)
            if event["ev"] == "error":
                raise self._error(event)
            return event["vectors"], int(event["tokens"])

    @staticmethod
    def _error(event: dict[str, Any]) -> EngineError:
        if event.get("kind") == "ContextOverflow":
            return ContextOverflow(event["message"], prompt_tokens=int(event.get("prompt_tokens", 0)),
                                   reserve=int(event.get("reserve", 0)), n_ctx=int(event.get("n_ctx", 0)))
        if event.get("kind") == "ImageError":
            return ImageRefused(event["message"])
        return EngineError(event["message"])

    def stream(self, messages: list[dict[str, Any]], sampling: SamplingParams | None = None, *,
               grammar: str | None = None, logit_bias: dict[int, float] | None = None,
               lookup: int | str | None = None, draft_tokens: int = 0, thinking: dict[str, Any] | None = None,
               **api: Any) -> Iterator[dict[str, Any]]:
        """Yield ``start`` and ``token`` events, then the final ``done`` event with the ``Reply``.
        ``grammar``: GBNF the reply must follow; ``logit_bias``: token id -> bias; ``lookup``: draft
        length of prompt-lookup speculative decoding (0: off; "auto": on for this model once measured to
        win on this machine; None: ``self.lookup``); ``draft_tokens``: draft length with
        the loaded draft model; ``thinking``: the reasoning options (``enabled``, ``budget``,
        ``effort``, ``tags``; None: ``self.thinking``, else those saved for the model). ``api``, for the API server: ``tools`` (to the template), ``stop``
        (more stop strings), ``json_schema`` (the reply is JSON of it; {}: any object), ``trim``
        (False: a prompt that does not fit raises ContextOverflow, no turn is dropped) and
        ``prompt`` (raw text instead of messages, no template)."""
        expect = api.pop("expect_model", None)  # a shared engine: the model the request was queued for
        with self._request_lock:
            self._ensure_loaded()
            if expect is not None and (self.model is None or Path(self.model.path) != Path(expect)):
                raise EngineError(f"the chat window switched the engine to another model than {Path(expect).name} "
                                  "while this request waited; send it again")
            rid = next(self._ids)
            self._current_id = rid
            partial: list[str] = []
            finished = False
            try:
                request = {"op": "chat", "messages": messages, "sampling": (sampling or SamplingParams()).to_dict(),
                           "grammar": grammar, "logit_bias": {str(k): v for k, v in (logit_bias or {}).items()},
                           "lookup": self._lookup(lookup), "draft_tokens": draft_tokens,
                           "thinking": self._thinking(thinking),
                           **{k: v for k, v in api.items() if v is not None}}
                self._send({**request, "id": rid})
                while True:
                    try:
                        event = self._next_event(rid, "".join(partial))
                    except EngineCrashed:
                        # SIGILL on the first decode: the same request again on a safer CPU build
                        if partial or not self._fall_back_after_sigill("on its first reply"):
                            raise
                        self._ensure_loaded()
                        rid = self._current_id = next(self._ids)
                        self._send({**request, "id": rid})
                        continue
                    kind = event["ev"]
                    if kind in ("token", "done"):
                        self._decoded = True
                    if kind == "token":
                        partial.append(event["text"])
                    elif kind == "error":
                        raise self._error(event)
                    elif kind == "done":
                        event["reply"] = Reply.from_dict(event["reply"])
                    if kind == "done":
                        finished = True
                    yield event
                    if finished:
                        return
            finally:
                if not finished:
                    self.cancel()  # the consumer gave up on the reply: stop generating it
                self._current_id = None

    def _thinking(self, asked: dict[str, Any] | None) -> dict[str, Any]:
        if asked is not None:
            return asked
        if self.thinking is not None:
            return self.thinking
        from app.core import settings

        return settings.thinking_for(self.wanted_model)

    def _lookup(self, asked: int | str | None) -> int | str:
        if asked is not None:
            return asked
        if self.lookup is not None:
            return self.lookup
        from app.core import settings
        from app.core.engine.speculation import DRAFT

        chosen = os.environ.get("QUANTDESK_SPECULATION") or settings.load().speculation  # auto, on or off
        return {"on": DRAFT, "off": 0}.get(chosen, "auto")

    def chat(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingParams | None = None,
        on_token: Callable[[str], None] | None = None,
        on_reasoning: Callable[[str], None] | None = None,
        **options: Any,
    ) -> Reply:
        """The whole reply; ``on_token`` gets the answer's text as it comes, ``on_reasoning`` the
        reasoning's; ``options`` as for ``stream``."""
        reply: Reply | None = None
        for event in self.stream(messages, sampling, **options):
            if event["ev"] == "token":
                if on_reasoning is not None and event.get("reasoning"):
                    on_reasoning(event["reasoning"])
                if on_token is not None and event["text"]:
                    on_token(event["text"])
            elif event["ev"] == "done":
                reply = event["reply"]
        assert reply is not None
        return reply

    def cancel(self, request_id: int | None = None) -> None:
        """Stop the running reply (safe from any thread); the reply ends with reason 'cancelled'.
        ``request_id`` (the ``id`` of the reply's events): only that reply, when the engine is
        shared (the chat window's engine serving the API server too)."""
        rid = self._current_id
        if request_id is not None and rid != request_id:
            return
        if rid is not None and self.alive:
            try:
                self._send({"op": "cancel", "id": rid})
            except EngineCrashed:
                pass
