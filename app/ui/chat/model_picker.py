"""The chat header's model picker: the loaded model with its load state, fit and context, and the
library's other models one click away.

Choosing a model only asks for it (``model_chosen``): the window loads it through its one load path
(``MainWindow.load_model``, the one My models and File → Open model use), and the bridge's
loading / loaded / failed signals come back here as ``set_loading`` / ``set_loaded`` / ``set_failed``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSizePolicy, QWidget

from app.core.engine import ModelInfo
from app.core.library.catalog import LibraryEntry
from app.core.starter import STARTER_LABEL, starter_model_path
from app.ui.safe_text import plain_label, plain_tooltip

PATH_ROLE = Qt.ItemDataRole.UserRole
NO_MODEL, LOADING, LOADED, FAILED = "none", "loading", "loaded", "failed"


def fit_text(info: ModelInfo) -> str:
    """Where the model's layers run, in the words of the Discover page's fit verdicts."""
    if info.n_gpu_layers <= 0:
        return "CPU only"
    if info.n_gpu_layers >= info.n_layer:
        return "full GPU"
    return f"{info.n_gpu_layers} of {info.n_layer} layers on the GPU"


def model_title(path: str, quant: str | None = None) -> str:
    """A model's name for the picker: the file's stem, its quant, and "(starter model)" for the starter."""
    p = Path(path)
    name = p.stem
    if quant and quant.lower() not in name.lower():
        name += f" · {quant}"
    starter = starter_model_path()
    if starter is not None and p == starter:
        name += f" ({STARTER_LABEL})"
    return name


class ModelPicker(QWidget):
    model_chosen = Signal(str)  # a path the user picked; the window loads it

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = NO_MODEL
        self.current: str | None = None  # the path loaded or being loaded
        self.entries: list[LibraryEntry] = []
        self.combo = QComboBox()
        self.combo.setToolTip("The model this chat talks to: pick another to switch (the conversation stays)")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.combo.setMinimumContentsLength(24)
        self.combo.activated.connect(self._on_activated)
        self.status = plain_label("No model loaded")
        self.status.setObjectName("modelState")
        # the combo keeps its width; a long state line is cut here (its tooltip holds it all)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.status, 1)
        self._fill()

    # -- what the window tells it ---------------------------------------------------------------
    def set_entries(self, entries: list[LibraryEntry]) -> None:
        """The library's models (My models' list), offered in the menu."""
        self.entries = [e for e in entries if not e.error]
        self._fill()

    def set_loading(self, path: str) -> None:
        self.state, self.current = LOADING, path
        self._fill()
        self.status.setText(f"Loading {Path(path).name}…")
        self.status.setToolTip("")

    def set_loaded(self, info: ModelInfo) -> None:
        self.state, self.current = LOADED, info.path
        self._fill()
        fit = fit_text(info)
        where = fit if info.device == "CPU" else f"{fit} · {info.device}"
        self.status.setText(f"Loaded · {where} · context {info.n_ctx:,}")
        self.status.setToolTip(plain_tooltip(f"{self.status.text()}\n{info.path}"))

    def set_failed(self, reason: str, loaded: ModelInfo | None) -> None:
        """A load failed; ``loaded`` is the model still in the engine (the previous one), if any."""
        self.state = FAILED
        self.current = loaded.path if loaded else None
        self._fill()
        still = f" · still using {Path(loaded.path).name}" if loaded else ""
        self.status.setText(f"Failed to load{still}: {reason}")
        self.status.setToolTip(plain_tooltip(self.status.text()))

    def set_unloaded(self) -> None:
        self.state, self.current = NO_MODEL, None
        self._fill()
        self.status.setText("No model loaded")

    # -- the menu -------------------------------------------------------------------------------
    def paths(self) -> list[str]:
        return [self.combo.itemData(i, PATH_ROLE) for i in range(self.combo.count()) if self.combo.itemData(i, PATH_ROLE)]

    def _fill(self) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        if self.current is None:
            self.combo.addItem("Choose a model…", None)
        rows = [(e.path, model_title(e.path, e.quant), e.path) for e in self.entries]
        if self.current is not None and all(Path(p) != Path(self.current) for p, _t, _tip in rows):
            rows.insert(0, (self.current, model_title(self.current), self.current))  # opened from a file, not in the library
        for path, title, tip in rows:
            self.combo.addItem(title, path)
            self.combo.setItemData(self.combo.count() - 1, plain_tooltip(tip), Qt.ItemDataRole.ToolTipRole)
        if self.current is not None:
            index = next(i for i in range(self.combo.count()) if self.combo.itemData(i, PATH_ROLE)
                         and Path(self.combo.itemData(i, PATH_ROLE)) == Path(self.current))
            self.combo.setCurrentIndex(index)
        self.combo.setEnabled(self.combo.count() > (0 if self.current else 1))
        self.combo.blockSignals(False)

    def choose(self, path: str) -> None:
        """Pick ``path`` as the user would (tests and the keyboard use it)."""
        index = next(i for i in range(self.combo.count()) if self.combo.itemData(i, PATH_ROLE) == path)
        self.combo.setCurrentIndex(index)
        self._on_activated(index)

    def _on_activated(self, index: int) -> None:
        path = self.combo.itemData(index, PATH_ROLE)
        if not path or (self.current is not None and Path(path) == Path(self.current) and self.state != FAILED):
            return
        self.model_chosen.emit(path)
