"""Before Qt starts on Linux: are the system libraries its X11 platform plugin needs installed?

Without them Qt aborts with "no Qt platform plugin could be initialized", which names no package.
Ubuntu's default desktop install lacks ``libxcb-cursor0`` (Qt >= 6.5 loads it at run time), and
minimal systems lack more. This module imports no Qt: it reads the plugin's missing dependencies
with ``ldd`` and tries the run-time ones with dlopen, then names the packages to install.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# soname -> (Debian/Ubuntu package, Fedora package)
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}
RUNTIME_LOADED = ("libxcb-cursor.so.0",)  # dlopen'ed by Qt's xcb plugin, invisible to ldd


def xcb_plugin() -> Path | None:
    override = os.environ.get("QUANTDESK_QT_PREFLIGHT_PLUGIN")  # a test points this at its own ELF
    if override:
        return Path(override)
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def needs_xcb(environ: dict[str, str] | None = None) -> bool:
    """True where Qt will use its X11 plugin: Linux, no other platform asked for, no Wayland session."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return False
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb"
    return not env.get("WAYLAND_DISPLAY")


def missing_libraries(plugin: Path) -> list[str]:
    """Sonames the plugin needs that this system lacks (its own Qt libraries resolve in place)."""
    missing: list[str] = []
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        name, sep, rest = line.strip().partition(" => ")
        if sep and rest.strip() == "not found" and name not in missing:
            missing.append(name)
    if not os.environ.get("QUANTDESK_QT_PREFLIGHT_PLUGIN"):
        for name in RUNTIME_LOADED:
            try:
                ctypes.CDLL(name)
            except OSError:
                if name not in missing:
                    missing.append(name)
    return missing


def message(missing: list[str]) -> str:
    """What to tell the user: the libraries, the packages and the commands that install them."""
    deb = sorted({PACKAGES[m][0] for m in missing if m in PACKAGES})
    rpm = sorted({PACKAGES[m][1] for m in missing if m in PACKAGES})
    unknown = [m for m in missing if m not in PACKAGES]
    lines = [f"QuantDesk cannot open its window: Qt's X11 platform plugin needs system libraries this "
             f"machine lacks: {', '.join(missing)}."]
    if deb:
        lines.append(f"  Debian/Ubuntu:  sudo apt install {' '.join(deb)}")
        lines.append(f"  Fedora:         sudo dnf install {' '.join(rpm)}")
    if unknown:
        lines.append(f"  (install the package that provides {', '.join(unknown)})")
    lines.append("The command line works without them (quantdesk --help).")
    return "\n".join(lines)


def check() -> str | None:
    """The message to print before Qt starts, or None when the window can open."""
    if not needs_xcb():
        return None
    plugin = xcb_plugin()
    if plugin is None:
        return None
    missing = missing_libraries(plugin)
    return message(missing) if missing else None
