"""The one-click quantize wizard: pick a source (GGUF file, Hugging Face folder, or a Hub repo with
safetensors, fetched through the download manager) → the planner's proposal of quant levels is
ticked → Quantize → progress per stage with Cancel → results table and chart (size, bits per
weight, fit, perplexity, KL divergence). The work is ``quantize_pipeline.run_pipeline`` on a
TaskRunner thread; nothing here blocks the GUI thread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.errors import Cancelled
from app.core.gguf.origin import original_repo
from app.core.jobs import CancelToken, Progress
from app.core.planner.memory import human_bytes
from app.core.quant.pipeline import (
    LevelProposal,
    OutputRow,
    PipelineOptions,
    PipelineResult,
    Source,
    fetch_repo,
    inspect_source,
    propose_levels,
    propose_levels_by_size,
    run_pipeline,
    source_bits,
)
from app.core.settings import models_dir
from app.ui.icons import set_icon
from app.ui.messages import user_text
from app.ui.safe_text import plain_label, plain_tooltip, rich_label
from app.ui.tables import make_table, read_only_item
from app.ui.tasks import TaskRunner

log = logging.getLogger(__name__)

LEVEL_COLUMNS = ["", "Type", "Bits/weight", "Estimated size", "Fit on this machine", "Notes"]
RESULT_COLUMNS = ["Quant", "File", "Size", "Bits/weight", "Fit", "Perplexity", "KL divergence", "Top-token agreement"]
JOB_STATES = {"download": "downloading", "convert": "converting", "imatrix": "imatrix", "quantize": "quantizing",
              "eval": "evaluating", "done": "quantizing"}
STAGE_NAMES = {"download": "Downloading", "convert": "Converting to GGUF", "imatrix": "Computing the importance matrix",
               "quantize": "Quantizing", "eval": "Measuring quality", "done": "Done"}



class ResultChart(QWidget):
    """Bars of file size (left scale) with each file's perplexity written on its bar."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[OutputRow] = []
        self.setMinimumHeight(170)
        self.setMaximumHeight(340)

    def set_rows(self, rows: list[OutputRow]) -> None:
        self.rows = rows
        self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 (Qt name)
        if not self.rows:
            return
        painter = QPainter(self)
        text = self.palette().text().color()
        top, bottom = 40.0, self.height() - 22.0  # room for the title and the label over the tallest bar
        painter.setPen(text)
        painter.drawText(4, 14, "File size (bars) and perplexity on the held-out text (lower is better)")
        biggest = max(r.size_bytes for r in self.rows) or 1
        width = min((self.width() - 8) / len(self.rows), 220.0)  # bars of a readable width, from the left
        for i, r in enumerate(self.rows):
            h = (bottom - top) * r.size_bytes / biggest
            rect = QRectF(4 + i * width + 10, bottom - h, width - 20, h)
            painter.fillRect(rect, self.palette().placeholderText().color() if r.baseline else self.palette().highlight().color())
            painter.setPen(text)
            label = f"{r.quant} · {human_bytes(r.size_bytes)}"
            painter.drawText(QRectF(rect.left(), bottom + 2, rect.width(), 18), Qt.AlignmentFlag.AlignHCenter, label)
            if r.perplexity is not None:
                painter.drawText(QRectF(rect.left(), rect.top() - 16, rect.width(), 16), Qt.AlignmentFlag.AlignHCenter,
                                 f"ppl {r.perplexity:.2f}")
        painter.end()


class QuantizeWizard(QDialog):
    job_progress = Signal(str, object, str)  # state, fraction or None, detail
    finished_run = Signal(object)  # PipelineResult, or None when cancelled or failed

    def __init__(self, parent: QWidget | None = None, source: str | None = None, *, runner: TaskRunner | None = None,
                 downloads: Any = None, endpoint: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Quantize a model")
        self.resize(980, 640)
        self.runner = runner or TaskRunner(self)
        self.downloads = downloads  # DownloadManager for Hub sources
        self.endpoint = endpoint
        self.cancel_token: CancelToken | None = None
        self.result: PipelineResult | None = None
        self.proposals: list[LevelProposal] = []
        self.hub_repo: tuple[str, str | None] | None = None  # (repo, revision) when the source is a Hub repo
        self.running = False
        self._source_text = ""

        self.stack = QStackedWidget()
        self.stack.addWidget(self._setup_page())
        self.stack.addWidget(self._run_page())
        self.stack.addWidget(self._results_page())
        layout = QVBoxLayout(self)
        layout.addWidget(self.stack)
        if source:
            self.set_source(source)

    # ---- page 1: source and levels -----------------------------------------------------------
    def _setup_page(self) -> QWidget:
        page = QWidget()
        self.source_edit = QLineEdit(placeholderText="a .gguf file (F16/BF16/Q8_0), a Hugging Face model folder, or a Hub repo owner/name")
        self.source_edit.editingFinished.connect(self._on_source_edited)
        pick_file = QPushButton("GGUF file…")
        pick_file.clicked.connect(self._pick_file)
        pick_dir = QPushButton("HF folder…")
        pick_dir.clicked.connect(self._pick_dir)
        row = QHBoxLayout()
        row.addWidget(self.source_edit, 1)
        row.addWidget(pick_file)
        row.addWidget(pick_dir)
        self.source_note = plain_label("")
        self.source_note.setWordWrap(True)
        self.original_button = set_icon(QPushButton(""), "start")  # "Start from the original weights (owner/name)"
        self.original_button.hide()
        self.original_button.clicked.connect(self._start_from_original)
        self.original_repo: str | None = None
        self.ctx = QSpinBox()
        self.ctx.setRange(256, 1 << 20)
        self.ctx.setSingleStep(1024)
        self.ctx.setValue(4096)
        self.ctx.valueChanged.connect(lambda _: self._propose())
        self.evaluate = QCheckBox("Measure quality (perplexity, KL divergence against the baseline)")
        self.evaluate.setChecked(True)
        self.allow_pickle = QCheckBox("Allow pickle .bin weights (loading a pickle can run code hidden in the file; "
                                      "only for repos you trust)")
        self.allow_pickle.hide()
        self.allow_requantize = QCheckBox("Requantize an already-quantized file (loses quality: start from F16/BF16 when you can)")
        self.allow_requantize.hide()
        self.out_dir = QLineEdit(str(models_dir() / "quantized"))
        opts = QHBoxLayout()
        opts.addWidget(plain_label("Context you want"))
        opts.addWidget(self.ctx)
        opts.addSpacing(20)
        opts.addWidget(plain_label("Output folder"))
        opts.addWidget(self.out_dir, 1)
        self.levels = make_table(LEVEL_COLUMNS)
        self.levels.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.levels.itemChanged.connect(lambda _: self._sync())
        self.quantize_button = QPushButton("Quantize")
        set_icon(self.quantize_button, "quantize")
        self.quantize_button.setDefault(True)
        self.quantize_button.clicked.connect(self.start)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(close)
        buttons.addWidget(self.quantize_button)
        v = QVBoxLayout(page)
        v.addWidget(rich_label("<b>1. Source</b>"))
        v.addLayout(row)
        v.addWidget(self.source_note)
        origin_row = QHBoxLayout()
        origin_row.addWidget(self.original_button)
        origin_row.addStretch(1)
        v.addLayout(origin_row)
        v.addWidget(rich_label("<b>2. Quant levels</b> — ticked: the best quality that fits fully on this machine at the context you want"))
        v.addLayout(opts)
        v.addWidget(self.levels, 1)
        v.addWidget(self.evaluate)
        v.addWidget(self.allow_pickle)
        v.addWidget(self.allow_requantize)
        v.addLayout(buttons)
        self._sync()
        return page

    def _on_source_edited(self) -> None:
        text = self.source_edit.text().strip()
        if text != self._source_text:
            self.set_source(text)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A GGUF file to quantize", str(models_dir()), "GGUF (*.gguf)")
        if path:
            self.set_source(path)

    def _pick_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A Hugging Face model folder (config.json, safetensors)")
        if path:
            self.set_source(path)

    def set_source(self, text: str) -> None:
        """Read the source's facts off the GUI thread, then propose levels."""
        self.source_edit.setText(text)
        self._source_text = text
        self.runner.invalidate("wizard-propose")  # levels for the previous source are dropped
        self.runner.invalidate("wizard-origin")
        self.hub_repo = None
        self.original_repo = None
        self.original_button.hide()
        self.levels.setRowCount(0)
        self.proposals = []
        self.source_note.setText("Reading the source…")
        self._sync()

        def shown(found: tuple[str, Any]) -> None:
            kind, info = found
            self.kind, self.info = kind, info
            self.allow_pickle.setVisible(kind == "folder" and info.pickle)
            quantized = kind == "gguf" and info.file_type_name not in ("F32", "F16", "BF16", "ALL_F32")
            self.allow_requantize.setVisible(quantized and info.file_type_name != "Q8_0")
            if kind == "gguf":
                note = f"GGUF, {info.architecture}, {info.n_params / 1e9:.2f} B parameters, {info.file_type_name}"
                if quantized:
                    bits = source_bits(info)
                    note += (f": already quantized ({bits:.2f} bits per weight). Only levels below that are listed: "
                             f"requantizing to more bits adds size and no quality, and each requantization loses some"
                             if bits else ": already quantized; requantizing loses quality")
                    note += ". Best: start from the original F16/BF16 weights."
                    self._find_original(Path(text).expanduser())
            elif kind == "folder":
                note = (f"Hugging Face folder, {info.architecture}, {info.n_params / 1e9:.2f} B parameters: "
                        f"converted to F16 with llama.cpp's converter first")
                note += ". Its weights are pickle files: tick the box below to allow them" if info.pickle else ""
            else:
                if info.kind != "safetensors":
                    note = info.explanation or f"{info.repo_id}: nothing to convert"
                    if info.kind == "gguf":
                        note = f"{info.repo_id} already has GGUF files: download one in Discover, then quantize it here"
                    self.source_note.setText(note)
                    return
                self.hub_repo = (info.repo_id, info.sha)
                note = (f"Hub repo with safetensors ({human_bytes(info.safetensors_bytes)}): downloaded through the "
                        f"download manager, then converted to F16")
            self.source_note.setText(note)
            self._propose()

        self.runner.run("wizard-source", lambda: inspect_source(text, endpoint=self.endpoint), shown,
                        lambda exc: self.source_note.setText(user_text(exc)), key="wizard-source")

    def _find_original(self, path: Path) -> None:
        """Read the GGUF metadata naming the original weights off the GUI thread; offer them."""
        def found(repo: str | None) -> None:
            if repo is None:
                return
            self.original_repo = repo
            self.original_button.setText(f"Start from the original weights ({repo})")
            self.original_button.setToolTip(plain_tooltip(
                f"The file's metadata names {repo} as its source: download its safetensors and convert to F16"))
            self.original_button.show()

        self.runner.run("wizard-origin", lambda: original_repo(path), found,
                        lambda exc: log.info("no original weights found for %s: %s", path, exc), key="wizard-origin")

    def _start_from_original(self) -> None:
        if self.original_repo:
            self.set_source(self.original_repo)

    def _propose(self) -> None:
        kind = getattr(self, "kind", None)
        if kind is None:
            return
        info, ctx = self.info, self.ctx.value()

        def compute() -> list[LevelProposal]:
            if kind == "gguf":
                return propose_levels(info, ctx=ctx)
            n_params = info.n_params if kind == "folder" else int(info.safetensors_bytes / 2)  # bf16/f16 weights
            return propose_levels_by_size(n_params)

        self.runner.run("wizard-propose", compute, self._show_levels,
                        lambda exc: self.source_note.setText(user_text(exc)), key="wizard-propose")

    def _show_levels(self, proposals: list[LevelProposal]) -> None:
        self.proposals = proposals
        if not proposals and getattr(self, "kind", None) == "gguf":
            self.source_note.setText(self.source_note.text() + " No listed level is below this file's precision.")
        self.levels.blockSignals(True)
        self.levels.setRowCount(len(proposals))
        for row, lp in enumerate(proposals):
            check = read_only_item("")
            check.setFlags(check.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            check.setCheckState(Qt.CheckState.Checked if lp.proposed else Qt.CheckState.Unchecked)
            self.levels.setItem(row, 0, check)
            self.levels.setItem(row, 1, read_only_item(lp.qtype.name))
            self.levels.setItem(row, 2, read_only_item(f"{lp.qtype.bits_per_weight:.2f}"))
            self.levels.setItem(row, 3, read_only_item(human_bytes(lp.size_bytes)))
            self.levels.setItem(row, 4, read_only_item(("★ proposed · " if lp.proposed else "") + lp.verdict))
            needs = {"required": " · needs an importance matrix: made for you from the calibration text",
                     "recommended": " · an importance matrix is made for it"}.get(lp.qtype.imatrix, "")
            self.levels.setItem(row, 5, read_only_item(lp.qtype.explanation + needs))
        self.levels.blockSignals(False)
        self.levels.resizeColumnsToContents()
        self.levels.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self._sync()

    def chosen_types(self) -> list[str]:
        return [self.levels.item(r, 1).text() for r in range(self.levels.rowCount())
                if self.levels.item(r, 0).checkState() == Qt.CheckState.Checked]

    def set_chosen(self, names: list[str]) -> None:
        for r in range(self.levels.rowCount()):
            on = self.levels.item(r, 1).text() in names
            self.levels.item(r, 0).setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _sync(self) -> None:
        self.quantize_button.setEnabled(bool(self.proposals) and bool(self.chosen_types()) and not self.running)

    # ---- page 2: running ---------------------------------------------------------------------
    def _run_page(self) -> QWidget:
        page = QWidget()
        self.stage = plain_label("")
        font = self.stage.font()
        font.setBold(True)
        self.stage.setFont(font)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.detail = plain_label("")
        self.detail.setWordWrap(True)
        self.log = plain_label("")
        self.log.setWordWrap(True)
        self.log.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.cancel_button = QPushButton("Cancel")
        set_icon(self.cancel_button, "cancel")
        self.cancel_button.clicked.connect(self.cancel)
        v = QVBoxLayout(page)
        v.addWidget(self.stage)
        v.addWidget(self.bar)
        v.addWidget(self.detail)
        v.addWidget(self.log, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        v.addLayout(row)
        return page

    def start(self) -> None:
        types = self.chosen_types()
        if not types or self.running:
            return
        self.running = True
        self._sync()
        self.cancel_token = CancelToken()
        token = self.cancel_token
        self.stack.setCurrentIndex(1)
        self.stages_done: list[str] = []
        self.log.setText("")
        opts = PipelineOptions(types=types, out_dir=Path(self.out_dir.text()).expanduser(), evaluate=self.evaluate.isChecked(),
                               allow_pickle=self.allow_pickle.isChecked(), allow_requantize=self.allow_requantize.isChecked())
        hub, source_text = self.hub_repo, self.source_edit.text().strip()

        def report(p: Progress) -> None:
            self.runner.post(lambda: self._on_progress(p))

        def job() -> PipelineResult:
            if hub is not None:
                if self.downloads is None:
                    raise Cancelled("download (no download manager)")
                source = fetch_repo(self.downloads, hub[0], hub[1], endpoint=self.endpoint, progress=report, cancel=token)
            else:
                source = Source(Path(source_text).expanduser())
            return run_pipeline(source, opts, progress=report, cancel=token)

        self.job_progress.emit("quantizing", None, f"{len(types)} type(s)")
        self.runner.run("quantize-wizard", job, self._on_done, self._on_failed)

    def _on_progress(self, p: Progress) -> None:
        name = STAGE_NAMES.get(p.stage, p.stage)
        if self.stage.text() and self.stage.text() != name and self.stage.text() not in self.stages_done:
            self.stages_done.append(self.stage.text())
            self.log.setText("\n".join(f"✓ {s}" for s in self.stages_done))
        self.stage.setText(name)
        frac = p.fraction
        if frac is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(frac * 1000))
        self.detail.setText(p.message)
        self.job_progress.emit(JOB_STATES.get(p.stage, "quantizing"), frac, f"{name}: {p.message}")

    def cancel(self) -> None:
        if self.cancel_token is not None:
            self.cancel_token.cancel()
            self.detail.setText("Cancelling… (the partial output is removed)")
            self.cancel_button.setEnabled(False)

    def _on_failed(self, error: BaseException) -> None:
        message = user_text(error)
        self.running = False
        cancelled = self.cancel_token is not None and self.cancel_token.cancelled
        self.job_progress.emit("cancelled" if cancelled else "failed", None, message)
        self.stack.setCurrentIndex(0)
        self.cancel_button.setEnabled(True)
        self.source_note.setText(("Cancelled: " if cancelled else "Failed: ") + message)
        self._sync()
        self.finished_run.emit(None)

    # ---- page 3: results ---------------------------------------------------------------------
    def _results_page(self) -> QWidget:
        page = QWidget()
        self.summary = plain_label("")
        self.summary.setWordWrap(True)
        self.results = make_table(RESULT_COLUMNS)
        self.results.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.chart = ResultChart()
        again = QPushButton("Quantize more…")
        again.clicked.connect(lambda: self.stack.setCurrentIndex(0))
        done = QPushButton("Close")
        done.clicked.connect(self.close)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(again)
        row.addWidget(done)
        v = QVBoxLayout(page)
        v.addWidget(self.summary)
        v.addWidget(self.results)  # as tall as its rows
        v.addWidget(self.chart, 1)
        v.addStretch(0)
        v.addLayout(row)
        return page

    def _on_done(self, result: PipelineResult) -> None:
        self.running = False
        self.result = result
        rows = result.rows
        self.results.setRowCount(len(rows))
        for i, r in enumerate(rows):
            values = [r.quant + (" (baseline)" if r.baseline else ""), r.path.name, human_bytes(r.size_bytes),
                      f"{r.bits_per_weight:.2f}", r.verdict, f"{r.perplexity:.3f}" if r.perplexity is not None else "—",
                      f"{r.kl_divergence:.4f}" if r.kl_divergence is not None else "—",
                      f"{100 * r.top1_agreement:.1f}%" if r.top1_agreement is not None else "—"]
            for col, text in enumerate(values):
                self.results.setItem(i, col, read_only_item(text))
            self.results.item(i, 1).setToolTip(plain_tooltip(str(r.path)))
        self.results.resizeColumnsToContents()
        self.results.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        rows_height = sum(self.results.rowHeight(i) for i in range(len(rows)))
        self.results.setFixedHeight(min(self.results.horizontalHeader().height() + rows_height + 2 * self.results.frameWidth() + 2, 360))
        self.chart.set_rows(rows)
        notes = [f"{len(rows) - 1} file(s) in {rows[-1].path.parent}, listed in My models."]
        if result.imatrix:
            notes.append(f"Importance matrix: {result.imatrix.name}.")
        notes += result.warnings
        self.summary.setText(" ".join(notes))
        self.stack.setCurrentIndex(2)
        self._sync()
        self.job_progress.emit("done", 1.0, f"{len(rows) - 1} file(s) written")
        self.finished_run.emit(result)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        if self.running:
            self.cancel()  # closing the wizard cancels its job; nothing partial is left
        super().closeEvent(event)


def open_quantize_wizard(parent: QWidget | None = None, source: str | Path | None = None, **kwargs: Any) -> QuantizeWizard:
    wizard = QuantizeWizard(parent, str(source) if source else None, **kwargs)
    wizard.open()
    return wizard

