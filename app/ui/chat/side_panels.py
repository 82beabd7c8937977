"""The conversation list (left) and the per-conversation settings (right) of the chat page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core import settings as app_settings
from app.core.chat.store import Conversation
from app.core.engine.protocol import PRESETS, SamplingParams
from app.ui.icons import set_icon
from app.ui.safe_text import plain_label, rich_label

CUSTOM = "Custom"


class ConversationList(QWidget):
    selected = Signal(int)
    new_requested = Signal()
    rename_requested = Signal(int, str)
    delete_requested = Signal(int)
    search_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.new_button = QPushButton("New chat")
        set_icon(self.new_button, "new")
        self.new_button.clicked.connect(self.new_requested.emit)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.search_changed.emit)
        self.list = QListWidget()
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemChanged.connect(self._on_item_changed)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        self._filling = False

    def fill(self, conversations: list[Conversation], current: int | None) -> None:
        self._filling = True
        try:
            self.list.clear()
            for conv in conversations:
                item = QListWidgetItem(conv.title)
                item.setData(Qt.ItemDataRole.UserRole, conv.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
                if conv.id == current:
                    self.list.setCurrentItem(item)
        finally:
            self._filling = False

    def ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def start_rename(self, conversation_id: int) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == conversation_id:
                self.list.editItem(item)

    def _on_current(self, item: QListWidgetItem | None, _prev: QListWidgetItem | None) -> None:
        if item is not None and not self._filling:
            self.selected.emit(item.data(Qt.ItemDataRole.UserRole))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if not self._filling:
            self.rename_requested.emit(item.data(Qt.ItemDataRole.UserRole), item.text())

    def _menu(self, pos) -> None:  # type: ignore[no-untyped-def]
        item = self.list.itemAt(pos)
        if item is None:
            return
        cid = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.list.editItem(item))
        menu.addAction("Delete", lambda: self.delete_requested.emit(cid))
        menu.exec(self.list.viewport().mapToGlobal(pos))


class ConversationSettings(QWidget):
    """System prompt, preset and sampling of the current conversation."""

    changed = Signal(str, str, object)  # system prompt, preset name, SamplingParams

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._loading = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(rich_label("<b>System prompt</b>"))
        self.system = QPlainTextEdit()
        self.system.setPlaceholderText("e.g. You are a concise assistant.")
        self.system.setMaximumHeight(120)
        self.system.textChanged.connect(self._emit)
        layout.addWidget(self.system)
        form = QFormLayout()
        self.preset = QComboBox()
        self.preset.addItems([*PRESETS, CUSTOM])
        self.preset.currentTextChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset)
        self.temperature = self._double(0, 2, 0.05)
        self.top_p = self._double(0, 1, 0.01)
        self.top_k = self._int(0, 1000)
        self.min_p = self._double(0, 1, 0.01)
        self.repeat_penalty = self._double(0.5, 2, 0.01)
        self.max_tokens = self._int(0, 1 << 20)
        self.max_tokens.setSpecialValueText("until done")
        self.seed = self._int(-1, 2**31 - 1)
        self.seed.setSpecialValueText("random")
        for label, widget in (
            ("Temperature", self.temperature),
            ("Top-p", self.top_p),
            ("Top-k", self.top_k),
            ("Min-p", self.min_p),
            ("Repeat penalty", self.repeat_penalty),
            ("Max tokens", self.max_tokens),
            ("Seed", self.seed),
        ):
            form.addRow(label, widget)
        layout.addLayout(form)
        self.thinking = ThinkingOptions()
        layout.addWidget(self.thinking)
        layout.addStretch(1)

    def _double(self, lo: float, hi: float, step: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setDecimals(2)
        box.valueChanged.connect(self._on_value)
        return box

    def _int(self, lo: int, hi: int) -> QSpinBox:
        box = QSpinBox()
        box.setRange(lo, hi)
        box.valueChanged.connect(self._on_value)
        return box

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=round(self.temperature.value(), 2),
            top_p=round(self.top_p.value(), 2),
            top_k=self.top_k.value(),
            min_p=round(self.min_p.value(), 2),
            repeat_penalty=round(self.repeat_penalty.value(), 2),
            max_tokens=self.max_tokens.value() or None,
            seed=self.seed.value(),
        )

    def show_conversation(self, conv: Conversation) -> None:
        self._loading = True
        try:
            self.system.setPlainText(conv.system_prompt)
            self.preset.setCurrentText(conv.preset if conv.preset in PRESETS else CUSTOM)
            self._set_sampling(conv.sampling)
        finally:
            self._loading = False

    def _set_sampling(self, sp: SamplingParams) -> None:
        self.temperature.setValue(sp.temperature)
        self.top_p.setValue(sp.top_p)
        self.top_k.setValue(sp.top_k)
        self.min_p.setValue(sp.min_p)
        self.repeat_penalty.setValue(sp.repeat_penalty)
        self.max_tokens.setValue(sp.max_tokens or 0)
        self.seed.setValue(sp.seed)

    def _on_preset(self, name: str) -> None:
        if self._loading or name not in PRESETS:
            return
        self._loading = True
        try:
            self._set_sampling(PRESETS[name])
        finally:
            self._loading = False
        self._emit()

    def _on_value(self) -> None:
        if self._loading:
            return
        matching = next((n for n, p in PRESETS.items() if p == self.sampling()), CUSTOM)
        self._loading = True
        self.preset.setCurrentText(matching)
        self._loading = False
        self._emit()

    def _emit(self) -> None:
        if not self._loading:
            self.changed.emit(self.system.toPlainText(), self.preset.currentText(), self.sampling())


class ThinkingOptions(QGroupBox):
    """Thinking for the loaded model, when its template reasons: on or off, and a budget in
    tokens. Saved per model file (Settings.thinking); the engine client reads them for each reply."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Thinking (this model)", parent)
        self.model: str | None = None
        self._loading = False
        self.enabled = QCheckBox("Think before answering")
        self.enabled.setToolTip("Off: the model answers at once (through its template's switch where it has one)")
        self.budget = QSpinBox()
        self.budget.setRange(0, 1 << 20)
        self.budget.setSingleStep(256)
        self.budget.setSpecialValueText("no limit")
        self.budget.setSuffix(" tokens")
        self.budget.setToolTip("Past this many reasoning tokens the thinking is closed and the model answers")
        self.effort = QComboBox()  # gpt-oss's reasoning_effort
        for level in ("default", "low", "medium", "high"):
            self.effort.addItem(level.capitalize(), None if level == "default" else level)
        form = QFormLayout(self)
        form.addRow(self.enabled)
        form.addRow("Budget", self.budget)
        form.addRow("Effort", self.effort)
        self.form = form
        self.enabled.toggled.connect(self._save)
        self.budget.valueChanged.connect(self._save)
        self.effort.currentIndexChanged.connect(self._save)
        self.hide()

    def show_model(self, path: str | None, reasoning: dict[str, Any] | None) -> None:
        """The loaded model and what its template offers (ModelInfo.reasoning); hidden for a model
        that does not reason."""
        self.model = path
        self.setVisible(bool(path and reasoning and reasoning.get("reasons")))
        options = app_settings.thinking_for(path)
        self._loading = True
        try:
            self.enabled.setChecked(options.get("enabled") is not False)
            self.budget.setValue(int(options.get("budget") or 0))
            self.budget.setEnabled(self.enabled.isChecked())
            self.effort.setCurrentIndex(max(self.effort.findData(options.get("effort")), 0))
            self.form.setRowVisible(self.effort, bool(reasoning and reasoning.get("effort")))
        finally:
            self._loading = False

    def _save(self) -> None:
        self.budget.setEnabled(self.enabled.isChecked())
        if self._loading or not self.model:
            return
        name = Path(self.model).name
        current = app_settings.load().thinking
        options = {**current.get(name, {}), "enabled": self.enabled.isChecked(), "budget": self.budget.value() or None,
                   "effort": self.effort.currentData()}
        app_settings.update(thinking={**current, name: options})


class NoticeBar(QWidget):
    """An inline message above the composer, with an optional action button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        self.label = plain_label()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action = QPushButton()
        self.close_button = QPushButton("Dismiss")
        self.close_button.clicked.connect(self.hide)
        row.addWidget(self.label, 1)
        row.addWidget(self.action)
        row.addWidget(self.close_button)
        self._callback = None
        self.action.clicked.connect(self._on_action)
        self.hide()

    def show_message(self, text: str, *, error: bool = False, action: str = "", callback=None) -> None:  # type: ignore[no-untyped-def]
        self.label.setText(text)
        color = "#fde7e7" if error else "#fff6d6"
        self.setStyleSheet(f"NoticeBar {{ background: {color}; }} QLabel {{ color: #222; }}")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._callback = callback
        self.action.setText(action)
        self.action.setVisible(bool(action))
        self.show()

    def _on_action(self) -> None:
        callback, self._callback = self._callback, None
        self.hide()
        if callback is not None:
            callback()
