"""Child process: llama.cpp's importance-matrix collection (tools/imatrix/imatrix.cpp) in Python.

    python -m app.core.quant.children.imatrix MODEL TEXT OUT CHUNK THREADS GPU_LAYERS MAX_CHUNKS DATASET

The context's eval callback (``cb_eval``) asks for every MUL_MAT whose weight is a ``blk.*`` tensor
and whose activations are F32 with at least 16 rows, and MUL_MAT_ID (experts); for each it adds the
squares of the input activations per column to the weight's sums and counts the rows, exactly as
``IMatrixCollector::collect_imatrix``. The text is tokenized with special tokens added, cut into
chunks of CHUNK tokens (at least two are needed), each chunk decoded from an empty cache with BOS
first when the model adds one, all outputs requested (as llama-imatrix does). Written as GGUF.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from app.core.proc.runner import emit

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_NAME, GGML_MAX_OP_PARAMS = 4, 10, 64, 64
GGML_TYPE_F32 = 0


class GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` of ggml/include/ggml.h (checked against ggml_tensor_overhead at start)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def filter_tensor_name(name: str) -> str:
    """'CUDA0#blk.0.attn_k.weight#0' -> 'blk.0.attn_k.weight' (imatrix.cpp)."""
    if "#" in name:
        return name.split("#", 2)[1]
    return name


class Collector:
    def __init__(self, ggml: ctypes.CDLL) -> None:
        self.sums: dict[str, np.ndarray] = {}  # float64 accumulators, (n_mat, ne0)
        self.counts: dict[str, np.ndarray] = {}
        self.error: str | None = None
        ggml.ggml_op_name.restype = ctypes.c_char_p
        ggml.ggml_op_name.argtypes = [ctypes.c_int]
        ops: dict[bytes, int] = {}
        for i in range(200):  # stop once both are found: past GGML_OP_COUNT the table ends
            ops[ggml.ggml_op_name(i)] = i
            if b"MUL_MAT" in ops and b"MUL_MAT_ID" in ops:
                break
        self.MUL_MAT, self.MUL_MAT_ID = ops[b"MUL_MAT"], ops[b"MUL_MAT_ID"]
        ggml.ggml_backend_buffer_is_host.restype = ctypes.c_bool
        ggml.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        ggml.ggml_nbytes.restype = ctypes.c_size_t
        ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
        ggml.ggml_tensor_overhead.restype = ctypes.c_size_t
        if ggml.ggml_tensor_overhead() - 32 != ctypes.sizeof(GgmlTensor):  # GGML_OBJECT_SIZE is 32
            raise RuntimeError("ggml_tensor layout differs from this module's: the engine's ggml version changed")
        self.ggml = ggml

    def _array(self, t: GgmlTensor, ptr: int, dtype: type, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
        nbytes = self.ggml.ggml_nbytes(ptr)
        if t.buffer and self.ggml.ggml_backend_buffer_is_host(t.buffer):
            raw = (ctypes.c_char * nbytes).from_address(t.data)
            buf = np.frombuffer(raw, dtype=np.uint8)
        else:  # on a GPU: copy to the host
            buf = np.empty(nbytes, dtype=np.uint8)
            self.ggml.ggml_backend_tensor_get(ptr, buf.ctypes.data, 0, nbytes)
        return np.lib.stride_tricks.as_strided(buf.view(dtype), shape=shape, strides=strides)

    def __call__(self, t_ptr: int, ask: bool, _user: int) -> bool:
        try:
            return self._collect(t_ptr, ask)
        except Exception as exc:  # never raise through C
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            return False

    def _collect(self, t_ptr: int, ask: bool) -> bool:
        t = GgmlTensor.from_address(t_ptr)
        if t.op not in (self.MUL_MAT, self.MUL_MAT_ID):
            return False
        src0 = GgmlTensor.from_address(t.src[0])
        src1_ptr = t.src[1]
        src1 = GgmlTensor.from_address(src1_ptr)
        wname = filter_tensor_name(src0.name.decode("utf-8", "replace"))
        if ask:
            if t.op == self.MUL_MAT_ID:
                return True
            if src1.ne[1] < 16 or src1.type != GGML_TYPE_F32:
                return False
            return wname.startswith("blk.")
        ne, nb = list(src1.ne), list(src1.nb)
        x = self._array(src1, src1_ptr, np.float32, (ne[3], ne[2], ne[1], ne[0]), (nb[3], nb[2], nb[1], nb[0]))
        if t.op == self.MUL_MAT_ID:
            ids_ptr = t.src[2]
            ids_t = GgmlTensor.from_address(ids_ptr)
            n_as, n_ids, n_tokens = src0.ne[2], ids_t.ne[0], src1.ne[2]
            ids = self._array(ids_t, ids_ptr, np.int32, (ids_t.ne[1], ids_t.ne[0]), (ids_t.nb[1], ids_t.nb[0]))
            acc = self.sums.setdefault(wname, np.zeros((n_as, ne[0])))
            cnt = self.counts.setdefault(wname, np.zeros(n_as, dtype=np.int64))
            rows = x[0]  # (n_tokens, ne1, ne0)
            idx = np.arange(n_ids) % ne[1]
            picked = rows[:, idx, :].astype(np.float64)  # (n_tokens, n_ids, ne0)
            ex = np.asarray(ids[:n_tokens, :n_ids])
            np.add.at(acc, ex.reshape(-1), (picked * picked).reshape(-1, ne[0]))
            np.add.at(cnt, ex.reshape(-1), 1)
        else:
            n_mat = src0.ne[2] * src0.ne[3]
            acc = self.sums.setdefault(wname, np.zeros((n_mat, ne[0])))
            cnt = self.counts.setdefault(wname, np.zeros(1, dtype=np.int64))
            sq = np.square(x, dtype=np.float64).sum(axis=2)  # (ne3, ne2, ne0)
            for i3 in range(ne[3]):
                for i2 in range(ne[2]):
                    acc[(i3 % src0.ne[3]) * src0.ne[2] + (i2 % src0.ne[2])] += sq[i3, i2]
            cnt += (ne[1] * ne[2] * ne[3]) // n_mat
        if not np.isfinite(acc).all():
            raise ValueError(f"non-finite values detected in {wname}")
        return True


def main(argv: list[str]) -> int:
    model_path, text_path, out_path, chunk_arg, threads_arg, ngl_arg, max_chunks_arg, dataset = argv
    chunk, threads, ngl, max_chunks = int(chunk_arg), int(threads_arg), int(ngl_arg), int(max_chunks_arg)
    from app.core.engine import cpu_variants

    cpu_variants.activate()  # the CPU build the parent chose, before llama_cpp loads
    import llama_cpp
    import llama_cpp._ggml as ggml_mod

    from app.core.quant.imatrix import Imatrix, save_imatrix

    collector = Collector(ggml_mod.libggml)
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = ngl
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), mparams)
    if not model:
        print(f"error: cannot load model {model_path}", file=sys.stderr)
        return 1
    vocab = llama_cpp.llama_model_get_vocab(model)
    text = Path(text_path).read_text(encoding="utf-8", errors="replace").encode("utf-8")
    n_max = len(text) + 16
    tokens = (llama_cpp.llama_token * n_max)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), tokens, n_max, True, False)
    if n < 2 * chunk:
        print(f"error: the calibration text {Path(text_path).name} gives only {n} tokens; "
              f"at least {2 * chunk} (two chunks of {chunk}) are needed", file=sys.stderr)
        return 1
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = chunk
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.cb_eval = callback
    cparams.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        print("error: cannot create a llama.cpp context", file=sys.stderr)
        return 1
    add_bos = llama_cpp.llama_vocab_get_add_bos(vocab)
    bos = llama_cpp.llama_vocab_bos(vocab)
    n_chunk = n // chunk if not max_chunks else min(n // chunk, max_chunks)
    batch = llama_cpp.llama_batch_init(chunk, 0, 1)
    for i in range(n_chunk):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch.n_tokens = chunk
        for k in range(chunk):
            batch.token[k] = bos if (add_bos and k == 0) else tokens[i * chunk + k]
            batch.pos[k] = k
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = 0
            batch.logits[k] = True
        if llama_cpp.llama_decode(ctx, batch) != 0:
            print(f"error: llama_decode failed on chunk {i + 1}", file=sys.stderr)
            return 1
        if collector.error:
            print(f"error: {collector.error}", file=sys.stderr)
            return 1
        emit("chunk", done=i + 1, total=n_chunk)
    llama_cpp.llama_batch_free(batch)
    counts = {k: v for k, v in collector.counts.items()}
    last_chunk = max((int(c.max()) for c in counts.values()), default=0) // chunk
    m = Imatrix({k: v.astype(np.float32) for k, v in collector.sums.items()}, counts,
                datasets=[dataset], chunk_count=last_chunk, chunk_size=chunk)
    save_imatrix(Path(out_path), m)
    emit("done", entries=len(m.sums), chunks=n_chunk, tokens=n_chunk * chunk)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
