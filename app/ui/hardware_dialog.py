"""The Hardware page: what this machine has and what the installed engine can do."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from app.core import hardware
from app.core.planner import human_bytes


def hardware_html(hw: hardware.Hardware, gpu_offload: bool) -> str:
    rows = [
        ("System", hw.os),
        ("CPU", f"{hw.cpu_model}: {hw.physical_cores} cores, {hw.logical_cores} threads"),
        ("SIMD", " ".join(hw.simd) or "none found"),
        ("RAM", f"{human_bytes(hw.ram_total_bytes)} total, {human_bytes(hw.ram_available_bytes)} available"),
    ]
    for g in hw.gpus:
        detail = f"driver {g.driver}, compute capability {g.compute_capability}" if g.vendor == "nvidia" else "unified memory"
        rows.append((f"GPU {g.index}", f"{g.name}: {human_bytes(g.total_bytes)} total, {human_bytes(g.free_bytes)} free ({detail})"))
    if not hw.gpus:
        rows.append(("GPU", f"none: {hw.gpu_note}"))
    rows.append(("Engine", "llama.cpp with GPU offload" if gpu_offload else "llama.cpp, CPU build (no GPU offload)"))
    body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table cellpadding='4'>{body}</table>"


class HardwareDialog(QDialog):
    def __init__(self, gpu_offload: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hardware")
        self.resize(560, 300)
        layout = QVBoxLayout(self)
        self.view = QTextBrowser()
        self.view.setHtml(hardware_html(hardware.detect(), gpu_offload))
        layout.addWidget(self.view)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
