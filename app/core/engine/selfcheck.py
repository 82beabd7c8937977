"""The engine's self-check: a one-token decode of the starter model on one CPU build, in a child.

`make install` runs it on every CPU build this machine supports (``python -m
app.core.engine.selfcheck --install``): a build whose check dies of a signal is marked bad for
this machine, and the install stops with the cause when no build works. The engine client runs it
when the engine died of SIGILL, to tell a build this CPU cannot run from one hostile file.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app.core.engine import cpu_variants as cv

TIMEOUT_S = 180


@dataclass(frozen=True)
class CheckResult:
    variant: str
    ok: bool
    died_of_signal: bool
    detail: str
    seconds: float


def _describe(code: int) -> str:
    try:
        return f"died of {signal.Signals(-code).name}"
    except ValueError:
        return f"died of signal {-code}"


def check(variant: str, model: Path | None = None) -> CheckResult:
    """Run the starter model's one-token decode on ``variant`` in a child process."""
    from app.core.proc.launch import child_env, python_command
    from app.core.starter import starter_model_path

    model = model or starter_model_path()
    if model is None:
        return CheckResult(variant, False, False, "the starter model is not installed", 0.0)
    env = child_env()
    env[cv.ENV] = variant
    t0 = time.monotonic()
    try:
        proc = subprocess.run(python_command("app.core.engine.selfcheck", "--child", variant, str(model)),
                              env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return CheckResult(variant, False, False, f"no answer in {TIMEOUT_S} s", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    if proc.returncode < 0:
        return CheckResult(variant, False, True, _describe(proc.returncode), seconds)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return CheckResult(variant, False, False, lines[-1] if lines else f"exit status {proc.returncode}", seconds)
    return CheckResult(variant, True, False, proc.stdout.strip().splitlines()[-1], seconds)


def _child(variant: str, model: str) -> int:
    cv.activate(variant)
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model, n_ctx=128, n_batch=32, n_threads=1, verbose=False)
    tokens = llm.tokenize(b"The capital of France is")
    cv.simulate_decode_crash(model)
    llm.eval(tokens)
    token = int(llm.sample(temp=0.0))
    print(json.dumps({"variant": variant, "token": token, "text": llm.detokenize([token]).decode("utf-8", "replace")}))
    llm.close()
    return 0


def install_check() -> int:
    """Check every installed build this CPU supports; mark those that die; fail when none works."""
    from app.core.engine import cpu_policy

    flags = cv.cpu_flags()
    state = cpu_policy.state_path()
    results = []
    print("engine self-check (the starter model, one token, on each CPU build):")
    for v in cv.all_variants():
        if v not in cv.installed():
            print(f"  {v.name:<10} not installed")
            continue
        if not cv.supported(v, flags):
            print(f"  {v.name:<10} not for this CPU (needs {', '.join(sorted(v.needs - flags))})")
            continue
        r = check(v.name)
        results.append(r)
        print(f"  {v.name:<10} {'ok' if r.ok else 'FAILED: ' + r.detail}  ({r.seconds:.1f} s)")
        if r.died_of_signal:
            cv.mark_bad(state, v, f"the starter model's self-check {r.detail}")
    if not any(r.ok for r in results):
        causes = "; ".join(f"{r.variant}: {r.detail}" for r in results) or "no CPU build is installed"
        print(f"the engine does not work on this machine: {causes}", file=sys.stderr)
        return 1
    choice = cpu_policy.current()
    print(f"the engine runs on {choice.variant.describe()}: {choice.reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.core.engine.selfcheck")
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--install", action="store_true", help="check every CPU build (run by make install)")
    args = ap.parse_args(argv)
    if args.child:
        return _child(*args.child)
    return install_check()


if __name__ == "__main__":
    sys.exit(main())
