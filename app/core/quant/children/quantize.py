"""Child process: ``llama_model_quantize`` with progress per tensor from llama.cpp's own log.

    python -m app.core.quant.children.quantize JSON_ARGS

JSON_ARGS: {"src", "dst", "ftype", "nthread", "allow_requantize", "imatrix": path or null}.
llama.cpp logs ``[  12/ 272]   blk.0.attn_k.weight - [...], type = f16, ...`` for every tensor; a
log callback turns those into ``tensor`` events. With an imatrix, the file's normalised data is
passed as the ``llama_model_imatrix_data`` array and its name, dataset, entry and chunk counts
are written into the output's metadata, as llama-quantize does.
"""

from __future__ import annotations

import ctypes
import json
import re
import sys
from pathlib import Path
from typing import Any

from app.core.proc.runner import emit

TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


class LogParser:
    def __init__(self) -> None:
        self.buffer = ""

    def __call__(self, _level: int, text: bytes | None, _user: Any) -> None:
        if not text:
            return
        self.buffer += text.decode("utf-8", "replace")
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            m = TENSOR_LINE.match(line)
            if m:
                emit("tensor", done=int(m.group(1)), total=int(m.group(2)), name=m.group(3))
            elif line.strip():
                sys.stderr.write(line + "\n")


def _kv_overrides(llama_cpp: Any, items: list[tuple[str, str | int]]) -> Any:
    arr = (llama_cpp.llama_model_kv_override * (len(items) + 1))()
    for i, (key, value) in enumerate(items):
        arr[i].key = key.encode()[:127]
        if isinstance(value, int):
            arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            arr[i].value.val_i64 = value
        else:
            arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            arr[i].value.val_str = value.encode()[:127]
    arr[len(items)].key = b""  # terminator
    return arr


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    from app.core.engine import cpu_variants

    cpu_variants.activate()  # the CPU build the parent chose, before llama_cpp loads
    from app.core.quant.children.llama import bindings

    llama_cpp = bindings()  # the C API only: the child's start-up is part of every quantize

    parser = LogParser()
    log_cb = llama_cpp.llama_log_callback(parser)
    llama_cpp.llama_log_set(log_cb, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(args["ftype"])
    params.nthread = int(args["nthread"])
    params.allow_requantize = bool(args["allow_requantize"])
    keep: list[Any] = []
    if args.get("imatrix"):
        from app.core.quant.imatrix import load_imatrix

        m = load_imatrix(args["imatrix"])
        data = m.normalized()
        entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, values) in enumerate(data.items()):
            name_b = ctypes.create_string_buffer(name.encode())
            keep += [name_b, values]
            entries[i].name = ctypes.cast(name_b, ctypes.c_char_p)  # type: ignore[assignment]
            entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = values.size
        entries[len(data)].name = None  # terminator
        params.imatrix = entries
        kv: list[tuple[str, str | int]] = [("quantize.imatrix.file", str(args.get("imatrix_label") or args["imatrix"]))]
        if m.datasets:
            kv.append(("quantize.imatrix.dataset", m.datasets[0]))
        kv.append(("quantize.imatrix.entries_count", len(data)))
        if m.chunk_count > 0:
            kv.append(("quantize.imatrix.chunks_count", m.chunk_count))
        overrides = _kv_overrides(llama_cpp, kv)
        keep += [entries, overrides]
        params.kv_overrides = overrides
    rc = llama_cpp.llama_model_quantize(str(Path(args["src"])).encode(), str(Path(args["dst"])).encode(), ctypes.byref(params))
    if parser.buffer.strip():
        sys.stderr.write(parser.buffer + "\n")
    sys.stderr.flush()
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
