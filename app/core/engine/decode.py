"""The engine's decode loop, on llama.cpp's own API (host side; imports llama_cpp).

``Llama.generate`` copies the vocabulary's logits into numpy and samples in Python for every token.
Here each step is three C calls: ``llama_decode``, ``llama_sampler_sample`` on a sampler chain built
once per request (the same chain, in the same order, as llama-cpp-python's, so a seeded reply is the
same), and ``llama_token_to_piece``; plain greedy decoding (nothing that changes the logits) takes
the first largest logit in place instead of the chain, which would copy the whole vocabulary into
candidate records first. The loop keeps the KV cache of sequence 0 between requests
(``kv_tokens``): a follow-up only evaluates what is new.

Hooks for the features built on it:
- ``Request.grammar``: a GBNF grammar constrains the reply (JSON schema, forced tool calls);
- ``Request.on_token``: called with each token's text; it may return tokens to force into the reply
  (closing a reasoning block at its budget), which are evaluated and accepted like sampled ones;
- ``Request.media``: runs of the prompt that are images (engine.vision.Span): placeholder ids in
  ``tokens`` that match the cache only for the same image at the same place, each evaluated by its
  own callback (the image's embeddings) instead of ``llama_decode`` of ids;
- ``Request.lookup``: prompt-lookup speculative decoding (n-gram drafts from the context, verified in
  one batch); with any sampler the reply is what plain decoding would give, only faster where it
  repeats the prompt.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

LAST_N = 64  # llama-cpp-python's penalty window (Llama.last_n_tokens_size)


class Aborted(Exception):
    """The abort callback stopped llama_decode (Stop was pressed)."""


@dataclass
class Request:
    tokens: list[int]  # the whole prompt
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None
    max_tokens: int | None = None
    stops: list[str] = field(default_factory=list)
    lookup: int = 0  # draft length for speculative decoding; 0 = off
    draft: Callable[[list[int], int], list[int]] | None = None  # (history, n) -> draft; None: prompt lookup
    on_token: Callable[[str], list[int] | None] | None = None
    media: list[Any] = field(default_factory=list)  # engine.vision.Span: images in ``tokens``
    preserve: set[int] = field(default_factory=set)  # special tokens rendered as text (reasoning markers)


@dataclass
class Result:
    text: str
    completion: list[int]
    finish: str  # stop, length, context, cancelled
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    tokens_per_s: float
    drafted: int = 0
    accepted: int = 0


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for s in stops if s and (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


def partial_stop_len(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin a stop string: held back."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best


def draft_from_context(history: list[int], n_draft: int, ngram_max: int = 4, ngram_min: int = 2) -> list[int]:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the history's last
    n-gram (longest n first)."""
    n_hist = len(history)
    for n in range(min(ngram_max, n_hist - 1), ngram_min - 1, -1):
        tail = history[-n:]
        for start in range(n_hist - n - 1, -1, -1):
            if history[start:start + n] == tail:
                follow = history[start + n:start + n + n_draft]
                if follow:
                    return follow
    return []


class PromptLookup:
    """``draft_from_context`` kept incrementally: for each n-gram length, the latest start of every
    n-gram that has a follower, so a draft costs a few dict lookups instead of a scan of the whole
    conversation per token (which made prompt lookup slower than plain decoding on long chats).

    It also backs off: after a draft is rejected outright, the next ``skip`` chances are passed up
    (doubling up to ``MAX_SKIP``, reset by an accepted draft), so a reply that does not repeat its
    context pays for a verify batch rarely."""

    MAX_SKIP = 32

    def __init__(self, tokens: list[int], ngram_max: int = 4, ngram_min: int = 2) -> None:
        self.history: list[int] = []
        self.index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(ngram_max, ngram_min - 1, -1)}
        self.skip = 0
        self._wait = 0
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        h = self.history
        for token in tokens:
            h.append(token)
            for n, grams in self.index.items():
                start = len(h) - 1 - n  # the n-gram just before the new token now has a follower
                if start >= 0:
                    grams[tuple(h[start:start + n])] = start

    def draft(self, n_draft: int) -> list[int]:
        if self._wait > 0:
            self._wait -= 1
            return []
        h = self.history
        for n, grams in self.index.items():
            if len(h) > n:
                start = grams.get(tuple(h[-n:]))
                if start is not None:
                    return h[start + n:start + n + n_draft]
        return []

    def verified(self, accepted: int) -> None:
        """How many tokens of the last draft the model kept."""
        if accepted:
            self.skip = 0
        else:
            self.skip = min(max(1, self.skip * 2), self.MAX_SKIP)
            self._wait = self.skip


class Decoder:
    """One model context's decode loop; not thread-safe (the engine host owns it)."""

    def __init__(self, llm: Any, n_ctx: int, cancelled: Callable[[], bool]) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llm
        self.ctx = llm._ctx.ctx
        self.vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()
        self.n_ctx = n_ctx
        self.n_batch = int(llm.n_batch)
        self.cancelled = cancelled
        self.kv_tokens: list[int] = []  # what sequence 0 of the KV cache holds, in order
        self._one = (llama_cpp.llama_token * 1)()
        self._piece = ctypes.create_string_buffer(256)
        self._batch = llm._batch  # llama-cpp-python's LlamaBatch of n_batch tokens
        import numpy

        self._np = numpy
        self._row_type = ctypes.c_float * self.n_vocab  # one output's logits, viewed in place by _argmax
        # llama_get_logits_ith returning a plain address (llama_cpp's binding makes a pointer object),
        # and numpy views by address: a decode step mostly reads the same output row
        self._logits_at = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
            ("llama_get_logits_ith", llama_cpp.llama_cpp._lib))
        self._rows: dict[int, Any] = {}

        # Stop interrupts a long batch (a prompt) inside llama_decode. ggml asks the callback after
        # every graph node, and a Python callback there costs the GIL and a call per node, so it is
        # set for batches only: a one-token step ends in milliseconds and the loop checks Stop itself.
        @llama_cpp.ggml_abort_callback
        def should_abort(_data: Any) -> bool:
            return bool(cancelled())

        self._abort_callback = should_abort  # kept alive as long as llama.cpp may call it
        self._no_abort = llama_cpp.ggml_abort_callback()  # a NULL function pointer
        self._abort_set = False
        self._set_abort(True)

    # -- the KV cache --------------------------------------------------------------------------
    def common_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens`` the cache holds already (never all: the last prompt token is
        evaluated again for its logits)."""
        keep = 0
        for a, b in zip(self.kv_tokens, tokens):
            if a != b:
                break
            keep += 1
        return max(min(keep, len(tokens) - 1), 0)

    def reuse(self, tokens: list[int], media: list[Any] | None = None) -> int:
        """Keep the cached prefix that ``tokens`` share; drop the rest (never part of an image).
        Returns how many are kept."""
        keep = self.common_prefix(tokens)
        for span in media or []:
            if span.start < keep < span.start + span.length:
                keep = span.start
        if keep < len(self.kv_tokens):
            if not self.llm._ctx.kv_cache_seq_rm(0, keep, -1):  # e.g. a recurrent model: start over
                self.clear()
                keep = 0
            else:
                del self.kv_tokens[keep:]
        return max(keep, 0)

    def clear(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self.kv_tokens = []

    def _set_abort(self, on: bool) -> None:
        if on != self._abort_set:
            self.lib.llama_set_abort_callback(self.ctx, self._abort_callback if on else self._no_abort, None)
            self._abort_set = on

    def _decode(self, tokens: list[int], logits_all: bool = False) -> None:
        """Evaluate ``tokens`` after the cache, in n_batch chunks; logits for the last one (all of
        them with ``logits_all``, which must then fit one batch)."""
        for i in range(0, len(tokens), self.n_batch):
            chunk = tokens[i:i + self.n_batch]
            self._set_abort(len(chunk) > 1)
            if len(chunk) == 1 and not logits_all:
                self._one[0] = chunk[0]
                batch = self.lib.llama_batch_get_one(self._one, 1)
            else:
                self._batch.set_batch(chunk, n_past=len(self.kv_tokens), logits_all=logits_all)
                batch = self._batch.batch
            rc = self.lib.llama_decode(self.ctx, batch)
            if rc != 0:
                if self.cancelled():
                    raise Aborted()
                raise RuntimeError(f"llama_decode returned {rc}")
            self.kv_tokens.extend(chunk)

    def _decode_prompt(self, r: Request) -> None:
        """The prompt after the cached prefix: text runs by ``_decode``, images by their spans."""
        pos = len(self.kv_tokens)
        for span in sorted(r.media, key=lambda s: s.start):
            if span.start + span.length <= pos:
                continue  # in the cache already
            self._decode(r.tokens[pos:span.start])
            self._set_abort(True)
            try:
                span.evaluate(span.start)
            except RuntimeError:
                if self.cancelled():
                    raise Aborted() from None
                raise
            self.kv_tokens.extend(r.tokens[span.start:span.start + span.length])
            pos = span.start + span.length
        self._decode(r.tokens[pos:])

    # -- sampling ------------------------------------------------------------------------------
    def _sampler(self, r: Request) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lambda s: lib.llama_sampler_chain_add(chain, s)  # noqa: E731
        if r.logit_bias:
            biases = (lib.llama_logit_bias * len(r.logit_bias))(*[lib.llama_logit_bias(t, b) for t, b in r.logit_bias.items()])
            add(lib.llama_sampler_init_logit_bias(self.n_vocab, len(r.logit_bias), biases))
        add(lib.llama_sampler_init_penalties(self.n_vocab, LAST_N, r.repeat_penalty, r.frequency_penalty, r.presence_penalty))
        if r.grammar:
            grammar = lib.llama_sampler_init_grammar(self.vocab, r.grammar.encode("utf-8"), b"root")
            if not grammar:
                lib.llama_sampler_free(chain)
                raise ValueError("the grammar does not parse (llama.cpp refused it)")
            add(grammar)
        if r.temperature <= 0:
            add(lib.llama_sampler_init_greedy())
        else:
            add(lib.llama_sampler_init_top_k(r.top_k))
            add(lib.llama_sampler_init_typical(r.typical_p, 1))
            add(lib.llama_sampler_init_top_p(r.top_p, 1))
            add(lib.llama_sampler_init_min_p(r.min_p, 1))
            add(lib.llama_sampler_init_temp(r.temperature))
            add(lib.llama_sampler_init_dist(r.seed & 0xFFFFFFFF))
        return chain

    @staticmethod
    def _plain_greedy(r: Request) -> bool:
        """Greedy with nothing that changes the logits: the chain would only take their argmax."""
        return (r.temperature <= 0 and not r.grammar and not r.logit_bias and r.repeat_penalty == 1.0
                and not r.frequency_penalty and not r.presence_penalty)

    def _argmax(self, idx: int) -> int:
        """llama.cpp's greedy choice (the first largest logit) read in place: the sampler chain would
        first copy all n_vocab logits into candidate records, ~0.2 ms a token for a 49k vocabulary.
        The row's address comes from llama.cpp at every call, so a view made earlier for the same
        address reads what is there now (~25 µs a token less than making one, with caches cold
        after a decode step)."""
        address = self._logits_at(self.ctx, idx)
        if not address:
            raise RuntimeError(f"llama.cpp has no logits for output {idx}")
        row = self._rows.get(address)
        if row is None:
            if len(self._rows) >= 64:  # the rows of a verified draft batch: a few dozen addresses
                self._rows.clear()
            row = self._rows[address] = self._np.frombuffer(self._row_type.from_address(address), dtype=self._np.float32)
        return int(row.argmax())

    def piece(self, token: int, special: bool = False) -> bytes:
        n = self.lib.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        if n < 0:
            self._piece = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, special)
        return self._piece.raw[:n]

    # -- one reply -----------------------------------------------------------------------------
    def generate(self, r: Request, emit: Callable[[str], None]) -> Result:
        """Evaluate the prompt (reusing the cache), then sample until a stop; ``emit`` gets the
        reply's text in order, held back where it could begin a stop string."""
        lib = self.lib
        t0 = time.perf_counter()
        cached = self.reuse(r.tokens, r.media)
        n_lookup = 0 if r.media else r.lookup  # drafts from a context of image placeholders: never
        chain = self._sampler(r)
        pick = self._argmax if self._plain_greedy(r) else (lambda idx: lib.llama_sampler_sample(chain, self.ctx, idx))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        completion: list[int] = []
        text, sent = "", 0
        finish = "stop"
        t_first = t_last = 0.0
        drafted = accepted = 0
        lookup = PromptLookup(r.tokens) if n_lookup and r.draft is None else None
        longest_stop = max((len(s) for s in r.stops), default=0)
        try:
            self._decode_prompt(r)
            pending: list[int] = []  # sampled or forced tokens not yet in the cache
            done = False
            while not done:
                # sample the next token (or several, when a draft is verified)
                outputs: list[int]
                draft: list[int] = []
                if n_lookup and completion:
                    draft = lookup.draft(n_lookup) if lookup is not None else r.draft(r.tokens + completion, n_lookup)  # type: ignore[misc]
                room = self.n_ctx - len(self.kv_tokens) - 2
                draft = draft[:max(min(room, self.n_batch - len(pending)), 0)]
                if pending and draft:
                    self._decode(pending + draft, logits_all=True)
                    drafted += len(draft)
                    outputs = []
                    base = len(pending) - 1  # batch index of the logits after the last pending token
                    for i in range(len(draft) + 1):
                        tok = pick(base + i)
                        outputs.append(tok)
                        if i == len(draft) or tok != draft[i] or lib.llama_vocab_is_eog(self.vocab, tok):
                            break
                    accepted += len(outputs) - 1
                    if lookup is not None:
                        lookup.verified(len(outputs) - 1)
                    # drop the rejected draft tokens from the cache
                    keep = len(self.kv_tokens) - len(draft) + len(outputs) - 1
                    if keep < len(self.kv_tokens):
                        self.llm._ctx.kv_cache_seq_rm(0, keep, -1)
                        del self.kv_tokens[keep:]
                    pending = [outputs[-1]]
                else:
                    if pending:
                        self._decode(pending)
                    outputs = [pick(-1)]
                    pending = [outputs[0]]
                for token in outputs:
                    now = time.perf_counter()
                    t_first = t_first or now
                    t_last = now
                    if lib.llama_vocab_is_eog(self.vocab, token):
                        pending = []
                        done = True
                        break
                    if self.cancelled():
                        finish, done = "cancelled", True
                        break
                    completion.append(token)
                    if lookup is not None:
                        lookup.extend((token,))
                    before = len(text)
                    text += decoder.decode(self.piece(token, token in r.preserve))
                    cut = _find_stop(text, r.stops, max(0, before - longest_stop))
                    if cut is not None:
                        text, done = text[:cut], True
                        break
                    forced = r.on_token(text[before:]) if r.on_token is not None else None
                    if forced:
                        for f in forced:
                            lib.llama_sampler_accept(chain, f)
                            completion.append(f)
                            if lookup is not None:
                                lookup.extend((f,))
                            text += decoder.decode(self.piece(f, f in r.preserve))
                        self._decode(pending + forced[:-1])
                        pending = [forced[-1]]
                    safe = len(text) - partial_stop_len(text, r.stops)
                    if safe > sent:
                        emit(text[sent:safe])
                        sent = safe
                    if r.max_tokens is not None and len(completion) >= r.max_tokens:
                        finish, done = "length", True
                        break
                    if len(self.kv_tokens) + len(pending) + 1 >= self.n_ctx:
                        finish, done = "context", True
                        break
                    if forced:
                        break  # the draft was computed before the forced tokens
        except Aborted:
            finish = "cancelled"
        finally:
            lib.llama_sampler_free(chain)
        if sent < len(text):
            emit(text[sent:])
        n = len(completion)
        ttft = (t_first - t0) if t_first else time.perf_counter() - t0
        tps = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0
        return Result(text, completion, finish, len(r.tokens), cached, ttft, tps, drafted, accepted)


class DraftModel:
    """Speculative decoding with a small model of the same vocabulary: it greedily proposes the next
    tokens from its own KV cache (kept in step with the conversation); the big model verifies them."""

    def __init__(self, llm: Any, n_ctx: int) -> None:
        self.dec = Decoder(llm, n_ctx, lambda: False)
        self.chain = self.dec.lib.llama_sampler_chain_init(self.dec.lib.llama_sampler_chain_default_params())
        self.dec.lib.llama_sampler_chain_add(self.chain, self.dec.lib.llama_sampler_init_greedy())

    def __call__(self, history: list[int], n: int) -> list[int]:
        lib, dec = self.dec.lib, self.dec
        n = min(n, dec.n_ctx - len(history) - 1)
        if n <= 0:
            return []
        dec.reuse(history)
        dec._decode(history[len(dec.kv_tokens):])
        out: list[int] = []
        while True:
            tok = lib.llama_sampler_sample(self.chain, dec.ctx, -1)
            if lib.llama_vocab_is_eog(dec.vocab, tok):
                break
            out.append(tok)
            if len(out) >= n:
                break
            dec._decode([tok])
        return out

    def close(self) -> None:
        self.dec.lib.llama_sampler_free(self.chain)
        self.dec.llm.close()


def vocab_mismatch(main: Any, draft: Any) -> str | None:
    """Why ``draft`` cannot draft for ``main`` (llama.cpp's speculative check: vocabulary type and
    size, special tokens, token texts), or None when it can."""
    import llama_cpp

    mv, dv = main._model.vocab, draft._model.vocab
    if llama_cpp.llama_vocab_type(mv) != llama_cpp.llama_vocab_type(dv):
        return "its tokenizer is of another kind"
    n_main, n_draft = main.n_vocab(), draft.n_vocab()
    if abs(n_main - n_draft) > 128:
        return f"its vocabulary has {n_draft:,} tokens, the model's {n_main:,}"
    if (llama_cpp.llama_vocab_bos(mv), llama_cpp.llama_vocab_eos(mv)) != (llama_cpp.llama_vocab_bos(dv), llama_cpp.llama_vocab_eos(dv)):
        return "its special tokens differ"
    for i in range(min(n_main, n_draft)):
        if main.detokenize([i], special=True) != draft.detokenize([i], special=True):
            return f"token {i} differs"
    return None
