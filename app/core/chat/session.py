"""A conversation as the user has it: what a new one starts with (and, in time, ChatSession:
send, stop, regenerate, title, incremental save), for the GUI's chat page and the CLI alike."""

from __future__ import annotations

from app.core import settings as app_settings
from app.core.engine.protocol import PRESETS, SamplingParams


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
