"""Markdown to the HTML subset Qt's rich text understands, with highlighted code blocks.

Fenced code blocks are cut out first and highlighted by Pygments with inline styles; each gets a
``copy:N`` link that the view turns into "copy the Nth block". An unterminated fence (a reply still
streaming) is shown as code too. Model output is untrusted: raw HTML in it is escaped.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import markdown
from markdown.extensions.sane_lists import SaneListExtension
from markdown.extensions.tables import TableExtension

# One converter, built once: building it (and finding extensions by name) costs tens of ms.
_MD = markdown.Markdown(extensions=[TableExtension(), SaneListExtension()])
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


def render_markdown(text: str, *, dark: bool = False, first_index: int = 0) -> Rendered:
    out: list[str] = []
    blocks: list[str] = []
    bg = "#272822" if dark else "#f4f4f4"
    for kind, body, lang in _split(text):
        if kind == "md":
            if body.strip():
                _MD.reset()
                out.append(_MD.convert(html.escape(body, quote=False)))
            continue
        index = first_index + len(blocks)
        blocks.append(body)
        label = html.escape(lang or "code")
        out.append(
            f'<table width="100%" cellspacing="0" cellpadding="6" style="background:{bg}; margin:4px 0;">'
            f'<tr><td><span style="color:#888;">{label}</span> &nbsp; <a href="copy:{index}">Copy</a></td></tr>'
            f'<tr><td><pre style="margin:0; font-family:monospace;">{_highlight(body, lang, dark)}</pre></td></tr></table>'
        )
    return Rendered("".join(out), blocks)
