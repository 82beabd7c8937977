"""Load options for a model: "Auto" (the planner's choice) or the user's context, GPU layers and
KV cache, with a memory bar per device that follows every change and the planner's reasons."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core import hardware, settings
from app.core.gguf.header import GGUFHeader, read_header
from app.core.planner.auto import auto_plan
from app.core.planner.memory import GPU_MARGIN, DraftPlan, MemoryEstimate, Plan, budget, estimate, human_bytes, plan_draft, with_projector
from app.core.planner.params import LoadParams
from app.ui.messages import user_text
from app.ui.tasks import TaskRunner

if TYPE_CHECKING:
    from app.core.engine.client import EngineClient
from app.ui.safe_text import plain_label

SEGMENTS = (("weights", QColor("#4c78a8")), ("KV cache", QColor("#f58518")), ("compute", QColor("#54a24b")))


class MemoryBar(QWidget):
    """Stacked weights / KV / compute against a budget; red when over it."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.parts = (0, 0, 0)
        self.budget = 1
        self.setMinimumSize(320, 38)

    @property
    def over(self) -> bool:
        return sum(self.parts) > self.budget

    def set_values(self, weights: int, kv: int, compute: int, budget: int) -> None:
        self.parts, self.budget = (weights, kv, compute), max(budget, 1)
        self.setToolTip(" · ".join(f"{name} {human_bytes(v)}" for (name, _), v in zip(SEGMENTS, self.parts)))
        self.update()

    def text(self) -> str:
        return f"{self.title}: {human_bytes(sum(self.parts))} of {human_bytes(self.budget)}" + (" — over budget" if self.over else "")

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        bar = QRectF(0, 18, self.width() - 1, self.height() - 19)
        painter.setPen(QColor("#c0392b") if self.over else self.palette().text().color())
        painter.drawText(0, 13, self.text())
        painter.drawRect(bar)
        scale = bar.width() / max(self.budget, sum(self.parts))
        x = bar.left()
        for (_, color), value in zip(SEGMENTS, self.parts):
            width = value * scale
            painter.fillRect(QRectF(x, bar.top() + 1, width, bar.height() - 1), QColor("#c0392b") if self.over else color)
            x += width
        painter.end()


def show_memory(gpu_bar: MemoryBar, cpu_bar: MemoryBar, m: MemoryEstimate, gpu_budget: int, cpu_budget: int) -> None:
    """One estimate on the two bars (GPU: weights / KV / compute and margin; RAM: the rest)."""
    gpu_bar.set_values(m.gpu_weights_bytes, m.gpu_kv_bytes, m.gpu_compute_bytes + m.margin_bytes,
                       gpu_budget + GPU_MARGIN if gpu_budget else 0)
    cpu_bar.set_values(m.cpu_weights_bytes, m.kv_bytes - m.gpu_kv_bytes, m.cpu_compute_bytes, cpu_budget)


class LoadDialog(QDialog):
    header_ready = Signal(object)  # GGUFHeader or an error message

    def __init__(self, path: str, *, gpu_offload: bool = False, hw: hardware.Hardware | None = None,
                 engine: EngineClient | None = None, runner: TaskRunner | None = None, parent: QWidget | None = None) -> None:
        """With ``engine``, the engine is started first (off the GUI thread) and says whether this
        llama.cpp build can offload; else ``gpu_offload`` says so. ``hw`` defaults to this machine's."""
        super().__init__(parent)
        self.setWindowTitle(f"Load {Path(path).name}")
        self.path = path
        self.hw: hardware.Hardware | None = hw  # this machine, once detected
        self.gpu_offload = False  # known once the engine and the hardware answered
        self.header: GGUFHeader | None = None
        self.auto_plan: Plan | None = None
        self.params: LoadParams | None = None
        self.draft_header: GGUFHeader | None = None  # a library model that can draft for this one
        self.draft: dict[str, object] | None = None  # the draft's placement once accepted (DraftPlan.to_dict)
        self.error = ""
        layout = QVBoxLayout(self)
        self.status = plain_label("Reading the model's header…")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        form = QFormLayout()
        self.auto = QCheckBox("Auto (the planner's choice)")
        self.auto.setChecked(True)
        self.ctx = QSpinBox()
        self.ctx.setSingleStep(256)
        self.ctx_slider = QSlider(Qt.Orientation.Horizontal)
        self.layers = QSlider(Qt.Orientation.Horizontal)
        self.layers_label = plain_label()
        self.kv_type = QComboBox()
        self.kv_type.addItems(["f16", "q8_0"])
        self.flash = QCheckBox("Flash attention")
        form.addRow(self.auto)
        form.addRow("Context", self.ctx)
        form.addRow("", self.ctx_slider)
        form.addRow("GPU layers", self.layers)
        form.addRow("", self.layers_label)
        form.addRow("KV cache", self.kv_type)
        form.addRow("", self.flash)
        self.use_draft = QCheckBox()
        self.use_draft.setVisible(False)  # shown when the library has a model that can draft for this one
        self.use_draft.setToolTip("Speculative decoding: the small model guesses a few tokens, the model checks "
                                  "them in one batch; the reply is the same, the speed changes")
        form.addRow("", self.use_draft)
        layout.addLayout(form)
        self.gpu_bar = MemoryBar("GPU")
        self.cpu_bar = MemoryBar("RAM")
        layout.addWidget(self.gpu_bar)
        layout.addWidget(self.cpu_bar)
        self.gpu_bar.setVisible(False)
        self.cpu_bar.setVisible(False)  # shown once the header is read
        self.worker_bars: list[MemoryBar] = []  # one per RPC worker of a split (Auto only)
        self.worker_box = QVBoxLayout()
        layout.addLayout(self.worker_box)
        self._planned: Plan | None = None
        self.reasons = plain_label()
        self.reasons.setWordWrap(True)
        self.reasons.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        layout.addWidget(self.reasons)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self._set_enabled(False)
        self.header_ready.connect(self._on_header)
        self.auto.toggled.connect(self._on_auto)
        self.ctx.valueChanged.connect(self._on_ctx_spin)
        self.ctx_slider.valueChanged.connect(lambda v: self.ctx.setValue(v * 256))
        for signal in (self.layers.valueChanged, self.kv_type.currentTextChanged, self.flash.toggled, self.use_draft.toggled):
            signal.connect(self._on_manual_change)
        self._updating = False
        self.runner = runner or TaskRunner(self)
        # starting the engine, NVML and the header of a large vocabulary take seconds: never on the GUI thread
        self.runner.run("load-dialog", lambda: self._prepare(engine, gpu_offload), self._ready,
                        lambda exc: self.header_ready.emit(user_text(exc)))

    def _prepare(self, engine: EngineClient | None, gpu_offload: bool) -> tuple[GGUFHeader, hardware.Hardware, bool]:
        """On a worker thread: the header, this machine, whether the engine build can offload, and a
        draft model from the library."""
        from app.core.library.drafts import library_draft

        if engine is not None:
            engine.start()
            gpu_offload = engine.gpu_offload
        header = read_header(self.path)
        self.draft_header = library_draft(header)
        hw = self.hw or hardware.detect()
        workers = settings.load().workers
        # with saved workers, Auto may be a split: planned here, off the GUI thread (the workers are asked)
        self._planned = auto_plan(header, hw, gpu_offload=gpu_offload and bool(hw.gpus), workers=workers,
                                  strict=False) if workers else None
        return header, hw, gpu_offload

    def _ready(self, found: tuple[GGUFHeader, hardware.Hardware, bool]) -> None:
        header, self.hw, offload = found
        self.gpu_offload = offload and bool(self.hw.gpus)
        self.header_ready.emit(header)

    def _set_enabled(self, enabled: bool) -> None:
        manual = enabled and not self.auto.isChecked()
        for widget in (self.ctx, self.ctx_slider, self.kv_type, self.flash):
            widget.setEnabled(manual)
        self.layers.setEnabled(manual and self.gpu_offload)
        self.auto.setEnabled(enabled)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(enabled)

    def _on_header(self, result: object) -> None:
        if isinstance(result, str):
            self.error = result
            self.status.setText(result)
            self.status.setStyleSheet("color: #c0392b;")
            return
        assert isinstance(result, GGUFHeader)
        self.header = h = result
        trained = h.context_length or 4096
        self.status.setText(f"{h.display_name}: {h.architecture}, {h.n_params / 1e9:.2f} B parameters, {h.file_type_name}, "
                            f"{h.block_count} layers, trained context {trained:,}")
        self._updating = True
        self.ctx.setRange(256, max(trained, 256))
        self.ctx_slider.setRange(1, max(trained // 256, 1))
        self.layers.setRange(0, (h.block_count or 0) + 1)
        self._updating = False
        # the same Auto as plan_load (a split over the saved workers when the model does not fit here)
        self.auto_plan = self._planned or auto_plan(h, self.hw, gpu_offload=self.gpu_offload)
        self._show_params(self.auto_plan.params)
        if self.draft_header is not None:
            d = self.draft_header
            self.use_draft.setText(f"Speculative decoding with {d.path.name} ({d.n_params / 1e6:.0f} M parameters, "
                                   "the same vocabulary)")
            self.use_draft.setVisible(True)
        self.gpu_bar.setVisible(self.gpu_offload)
        self.cpu_bar.setVisible(True)
        self._set_enabled(True)
        self._refresh()

    def _show_params(self, p: LoadParams) -> None:
        self._updating = True
        self.ctx.setValue(p.n_ctx)
        self.ctx_slider.setValue(p.n_ctx // 256)
        n_layer = (self.header.block_count or 0) if self.header else 0
        self.layers.setValue(n_layer + 1 if p.n_gpu_layers < 0 else p.n_gpu_layers)
        self.kv_type.setCurrentText(p.type_k)
        self.flash.setChecked(p.flash_attn)
        self._updating = False

    def _on_auto(self, checked: bool) -> None:
        self._set_enabled(self.header is not None)
        if checked and self.auto_plan is not None:
            self._show_params(self.auto_plan.params)
        self._refresh()

    def _on_ctx_spin(self, value: int) -> None:
        if not self._updating:
            self._updating = True
            self.ctx_slider.setValue(value // 256)
            self._updating = False
            self._on_manual_change()

    def _on_manual_change(self) -> None:
        if not self._updating:
            self._refresh()

    def current_params(self) -> LoadParams | None:
        if self.header is None or self.auto_plan is None:
            return None
        if self.auto.isChecked():
            return self.auto_plan.params
        kv = self.kv_type.currentText()
        return replace(self.auto_plan.params, n_ctx=self.ctx.value(), n_gpu_layers=self.layers.value() if self.gpu_offload else 0,
                       type_k=kv, type_v=kv, flash_attn=self.flash.isChecked() or kv != "f16",
                       reasons=("chosen by the user in the load dialog",))

    def _refresh(self) -> None:
        p = self.current_params()
        if p is None or self.header is None:
            return
        n_layer = self.header.block_count or 0
        self.layers_label.setText(f"{p.n_gpu_layers if p.n_gpu_layers >= 0 else n_layer + 1} of {n_layer + 1} (from the last layer; the output layer counts)")
        split = p.rpc and self.auto_plan is not None and p is self.auto_plan.params
        m = self.auto_plan.memory if split and self.auto_plan else with_projector(estimate(self.header, p, gpu_offload=self.gpu_offload), p)
        room = budget(self.hw)
        show_memory(self.gpu_bar, self.cpu_bar, m, room.gpu, room.cpu)
        self._show_workers(self.auto_plan.devices() if split and self.auto_plan else [])
        over = not room.holds(m)
        reasons = list(self.auto_plan.reasons) if self.auto.isChecked() and self.auto_plan else list(p.reasons)
        if over:
            reasons.append("over budget: lower the context or the GPU layers, or use a q8_0 KV cache")
        elif self.use_draft.isChecked():
            placed = self._draft_plan(p, m)
            reasons.append(placed.reason if placed is not None else "the draft model does not fit beside the model")
            over = placed is None
        self.reasons.setText("\n".join(f"• {r}" for r in reasons))
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not over)

    def _show_workers(self, devices: list[dict[str, object]]) -> None:
        """A memory bar per worker of the split (its weights, KV and compute against what it offers)."""
        workers = [d for d in devices if d.get("kind") == "rpc"]
        while len(self.worker_bars) > len(workers):
            bar = self.worker_bars.pop()
            bar.setParent(None)
            bar.deleteLater()
        while len(self.worker_bars) < len(workers):
            bar = MemoryBar("")
            self.worker_box.addWidget(bar)
            self.worker_bars.append(bar)
        for bar, d in zip(self.worker_bars, workers):
            bar.title = f"Worker {d.get('address')} ({d.get('layers')} layers)"
            bar.set_values(int(d["weights_bytes"]), int(d["kv_bytes"]), int(d["compute_bytes"]),  # type: ignore[call-overload]
                           int(d.get("budget_bytes") or 0))  # type: ignore[call-overload]

    def _draft_plan(self, p: LoadParams, m: MemoryEstimate) -> DraftPlan | None:
        """Where the draft model goes beside the model at ``p`` (the planner counts its memory)."""
        if self.draft_header is None or self.auto_plan is None or self.hw is None:
            return None
        return plan_draft(replace(self.auto_plan, params=p, memory=m), self.draft_header, self.hw)

    def _accept(self) -> None:
        self.params = self.current_params()
        if self.params is not None:
            if self.use_draft.isChecked() and self.header is not None:
                placed = self._draft_plan(self.params, estimate(self.header, self.params, gpu_offload=self.gpu_offload))
                self.draft = placed.to_dict() if placed is not None else None
            self.accept()
