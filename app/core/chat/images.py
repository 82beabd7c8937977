"""The images of conversations: content-addressed files beside the chat database.

An attached image is checked (engine.images.inspect: type, size, whole), then written once under
``images/<first two hex digits>/<sha256>.<type>`` in the data folder, atomically (a temporary file,
then a rename), and messages refer to it by that name. The same picture attached twice is one file.
Files no message refers to any more (their conversation purged, their message edited away) are
removed by ``collect``. The GUI shows thumbnails only of these files, never of a path or URL that
a message's text names.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from app.core.engine.images import ImageFacts, inspect

NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpeg|gif|bmp|webp)$")


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        """The file of a stored image; ValueError for a name that is not one of this store's."""
        if not NAME.match(name):
            raise ValueError(f"{name!r}: not the name of a stored image")
        return self.root / name[:2] / name

    def put(self, data: bytes, label: str = "the image") -> str:
        """Store ``data`` (checked first: ImageError naming ``label`` and the cause); its name."""
        facts = inspect(data, label)
        name = f"{facts.sha256}.{facts.kind}"
        final = self.path(name)
        if final.exists() and final.stat().st_size == len(data):
            return name
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".incoming-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def facts(self, name: str) -> ImageFacts:
        return inspect(self.read(name), name)

    def names(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.name for p in self.root.glob("??/*") if NAME.match(p.name)}

    def collect(self, referenced: set[str]) -> int:
        """Remove the stored images not in ``referenced`` (and left-over partial writes); how many."""
        removed = 0
        for name in self.names() - referenced:
            self.path(name).unlink(missing_ok=True)
            removed += 1
        if self.root.is_dir():
            for part in self.root.glob("??/.incoming-*.part"):
                part.unlink(missing_ok=True)
        return removed
