"""The bundle carries every CPU build and chooses among them on the user's machine: `hw --json`
names the build, the baseline chats when forced, and the self-check runs from the bundle."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.core.engine import cpu_variants as cv
from tests.e2e.test_bundle import _bundle_env, bundle  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_the_bundle_chooses_a_cpu_build_and_the_baseline_chats(bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    env = _bundle_env(tmp_path / "home")
    hw = json.loads(subprocess.run([str(bundle), "hw", "--json"], env=env, capture_output=True, text=True, check=True,
                                   timeout=120).stdout)
    assert hw["cpu_variant"]["name"] == cv.choose().variant.name
    assert hw["cpu_variants"] == [v.name for v in cv.usable()]
    assert (bundle.parent / "_internal" / "llama_cpp" / "lib" / cv.VARIANTS_DIR / "build.json").is_file()
    out = subprocess.run([str(bundle), "chat", "starter", "--prompt", "Name a colour.", "--max-tokens", "8",
                          "--temperature", "0", "--json"], env={**env, cv.ENV: cv.baseline().name},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    assert reply["completion_tokens"] > 0 and reply["cpu_variant"] == cv.baseline().name
    check = subprocess.run([str(bundle), "--run-module", "app.core.engine.selfcheck", "--install"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"the engine runs on {cv.choose().variant.name}" in check.stdout
