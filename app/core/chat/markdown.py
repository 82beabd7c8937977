"""Markdown to the HTML subset Qt's rich text understands, with highlighted code blocks.

Fenced code blocks are cut out first and highlighted by Pygments with inline styles; each gets a
``copy:N`` link that the view turns into "copy the Nth block". An unterminated fence (a reply still
streaming) is shown as code too.

This is the one renderer for untrusted Markdown (model replies and model cards): raw HTML is
escaped, images are never loaded (an image becomes its alt text and, for an http(s) image, a link
to it), links keep only http(s) targets (the view asks before it opens one), and the size is
bounded: long code blocks are shown cut (Copy copies them whole), long texts are cut with a note,
so no content can stall the GUI thread.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as etree
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import markdown
from markdown.extensions import Extension
from markdown.extensions.sane_lists import SaneListExtension
from markdown.extensions.tables import TableExtension
from markdown.treeprocessors import Treeprocessor

MAX_CODE_SHOWN = 6 * 1024  # characters of one code block shown (Copy copies all of it)
MAX_HIGHLIGHT = 4 * 1024  # longer code is shown without colours
MAX_MARKDOWN = 8 * 1024  # characters of one Markdown chunk of a reply rendered; the rest is a note
MAX_LINES = 120  # lines of one chunk of a reply (a 600-row table takes Qt half a second to lay out)
MAX_CARD_LINES = 3000
MAX_CARD = 128 * 1024  # a model card (rendered off the GUI thread; only its layout and paint are on it)
SAFE_SCHEMES = ("http", "https")


def safe_link(url: str) -> bool:
    """Whether a link target may be offered at all: http(s) with a host, nothing else."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in SAFE_SCHEMES and bool(parts.netloc)


class _Sanitize(Treeprocessor):
    """Images become text (never loaded); links keep only http(s) targets."""

    def run(self, root: etree.Element) -> None:
        for parent in root.iter():
            for i, el in enumerate(list(parent)):
                if el.tag == "img":
                    src, alt = el.get("src", ""), el.get("alt") or "image"
                    new = etree.Element("a", {"href": src}) if safe_link(src) else etree.Element("span")
                    new.text, new.tail = f"[image: {alt}]", el.tail
                    parent.remove(el)
                    parent.insert(i, new)
                elif el.tag == "a" and not safe_link(el.get("href", "")):
                    el.attrib.pop("href", None)
                    el.tag = "span"
                for attr in ("style", "class", "id", "src", "background"):
                    if el.tag != "a" or attr != "href":
                        el.attrib.pop(attr, None)


class _SanitizeExtension(Extension):
    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the library's name)
        md.treeprocessors.register(_Sanitize(md), "quantdesk_sanitize", 0)  # last: after every other


# One converter, built once: building it (and finding extensions by name) costs tens of ms.
_MD = markdown.Markdown(extensions=[TableExtension(), SaneListExtension(), _SanitizeExtension()])
BOUNDARY = re.compile(r"\n[ \t]*\n(?=[^\s\-*+\d>|])")

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n", re.MULTILINE)


@dataclass
class Rendered:
    html: str
    code_blocks: list[str] = field(default_factory=list)


def _split(text: str) -> list[tuple[str, str, str]]:
    """[(kind, body, lang)] with kind 'md' or 'code'."""
    parts: list[tuple[str, str, str]] = []
    pos = 0
    while True:
        m = FENCE.search(text, pos)
        if m is None:
            parts.append(("md", text[pos:], ""))
            return parts
        parts.append(("md", text[pos : m.start()], ""))
        closing = re.compile(rf"^[ \t]*{re.escape(m.group('fence')[0])}{{{len(m.group('fence'))},}}[ \t]*$", re.MULTILINE)
        end = closing.search(text, m.end())
        if end is None:
            parts.append(("code", text[m.end() :], m.group("lang")))
            return parts
        parts.append(("code", text[m.end() : end.start()].rstrip("\n"), m.group("lang")))
        pos = end.end()


def _highlight(code: str, lang: str, dark: bool) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang) if lang else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    formatter = HtmlFormatter(noclasses=True, nowrap=True, style="monokai" if dark else "default")
    return highlight(code, lexer, formatter)


def split_blocks(text: str) -> list[str]:
    """Cut ``text`` into top-level chunks at blank lines outside code fences, never before an
    indented line, a list item, a quote or a table row (they continue the previous block). While a
    reply streams, every chunk but the last stays the same, so only the last is rendered again."""
    chunks: list[str] = []
    current = ""
    for kind, body, lang in _split(text):
        if kind == "code":
            fence = f"```{lang}\n{body}\n```"
            current += fence
            continue
        pieces = BOUNDARY.split(body)
        current += pieces[0]
        for piece in pieces[1:]:
            if current.strip():
                chunks.append(current)
            current = piece
        if re.search(r"\n[ \t]*\n\s*$", body) and current.strip():  # a blank line before a code fence
            chunks.append(current)
            current = ""
    if current.strip() or not chunks:
        chunks.append(current)
    return chunks


def render_markdown(text: str, *, dark: bool = False, first_index: int = 0, max_markdown: int = MAX_MARKDOWN,
                    max_lines: int = MAX_LINES) -> Rendered:
    out: list[str] = []
    blocks: list[str] = []
    bg = "#272822" if dark else "#f4f4f4"
    for kind, body, lang in _split(text):
        if kind == "md":
            if body.strip():
                cut = ""
                limit = max_markdown
                nth = -1
                for _ in range(max_lines):  # where line max_lines ends, without splitting the whole text
                    nth = body.find("\n", nth + 1, limit)
                    if nth < 0:
                        break
                else:
                    limit = nth
                if len(body) > limit:
                    cut = f"<p><i>[{len(body) - limit:,} more characters not shown]</i></p>"
                    body = body[:limit]
                _MD.reset()
                out.append(_MD.convert(html.escape(body, quote=False)) + cut)
            continue
        index = first_index + len(blocks)
        blocks.append(body)
        label = html.escape(lang or "code")
        shown = body[:MAX_CODE_SHOWN]
        code = _highlight(shown, lang, dark) if len(shown) <= MAX_HIGHLIGHT else html.escape(shown, quote=False)
        more = (f'<br><i>[{len(body) - MAX_CODE_SHOWN:,} more characters: Copy copies them all]</i>'
                if len(body) > MAX_CODE_SHOWN else "")
        out.append(
            f'<table width="100%" cellspacing="0" cellpadding="6" style="background:{bg}; margin:4px 0;">'
            f'<tr><td><span style="color:#888;">{label}</span> &nbsp; <a href="copy:{index}">Copy</a></td></tr>'
            f'<tr><td><pre style="margin:0; font-family:monospace;">{code}</pre>{more}</td></tr></table>'
        )
    return Rendered("".join(out), blocks)
