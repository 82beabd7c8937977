"""A conversation as the user has it: what a new one starts with, and ``ChatSession`` (send, stop,
regenerate, edit, title, incremental save), for the GUI's chat page and the CLI alike."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from app.core import settings as app_settings
from app.core.chat.store import COMPLETE, FAILED, INTERRUPTED, SAVE_INTERVAL_S, STOPPED, STREAMING, ChatStore, Conversation, Message
from app.core.engine.protocol import PRESETS, Reply, SamplingParams
from app.core.errors import EngineCrashed, QuantDeskError

if TYPE_CHECKING:
    from app.core.engine.client import EngineClient


def new_chat_defaults(settings: app_settings.Settings | None = None) -> tuple[str, str, SamplingParams]:
    """What a new conversation starts with: system prompt, preset name ("Custom" when the saved
    sampling matches no preset) and sampling, from the Settings page."""
    s = settings or app_settings.load()
    if s.default_sampling:
        sampling = SamplingParams.from_dict(s.default_sampling)
    else:
        sampling = PRESETS.get(s.default_preset, SamplingParams())
    preset = next((name for name, p in PRESETS.items() if p == sampling), "Custom")
    return s.default_system_prompt, preset, sampling


TITLE_CHARS = 48


def title_for(text: str) -> str:
    """A new conversation's title: its first message, on one line, cut to TITLE_CHARS."""
    return " ".join(text.split())[:TITLE_CHARS] or "New chat"


def status_for(reply: Reply) -> str:
    return STOPPED if reply.finish_reason == "cancelled" else COMPLETE


class ChatSession:
    """One conversation as the user has it, the rules in one place for the GUI and the CLI: send
    (the first message titles the conversation), stop (the partial reply is kept, marked stopped),
    regenerate, edit and resend, and the reply saved while it streams (every SAVE_INTERVAL_S), so
    a crash loses at most that much. The engine trims the oldest turns to fit its context
    (engine/host.py); the store keeps them all.

    Synchronous: the CLI calls it directly, the GUI from a worker thread."""

    def __init__(self, store: ChatStore, engine: EngineClient, conversation: Conversation | None = None, *,
                 system_prompt: str = "", sampling: SamplingParams | None = None, preset: str = "Custom") -> None:
        self.store, self.engine = store, engine
        self.conversation = conversation
        self._new = {"system_prompt": system_prompt, "sampling": sampling or SamplingParams(), "preset": preset}

    @property
    def sampling(self) -> SamplingParams:
        return self.conversation.sampling if self.conversation else self._new["sampling"]  # type: ignore[return-value]

    def _ensure_conversation(self) -> Conversation:
        if self.conversation is None:
            model = self.engine.wanted_model
            self.conversation = self.store.create_conversation(model_path=str(model) if model else None, **self._new)  # type: ignore[arg-type]
        return self.conversation

    def begin_send(self, text: str, *, editing: int | None = None, images: list[str] | None = None) -> ReplyTurn:
        """Add the user's ``text`` (replacing message ``editing`` and everything after it; the
        first message titles the conversation) and open the reply's turn, for a caller that
        streams it itself (the GUI, through its engine bridge). ``images``: names in the store's
        image store (``store.images.put``); an edited message keeps its own unless others are given."""
        conv = self._ensure_conversation()
        if editing is not None:
            if images is None:
                images = self.store.get_message(editing).images
            self.store.delete_from(conv.id, editing)
        if conv.title == "New chat":
            self.conversation = conv = self.store.rename(conv.id, title_for(text) if text.strip() or not images else "Image")
        self.store.add_message(conv.id, "user", text, images=images)
        return self._begin_reply()

    def begin_regenerate(self, message_id: int) -> ReplyTurn:
        """Drop the reply ``message_id`` (and anything after it) and open a new reply's turn."""
        conv = self._ensure_conversation()
        self.store.delete_from(conv.id, message_id)
        return self._begin_reply()

    def _begin_reply(self) -> ReplyTurn:
        conv = self._ensure_conversation()
        history = self.store.engine_messages(conv.id)
        placeholder = self.store.add_message(conv.id, "assistant", "", status=STREAMING)
        model = self.engine.wanted_model
        return ReplyTurn(self.store, placeholder.id, history, self.sampling, model=Path(model).name if model else None)

    def send(self, text: str, *, on_token: Callable[[str], None] | None = None, editing: int | None = None,
             on_reasoning: Callable[[str], None] | None = None, images: list[str] | None = None) -> Message:
        """Add the user's ``text`` (replacing message ``editing`` and everything after it) and
        stream the reply (the answer to ``on_token``, the reasoning to ``on_reasoning``);
        returns the saved assistant message."""
        return self._stream(self.begin_send(text, editing=editing, images=images), on_token, on_reasoning)

    def regenerate(self, message_id: int, *, on_token: Callable[[str], None] | None = None) -> Message:
        """Drop the reply ``message_id`` (and anything after it) and answer again."""
        return self._stream(self.begin_regenerate(message_id), on_token)

    def stop(self) -> None:
        """Stop the reply being streamed (safe from another thread); what came is kept."""
        self.engine.cancel()

    def _stream(self, turn: ReplyTurn, on_token: Callable[[str], None] | None,
                on_reasoning: Callable[[str], None] | None = None) -> Message:
        try:
            for event in self.engine.stream(turn.history, turn.sampling):
                if event["ev"] == "token":
                    turn.add(event["text"], event.get("reasoning", ""))
                    if on_reasoning is not None and event.get("reasoning"):
                        on_reasoning(event["reasoning"])
                    if on_token is not None and event["text"]:
                        on_token(event["text"])
                elif event["ev"] == "done":
                    turn.finish(event["reply"])
        except KeyboardInterrupt:  # the CLI's Ctrl-C: stop, keep what came
            self.engine.cancel()
            turn.stopped()
            raise
        except EngineCrashed:
            turn.fail(crashed=True)
            raise
        except QuantDeskError:
            turn.fail(crashed=False)
            raise
        return self.store.get_message(turn.message_id)


class ReplyTurn:
    """One assistant reply while it streams: the placeholder message it fills, the history it
    answers, the text so far (saved every SAVE_INTERVAL_S, so a crash loses at most that much),
    and how it ends: finished (complete, or stopped when cancelled), failed (interrupted when the
    engine crashed, else failed), keeping the longest text known. Not thread-safe: one caller
    feeds it (the CLI's loop, the GUI thread)."""

    def __init__(self, store: ChatStore, message_id: int, history: list[dict[str, Any]], sampling: SamplingParams, *,
                 model: str | None = None) -> None:
        self.store, self.message_id, self.history, self.sampling = store, message_id, history, sampling
        self.model = model  # the file name of the model answering: the reply's author, kept in its stats
        self._parts: list[str] = []
        self._thoughts: list[str] = []
        self._last_save = time.monotonic()
        self.ended = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def reasoning(self) -> str:
        return "".join(self._thoughts)

    def add(self, token: str, reasoning: str = "") -> None:
        self._parts.append(token)
        if reasoning:
            self._thoughts.append(reasoning)
        if time.monotonic() - self._last_save >= SAVE_INTERVAL_S:
            self.store.update_message(self.message_id, content=self.text, reasoning=self.reasoning)
            self._last_save = time.monotonic()

    def _end(self, text: str, status: str, stats: dict[str, Any] | None = None, reasoning: str | None = None) -> Message:
        self.ended = True
        self._parts = [text]
        reasoning = self.reasoning.strip() if reasoning is None else reasoning
        self._thoughts = [reasoning]
        self.store.update_message(self.message_id, content=text, status=status, stats=stats or {}, reasoning=reasoning)
        return self.store.get_message(self.message_id)

    def finish(self, reply: Reply) -> Message:
        stats = reply.stats() | ({"model": self.model} if self.model else {})
        return self._end(reply.text, status_for(reply), stats, reply.reasoning)

    def stopped(self) -> Message:
        return self._end(self.text, STOPPED)

    def fail(self, *, crashed: bool, partial: str = "", partial_reasoning: str = "") -> Message:
        """The reply broke off: keep the longer of what arrived here and ``partial`` (what the
        streaming side had received when the engine crashed, which may be ahead of this turn)."""
        text = partial if len(partial) > len(self.text) else self.text
        reasoning = partial_reasoning if len(partial_reasoning) > len(self.reasoning) else self.reasoning
        return self._end(text, INTERRUPTED if crashed else FAILED, reasoning=reasoning.strip())
