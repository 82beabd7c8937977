"""CLI commands over conversion, quantization and quality: convert, quantize, imatrix, eval, quant-types."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from app.core.jobs import Progress


def add_parsers(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    convert = sub.add_parser("convert", help="convert a Hugging Face model folder to GGUF (llama.cpp's converter)")
    convert.add_argument("src", help="a folder with config.json, *.safetensors and the tokenizer")
    convert.add_argument("--outtype", choices=["f16", "bf16", "q8_0", "f32"], default="f16")
    convert.add_argument("-o", "--output", required=True, metavar="OUT.gguf")
    convert.add_argument("--allow-pickle", action="store_true",
                         help="also read pickle .bin weights: DANGEROUS, loading a pickle can run code hidden in the file; "
                              "only for sources you trust")
    convert.add_argument("--json", action="store_true")

    quantize = sub.add_parser("quantize", help="quantize a GGUF file (llama.cpp's quantizer)")
    quantize.add_argument("input", metavar="IN.gguf")
    quantize.add_argument("output", metavar="OUT.gguf")
    quantize.add_argument("--type", required=True, help="Q4_K_M, Q5_K_M, IQ4_XS, ... ('quantdesk quant-types' lists them)")
    group = quantize.add_mutually_exclusive_group()
    group.add_argument("--imatrix", metavar="FILE", help="an importance matrix (GGUF or legacy .dat)")
    group.add_argument("--calibration", metavar="TEXT", help="compute an importance matrix from this text first")
    quantize.add_argument("--allow-requantize", action="store_true", help="quantize an already quantized file (loses quality)")
    quantize.add_argument("--threads", type=int, default=None)
    quantize.add_argument("--json", action="store_true")

    imatrix = sub.add_parser("imatrix", help="compute an importance matrix of a GGUF model from a text")
    imatrix.add_argument("model")
    imatrix.add_argument("--text", required=True, metavar="FILE")
    imatrix.add_argument("-o", "--output", required=True, metavar="OUT")
    imatrix.add_argument("--chunk", type=int, default=512, help="tokens per chunk (llama-imatrix's --ctx-size)")
    imatrix.add_argument("--chunks", type=int, default=0, help="use at most this many chunks (0: all)")
    imatrix.add_argument("--json", action="store_true")

    ev = sub.add_parser("eval", help="perplexity of a model; KL divergence and top-token agreement against a baseline")
    ev.add_argument("model", nargs="+")
    ev.add_argument("--baseline", help="the unquantized model to compare with (F16/BF16)")
    ev.add_argument("--text", help="held-out text (default: the bundled one)")
    ev.add_argument("--ctx", type=int, default=256, help="tokens per chunk; the second half of each is scored")
    ev.add_argument("--chunks", type=int, default=0, help="use at most this many chunks (0: all)")
    ev.add_argument("--json", action="store_true")

    types = sub.add_parser("quant-types", help="every llama.cpp quantization type, with a size estimate for a model")
    types.add_argument("model", nargs="?", help="a GGUF file to estimate sizes for")
    types.add_argument("--json", action="store_true")
    return {"convert": cmd_convert, "quantize": cmd_quantize, "imatrix": cmd_imatrix, "eval": cmd_eval,
            "quant-types": cmd_quant_types}


class ProgressLine:
    """One updating line on stderr (a terminal), or a line per stage otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.stage = ""

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if p.stage != self.stage:
            if self.tty and self.stage:
                sys.stderr.write("\n")
            self.stage = p.stage
            if not self.tty:
                print(f"{p.stage}: {p.message}", file=sys.stderr, flush=True)
        if self.tty and (now - self.last > 0.1 or (p.fraction or 0) >= 1):
            self.last = now
            pct = f"{100 * p.fraction:5.1f}%" if p.fraction is not None else "      "
            sys.stderr.write(f"\r{p.stage:<9} {pct} {p.message[:90]:<90}")
            sys.stderr.flush()

    def end(self) -> None:
        if self.tty and self.stage and not self.quiet:
            sys.stderr.write("\n")


def cmd_convert(args: argparse.Namespace) -> int:
    from app.core.hardware import human_bytes
    from app.core.quant.convert import convert
    from app.core.quant.pipeline import record_output

    line = ProgressLine()
    try:
        r = convert(args.src, args.output, outtype=args.outtype, allow_pickle=args.allow_pickle, progress=line)
    finally:
        line.end()
    for warning in r.source.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    record_output(r.path, origin="converted", quant=args.outtype.upper())
    if args.json:
        print(json.dumps({"path": str(r.path), "outtype": r.outtype, "size_bytes": r.size_bytes, "seconds": round(r.seconds, 2),
                          "peak_rss_bytes": r.peak_rss_bytes, "architecture": r.source.architecture}))
    else:
        print(f"{r.path} ({r.outtype.upper()}, {human_bytes(r.size_bytes)}) in {r.seconds:.1f} s")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from app.core.gguf.quant_types import quant_type
    from app.core.hardware import human_bytes
    from app.core.quant.imatrix import compute_imatrix
    from app.core.quant.pipeline import record_output
    from app.core.quant.quantize import default_calibration, quantize

    t = quant_type(args.type)
    out = Path(args.output).expanduser()
    imatrix = Path(args.imatrix).expanduser() if args.imatrix else None
    line = ProgressLine()
    try:
        if imatrix is None and (args.calibration or t.imatrix):
            text = Path(args.calibration).expanduser() if args.calibration else default_calibration()
            if not args.calibration:
                print(f"{t.name} {'needs' if t.imatrix == 'required' else 'works best with'} an importance matrix: "
                      f"computing one from the bundled calibration text ({text.name}); give --imatrix or --calibration "
                      "to choose", file=sys.stderr)
            imatrix = out.with_name(out.stem + ".imatrix.gguf")
            compute_imatrix(args.input, text, imatrix, progress=line)
        r = quantize(args.input, out, t.name, imatrix=imatrix, allow_requantize=args.allow_requantize,
                     nthread=args.threads, progress=line)
    finally:
        line.end()
    for warning in r.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    record_output(r.path, origin="quantized", quant=t.name, imatrix=str(imatrix) if imatrix else None,
                  parent=str(Path(args.input).expanduser().resolve()))
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        print(f"{r.path} ({t.name}, {human_bytes(r.size_bytes)}, {r.bits_per_weight:.2f} bits per weight) in {r.seconds:.1f} s")
    return 0


def cmd_imatrix(args: argparse.Namespace) -> int:
    from app.core.quant.imatrix import compute_imatrix

    line = ProgressLine()
    try:
        r = compute_imatrix(args.model, args.text, args.output, chunk=args.chunk, max_chunks=args.chunks, progress=line)
    finally:
        line.end()
    if args.json:
        print(json.dumps({"path": str(r.path), "entries": r.entries, "chunks": r.chunks, "tokens": r.tokens,
                          "seconds": round(r.seconds, 2)}))
    else:
        print(f"{r.path}: {r.entries} matrices from {r.chunks} chunks ({r.tokens} tokens) in {r.seconds:.1f} s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from app.core.quant.evaluate import evaluate

    line = ProgressLine(quiet=args.json)
    try:
        rows = evaluate(args.model, baseline=args.baseline, text=args.text, n_ctx=args.ctx, max_chunks=args.chunks, progress=line)
    finally:
        line.end()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    for r in rows:
        kl = f"KL {r.kl_divergence:.4f}, top-1 {100 * r.top1_agreement:.1f}%" if r.kl_divergence is not None and not r.baseline else (
            "baseline" if r.baseline else "")
        print(f"{Path(r.path).name:<40} {r.quant:<8} {r.bits_per_weight:5.2f} bpw  PPL {r.perplexity:8.3f} "
              f"± {r.perplexity_error:.3f}  {kl:<28} {r.seconds:.1f} s ({r.tokens} tokens)")
    return 0


def cmd_quant_types(args: argparse.Namespace) -> int:
    from app.core.gguf.header import read_header
    from app.core.gguf.quant_types import QUANT_TYPES
    from app.core.hardware import human_bytes

    h = read_header(args.model) if args.model else None
    rows = []
    for t in QUANT_TYPES:
        d = t.to_dict()
        if h is not None:
            d["estimated_bytes"] = t.estimate_bytes(h)
        rows.append(d)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for d in rows:
        size = f"{human_bytes(int(d['estimated_bytes'])):>10}" if "estimated_bytes" in d else ""  # type: ignore[call-overload]
        need = f" [imatrix {d['imatrix']}]" if d["imatrix"] else ""
        print(f"{d['name']:<10} {d['bits_per_weight']:>6.2f} bpw {size}  {d['explanation']}{need}")
    return 0
