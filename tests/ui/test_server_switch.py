"""The Server switch (pytest-qt, offscreen): it starts and stops the API server, the status bar
shows the URL and the request count, the setting is remembered, and the window stays responsive
while the server answers."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from app.core import settings as app_settings
from app.ui.app import create_window
from app.ui.main_window import MainWindow

WAIT_MS = 60_000


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    app_settings.update(server_port=0)  # a free port
    win: MainWindow = create_window()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.server_switch.shutdown()
    win.close()
    win.bridge.shutdown()
    win.store.close()


def get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_the_switch_starts_and_stops_the_server_and_is_remembered(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    switch = window.server_switch
    assert not switch.action.isChecked() and switch.label.text() == ""  # off by default
    switch.action.trigger()
    qtbot.waitUntil(lambda: switch.url is not None and "request" in switch.label.text(), timeout=WAIT_MS)
    assert app_settings.load().server_enabled
    url = switch.url
    assert url is not None and url.startswith("http://127.0.0.1:") and url in switch.label.text()

    # the window keeps answering while a request is served on the server's thread
    got: list[dict[str, object]] = []
    worker = threading.Thread(target=lambda: got.append(get(url + "/models")))
    worker.start()
    stalls = []
    while worker.is_alive():
        t0 = time.perf_counter()
        qtbot.wait(10)
        stalls.append(time.perf_counter() - t0)
    assert got and any(m["id"] == "SmolLM2-135M-Instruct.Q4_1" for m in got[0]["data"])  # type: ignore[index, union-attr]
    assert max(stalls) < 0.5
    qtbot.waitUntil(lambda: "1 request" in switch.label.text(), timeout=WAIT_MS)
    switch.show_requests()
    table = switch.requests_dialog.table
    assert table.rowCount() == 1 and table.item(0, 2).text() == "GET /v1/models" and table.item(0, 3).text() == "200"
    assert "GET /v1/models" in switch.requests_dialog.log.toPlainText()  # the server's log, one line per request
    switch.requests_dialog.close()

    switch.action.trigger()
    qtbot.waitUntil(lambda: not switch.busy and switch.label.text() == "", timeout=WAIT_MS)
    assert not app_settings.load().server_enabled
    with pytest.raises(OSError):
        get(url + "/models")


def test_a_public_address_without_a_key_is_refused_with_a_message(qtbot, window: MainWindow) -> None:  # type: ignore[no-untyped-def]
    app_settings.update(server_host="0.0.0.0")
    window.server_switch.action.trigger()
    qtbot.waitUntil(lambda: not window.server_switch.busy, timeout=WAIT_MS)
    assert not window.server_switch.action.isChecked()
    box = window.error_box
    assert box is not None and "API key" in box.text()


def test_the_server_shares_the_windows_model_and_never_loads_one_twice(qtbot, window: MainWindow,  # type: ignore[no-untyped-def]
                                                                      starter_model: Path) -> None:
    import subprocess
    import sys

    import openai

    copy = app_settings.models_dir() / "local" / "SmolCopy.Q4_1.gguf"  # another model: the starter renamed
    copy.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--general-name", "SmolCopy",
                    str(starter_model), str(copy)], check=True, capture_output=True)
    with qtbot.waitSignal(window.bridge.model_loaded, timeout=120_000):
        window.open_initial_model()
    switch = window.server_switch
    switch.action.trigger()
    qtbot.waitUntil(lambda: switch.url is not None, timeout=WAIT_MS)
    pool = switch.server.service.pool
    client = openai.OpenAI(base_url=switch.url, api_key="unused", max_retries=0, timeout=120)

    def ask(model: str) -> str:
        got: list[str] = []
        worker = threading.Thread(target=lambda: got.append(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0).choices[0].message.content or ""))
        worker.start()
        while worker.is_alive():
            qtbot.wait(20)
        assert got, "the request failed"
        return got[0]

    # (models by path: an alias of every model's id)
    # the window's model is served on the window's engine: no second load, no second process
    assert ask(str(starter_model))
    [slot] = pool.loaded()
    assert pool.loads == 0 and slot.shared and slot.client is window.bridge.client
    # another model gets the server's own engine ...
    other = str(copy.resolve())
    assert ask(other)
    assert pool.loads == 1
    # ... until the window loads it too: the server's copy goes first, and the window's is shared
    with qtbot.waitSignal(window.bridge.model_loaded, timeout=120_000):
        window.bridge.load_model(str(copy))
    assert pool.unloads == 1
    assert ask(other)
    assert pool.loads == 1 and [s.shared for s in pool.loaded()] == [True]
