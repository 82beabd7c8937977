"""The chat page: conversations, messages, composer, settings; the controller between them.

A thin view over the core's ``ChatSession``: sending, regenerating, editing, titling, saving the
reply while it streams and reconciling a reply cut by an engine crash are its rules
(app/core/chat/session.py); the page opens a ``ReplyTurn``, hands the history to the engine
bridge, feeds the turn the tokens that come back and paints its text at most every
``PAINT_INTERVAL_MS`` so streaming stays smooth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QSplitter, QVBoxLayout, QWidget

from app.core.chat import store as chats
from app.core.chat.session import ChatSession, ReplyTurn, new_chat_defaults
from app.core.chat.store import ChatStore, Conversation
from app.core.engine import ModelInfo, Reply, SamplingParams
from app.core.errors import BadValueError, EngineCrashed
from app.core.starter import STARTER_LABEL, starter_model_path
from app.ui.chat.model_picker import ModelPicker, model_title
from app.ui.chat.side_panels import ConversationList, ConversationSettings, NoticeBar
from app.ui.chat.widgets import Composer, EmptyState, MessageList, MessageWidget
from app.ui.messages import Messages, user_text
from app.ui.safe_text import plain_label
from app.ui.tasks import EngineBridge


def cannot_see(info: ModelInfo | None) -> str:
    """Why the loaded model takes no images ("" when it does)."""
    if info is None:
        return "No model is loaded."
    if info.vision:
        return ""
    name = Path(info.path).name
    if info.vision_note:
        return f"{name} cannot see images: its vision projector did not load ({info.vision_note})"
    return (f"{name} cannot see images: no vision projector (mmproj file) beside it fits it. Vision models on "
            "the Hub ship one: Download both.")

PAINT_INTERVAL_MS = 40


class ChatPage(QWidget):
    status_message = Signal(str)
    model_requested = Signal(str)  # a path chosen in the header's picker: the window loads it
    discover_requested = Signal()  # the empty state's "Find models on Discover"

    def __init__(self, store: ChatStore, bridge: EngineBridge, parent: QWidget | None = None, *,
                 funnel: Messages | None = None) -> None:
        super().__init__(parent)
        # the window's message funnel; a page on its own (tests) sends its status lines out as a signal
        self.funnel = funnel or Messages(self, lambda text, _ms: self.status_message.emit(text))
        self.store = store
        self.bridge = bridge
        self.conversation: Conversation | None = None
        self.model: ModelInfo | None = None
        self.turn: ReplyTurn | None = None  # the assistant reply being written
        self._painted = ""
        self._painted_thought = 0  # how much of the streaming reply's reasoning is painted
        self.editing_id: int | None = None
        self.last_deleted: int | None = None

        self.conversations = ConversationList()
        self.messages = MessageList()
        self.composer = Composer()
        self.settings_panel = ConversationSettings()
        self.notice = NoticeBar()
        self.context_meter = QProgressBar()
        self.context_meter.setFormat("no model loaded")
        self.context_meter.setRange(0, 1)
        self.context_meter.setValue(0)
        self.context_meter.setFixedWidth(190)
        self.context_meter.setToolTip("How much of the model's context this conversation uses")
        self.template_label = plain_label()
        self.template_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.template_label.setWordWrap(True)
        self.picker = ModelPicker()
        self.picker.model_chosen.connect(self.model_requested.emit)
        self.empty_state = EmptyState()
        self.empty_state.discover_requested.connect(self.discover_requested.emit)

        center = QWidget()
        col = QVBoxLayout(center)
        col.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.picker, 1)
        top.addWidget(self.context_meter)
        col.addLayout(top)
        col.addWidget(self.template_label)
        col.addWidget(self.messages, 1)
        col.addWidget(self.empty_state, 1)
        col.addWidget(self.notice)
        col.addWidget(self.composer)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.conversations)
        self.splitter.addWidget(center)
        self.splitter.addWidget(self.settings_panel)
        self.splitter.setSizes([220, 700, 260])
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.splitter)

        self.paint_timer = QTimer(self)
        self.paint_timer.setInterval(PAINT_INTERVAL_MS)
        self.paint_timer.timeout.connect(self._paint)

        self.conversations.selected.connect(self.open_conversation)
        self.conversations.new_requested.connect(self.new_conversation)
        self.conversations.rename_requested.connect(self.rename_conversation)
        self.conversations.delete_requested.connect(self.delete_conversation)
        self.conversations.search_changed.connect(lambda _text: self.refresh_list())
        self.composer.send_requested.connect(self.send)
        self.composer.images = self.store.images
        self.composer.attach_failed.connect(lambda why: self.funnel.notice(self.notice, why, error=True))
        self.composer.stop_requested.connect(self.stop)
        self.composer.edit_cancelled.connect(self.cancel_edit)
        self.settings_panel.changed.connect(self._on_settings_changed)
        bridge.reply_started.connect(self._on_started)
        bridge.token_received.connect(self._on_token)
        bridge.reasoning_received.connect(self._on_reasoning)
        bridge.reply_finished.connect(self._on_finished)
        bridge.reply_failed.connect(self._on_failed)
        bridge.tokens_counted.connect(self._on_counted)
        bridge.model_loading.connect(self.picker.set_loading)
        bridge.model_loading.connect(lambda path: self.empty_state.set_loading(Path(path).name))
        bridge.load_failed.connect(lambda _error: self.set_model(self.bridge.client.model))  # back to what is loaded
        bridge.model_loaded.connect(self.picker.set_loaded)
        bridge.load_failed.connect(lambda error: self.picker.set_failed(user_text(error), self.bridge.client.model))
        bridge.model_unloaded.connect(self.picker.set_unloaded)
        self._sync_empty_state()

    # -- conversations --------------------------------------------------------------------------
    def refresh_list(self) -> None:
        current = self.conversation.id if self.conversation else None
        self.conversations.fill(self.store.list_conversations(self.conversations.search.text()), current)

    def new_conversation(self) -> Conversation:
        system, preset, sampling = new_chat_defaults()  # the Settings page's defaults
        conv = self.store.create_conversation(model_path=self.model.path if self.model else None,
                                              system_prompt=system, preset=preset, sampling=sampling)
        self.conversations.search.clear()
        self.conversation = conv
        self.refresh_list()
        self.open_conversation(conv.id)
        self.composer.input.setFocus()
        return conv

    def open_conversation(self, conversation_id: int) -> None:
        self.conversation = self.store.get_conversation(conversation_id)
        self.cancel_edit()
        self.messages.clear()
        for message in self.store.messages(conversation_id):
            widget = self._add_widget(message)
            if message.id == self.stream_id:
                widget.set_text(self.stream_text)
        self.settings_panel.show_conversation(self.conversation)
        self.refresh_list()
        self.update_context_meter()
        self._sync_empty_state()

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        try:
            self.store.rename(conversation_id, title)
        except BadValueError as exc:
            self.funnel.error(exc, title="Cannot rename", notice=self.notice)
        self.refresh_list()

    def delete_conversation(self, conversation_id: int) -> None:
        title = self.store.get_conversation(conversation_id).title
        self.store.delete(conversation_id)
        self.last_deleted = conversation_id
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation = None
            self.messages.clear()
            self._sync_empty_state()
        self.refresh_list()
        self.funnel.notice(self.notice, f"Deleted “{title}”.", action="Undo", callback=lambda: self.undo_delete(conversation_id))
        if self.conversation is None:
            ids = self.conversations.ids()
            if ids:
                self.open_conversation(ids[0])

    def undo_delete(self, conversation_id: int) -> None:
        self.store.undo_delete(conversation_id)
        self.refresh_list()
        self.open_conversation(conversation_id)

    def _on_settings_changed(self, system: str, preset: str, sampling: SamplingParams) -> None:
        if self.conversation is None:
            return
        self.conversation = self.store.update_conversation(self.conversation.id, system_prompt=system, preset=preset, sampling=sampling)

    # -- model ----------------------------------------------------------------------------------
    def set_model(self, info: ModelInfo | None) -> None:
        self.model = info
        self.settings_panel.thinking.show_model(info.path if info else None, info.reasoning if info else None)
        starter = starter_model_path()
        self.empty_state.set_model(model_title(info.path).replace(f" ({STARTER_LABEL})", "") if info else None,
                                   starter=info is not None and starter is not None and Path(info.path) == starter)
        self.composer.set_vision(info is not None and info.vision, cannot_see(info))
        if info is None:
            self.template_label.setText("")
            self.context_meter.setFormat("no model loaded")
            self.context_meter.setValue(0)
            return
        self.template_label.setText(info.template_note)
        self.context_meter.setFormat("%v / %m tokens")
        self.context_meter.setRange(0, info.n_ctx)
        self.update_context_meter()

    def update_context_meter(self) -> None:
        if self.conversation is None or self.model is None or self.bridge.busy:
            return
        history = self.store.engine_messages(self.conversation.id)
        if history:
            self.bridge.count_tokens(history)
        else:
            self.context_meter.setValue(0)

    def _on_counted(self, tokens: int, n_ctx: int) -> None:
        if n_ctx:
            self.context_meter.setRange(0, n_ctx)
        self.context_meter.setValue(min(tokens, self.context_meter.maximum()))

    # -- sending --------------------------------------------------------------------------------
    @property
    def stream_id(self) -> int | None:
        """The assistant message being streamed, if any."""
        return self.turn.message_id if self.turn else None

    @property
    def stream_text(self) -> str:
        return self.turn.text if self.turn else ""

    def _session(self) -> ChatSession:
        if self.conversation is None:
            self.new_conversation()
        return ChatSession(self.store, self.bridge.client, self.conversation)

    def send(self, text: str) -> None:
        if self.turn is not None:
            return
        if self.bridge.client.wanted_model is None:
            self.funnel.notice(self.notice, "No model is loaded: open a GGUF file first (File → Open model…).", error=True)
            return
        session = self._session()
        editing, self.editing_id = self.editing_id, None
        self.composer.edit_banner.hide()
        turn = session.begin_send(text, editing=editing, images=self.composer.attachments.take() or None)
        self.composer.input.clear()
        self._generate(session, turn)

    def regenerate(self, message_id: int) -> None:
        if self.conversation is None or self.turn is not None:
            return
        session = self._session()
        self._generate(session, session.begin_regenerate(message_id))

    def _generate(self, session: ChatSession, turn: ReplyTurn) -> None:
        self.conversation = session.conversation
        self.turn, self._painted = turn, ""
        self._sync_widgets()
        self.refresh_list()
        self.composer.set_generating(True)
        self.notice.hide()
        self.paint_timer.start()
        self.bridge.chat(turn.history, turn.sampling)

    def stop(self) -> None:
        if self.turn is not None:
            self.bridge.cancel()

    def start_edit(self, message_id: int) -> None:
        if self.stream_id is not None:
            return
        message = self.store.get_message(message_id)
        self.editing_id = message_id
        self.composer.input.setPlainText(message.content)
        self.composer.edit_banner.show()
        self.composer.input.setFocus()

    def cancel_edit(self) -> None:
        self.editing_id = None
        self.composer.edit_banner.hide()

    # -- engine events --------------------------------------------------------------------------
    def _on_started(self, event: dict[str, Any]) -> None:
        if event.get("images_left_out"):
            self.funnel.notice(self.notice, f"{event.get('cannot_see', 'This model cannot see images')}. The "
                               f"{event['images_left_out']} images earlier in this conversation were left out of this reply.")
        dropped = event.get("dropped_messages", 0)
        if dropped:
            self.funnel.notice(self.notice,
                f"This conversation is longer than the model's context ({event.get('n_ctx')} tokens): the "
                f"{dropped} oldest messages were left out of this reply. The system prompt is kept."
            )

    def _on_token(self, text: str) -> None:
        if self.turn is not None:
            self.turn.add(text)  # saved by the turn every SAVE_INTERVAL_S

    def _on_reasoning(self, text: str) -> None:
        if self.turn is not None:
            self.turn.add("", text)

    def _paint(self) -> None:
        if self.turn is None or (self.turn.text, len(self.turn.reasoning)) == (self._painted, self._painted_thought):
            return
        self._painted, self._painted_thought = self.turn.text, len(self.turn.reasoning)
        widget = self.messages.widget_for(self.turn.message_id)
        if widget is not None:
            widget.set_text(self._painted, self.turn.reasoning)

    def _end_stream(self, message: chats.Message | None) -> None:
        self.paint_timer.stop()
        self.turn, self._painted = None, ""
        self.composer.set_generating(False)
        if message is None:
            return
        widget = self.messages.widget_for(message.id)
        if widget is not None:
            widget.message = message
            widget.refresh()

    def _on_finished(self, reply: Reply) -> None:
        self._end_stream(self.turn.finish(reply) if self.turn else None)
        self.context_meter.setValue(min(reply.prompt_tokens + reply.completion_tokens, self.context_meter.maximum()))
        self.funnel.status(f"{reply.completion_tokens} tokens at {reply.tokens_per_s:.1f} tok/s")

    def _on_failed(self, error: BaseException, partial: str) -> None:
        crashed = isinstance(error, EngineCrashed)
        self._end_stream(self.turn.fail(crashed=crashed, partial=partial) if self.turn else None)
        self.funnel.error(error, title="The reply failed", notice=self.notice)

    def copy_text(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.funnel.status("Copied to the clipboard")

    def _sync_widgets(self) -> None:
        """Bring the message list in line with the store without rebuilding what is unchanged."""
        assert self.conversation is not None
        messages = self.store.messages(self.conversation.id)
        ids = {m.id for m in messages}
        for widget in [w for w in self.messages.widgets if w.message.id not in ids]:
            self.messages.widgets.remove(widget)
            widget.setParent(None)
            widget.deleteLater()
        shown = {w.message.id for w in self.messages.widgets}
        for message in messages:
            if message.id not in shown:
                self._add_widget(message)
        self._sync_empty_state()

    def _sync_empty_state(self) -> None:
        """An empty conversation shows what to do instead of an empty list."""
        empty = not self.messages.widgets
        self.empty_state.setVisible(empty)
        self.messages.setVisible(not empty)

    def _add_widget(self, message: chats.Message) -> MessageWidget:
        widget = MessageWidget(message, author=Path(self.model.path).name if self.model else None, images=self.store.images)
        widget.copy_requested.connect(self.copy_text)
        widget.edit_requested.connect(self.start_edit)
        widget.regenerate_requested.connect(self.regenerate)
        self.messages.add(widget)
        return widget
