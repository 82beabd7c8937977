"""``quantdesk worker``: lend this computer's GPU (or CPU) memory to a QuantDesk on another one,
through llama.cpp's RPC server (no Qt). Ctrl-C or SIGTERM stops it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Callable

from app.core.errors import QuantDeskError


def _size(text: str) -> int:
    from app.core.rpc.worker import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or int(text) >= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: give a port from 1 to 65534 (the status is on the next one), or 0 for a free one")
    return int(text)


def _threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of threads, at least 1")
    return int(text)


def add_parsers(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    from app.core.rpc import DEFAULT_HOST, DEFAULT_PORT

    worker = sub.add_parser("worker", help="lend this computer's GPU or CPU to QuantDesk elsewhere (llama.cpp RPC worker)",
                            description="Serve one device of this computer to a QuantDesk elsewhere over llama.cpp's RPC "
                            "(unauthenticated: keep it on loopback and reach it through an SSH tunnel).")
    worker.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; anything but "
                        "loopback needs --allow-network)")
    worker.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"RPC port (default {DEFAULT_PORT}); the read-only status is on the next port; 0: free ones")
    worker.add_argument("--device", default="cpu", metavar="cpu|cuda:0|gpu:N|NAME",
                        help="the device to serve (default cpu): a ggml device name or registry index also works")
    worker.add_argument("--mem", type=_size, default=None, metavar="BYTES",
                        help="offer at most this much memory (e.g. 2G, 512M; default: the device's free memory)")
    worker.add_argument("--cache", action="store_true", help="keep a local cache of received tensors (faster reloads)")
    worker.add_argument("--threads", type=_threads, default=None, metavar="N", help="CPU threads (default: half the cores)")
    worker.add_argument("--allow-network", action="store_true",
                        help="allow --host beyond loopback (llama.cpp's RPC has no authentication: never on an open network)")
    return {"worker": cmd_worker}


def cmd_worker(args: argparse.Namespace) -> int:
    from app.core import paths
    from app.core.hardware import human_bytes
    from app.core.rpc import protocol_text, status_port
    from app.core.rpc.worker import Worker, WorkerConfig

    config = WorkerConfig(host=args.host, port=args.port, device=args.device, mem=args.mem, threads=args.threads,
                          cache_dir=str(paths.sub("rpc-cache")) if args.cache else None, allow_network=args.allow_network)
    config.check()
    warning = config.warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = Worker(config, on_log=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        status = worker.start()
        host = worker.config.host
        print(f"QuantDesk RPC worker on {status.address} (protocol {protocol_text(status.protocol)}; status: "
              f"http://{host}:{status_port(worker.config.port)}/status); Ctrl-C stops it", flush=True)
        for d in status.devices:
            limit = f", capped by --mem {human_bytes(status.mem_limit)}" if status.mem_limit is not None else ""
            print(f"  {d.name}: {d.description} ({d.type}); offers {human_bytes(d.offered_bytes)} of "
                  f"{human_bytes(d.free_bytes)} free{limit}", flush=True)
        while not stop.wait(0.5):
            if not worker.running() and worker.stopped:  # Ctrl-C reaches the whole process group: the child too
                break
            if not worker.running():
                lines = [line for line in worker.tail if line.strip()]
                raise QuantDeskError(f"worker {status.address}: stopped by itself (exit status {worker.wait()})"
                                     + (f": {lines[-1]}" if lines else ""))
        worker.stop()
        print("stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        worker.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
