"""The engine host: llama-cpp-python in its own process.

Started by ``EngineClient`` as ``python -m app.core.engine.host`` (see app.core.proc.launch). It reads one JSON op per line on
stdin and writes one JSON event per line on the protocol stream (the original stdout; stray native
output is sent to stderr, which the client sends to the engine log). A native crash here ends only
this process; the client sees the pipe close and reports it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import queue
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from app.core.engine import cpu_variants
from app.core.engine.protocol import SamplingParams, send
from app.core.planner.params import GGML_TYPES, first_offloaded, offloaded_units
from app.core.redact import redact

LOG_TAIL: collections.deque[str] = collections.deque(maxlen=2000)  # a load's whole log (its buffer sizes)
TEMPLATE_S = 5.0  # a chat template that renders longer is refused
IDLE_SAVE_S = 1.0  # after a reply, this long without a request counts as idle


class Host:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancel_id: Any = None
        self.current_id: Any = None
        self.llm: Any = None
        self.fmt: Any = None
        self.path: str | None = None
        self._decoded = False  # has this process decoded a token yet (the CPU-build fallback's window)
        self._dec: Any = None  # the decode loop of the loaded model (app.core.engine.decode)
        self._tuner: Any = None  # prompt lookup on or off for the loaded model (engine.speculation.Tuner)
        self._preserve: tuple[tuple[tuple[str, str], ...], set[int]] | None = None  # reasoning markers rendered as text
        self._speed_key = ""  # what the loaded model's speed depends on besides its file
        self.draft: Any = None  # the draft model of speculative decoding (engine.decode.DraftModel), or None
        self.vision: Any = None  # the loaded model's vision projector (engine.vision.Vision), or None
        self._vision_note = ""  # why the projector named at load did not load
        self._images_left_out = 0  # images of earlier turns a model without sight was not given
        self.kv: Any = None  # saved KV caches of the loaded model (app.core.engine.kvstore), or None
        self._dirty = False  # a reply changed the KV cache since it was last saved
        self.pools: Any = None  # the loaded model's compute threads (engine.threadpool.ThreadPools), or None

    # -- plumbing -------------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        send(self.out, {"ev": event, **fields})

    def read_stdin(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if msg.get("op") == "cancel":
                self.cancel_id = msg.get("id")
            else:
                self.inbox.put(msg)
        # stdin closed: the app is gone or done; stop a reply in progress too, then end
        self.cancel_id = self.current_id
        self.inbox.put({"op": "shutdown"})

    def cancelled(self) -> bool:
        return self.current_id is not None and self.cancel_id == self.current_id

    def run(self) -> None:
        threading.Thread(target=self.read_stdin, name="engine-stdin", daemon=True).start()
        import llama_cpp

        self.emit(
            "ready",
            pid=os.getpid(),
            gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
            llama_cpp_version=llama_cpp.__version__,
            cpu_variant=(cpu_variants.active() or cpu_variants.baseline()).name,
            system_info=llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        )
        while True:
            try:
                msg = self.inbox.get(timeout=IDLE_SAVE_S if self._dirty else None)
            except queue.Empty:  # idle after a reply: save the conversation's KV cache for later
                self._save_kv()
                continue
            op = msg.get("op")
            if op == "shutdown":
                self._save_kv()
                return
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                self.emit("error", id=msg.get("id"), kind="protocol", message=f"unknown op {op!r}")
                continue
            try:
                handler(msg)
            except Exception as exc:  # reported to the parent, which shows it to the user
                self.emit("error", id=msg.get("id"), kind=type(exc).__name__, message=str(exc), log=list(LOG_TAIL)[-20:],
                          **getattr(exc, "fields", {}))
            if self.pools is not None:  # done: the compute threads sleep instead of polling
                self.pools.pause()

    # -- ops ------------------------------------------------------------------------------------
    def op_load(self, msg: dict[str, Any]) -> None:
        import llama_cpp

        self.op_unload(msg, quiet=True)
        path, params = msg["path"], dict(msg["params"])
        params.pop("reasons", None)
        kwargs = {
            "n_ctx": params["n_ctx"],
            "n_gpu_layers": params["n_gpu_layers"],
            "n_batch": params["n_batch"],
            "n_ubatch": params["n_ubatch"],
            "n_threads": params.get("n_threads"),
            "flash_attn": params.get("flash_attn", False),
            "type_k": GGML_TYPES[params.get("type_k", "f16")],
            "type_v": GGML_TYPES[params.get("type_v", "f16")],
            "swa_full": params.get("swa_full", False),
        }
        if msg.get("embedding"):  # an embedding model, for ``embed`` requests (the API server's /v1/embeddings)
            kwargs["embedding"] = True
        workers = list(params.get("rpc") or [])
        if workers:  # split over RPC workers (planner.split): their devices go into ggml's registry first
            from app.core.errors import WorkerError
            from app.core.rpc.client import register

            try:
                registered = register(workers)
            except WorkerError as exc:
                raise RuntimeError(f"{path}: cannot load model: {exc}") from None
            # the split is per worker in the plan's order; llama.cpp's is the registry's (registered earlier here maybe)
            split = [float(x) for x in params.get("tensor_split") or []]
            share = dict(zip(workers, split))
            ordered = sorted(registered, key=lambda d: d.registry_index)
            # then this computer's GPUs, which libllama lists after the RPC devices
            kwargs["tensor_split"] = [share.get(d.address, 0.0) for d in ordered] + split[len(workers):] or None
        t0 = time.perf_counter()
        LOG_TAIL.clear()
        try:
            llm = llama_cpp.Llama(model_path=path, verbose=True, **kwargs)
        except Exception as exc:
            raise RuntimeError(explain_load_failure(path, exc)) from None
        self.llm, self.path = llm, path
        from app.core.engine.threadpool import ThreadPools

        self.pools = ThreadPools(int(llm.context_params.n_threads), int(llm.context_params.n_threads_batch))
        self.pools.attach(llm._ctx.ctx)
        n_layer = llama_cpp.llama_model_n_layer(llm.model)
        # the model's own buffer lines, before the projector and the draft model log theirs
        devices = loaded_devices(list(LOG_TAIL), n_layer, params)
        offload = llama_cpp.llama_supports_gpu_offload() and kwargs["n_gpu_layers"] != 0
        vision_note = self._vision_note = self._load_vision(params.get("projector"), llm,
                                                            use_gpu=offload and bool(params.get("projector_gpu")),
                                                            n_threads=kwargs["n_threads"])
        self._tuner = None
        self._preserve = None
        build = (cpu_variants.active() or cpu_variants.baseline()).name
        self._speed_key = f"{build} gpu_layers={kwargs['n_gpu_layers']} flash_attn={kwargs['flash_attn']}"
        from app.core.engine.kvstore import KVStore

        self.kv = KVStore.from_env(path, params)
        self.draft = self._load_draft(msg.get("draft"), path, llm, kwargs)
        self.fmt = None
        from app.core.engine.chat_format import choose_chat_format

        self.fmt = choose_chat_format(llm)
        self.emit(
            "loaded",
            id=msg.get("id"),
            info={
                "path": path,
                "architecture": llm.metadata.get("general.architecture", "?"),
                "n_ctx": usable_ctx(llm),
                "n_ctx_train": llama_cpp.llama_model_n_ctx_train(llm.model),
                "n_layer": n_layer,
                "n_gpu_layers": min(n_layer, kwargs["n_gpu_layers"]) if kwargs["n_gpu_layers"] >= 0 else n_layer,
                "device": gpu_device_name() if offload else "CPU",
                "template_source": self.fmt.source,
                "template_name": self.fmt.name,
                "template_note": self.fmt.note,
                "template_tools": self.fmt.tools_in_template,
                "reasoning": self.fmt.reasoning.to_dict(),
                "draft_model": msg["draft"]["path"] if msg.get("draft") else None,
                "projector": self.vision.path if self.vision is not None else None,
                "vision_note": vision_note,
                "load_seconds": time.perf_counter() - t0,
                "threads": self.pools.describe(),
                "params": params,
                "devices": devices,
            },
        )

    def _load_vision(self, projector: str | None, llm: Any, *, use_gpu: bool, n_threads: int | None) -> str:
        """The projector beside the model, when the load names one; a projector llama.cpp refuses
        leaves the model loaded without sight, and the returned sentence says why."""
        self.vision = None
        if not projector:
            return ""
        from app.core.engine.vision import Vision

        LOG_TAIL.clear()
        try:
            self.vision = Vision(llm, projector, use_gpu=use_gpu, n_threads=n_threads)
        except RuntimeError as exc:
            errors = [line.strip() for line in LOG_TAIL if "error" in line.lower() or "mismatch" in line.lower()
                      or "failed" in line.lower()]
            return f"{exc}" + (f": {errors[-1]}" if errors else "")
        return ""

    def _load_draft(self, draft: dict[str, Any] | None, path: str, llm: Any, kwargs: dict[str, Any]) -> Any:
        """The draft model for speculative decoding, when the load asks for one."""
        if not draft:
            return None
        import llama_cpp

        from app.core.engine.decode import DraftModel, vocab_mismatch

        try:
            small = llama_cpp.Llama(model_path=draft["path"], verbose=True, **{**kwargs, "n_gpu_layers": draft.get("n_gpu_layers", 0)})
        except Exception as exc:
            raise RuntimeError(explain_load_failure(draft["path"], exc)) from None
        why = vocab_mismatch(llm, small)
        if why:
            small.close()
            raise RuntimeError(f"{draft['path']}: cannot draft for {os.path.basename(path)}: {why}")
        if self.pools is not None:  # its steps alternate with the big model's on this thread: the same pools
            self.pools.attach(small._ctx.ctx)
        return DraftModel(small, usable_ctx(small))

    def _save_kv(self) -> None:
        if self._dirty and self._dec is not None and self.llm is not None:
            from app.core.engine.kvstore import idle_save

            try:
                idle_save(self.kv, self.llm._ctx.ctx, list(self._dec.kv_tokens))
            except OSError as exc:  # a full disk: the next reopen re-reads the conversation
                sys.stderr.write(f"kv-cache: not saved: {exc}\n")
        self._dirty = False

    def op_unload(self, msg: dict[str, Any], quiet: bool = False) -> None:
        self._save_kv()
        if self.vision is not None:  # before the model: the projector's context refers to it
            self.vision.close()
            self.vision = None
        if self.llm is not None:
            self.llm.close()
            self.llm = None
            self._dec = None
        if self.draft is not None:
            self.draft.close()
            self.draft = None
            self.fmt = None
        if self.pools is not None:  # after the contexts that run on them
            self.pools.close()
            self.pools = None
        if not quiet:
            self.emit("unloaded", id=msg.get("id"))

    def _require_model(self) -> Any:
        if self.llm is None:
            raise RuntimeError("no model is loaded")
        return self.llm

    def _fit(self, messages: list[dict[str, Any]], reserve: int, *, tools: list[dict[str, Any]] | None = None,
             trim: bool = True, prompt: str | None = None,
             variables: dict[str, Any] | None = None) -> tuple[list[int], list[str], int, str, Any]:
        """Tokens of the prompt, dropping the oldest turns (never the system prompt) to leave
        ``reserve`` tokens for the reply. Returns tokens, stop strings, messages dropped, the
        prompt's text and its images (engine.vision.Tokenized, or None). ``tools`` and
        ``variables`` go to the template; ``trim=False`` refuses a prompt that does not fit
        (ContextOverflow) instead of dropping turns; ``prompt``: raw text, no template."""
        llm = self._require_model()
        n_ctx = usable_ctx(llm)
        if prompt is not None:
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
            if len(tokens) + reserve > n_ctx:
                raise ContextOverflow(len(tokens), reserve, n_ctx)
            return tokens, [], 0, prompt, None
        msgs = self._with_images(messages)
        dropped = 0
        while True:
            tokens, formatted, media = self._tokens_of(msgs, tools, variables)
            if len(tokens) + reserve <= n_ctx:
                return tokens, formatted.stop, dropped, formatted.prompt, media
            if media is not None:
                media.close()
            if not trim:
                raise ContextOverflow(len(tokens), reserve, n_ctx)
            first = next((i for i, m in enumerate(msgs) if m["role"] != "system"), None)
            rest = sum(1 for m in msgs if m["role"] != "system")
            if first is None or rest <= 1:
                raise ValueError(
                    f"the message is too long for the context: the prompt needs {len(tokens):,} tokens "
                    f"plus {reserve:,} for the reply, and the context holds {n_ctx:,}. "
                    "Shorten the message or the system prompt, or load the model with a larger context."
                )
            del msgs[first]
            dropped += 1
            # drop the whole turn: the assistant reply that answered the dropped user message
            if first < len(msgs) - 1 and msgs[first]["role"] == "assistant":
                del msgs[first]
                dropped += 1

    def _with_images(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages with their images read (``images``: {"path"} or {"data": base64} each),
        as bytes under ``_images``; refused with the reason when the model cannot see them."""
        from app.core.engine.images import MAX_BYTES, ImageError, from_base64

        out = []
        last_user = max((n for n, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        self._images_left_out = 0
        for n, m in enumerate(messages):
            if m.get("images") and self.vision is None:
                if n == last_user:  # the message being answered: say why instead of answering blind
                    raise ImageError(self.cannot_see())
                self._images_left_out += len(m["images"])  # earlier turns: the text goes, the images cannot
                m = {k: v for k, v in m.items() if k != "images"}
            if m.get("images"):
                data, names = [], []
                for i, image in enumerate(m["images"]):
                    name = str(image.get("name") or f"image {i + 1} of message {n + 1}")
                    names.append(name)
                    if image.get("path"):
                        try:
                            with open(image["path"], "rb") as fh:
                                data.append(fh.read(MAX_BYTES + 1))
                        except OSError as exc:
                            raise ImageError(f"{name}: cannot read {image['path']}: {exc.strerror}") from None
                    else:
                        data.append(from_base64(str(image.get("data") or ""), name))
                m = {**m, "_images": data, "_names": names}
            out.append(m)
        return out

    def cannot_see(self) -> str:
        name = os.path.basename(self.path or "the model")
        note = self._vision_note
        if note:
            return f"{name} cannot see images: its vision projector did not load ({note})"
        return (f"{name} cannot see images: it was loaded without a vision projector (an mmproj file "
                "beside the model that fits it; a text-only model has none)")

    def _tokens_of(self, msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                   variables: dict[str, Any] | None) -> tuple[list[int], Any, Any]:
        """The rendered prompt's tokens, and its images (engine.vision.Tokenized) when it has any."""
        llm = self._require_model()
        images = [data for m in msgs for data in m.get("_images") or []]
        names = [name for m in msgs for name in m.get("_names") or []]
        if images:
            marker = self.vision.marker
            plain = []
            for m in msgs:
                content = str(m.get("content") or "").replace(marker, marker.replace("__", "_"))
                extra = m.get("_images") or []
                plain.append({k: v for k, v in m.items() if k not in ("images", "_images", "_names")}
                             | {"content": marker * len(extra) + content})
            msgs = plain
        else:
            msgs = [{k: v for k, v in m.items() if k != "images"} if "images" in m else m for m in msgs]
        with render_limit(TEMPLATE_S, self.cancelled):
            formatted = self.fmt.render(msgs, tools or None, variables or None)
        if not images:
            return llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=formatted.add_bos, special=True), formatted, None
        media = self.vision.tokenize(formatted.prompt, images, add_special=formatted.add_bos, n_batch=int(llm.n_batch),
                                     names=names)
        return media.tokens, formatted, media

    def op_count(self, msg: dict[str, Any]) -> None:
        llm = self._require_model()
        tokens, _formatted, media = self._tokens_of(self._with_images(msg["messages"]), None, None)
        if media is not None:
            media.close()
        self.emit("counted", id=msg.get("id"), tokens=len(tokens), n_ctx=usable_ctx(llm),
                  image_tokens=media.image_tokens if media is not None else 0)

    def op_embed(self, msg: dict[str, Any]) -> None:
        """Embeddings of ``texts`` (the model must have been loaded with ``embedding``)."""
        llm = self._require_model()
        if not getattr(llm, "context_params", None) or not llm.context_params.embeddings:
            raise ValueError("the model was not loaded for embeddings")
        n_ctx, counts = usable_ctx(llm), []
        for text in msg["texts"]:
            counts.append(len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)))
            if counts[-1] > n_ctx:
                raise ContextOverflow(counts[-1], 0, n_ctx)
        self._dec = None  # embedding uses the context's KV cache: the chat prefix is gone
        vectors = [pooled(v, bool(msg.get("normalize", True))) for v in llm.embed(msg["texts"], normalize=False, truncate=False)]
        self.emit("embedded", id=msg.get("id"), vectors=vectors, tokens=sum(counts))

    def op_chat(self, msg: dict[str, Any]) -> None:
        import llama_cpp

        llm = self._require_model()
        rid = msg.get("id")
        self.current_id = rid
        if msg.get("json_schema") is not None:  # the reply must be JSON of this schema (or any JSON object: {})
            msg = {**msg, "grammar": schema_grammar(msg["json_schema"])}
        try:
            self._chat(llm, llama_cpp, rid, msg)
        finally:
            self.current_id = None

    def _chat(self, llm: Any, llama_cpp: Any, rid: Any, msg: dict[str, Any]) -> None:
        from app.core.engine.thinking import template_variables

        sp = SamplingParams.from_dict(msg.get("sampling", {}))
        n_ctx = usable_ctx(llm)
        reserve = min(sp.max_tokens or n_ctx // 4, n_ctx // 2)
        trim = msg.get("trim", True)
        if not trim:  # the API: the prompt and max_tokens must fit as they are
            reserve = sp.max_tokens or 1
        self._images_left_out = 0
        options = msg.get("thinking") or {}  # enabled (None: the template's default), budget, effort, tags
        messages = self._past_reasoning(msg.get("messages") or [])
        tokens, stops, dropped, prompt, media = self._fit(messages, max(reserve, 1), tools=msg.get("tools"), trim=trim,
                                                          prompt=msg.get("prompt"),
                                                          variables=template_variables(self.fmt.reasoning, options))
        try:
            self._reply(llm, rid, msg, sp, n_ctx, options, tokens, stops, dropped, prompt, media)
        finally:
            if media is not None:
                media.close()

    def _reply(self, llm: Any, rid: Any, msg: dict[str, Any], sp: SamplingParams, n_ctx: int, options: dict[str, Any],
               tokens: list[int], stops: list[str], dropped: int, prompt: str, media: Any) -> None:
        from app.core.engine.decode import Request
        from app.core.engine.thinking import ReplyThinking

        stops = stops + [s for s in msg.get("stop") or [] if s]
        thinking = ReplyThinking(self.fmt.reasoning, options, prompt, self._tokenize_special, grammar=bool(msg.get("grammar")))
        tokens = tokens + thinking.prefill
        decoder = self._decoder(llm)
        restored = 0
        if self.kv is not None:  # an old conversation, or one from before a restart: its saved cache
            tokens_back = self.kv.restore(llm._ctx.ctx, tokens, decoder.common_prefix(tokens))
            if tokens_back is not None:
                decoder.kv_tokens = tokens_back
                restored = len(tokens_back)
        image_tokens = media.image_tokens if media is not None else 0
        self.emit("start", id=rid, prompt_tokens=len(tokens), cached_tokens=decoder.common_prefix(tokens),
                  dropped_messages=dropped, n_ctx=n_ctx, restored_tokens=restored, image_tokens=image_tokens,
                  images_left_out=self._images_left_out, **({"cannot_see": self.cannot_see()} if self._images_left_out else {}))
        if not self._decoded:
            cpu_variants.simulate_decode_crash(self.path or "")
            self._decoded = True
        tuner = None
        if msg.get("draft_tokens"):
            lookup = int(msg["draft_tokens"])
        elif msg.get("lookup") == "auto":  # on for this model only once measured to win here
            tuner = self._speculation()
            lookup = tuner.lookup()
        else:
            lookup = int(msg.get("lookup") or 0)
        request = Request(
            tokens=tokens, temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p, min_p=sp.min_p,
            repeat_penalty=sp.repeat_penalty, presence_penalty=sp.presence_penalty,
            frequency_penalty=sp.frequency_penalty, seed=sp.seed if sp.seed >= 0 else random.randrange(2**31),
            logit_bias={int(k): float(v) for k, v in (msg.get("logit_bias") or {}).items()},
            grammar=msg.get("grammar"), max_tokens=sp.max_tokens, stops=stops,
            lookup=lookup,
            draft=self.draft if msg.get("draft_tokens") and self.draft is not None else None,
            on_token=thinking.on_token, preserve=self._preserved(thinking.pairs),
            media=media.spans if media is not None else [],
        )
        out = _Batcher(lambda text, reasoning: self.emit("token", id=rid, text=text, **({"reasoning": reasoning} if reasoning else {})))
        try:
            result = decoder.generate(request, lambda text: out.add(thinking.feed(text)))
        finally:
            self._dirty = True
        out.add(thinking.finish())
        out.flush()
        speculation = ""
        if tuner is not None:
            tuner.record(lookup, len(result.completion), result.tokens_per_s)
            speculation = tuner.describe()
        self.emit(
            "done",
            id=rid,
            reply={
                "text": thinking.answer,
                "reasoning": thinking.reasoning.strip(),
                "reasoning_tokens": thinking.reasoning_tokens,
                "thought_s": round(thinking.thought_s, 3),
                "finish_reason": result.finish,
                "prompt_tokens": result.prompt_tokens,
                "image_tokens": image_tokens,
                "cached_tokens": result.cached_tokens,
                "completion_tokens": len(result.completion),
                "ttft_s": result.ttft_s,
                "tokens_per_s": result.tokens_per_s,
                "dropped_messages": dropped,
                "drafted_tokens": result.drafted,
                "accepted_tokens": result.accepted,
                "speculation": speculation,
            },
        )

    def _tokenize_special(self, text: str) -> list[int]:
        return list(self._require_model().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _preserved(self, pairs: list[tuple[str, str]]) -> set[int]:
        """The reasoning markers that are one token each, rendered as text (engine.thinking)."""
        from app.core.engine.thinking import preserved_tokens

        key = tuple(pairs)
        if self._preserve is None or self._preserve[0] != key:
            self._preserve = (key, preserved_tokens(self._tokenize_special, pairs))
        return self._preserve[1]

    def _past_reasoning(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Earlier turns' reasoning goes to the template as ``reasoning_content`` (``thinking`` for
        harmony), which passes it back or drops it by its own rule; a template that knows neither
        never sees it."""
        harmony = self.fmt is not None and self.fmt.reasoning.harmony
        out = []
        for m in messages:
            if m.get("reasoning_content") and harmony:
                m = {**m, "thinking": m["reasoning_content"]}
            out.append(m)
        return out

    def _speculation(self) -> Any:
        """The prompt-lookup tuner of the loaded model (engine.speculation), made on first use."""
        from app.core.engine.speculation import Tuner

        if self._tuner is None:
            self._tuner = Tuner.from_env(self.path or "", self._speed_key)
        return self._tuner

    def _decoder(self, llm: Any) -> Any:
        from app.core.engine.decode import Decoder

        if self._dec is None or self._dec.llm is not llm:
            self._dec = Decoder(llm, usable_ctx(llm), self.cancelled)
        return self._dec


class ContextOverflow(ValueError):
    """The prompt (and the reply's room) does not fit the context; the numbers go to the parent."""

    def __init__(self, prompt_tokens: int, reserve: int, n_ctx: int) -> None:
        super().__init__(f"the prompt needs {prompt_tokens:,} tokens plus {reserve:,} for the reply, and the "
                         f"context holds {n_ctx:,}")
        self.fields = {"prompt_tokens": prompt_tokens, "reserve": reserve, "n_ctx": n_ctx}


def pooled(vector: Any, normalize: bool) -> list[float]:
    """One vector per input: a model without its own pooling gives one per token (mean-pooled here)."""
    if vector and isinstance(vector[0], list):
        n = len(vector)
        vector = [sum(col) / n for col in zip(*vector)]
    if normalize:
        norm = sum(x * x for x in vector) ** 0.5 or 1.0
        vector = [x / norm for x in vector]
    return [float(x) for x in vector]


def schema_grammar(schema: Any) -> str:
    """A GBNF grammar for JSON that follows ``schema`` (a JSON Schema; {} for any JSON object),
    with llama-cpp-python's converter (the one behind ``LlamaGrammar.from_json_schema``)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not schema:
        schema = {"type": "object"}
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises plain errors for schemas it cannot express
        raise ValueError(f"the JSON schema cannot be turned into a grammar: {exc}") from None


class _Batcher:
    """Token text to the parent: the first piece at once, later ones gathered for FLUSH_S, so a fast
    model sends tens of messages a second, not hundreds."""

    FLUSH_S = 0.02

    def __init__(self, send_text: Any) -> None:
        self.send_text = send_text  # (answer text, reasoning text)
        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self.last = 0.0
        self.first = True

    def add(self, part: Any) -> None:
        """A reply's new text split into reasoning and answer (engine.reasoning.Split)."""
        if not (part.answer or part.reasoning):
            return
        self.parts.append(part.answer)
        self.thoughts.append(part.reasoning)
        now = time.perf_counter()
        if self.first or now - self.last >= self.FLUSH_S:
            self.flush()
            self.first = False
            self.last = now

    def flush(self) -> None:
        if self.parts:
            self.send_text("".join(self.parts), "".join(self.thoughts))
            self.parts.clear()
            self.thoughts.clear()


@contextlib.contextmanager
def render_limit(seconds: float, cancelled: Any) -> Iterator[None]:
    """Interrupt Python work in the block (a chat template's Jinja loops) after ``seconds`` or when
    Stop is pressed: a 50 ms interval timer raises in the main thread (POSIX; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    deadline = time.monotonic() + seconds

    def on_alarm(_sig: int, _frame: Any) -> None:
        if cancelled():
            raise RuntimeError("stopped while the model's chat template was rendering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the model's chat template took more than {seconds:.0f} s to render this "
                               "conversation: refused (a broken or hostile template)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def usable_ctx(llm: Any) -> int:
    """Tokens the context holds: llama.cpp may pad n_ctx up, but llama-cpp-python's token
    buffers keep the requested size, so the smaller of the two is the real limit."""
    return min(llm.n_ctx(), int(llm.input_ids.shape[0]))


def gpu_device_name() -> str:
    """The first GPU backend device's description, from ggml's device registry."""
    try:
        from llama_cpp import _ggml  # type: ignore[attr-defined]

        lib = _ggml.libggml
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_description.restype = ctypes.c_char_p
        lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            if lib.ggml_backend_dev_type(dev) in (1, 2):  # GPU, integrated GPU
                return (lib.ggml_backend_dev_description(dev) or b"GPU").decode()
    except Exception:
        pass
    return "GPU"


_BUFFER = re.compile(r"^\S+:\s+(\S+) (model|KV|compute) buffer size =\s+([\d.]+) MiB")


def loaded_devices(log: list[str], n_layer: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the model went, from llama.cpp's buffer lines ("RPC0[HOST:PORT] model buffer size =
    X MiB", "CPU_Mapped model buffer size", "CPU KV buffer size", "... compute buffer size"): one
    entry per device, its layers from the split the load asked for."""
    devices: dict[str, dict[str, Any]] = {}
    fields = {"model": "weights_bytes", "KV": "kv_bytes", "compute": "compute_bytes"}
    for line in log:
        m = _BUFFER.match(line.strip())
        if not m:
            continue
        name, kind, mib = m.group(1), m.group(2), float(m.group(3))
        address = name[name.index("[") + 1:-1] if name.startswith("RPC") and "[" in name else None
        key = address or ("cpu" if name.startswith("CPU") else name)
        entry = devices.setdefault(key, {"kind": "rpc" if address else "cpu" if key == "cpu" else "gpu",
                                         **({"address": address} if address else {}), "name": name.split("[")[0],
                                         "weights_bytes": 0, "kv_bytes": 0, "compute_bytes": 0})
        entry[fields[kind]] += int(mib * 2**20)
    # llama.cpp's units: the layers, then the output layer, offloaded from the end (planner.split)
    ngl = offloaded_units(int(params.get("n_gpu_layers") or 0), n_layer)
    here = first_offloaded(ngl, n_layer)
    workers = list(params.get("rpc") or [])
    split = dict(zip(workers, [int(x) for x in params.get("tensor_split") or []]))
    last = next((a for a in reversed(workers) if split.get(a)), None)  # the planner's order is the registry's
    for entry in devices.values():
        if entry["kind"] == "rpc" and entry.get("address") in split:
            entry["layers"] = split[entry["address"]] - (entry["address"] == last)
            entry["output_layer"] = entry["address"] == last
        elif entry["kind"] == "cpu":
            entry["layers"] = here
            entry["output_layer"] = ngl == 0
    return list(devices.values())


def explain_load_failure(path: str, exc: Exception) -> str:
    """Turn llama.cpp's load failure into one sentence naming the file and the cause."""
    lines = [line.strip() for line in LOG_TAIL]
    for needle, sentence in (
        ("unknown model architecture", "llama.cpp does not support this model's architecture"),
        ("failed to allocate", "not enough memory to load it with these settings"),
        ("unable to allocate", "not enough memory to load it with these settings"),
        ("tensor data is not within the file bounds", "the file is truncated (an incomplete download?)"),
        ("invalid magic", "it is not a GGUF file"),
    ):
        for line in lines:
            if needle in line:
                detail = line.split("error loading model:")[-1].strip() if "error loading model" in line else line
                return f"{path}: cannot load model: {sentence} ({detail})"
    errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
    detail = errors[-1] if errors else str(exc)
    return f"{path}: cannot load model: {detail}"


def _install_log_callback() -> None:
    """Route llama.cpp's log to stderr (the engine log) and keep a tail for error messages."""
    import llama_cpp

    partial: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, _data: Any) -> None:
        chunk = redact(text.decode("utf-8", errors="replace"))  # the engine log is masked like the app's
        sys.stderr.write(chunk)
        partial.append(chunk)
        if chunk.endswith("\n"):
            LOG_TAIL.append("".join(partial).rstrip("\n"))
            partial.clear()

    _install_log_callback.keep = on_log  # type: ignore[attr-defined]
    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))


def main() -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # native code that prints to stdout must not corrupt the protocol
    sys.stdout = sys.stderr
    nice = int(os.environ.get("QUANTDESK_ENGINE_NICE", "0") or 0)
    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)
    try:
        cpu_variants.activate()  # before llama_cpp is imported: the CPU build the parent chose
    except cpu_variants.VariantError as exc:
        send(out, {"ev": "error", "kind": "VariantError", "message": str(exc)})
        sys.exit(3)
    _install_log_callback()
    Host(out).run()


if __name__ == "__main__":
    main()
