"""Prompt lookup switched on per model only where it wins: the tuner's measurements and decision
(kept in the data folder, keyed by model file and build), and the real engine in "auto" mode, which
alternates while it measures, decides, and remembers the decision in its next process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.core.engine import SamplingParams
from app.core.engine import speculation as sp
from app.core.engine.client import EngineClient
from tests.conftest import load_params
from tests.core.engine.test_decode import EDIT


@pytest.fixture
def model(tmp_path: Path, starter_model: Path) -> Path:
    return Path(shutil.copy(starter_model, tmp_path / "model.gguf"))


def test_the_tuner_measures_both_ways_then_keeps_the_faster(tmp_path: Path, model: Path) -> None:
    store = tmp_path / "speculation.json"
    tuner = sp.Tuner(store, str(model), "haswell")
    asked = []
    for speed_off, speed_on in [(50.0, 60.0), (52.0, 61.0), (49.0, 58.0)]:
        asked.append(tuner.lookup())
        tuner.record(asked[-1], 100, speed_off)
        asked.append(tuner.lookup())
        tuner.record(asked[-1], 100, speed_on)
    assert asked == [0, sp.DRAFT] * 3  # off first, then alternating
    assert tuner.decided and tuner.lookup() == sp.DRAFT
    assert "on (measured 1.20x" in tuner.describe()
    again = sp.Tuner(store, str(model), "haswell")  # the next engine process: no measuring again
    assert again.decided and again.lookup() == sp.DRAFT
    assert json.loads(store.read_text())[again.key]["model"] == "model.gguf"
    other_build = sp.Tuner(store, str(model), "sse42")  # another build (or GPU offload) measures afresh
    assert not other_build.decided and other_build.lookup() == 0


def test_a_margin_short_replies_and_a_damaged_file(tmp_path: Path, model: Path) -> None:
    store = tmp_path / "speculation.json"
    tuner = sp.Tuner(store, str(model), "haswell")
    tuner.record(0, sp.MIN_TOKENS - 1, 99.0)  # a short reply says little about speed: not counted
    assert tuner.state == {"on": [], "off": []} and tuner.lookup() == 0
    for _ in range(sp.SAMPLES):
        tuner.record(0, 100, 50.0)
        tuner.record(sp.DRAFT, 100, 50.0 * (sp.MARGIN - 0.01))  # a little faster is not enough
    assert tuner.decided and tuner.lookup() == 0 and tuner.describe().startswith("prompt lookup: off")
    store.write_text("{not json")
    assert not sp.Tuner(store, str(model), "haswell").decided  # damaged: measured again, no crash
    assert not sp.Tuner(None, str(model), "haswell").decided  # no data folder: this engine only


def test_the_engine_decides_in_auto_mode_and_remembers(model: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTDESK_SPECULATION")  # the product's default: the setting, "auto"
    store = tmp_path / "speculation.json"
    env_file = {"QUANTDESK_SPECULATION_FILE": str(store)}
    import os

    long_reply = SamplingParams(temperature=0.0, max_tokens=96, repeat_penalty=1.0)
    client = EngineClient(log_path=tmp_path / "a.log", env={**os.environ, **env_file})
    try:
        client.load(model, load_params())
        replies = [client.chat(EDIT, long_reply) for _ in range(2 * sp.SAMPLES)]
    finally:
        client.close()
    assert [r.drafted_tokens > 0 for r in replies] == [False, True] * sp.SAMPLES
    assert all(r.completion_tokens >= sp.MIN_TOKENS for r in replies)
    assert replies[0].speculation == f"prompt lookup: measuring (0+1 of {2 * sp.SAMPLES} replies)"
    [state] = json.loads(store.read_text()).values()
    assert state["decision"] in ("on", "off") and len(state["on"]) == len(state["off"]) == sp.SAMPLES
    assert replies[-1].speculation.startswith(f"prompt lookup: {state['decision']} (measured")

    reopened = EngineClient(log_path=tmp_path / "b.log", env={**os.environ, **env_file})
    try:
        reopened.load(model, load_params())
        later = reopened.chat(EDIT, long_reply)
        off = reopened.chat(EDIT, long_reply, lookup=0)  # a request that says so overrides the decision
    finally:
        reopened.close()
    assert (later.drafted_tokens > 0) == (state["decision"] == "on")
    assert later.speculation.startswith(f"prompt lookup: {state['decision']}")
    assert off.drafted_tokens == 0 and off.speculation == ""


def test_the_setting_turns_it_on_or_off(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core import settings

    monkeypatch.delenv("QUANTDESK_SPECULATION")
    client = EngineClient(log_path=tmp_path / "a.log")
    try:
        client.load(model, load_params())
        settings.update(speculation="on")
        on = client.chat(EDIT, SamplingParams(temperature=0.0, max_tokens=48, repeat_penalty=1.0))
        settings.update(speculation="off")
        off = client.chat(EDIT, SamplingParams(temperature=0.0, max_tokens=48, repeat_penalty=1.0))
    finally:
        client.close()
    assert on.drafted_tokens > 0 and off.drafted_tokens == 0
