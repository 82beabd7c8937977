"""CLI commands over the Hub and the library: search, files, pull, list."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from app.core.errors import QuantDeskError

EXIT_BAD_INPUT = 2


def add_parsers(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    from app.core.hub.api import SIZE_FILTERS, SORTS

    search = sub.add_parser("search", help="search the Hugging Face Hub (GGUF repos by default)")
    search.add_argument("query", nargs="?", default="")
    search.add_argument("--all", action="store_true", help="not only repos with GGUF files")
    search.add_argument("--sort", choices=list(SORTS), default="downloads")
    search.add_argument("--author")
    search.add_argument("--size", choices=list(SIZE_FILTERS), default="any", help="parameter count")
    search.add_argument("--arch", help="architecture tag, e.g. llama, qwen2")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--json", action="store_true")

    files = sub.add_parser("files", help="a repo's GGUF files with a fit verdict for this machine")
    files.add_argument("repo")
    files.add_argument("--ctx", type=int, default=None, help="the wanted context (default: 4096 or the trained one)")
    files.add_argument("--json", action="store_true")

    pull = sub.add_parser("pull", help="download a GGUF file (all shards of a split model) into the library")
    pull.add_argument("repo")
    pull.add_argument("file")
    pull.add_argument("--revision")
    pull.add_argument("--with-projector", action="store_true",
                      help="also download the vision projector (mmproj) paired with FILE in the repo")
    pull.add_argument("--json", action="store_true", help="progress as JSON lines on stderr")

    lst = sub.add_parser("list", help="local models: downloaded, converted, quantized, starter, huggingface_hub cache")
    lst.add_argument("--json", action="store_true")
    return {"search": cmd_search, "files": cmd_files, "pull": cmd_pull, "list": cmd_list}


def cmd_search(args: argparse.Namespace) -> int:
    from app.core.hub.api import search

    if args.limit <= 0:
        raise QuantDeskError(f"--limit {args.limit}: must be at least 1")
    rows = list(search(args.query, gguf_only=not args.all, sort=args.sort, author=args.author, size=args.size,
                       architecture=args.arch, limit=args.limit))
    if args.json:
        print(json.dumps([{"id": r.id, "downloads": r.downloads, "likes": r.likes, "gated": r.gated, "gguf": r.gguf,
                           "updated": r.updated, "license": r.license} for r in rows], indent=2))
        return 0
    if not rows:
        print("no models found", file=sys.stderr)
    for r in rows:
        print(f"{r.id:<60} {r.downloads:>10,} downloads {r.likes:>6,} likes  {r.updated}{'  gated' if r.gated else ''}")
    return 0


def cmd_files(args: argparse.Namespace) -> int:
    from app.core.hardware import detect
    from app.core.hub.api import repo_details
    from app.core.planner.memory import human_bytes
    from app.core.planner.recommend import plan_repo

    details = repo_details(args.repo)
    models = [f for f in details.gguf_files if not f.mmproj]
    if not models:
        raise QuantDeskError(f"{args.repo}: no GGUF files. {details.explanation}")
    verdicts = {v.path: v for v in plan_repo(args.repo, detect(), ctx=args.ctx, revision=details.sha)}
    rows = []
    for f in models:
        v = verdicts.get(f.path)
        rows.append({"path": f.path, "size_bytes": f.size_bytes, "quant": f.quant,
                     "fit": v.verdict if v else "unreadable", "max_ctx": v.max_ctx if v else 0,
                     "recommended": bool(v and v.recommended), "shards": len(f.shards),
                     "projector": f.projector, "projector_bytes": f.projector_bytes})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "*" if r["recommended"] else " "
        split = f" ({r['shards']} parts)" if r["shards"] > 1 else ""
        print(f"{mark} {r['path'] + split:<56} {r['quant']:<8} {human_bytes(r['size_bytes']):>10}  {r['fit']:<16} max context {r['max_ctx']:,}")
    print("* recommended: the best quality that fits fully, else the best partial fit")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from app.core.hub.downloads import DONE, DownloadManager
    from app.core.planner.memory import human_bytes

    last = [0.0]

    def progress(d: Any) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and d.state == "downloading":
            return
        last[0] = now
        if args.json:
            print(json.dumps(d.to_dict()), file=sys.stderr, flush=True)
        elif d.size:
            eta = f", {d.eta_s:.0f} s left" if d.eta_s is not None else ""
            print(f"{d.state} {human_bytes(d.done)} / {human_bytes(d.size)} ({100 * d.fraction:.0f}%, "
                  f"{human_bytes(int(d.speed))}/s{eta})", file=sys.stderr, flush=True)

    projector = None
    if args.with_projector:
        from app.core.hub.api import repo_details

        listed = next((f for f in repo_details(args.repo, revision=args.revision).gguf_files if f.path == args.file), None)
        if listed is None or not listed.projector:
            raise QuantDeskError(f"{args.repo}/{args.file}: no vision projector beside this file in the repo")
        projector = listed.projector
    manager = DownloadManager(listener=progress)
    started = manager.start_with_projector(args.repo, args.file, projector, revision=args.revision)
    done = []
    try:
        for d in started:
            d = manager.wait(d.id)
            while d.state not in (DONE, "failed", "cancelled", "paused"):
                d = manager.wait(d.id, 0.5)
            done.append(d)
    except KeyboardInterrupt:
        manager.close()
        kept = sum(manager.get(d.id).done for d in started)
        print(f"paused; run the same command again to resume ({human_bytes(kept)} kept)", file=sys.stderr)
        return 130
    for d in done:
        if d.state != DONE:
            raise QuantDeskError(d.error or f"{args.repo}/{d.filename}: download {d.state}")
    d = done[0]
    ready = {"path": str(d.dest), "repo": d.repo_id, "file": d.filename, "revision": d.commit, "size_bytes": d.size}
    if len(done) > 1:
        ready["projector"] = str(done[1].dest)
    print(json.dumps(ready))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from app.core import settings
    from app.core.library.catalog import Library
    from app.core.planner.memory import human_bytes

    s = settings.load()
    entries = Library().refresh(lmstudio=s.scan_lmstudio, ollama=s.scan_ollama)
    if args.json:
        print(json.dumps([e.to_dict() | {"owner": e.owner} for e in entries], indent=2))
        return 0
    if not entries:
        print("no local models", file=sys.stderr)
    for e in entries:
        print(f"{e.name[:40]:<40} {e.quant or '?':<8} {e.arch or '?':<10} {human_bytes(e.size):>10}  {e.origin:<10} {e.path}")
    return 0
