"""Render resources/quantdesk.svg to the hicolor PNG sizes (Qt's SVG renderer; no other tools).

    python packaging/render_icons.py     # writes resources/icons/hicolor/NxN/apps/quantdesk.png

Also resources/quantdesk.icns (macOS, 1024 px through Qt's icns plugin) and resources/quantdesk.ico
(Windows: every size, with ImageMagick's ``convert`` when it is installed). All are committed; run
this again after changing the SVG.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ROOT = Path(__file__).resolve().parents[1]
SIZES = (16, 24, 32, 48, 64, 128, 256)


def render(svg: Path, out_root: Path, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        out = out_root / f"{size}x{size}" / "apps" / "quantdesk.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(out)):
            raise SystemExit(f"{out}: cannot write")
        written.append(out)
    return written


def icns(svg: Path, out: Path, size: int = 1024) -> None:
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    if not image.save(str(out), "ICNS"):
        raise SystemExit(f"{out}: cannot write (Qt's icns image plugin missing?)")


def ico(pngs: list[Path], out: Path) -> bool:
    if shutil.which("convert") is None:
        return False
    subprocess.run(["convert", *map(str, pngs), str(out)], check=True)
    return True


if __name__ == "__main__":
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1] + ["-platform", "offscreen"])
    svg = ROOT / "resources" / "quantdesk.svg"
    pngs = render(svg, ROOT / "resources" / "icons" / "hicolor")
    for path in pngs:
        print(path.relative_to(ROOT))
    icns(svg, ROOT / "resources" / "quantdesk.icns")
    print("resources/quantdesk.icns")
    if ico(pngs, ROOT / "resources" / "quantdesk.ico"):
        print("resources/quantdesk.ico")
    else:
        print("resources/quantdesk.ico: not rewritten (ImageMagick's convert is not installed)")
