"""Checking an image before anything decodes it (no Qt, no llama_cpp: the engine host, the API
server and the chat store all use it).

Images come from users, from pasted clipboards and from API clients: a truncated file, a PNG that
claims 100,000 × 100,000 pixels (a decompression bomb) or a file of another type must get a
sentence, never reach stb_image inside the engine as a surprise. Only the header is read here: the
type from its magic bytes and the size from its header fields, bounded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

MAX_BYTES = 32 * 1024 * 1024  # an image file larger than this is refused
MAX_SIDE = 16_384  # pixels on either side
MAX_PIXELS = 40_000_000  # width × height: what stb_image would allocate (× 3 bytes) stays bounded
# what llama.cpp's image loader (stb_image, in libmtmd) decodes
ENGINE_TYPES = ("png", "jpeg", "gif", "bmp")


class ImageError(ValueError):
    """An image that cannot be used, with the reason."""


@dataclass(frozen=True)
class ImageFacts:
    kind: str  # png, jpeg, gif, bmp, webp
    width: int
    height: int
    size_bytes: int
    sha256: str

    @property
    def mime(self) -> str:
        return f"image/{self.kind}"


def _kind(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError("a PNG without its header chunk (truncated?)")
    w, h = struct.unpack(">II", data[16:24])
    if b"IEND" not in data[-64:]:
        raise ImageError("a PNG that ends early (truncated: no IEND chunk)")
    return w, h


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    for _ in range(10_000):  # bounded: a JPEG has a few dozen segments
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if i + 2 > n:
            break
        length = struct.unpack(">H", data[i:i + 2])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 7 > n:
                break
            h, w = struct.unpack(">HH", data[i + 3:i + 7])
            if b"\xff\xd9" not in data[-1024:]:
                raise ImageError("a JPEG that ends early (truncated: no end-of-image marker)")
            return w, h
        i += length
    raise ImageError("a JPEG without a frame header (truncated or damaged)")


def _gif_size(data: bytes) -> tuple[int, int]:
    if len(data) < 13:
        raise ImageError("a GIF without its header (truncated)")
    w, h = struct.unpack("<HH", data[6:10])
    if not data.rstrip(b"\x00").endswith(b";"):
        raise ImageError("a GIF that ends early (truncated: no trailer)")
    return w, h


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageError("a BMP without its header (truncated)")
    w, h = struct.unpack("<ii", data[18:26])
    declared = struct.unpack("<I", data[2:6])[0]
    if declared and declared > len(data):
        raise ImageError(f"a BMP that ends early (truncated: {len(data):,} of {declared:,} bytes)")
    return abs(w), abs(h)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ImageError("a WebP without a readable header (truncated or damaged)")


_SIZES = {"png": _png_size, "jpeg": _jpeg_size, "gif": _gif_size, "bmp": _bmp_size, "webp": _webp_size}


def inspect(data: bytes, name: str = "the image") -> ImageFacts:
    """The type and size of an image from its header; ImageError naming ``name`` and the cause for
    anything that is not a whole image of a known type within the limits."""
    if not data:
        raise ImageError(f"{name}: empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: {len(data) / 2**20:.1f} MiB, larger than the {MAX_BYTES // 2**20} MiB an image may be")
    kind = _kind(data)
    if kind is None:
        raise ImageError(f"{name}: not an image of a type QuantDesk reads (PNG, JPEG, GIF, BMP or WebP)")
    try:
        w, h = _SIZES[kind](data)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from None
    except struct.error:
        raise ImageError(f"{name}: a {kind.upper()} with a damaged header") from None
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: a {kind.upper()} of {w} × {h} pixels")
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise ImageError(f"{name}: {w:,} × {h:,} pixels, more than an image may have here "
                         f"({MAX_SIDE:,} per side, {MAX_PIXELS // 1_000_000} million in all)")
    return ImageFacts(kind, w, h, len(data), hashlib.sha256(data).hexdigest())


def for_engine(data: bytes, name: str = "the image") -> ImageFacts:
    """``inspect``, and a type the engine's decoder reads (the app converts others first)."""
    facts = inspect(data, name)
    if facts.kind not in ENGINE_TYPES:
        raise ImageError(f"{name}: {facts.kind.upper()} is not read by llama.cpp's image loader "
                         f"({', '.join(t.upper() for t in ENGINE_TYPES)} are)")
    return facts


def from_data_url(url: str, name: str = "the image") -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL (the OpenAI and Anthropic image parts)."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise ImageError(f"{name}: only base64 data URLs are accepted (data:image/png;base64,...); "
                         "the server never fetches a URL")
    return from_base64(payload, name)


def from_base64(payload: str, name: str = "the image") -> bytes:
    if len(payload) > MAX_BYTES * 4 // 3 + 8:
        raise ImageError(f"{name}: larger than the {MAX_BYTES // 2**20} MiB an image may be")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{name}: the base64 data does not decode") from None
