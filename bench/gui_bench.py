"""GUI rows: event-loop stalls while the real chat window streams; cold start and idle memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.core.engine import Reply, SamplingParams
from app.core.planner.params import LoadParams

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class Heartbeat:
    """A 5 ms timer on the GUI thread; the longest gap between two ticks is the longest stall."""

    def __init__(self, interval_ms: int = 5) -> None:
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.t0 = self.last = 0.0
        self.max_gap = 0.0
        self.max_at = 0.0  # when the longest gap ended, seconds after start
        self.mark_at = float("inf")
        self.max_after_mark = 0.0  # the longest gap that began after ``mark()``

    def start(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.timer.start()

    def mark(self) -> None:
        self.mark_at = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self.last > self.max_gap:
            self.max_gap, self.max_at = now - self.last, now - self.t0
        if self.last >= self.mark_at:
            self.max_after_mark = max(self.max_after_mark, now - self.last)
        self.last = now

    def stop(self) -> None:
        self._tick()
        self.timer.stop()


def spin(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def gui_stall(model: Path, max_tokens: int = 300, cap_s: float = 60.0) -> tuple[float, str]:
    """Longest GUI-thread stall (seconds) from send() until the streamed reply is finished and shown;
    the reply is stopped after ``cap_s`` (as the user would with Stop) when the machine is slow."""
    from app.ui.app import create_window

    if QApplication.instance() is None:
        QApplication([])
    window = create_window()
    try:
        window.resize(1200, 780)
        window.show()
        spin(200)
        client = window.bridge.client
        client.load(model, LoadParams(n_ctx=2048, n_gpu_layers=0, n_threads=2))
        window.chat.set_model(client.model)
        conv = window.chat.new_conversation()
        window.chat.store.update_conversation(conv.id, sampling=SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=1))
        window.chat.open_conversation(conv.id)
        spin(200)

        replies: list[Reply] = []
        failures: list[str] = []
        loop = QEventLoop()

        def finished(reply: Reply) -> None:
            replies.append(reply)
            loop.quit()

        def failed(message: str, *_: object) -> None:
            failures.append(message)
            loop.quit()

        window.bridge.reply_finished.connect(finished)
        window.bridge.reply_failed.connect(failed)
        stop_timer, give_up = QTimer(), QTimer()  # press Stop after cap_s; stop waiting 30 s later
        for timer, slot, ms in ((stop_timer, window.chat.stop, cap_s * 1000), (give_up, loop.quit, cap_s * 1000 + 30_000)):
            timer.setSingleShot(True)
            timer.timeout.connect(slot)
            timer.start(int(ms))
        send_s: list[float] = []

        def send() -> None:
            t = time.perf_counter()
            window.chat.send("Write a long story about a dragon.")
            send_s.append(time.perf_counter() - t)
            beat.mark()

        beat = Heartbeat()
        beat.start()
        QTimer.singleShot(20, send)
        loop.exec()
        spin(150)  # the finish handler's repaint belongs to the reply too
        beat.stop()
        stop_timer.stop()
        give_up.stop()
    finally:
        window.bridge.shutdown()
        window.store.close()
        window.close()
        window.deleteLater()  # destroy the widgets now, not during interpreter shutdown
        spin(50)
    if failures or not replies:
        raise RuntimeError(f"the reply failed: {failures[:1] or 'timed out'}")
    reply = replies[0]
    detail = (
        f"{reply.completion_tokens} tok at {reply.tokens_per_s:.1f} tok/s ({reply.finish_reason}); send() took "
        f"{send_s[0] * 1000:.0f} ms; longest gap after send() returned {beat.max_after_mark * 1000:.1f} ms"
    )
    return beat.max_gap, detail


HOSTILE_REPLIES = {
    "a 400 KB reply that is one code block": "```python\n" + "print('x' * 40)  # a line\n" * 16_000,
    "a 1 MB paragraph": "word " * 200_000,
    "1 MB of images and links": "![a](/dev/zero) [b](file:///x) " * 32_000,
    "unclosed fences and tables": ("| a | b |\n|---|---|\n" + "| `x` | ~~~ |\n" * 20_000),
}


def hostile_paint(steps: int = 16) -> tuple[float, str]:
    """Slowest update-and-paint (seconds) of a real chat message streaming hostile replies, and of
    the Hub page's card view showing a 1 MB model card (rendered off the GUI thread as the page does)."""
    from app.core.chat import store as chats
    from app.ui.chat.widgets import MessageWidget
    from app.ui.safe_text import MarkdownView, card_html

    if QApplication.instance() is None:
        QApplication([])
    worst: dict[str, float] = {}
    for name, full in HOSTILE_REPLIES.items():
        widget = MessageWidget(chats.Message(1, 1, "assistant", ""))
        widget.resize(1000, 700)
        widget.show()
        for k in range(1, steps + 1):
            t = time.perf_counter()
            widget.set_text(full[: len(full) * k // steps])
            widget.repaint()
            QApplication.processEvents()
            worst[name] = max(worst.get(name, 0.0), time.perf_counter() - t)
        widget.close()
        widget.deleteLater()
    card = ("# Card\n\n" + ("A paragraph of a long card. " * 40 + "\n\n") * 450 + "| a | b |\n|---|---|\n"
            + "| x | y |\n" * 50_000 + "![x](/dev/zero)\n")
    view = MarkdownView()
    view.resize(1000, 700)
    view.show()
    html = card_html(card)
    t = time.perf_counter()
    view.setHtml(html)
    view.repaint()
    QApplication.processEvents()
    worst["a 1 MB model card"] = time.perf_counter() - t
    view.close()
    view.deleteLater()
    spin(20)
    name = max(worst, key=worst.__getitem__)
    return worst[name], f"slowest: {name}; " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in worst.items())


def cold_start(runs: int = 3) -> tuple[tuple[float, str], tuple[float, str]]:
    """Seconds from Popen to the child's 'shown' line, and its idle RSS in MB (medians of ``runs``)."""
    times: list[float] = []
    rss: list[float] = []
    engines: list[int] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="quantdesk-bench-") as home:
            env = dict(os.environ, QUANTDESK_HOME=home, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "coldstart_child.py")], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("shown"):
                    times.append(time.perf_counter() - t0)
                elif line.startswith("rss"):
                    _, nbytes, children = line.split()
                    rss.append(int(nbytes) / 2**20)
                    engines.append(int(children))
            if proc.wait(timeout=30) != 0 or len(times) != len(rss):
                raise RuntimeError(f"the cold-start child failed (exit {proc.returncode})")
    time_detail = f"runs {'/'.join(f'{t:.2f}' for t in times)} s (first is the coldest)"
    rss_detail = f"runs {'/'.join(f'{r:.0f}' for r in rss)} MB; engine processes running: {max(engines)}"
    return (statistics.median(times), time_detail), (statistics.median(rss), rss_detail)
