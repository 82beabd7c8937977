"""Child process: perplexity, KL divergence and top-token agreement, as llama.cpp's perplexity tool.

    python -m app.core.quant.children.evaluate JSON_ARGS

JSON_ARGS: {"models": [...], "baseline": path or null, "text", "n_ctx", "threads", "n_gpu_layers",
"max_chunks", "scratch"}. The text is tokenized once (with the first model's vocabulary, checked to
give the same tokens for every model), cut into chunks of n_ctx tokens (at least two, as
llama-perplexity requires); each chunk is decoded from an empty cache with BOS first when the
model adds one, and the second half of the chunk is scored (tokens n_ctx/2 .. n_ctx-1). The
baseline's log-probabilities of the scored positions go to a scratch file; each other model is
compared with them position by position: KL(baseline || model) and whether the top tokens agree.
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.core.proc.runner import emit


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class Model:
    def __init__(self, llama_cpp: Any, path: str, n_ctx: int, threads: int, ngl: int) -> None:
        self.lc = llama_cpp
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = ngl
        self.model = llama_cpp.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise RuntimeError(f"{path}: llama.cpp cannot load this model")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError(f"{path}: cannot create a llama.cpp context of {n_ctx} tokens")
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.add_bos = llama_cpp.llama_vocab_get_add_bos(self.vocab)
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)

    def tokenize(self, text: bytes) -> list[int]:
        n_max = len(text) + 16
        buf = (self.lc.llama_token * n_max)()
        n = self.lc.llama_tokenize(self.vocab, text, len(text), buf, n_max, True, False)
        return list(buf[:n])

    def logits(self, tokens: list[int]) -> np.ndarray:
        lc, b = self.lc, self.batch
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        b.n_tokens = len(tokens)
        for k, tok in enumerate(tokens):
            b.token[k] = self.bos if (self.add_bos and k == 0) else tok
            b.pos[k] = k
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = 0
            b.logits[k] = True
        if lc.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        ptr = lc.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(len(tokens), self.n_vocab)).copy()

    def close(self) -> None:
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    from app.core.engine import cpu_variants

    cpu_variants.activate()  # the CPU build the parent chose, before llama_cpp loads
    import llama_cpp

    quiet = llama_cpp.llama_log_callback(lambda *_: None)  # kept referenced while llama.cpp may call it
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    n_ctx, threads, ngl = int(args["n_ctx"]), int(args["threads"]), int(args["n_gpu_layers"])
    text = Path(args["text"]).read_text(encoding="utf-8", errors="replace").encode("utf-8")
    order = ([args["baseline"]] if args.get("baseline") else []) + list(args["models"])
    tokens: list[int] | None = None
    base_lp: np.ndarray | None = None
    first = n_ctx // 2
    for mi, path in enumerate(order):
        t0 = time.perf_counter()
        try:
            m = Model(llama_cpp, path, n_ctx, threads, ngl)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        toks = m.tokenize(text)
        if tokens is None:
            tokens = toks
            if len(tokens) < 2 * n_ctx:
                print(f"error: the text {Path(args['text']).name} gives only {len(tokens)} tokens; at least "
                      f"{2 * n_ctx} (two chunks of {n_ctx}) are needed", file=sys.stderr)
                return 1
        elif toks != tokens:
            print(f"error: {Path(path).name} tokenizes the text differently from {Path(order[0]).name}: "
                  "they are not the same model family, so they cannot be compared", file=sys.stderr)
            return 1
        n_chunk = len(tokens) // n_ctx
        if args.get("max_chunks"):
            n_chunk = min(n_chunk, int(args["max_chunks"]))
        per_chunk = n_ctx - 1 - first
        is_base = bool(args.get("baseline")) and mi == 0
        if is_base:
            base_lp = np.lib.format.open_memmap(str(Path(args["scratch"])), mode="w+", dtype=np.float32,
                                                shape=(n_chunk * per_chunk, m.n_vocab))
        nll = nll2 = kl = 0.0
        agree = count = 0
        for c in range(n_chunk):
            chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
            lp = log_softmax(m.logits(chunk)[first:n_ctx - 1])
            target = np.asarray(chunk[first + 1:n_ctx])
            tok_nll = -lp[np.arange(per_chunk), target]
            nll += float(tok_nll.sum())
            nll2 += float((tok_nll ** 2).sum())
            count += per_chunk
            rows = slice(c * per_chunk, (c + 1) * per_chunk)
            if is_base and base_lp is not None:
                base_lp[rows] = lp
            elif base_lp is not None:
                b = base_lp[rows].astype(np.float64)
                kl += float((np.exp(b) * (b - lp)).sum())
                agree += int((b.argmax(axis=1) == lp.argmax(axis=1)).sum())
            emit("chunk", model=mi, models=len(order), done=c + 1, total=n_chunk, path=path)
        mean = nll / count
        var = nll2 / count - mean * mean
        err = math.sqrt(var / (count - 1)) * math.exp(mean) if var > 0 and count > 1 else 0.0
        result = {"path": path, "perplexity": math.exp(mean), "perplexity_error": err, "tokens": count,
                  "chunks": n_chunk, "n_ctx": n_ctx, "seconds": time.perf_counter() - t0, "baseline": is_base}
        if base_lp is not None and not is_base:
            result.update(kl_divergence=kl / count, top1_agreement=agree / count)
        elif is_base:
            result.update(kl_divergence=0.0, top1_agreement=1.0)
        emit("result", **result)
        m.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
