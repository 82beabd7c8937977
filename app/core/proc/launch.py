"""How QuantDesk starts its own Python child processes, installed or frozen (PyInstaller bundle).

Every child process that runs our code (engine host, llama.cpp dry run, and the converter and
quantizer) is started through ``python_command``: in a normal install it is
``[python, "-m", module, *args]``; in the frozen bundle there is no separate Python, so the bundle
runs itself with the hidden option ``--run-module`` (handled first thing in ``app.cli.main.main``),
which runs ``module`` as ``__main__`` with ``args`` as its ``sys.argv[1:]``.

    subprocess.Popen(python_command("app.core.quant.quantize", str(src), str(dst)), env=child_env())

The module must be importable in the bundle: anything imported by the app is; a module only ever
started this way must be listed in ``hiddenimports`` in ``packaging/quantdesk.spec``.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

RUN_MODULE_FLAG = "--run-module"
CONVERT_STACK = "convert-stack"  # in the bundle, beside the frozen app (packaging/convert_stack.py)
ROOT = Path(__file__).resolve().parents[3]  # the folder that holds the ``app`` package


def frozen() -> bool:
    """True inside the PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False))


SAFE_PATH = ["-P"] if sys.version_info >= (3, 11) else []  # the working folder is never on sys.path
# only the processes that talk to the Hub get the Hugging Face token: no child does
HUB_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")
_parent_pipe: tuple[int, int] | None = None


def python_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``module`` as a script in a child process."""
    if frozen():
        return [sys.executable, RUN_MODULE_FLAG, module, *args]
    return [sys.executable, *SAFE_PATH, "-m", module, *args]


def parent_pipe_fd() -> int | None:
    """The read end of a pipe whose write end only this process holds (made once): a child given
    it (``popen_options``) ends when it reads end-of-file, i.e. when this process dies, however it
    dies (app/core/__init__.py). PR_SET_PDEATHSIG would fire when the spawning *thread* exits."""
    global _parent_pipe
    if os.name != "posix":
        return None
    if _parent_pipe is None:
        _parent_pipe = os.pipe()  # both ends non-inheritable: only pass_fds hands the read end on
    return _parent_pipe[0]


def popen_options(env: dict[str, str]) -> dict[str, object]:
    """subprocess.Popen options for every child: a fixed working folder (the data folder, never
    the folder the app was started from) and the parent-death pipe, named in ``env``."""
    from app.core import paths

    fd = parent_pipe_fd()
    if fd is not None:
        env["QUANTDESK_PARENT_FD"] = str(fd)
    return {"cwd": str(paths.home()), "pass_fds": (fd,) if fd is not None else ()}


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for such a child: ``base`` (default: ours), unbuffered, with this
    checkout's ``app`` first on PYTHONPATH (source install), so the child runs the same code as the
    parent, and the CPU build of llama.cpp to activate (app.core.engine.cpu_variants)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONSAFEPATH"] = "1"
    for key in HUB_SECRETS:
        env.pop(key, None)
    if "QUANTDESK_CPU_VARIANT" not in env:  # llama.cpp children run the CPU build the engine runs
        try:
            from app.core.engine import cpu_policy

            env["QUANTDESK_CPU_VARIANT"] = cpu_policy.current().variant.name
        except Exception:  # a forced build that is not installed: the child says so when it starts
            pass
    if not frozen():
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_module(argv: list[str]) -> int:
    """``--run-module MODULE ARGS...`` in the frozen app: run MODULE as ``__main__``."""
    if not argv:
        print(f"{RUN_MODULE_FLAG}: name a module", file=sys.stderr)
        return 2
    module, rest = argv[0], argv[1:]
    sys.argv = [module, *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def convert_stack_dir() -> Path | None:
    """In the bundle: the folder with the unfrozen conversion stack (PyTorch, transformers ...;
    packaging/convert_stack.py), which only the conversion child puts on its ``sys.path``. None
    in a source install (the packages are installed) or in a bundle built without it."""
    if not frozen():
        return None
    stack = Path(getattr(sys, "_MEIPASS", ROOT)) / CONVERT_STACK
    return stack if stack.is_dir() else None


def require_modules(feature: str, *modules: str) -> None:
    """Raise a QuantDeskError naming ``feature`` when one of ``modules`` cannot be imported (in
    the bundle: from its conversion stack), e.g. the converter calls
    ``require_modules("Converting a Hugging Face model to GGUF", "torch", "transformers")``."""
    import importlib.machinery
    import importlib.util

    from app.core.errors import QuantDeskError

    stack = convert_stack_dir()
    if stack is not None:
        missing = [m for m in modules if importlib.machinery.PathFinder.find_spec(m, [str(stack)]) is None]
    else:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if frozen():
        raise QuantDeskError(
            f"{feature} needs the full install of QuantDesk (the full desktop bundle, or from source: 'make run'); "
            f"this bundle was built without {', '.join(missing)} (QUANTDESK_BUNDLE_CONVERT=0)"
        )
    raise QuantDeskError(f"{feature} needs {', '.join(missing)}: pip install {' '.join(missing)}")
