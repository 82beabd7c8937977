"""About QuantDesk: app version, the llama.cpp build and its backends, Python and Qt; Copy puts it
all on the clipboard for a bug report."""

from __future__ import annotations

import html
import platform

import PySide6.QtCore
from PySide6.QtCore import qVersion
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPushButton, QTextBrowser, QVBoxLayout, QWidget

from app import APP_NAME, __version__
from app.core import paths
from app.core.proc.launch import frozen
from app.ui.safe_text import rich_label


def version_rows(build_info: dict[str, str] | None = None, gpu_offload: bool | None = None) -> list[tuple[str, str]]:
    """What a bug report needs to know; ``build_info`` is what the engine host reported."""
    rows = [
        (APP_NAME, f"{__version__}" + (" (bundle)" if frozen() else "")),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("Qt / PySide6", f"{qVersion()} / {PySide6.QtCore.__version__}"),
        ("System", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("Data folder", str(paths.home())),
    ]
    if build_info:
        rows.append(("llama-cpp-python", build_info.get("llama_cpp_version", "?")))
        if gpu_offload is not None:
            rows.append(("GPU offload", "yes" if gpu_offload else "no (CPU build)"))
        rows.append(("llama.cpp backends", build_info.get("system_info", "?")))
        if build_info.get("cpu_variant"):
            rows.append(("CPU build running", build_info["cpu_variant"]))
    else:
        rows.append(("llama.cpp", "the engine has not started yet"))
    from app.core.engine import cpu_policy

    return rows + cpu_policy.summary_rows()


def rows_text(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in rows)


def rows_html(rows: list[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><td valign='top'><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    return f"<table cellpadding='3'>{body}</table>"


class AboutDialog(QDialog):
    def __init__(self, client: object | None = None, runner: object | None = None, parent: QWidget | None = None) -> None:
        """``client`` is the EngineClient (its build info); ``runner`` a TaskRunner that starts the
        engine off the GUI thread when it is not running yet."""
        super().__init__(parent)
        self.client = client
        self.setWindowTitle(f"About {APP_NAME}")
        self.resize(620, 420)
        layout = QVBoxLayout(self)
        title = rich_label(f"<h2>{APP_NAME} {__version__}</h2>Run, quantize and chat with local language models (llama.cpp).")
        title.setWordWrap(True)
        layout.addWidget(title)
        self.view = QTextBrowser()
        layout.addWidget(self.view, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.refresh()
        if client is not None and not getattr(client, "build_info", None) and runner is not None:
            runner.run("engine-start", client.start, done=lambda _r: self.refresh(), failed=lambda _e: None)  # type: ignore[attr-defined]

    def rows(self) -> list[tuple[str, str]]:
        info = getattr(self.client, "build_info", None) or None
        return version_rows(info, getattr(self.client, "gpu_offload", None) if info else None)

    def refresh(self) -> None:
        self.view.setHtml(rows_html(self.rows()))

    def text(self) -> str:
        return rows_text(self.rows())

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text())
        self.copy_button.setText("Copied")
