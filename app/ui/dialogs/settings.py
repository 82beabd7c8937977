"""The Settings page: models folder, Hugging Face login, what new chats start with, the engine's
default context and threads, the RPC workers (app.ui.dialogs.workers), and the theme. Saved
through app.core.settings (versioned JSON); the token is kept by huggingface_hub
(app.core.hub.auth), never in our settings or logs."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core import paths
from app.core import settings as app_settings
from app.core.chat.session import new_chat_defaults
from app.core.hub import auth as hf_auth
from app.core.planner.params import MAX_CTX, physical_cores
from app.ui.chat.side_panels import ConversationSettings
from app.ui.dialogs.workers import WorkersPanel
from app.ui.messages import user_text
from app.ui.safe_text import plain_label
from app.ui.tasks import TaskRunner
from app.ui.theme import apply_theme

log = logging.getLogger(__name__)

THEME_NAMES = {"system": "Follow the system", "light": "Light", "dark": "Dark"}


class SettingsDialog(QDialog):
    saved = Signal(object)  # Settings

    def __init__(self, runner: TaskRunner, *, endpoint: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.endpoint = endpoint
        self.setWindowTitle("Settings")
        self.resize(560, 720)
        s = app_settings.load()
        page = QWidget()  # the groups scroll (the page is taller than a laptop's screen); OK and Cancel stay in view
        layout = QVBoxLayout(page)

        files = QGroupBox("Models")
        form = QFormLayout(files)
        self.models_dir = QLineEdit(s.models_dir or "")
        self.models_dir.setPlaceholderText(str(paths.home() / "models"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.models_dir, 1)
        row.addWidget(browse)
        form.addRow("Models folder", row)
        hint = plain_label("Where downloads, conversions and quantizations go. My models lists a new folder at once; "
                      "downloads move to it from the next start. Models in the old folder stay where they are.")
        hint.setWordWrap(True)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # a hint: dimmed in either theme
        form.addRow("", hint)
        layout.addWidget(files)

        hub = QGroupBox("Hugging Face")
        form = QFormLayout(hub)
        self.hf_status = plain_label("Checking…")
        self.hf_status.setWordWrap(True)
        form.addRow("Account", self.hf_status)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_… (an access token from huggingface.co/settings/tokens)")
        self.login_button = QPushButton("Log in")
        self.login_button.clicked.connect(self.login)
        self.logout_button = QPushButton("Log out")
        self.logout_button.clicked.connect(self.logout)
        row = QHBoxLayout()
        row.addWidget(self.token, 1)
        row.addWidget(self.login_button)
        row.addWidget(self.logout_button)
        form.addRow("Token", row)
        layout.addWidget(hub)

        engine = QGroupBox("Engine")
        form = QFormLayout(engine)
        self.default_ctx = QSpinBox()
        self.default_ctx.setRange(0, MAX_CTX)
        self.default_ctx.setSingleStep(1024)
        self.default_ctx.setSpecialValueText("Auto (4096, or the model's trained context if smaller)")
        self.default_ctx.setValue(s.default_ctx or 0)
        form.addRow("Default context", self.default_ctx)
        self.threads = QSpinBox()
        self.threads.setRange(0, 1024)
        self.threads.setSpecialValueText(f"Auto ({physical_cores()} cores)")
        self.threads.setValue(s.engine_threads or 0)
        form.addRow("Engine threads", self.threads)
        from app.core.engine import cpu_variants

        self.cpu_variant = QComboBox()
        self.cpu_variant.addItem("Auto (the fastest this CPU runs)", "auto")
        for v in cpu_variants.installed():
            self.cpu_variant.addItem(f"{v.name}: {v.title}" + ("" if cpu_variants.supported(v) else " (not for this CPU)"), v.name)
        self.cpu_variant.setCurrentIndex(max(self.cpu_variant.findData(s.cpu_variant), 0))
        self.cpu_variant.setToolTip("The build of llama.cpp's CPU backend the engine runs; takes effect when the engine restarts")
        form.addRow("CPU build", self.cpu_variant)
        self.speculation = QComboBox()
        self.speculation.addItem("Auto (on for a model once measured to be faster with it here)", "auto")
        self.speculation.addItem("On", "on")
        self.speculation.addItem("Off", "off")
        self.speculation.setCurrentIndex(max(self.speculation.findData(s.speculation), 0))
        self.speculation.setToolTip("Prompt-lookup speculative decoding: drafts taken from the conversation, checked "
                                    "by the model in one batch; the reply is the same, only its speed changes")
        form.addRow("Speculative decoding", self.speculation)
        layout.addWidget(engine)

        chats = QGroupBox("New chats start with")
        box = QVBoxLayout(chats)
        self.chat_defaults = ConversationSettings()
        system, preset, sampling = new_chat_defaults(s)
        self.chat_defaults.show_conversation(SimpleNamespace(system_prompt=system, preset=preset, sampling=sampling))  # type: ignore[arg-type]
        box.addWidget(self.chat_defaults)
        layout.addWidget(chats)

        server = QGroupBox("API server (Server → Run API server)")
        form = QFormLayout(server)
        self.server_host = QLineEdit(s.server_host)
        self.server_host.setToolTip("127.0.0.1: this computer only. Any other address needs an API key.")
        form.addRow("Host", self.server_host)
        self.server_port = QSpinBox()
        self.server_port.setRange(0, 65535)
        self.server_port.setSpecialValueText("any free port")
        self.server_port.setValue(s.server_port)
        form.addRow("Port", self.server_port)
        self.server_key = QLineEdit(s.server_api_key)
        self.server_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.server_key.setPlaceholderText("none (needed beyond 127.0.0.1)")
        form.addRow("API key", self.server_key)
        form.addRow("", plain_label("Clients send the key as 'Authorization: Bearer KEY' (or 'x-api-key'). "
                                    "Changes apply when the server next starts."))
        layout.addWidget(server)

        workers = QGroupBox("Workers (other computers that lend their GPU or memory)")
        box = QVBoxLayout(workers)
        self.workers = WorkersPanel(runner, s.workers)
        box.addWidget(self.workers)
        layout.addWidget(workers)
        self.finished.connect(lambda _result: self.workers.stop())

        look = QGroupBox("Appearance")
        form = QFormLayout(look)
        self.theme = QComboBox()
        for key, name in THEME_NAMES.items():
            self.theme.addItem(name, key)
        self.theme.setCurrentIndex(max(self.theme.findData(s.theme), 0))
        form.addRow("Theme", self.theme)
        layout.addWidget(look)

        self.page_scroll = QScrollArea()
        self.page_scroll.setWidgetResizable(True)
        self.page_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.page_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.page_scroll.setWidget(page)
        self.page_scroll.setMinimumWidth(page.minimumSizeHint().width() + self.page_scroll.verticalScrollBar().sizeHint().width())
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        outer = QVBoxLayout(self)
        outer.addWidget(self.page_scroll, 1)
        outer.addWidget(self.buttons)
        self.refresh_account()

    # -- models folder --------------------------------------------------------------------------
    def _browse(self) -> None:
        start = self.models_dir.text() or self.models_dir.placeholderText()
        chosen = QFileDialog.getExistingDirectory(self, "Models folder", start)
        if chosen:
            self.models_dir.setText(chosen)

    # -- Hugging Face (network calls off the GUI thread) ----------------------------------------
    def refresh_account(self) -> None:
        if not hf_auth.has_token():
            self._show_account("Not logged in. Gated and private models need a token.", logged_in=False)
            return
        self.hf_status.setText("Checking…")
        self.runner.run("hf-whoami", lambda: hf_auth.current_user(self.endpoint), done=self._on_user, failed=self._on_user_failed)

    def _on_user(self, name: str | None) -> None:
        if name is None:
            self._show_account("Not logged in.", logged_in=False)
            return
        where = " (from the HF_TOKEN environment variable)" if hf_auth.token_from_environment() else ""
        self._show_account(f"Logged in as {name}{where}", logged_in=True)

    def _on_user_failed(self, error: BaseException) -> None:
        self._show_account(f"A token is stored, but {user_text(error)}", logged_in=True)

    def _show_account(self, text: str, *, logged_in: bool) -> None:
        self.hf_status.setText(text)
        self.login_button.setEnabled(True)
        self.logout_button.setEnabled(logged_in)

    def login(self) -> None:
        token = self.token.text()
        self.token.clear()  # the token lives in huggingface_hub's file from now on, not in a widget
        self.login_button.setEnabled(False)
        self.hf_status.setText("Logging in…")
        self.runner.run("hf-login", lambda: hf_auth.login(token), done=lambda _name: self.refresh_account(),
                        failed=lambda e: self._show_account(f"Not logged in: {user_text(e)}", logged_in=hf_auth.has_token()))

    def logout(self) -> None:
        self.logout_button.setEnabled(False)
        self.runner.run("hf-logout", hf_auth.logout, done=lambda _r: self.refresh_account(),
                        failed=lambda e: self._show_account(user_text(e), logged_in=hf_auth.has_token()))

    # -- saving ---------------------------------------------------------------------------------
    def values(self) -> dict[str, object]:
        system = self.chat_defaults.system.toPlainText()
        preset = self.chat_defaults.preset.currentText()
        sampling = self.chat_defaults.sampling()
        return {
            "models_dir": self.models_dir.text().strip() or None,
            "default_ctx": self.default_ctx.value() or None,
            "engine_threads": self.threads.value() or None,
            "cpu_variant": self.cpu_variant.currentData(),
            "speculation": self.speculation.currentData(),
            "default_system_prompt": system,
            "default_preset": preset,
            "default_sampling": sampling.to_dict(),
            "theme": self.theme.currentData(),
            "server_host": self.server_host.text().strip() or "127.0.0.1",
            "server_port": self.server_port.value(),
            "server_api_key": self.server_key.text().strip(),
            "workers": self.workers.addresses(),
        }

    def accept(self) -> None:
        saved = app_settings.update(**self.values())
        apply_theme(saved.theme)
        log.info("settings saved (models folder %s, context %s, threads %s, theme %s, %d workers)", saved.models_dir or "default",
                 saved.default_ctx or "auto", saved.engine_threads or "auto", saved.theme, len(saved.workers))
        self.saved.emit(saved)
        super().accept()
