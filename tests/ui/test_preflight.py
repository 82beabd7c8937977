"""The first window on a bare Linux desktop: missing X11 libraries are named, with the packages and
the commands that install them, before Qt starts (instead of Qt's generic abort)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.ui import preflight


def test_the_known_libraries_map_to_debian_and_fedora_packages() -> None:
    text = preflight.message(["libxcb-cursor.so.0", "libxkbcommon-x11.so.0"])
    assert "libxcb-cursor.so.0" in text
    assert "sudo apt install libxcb-cursor0 libxkbcommon-x11-0" in text
    assert "sudo dnf install libxkbcommon-x11 xcb-util-cursor" in text


def test_only_the_x11_plugin_is_checked() -> None:
    assert not preflight.needs_xcb({"QT_QPA_PLATFORM": "offscreen"})
    assert not preflight.needs_xcb({"WAYLAND_DISPLAY": "wayland-0"})
    assert preflight.needs_xcb({"QT_QPA_PLATFORM": "xcb"}) == sys.platform.startswith("linux")
    assert preflight.needs_xcb({"DISPLAY": ":0"}) == sys.platform.startswith("linux")


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("gcc") is None, reason="Linux, gcc")
def test_the_gui_stops_with_the_missing_library_named(tmp_path: Path) -> None:
    """A plugin whose dependency is not installed (an ELF built here, its library then removed):
    the GUI launch exits 2 naming it; no Qt abort, no traceback."""
    (tmp_path / "dep.c").write_text("int dep(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int dep(void);\nint plugin(void) { return dep(); }\n")
    soname = "libquantdesk-missing-test.so.0"
    subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", soname, "dep.c"], cwd=tmp_path, check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", "libqxcb.so", "plugin.c", "-L.", f"-l:{soname}"], cwd=tmp_path, check=True)
    (tmp_path / soname).unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=":99", QUANTDESK_QT_PREFLIGHT_PLUGIN=str(tmp_path / "libqxcb.so"))
    proc = subprocess.run([sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert soname in proc.stderr and "cannot open its window" in proc.stderr and "Traceback" not in proc.stderr


def test_the_real_plugin_reports_what_ldd_reports() -> None:
    plugin = preflight.xcb_plugin()
    if plugin is None:
        pytest.skip("no xcb plugin in this PySide6")
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
    not_found = {line.split(" => ")[0].strip() for line in out.splitlines() if "not found" in line}
    found = preflight.missing_libraries(plugin)
    assert not_found <= set(found) and set(found) - not_found <= set(preflight.RUNTIME_LOADED)
