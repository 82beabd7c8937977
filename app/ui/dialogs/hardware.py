"""The Hardware page: what this machine has and what the installed engine can do."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from app.core import hardware
from app.ui.messages import user_text
from app.ui.tasks import TaskRunner


def hardware_html(hw: hardware.Hardware, gpu_offload: bool) -> str:
    from app.core.engine import cpu_policy

    rows = hardware.summary(hw, gpu_offload) + cpu_policy.summary_rows()
    body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table cellpadding='4'>{body}</table>"


class HardwareDialog(QDialog):
    def __init__(self, gpu_offload: bool, parent: QWidget | None = None, *, runner: TaskRunner | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Hardware")
        self.resize(560, 300)
        layout = QVBoxLayout(self)
        self.view = QTextBrowser()
        self.view.setPlainText("Looking at this machine…")
        self.runner = runner or TaskRunner(self)  # NVML and the CPU probe can take a while: off the GUI thread
        self.runner.run("hardware", hardware.detect, lambda hw: self.view.setHtml(hardware_html(hw, gpu_offload)),
                        lambda exc: self.view.setPlainText(user_text(exc)))
        layout.addWidget(self.view)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
