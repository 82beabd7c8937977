"""Reasoning apart from the answer, split incrementally while a reply streams (pure Python: the
engine host runs it on the text it decodes, so the GUI, the CLI and the API server all get the same
split).

Recognised: the usual tag pairs (``<think>``, ``<thinking>``, ``<reasoning>``, ``<seed:think>``,
Magistral's ``[THINK]…[/THINK]``), custom pairs set per model, gpt-oss's harmony channels
(``<|channel|>analysis<|message|>…<|end|>`` is reasoning, the ``final`` channel the answer), a reply
that starts inside a block because the template opened it, several blocks, and a block that never
closes (stopped, or cut by the context: it stays reasoning). Tags inside Markdown code (fenced
blocks and inline spans) of the answer are text, not reasoning.

Nothing here grows without bound: the text held back (a possible tag's beginning) is at most the
longest tag; everything else is passed on as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.engine.decode import partial_stop_len

TAG_PAIRS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
    ("<seed:think>", "</seed:think>"),
    ("[THINK]", "[/THINK]"),
)

# gpt-oss (OpenAI harmony): <|channel|>NAME<|message|>TEXT<|end|> (or <|return|>/<|call|>, which
# end the reply), each later message opened by <|start|>assistant
H_CHANNEL, H_MESSAGE, H_END, H_START = "<|channel|>", "<|message|>", "<|end|>", "<|start|>"
HARMONY_MARKERS = (H_CHANNEL, H_MESSAGE, H_END, H_START, "<|constrain|>", "<|return|>", "<|call|>")
HARMONY_REASONING = ("analysis",)
MAX_CHANNEL_HEADER = 256  # "<|channel|>final <|constrain|>json" and the like: longer is not a header

def marker_strings(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]] = TAG_PAIRS) -> list[str]:
    """Every tag the splitter looks for (the engine renders those that are special tokens as text)."""
    return [t for pair in pairs for t in pair] + list(HARMONY_MARKERS)


@dataclass
class Split:
    reasoning: str = ""
    answer: str = ""


@dataclass
class Splitter:
    """Feed a reply's text as it comes; each ``feed`` returns the new reasoning and answer text.

    ``inside``: the prompt opened a block (``<think>`` at the end of the generation prompt), so the
    reply starts as reasoning; ``opened``: the tag that opened it (None: the first pair's);
    ``pairs``: the tag pairs (custom ones first)."""

    pairs: list[tuple[str, str]] = field(default_factory=lambda: list(TAG_PAIRS))
    inside: bool = False
    opened: str | None = None
    harmony: bool = False  # the template speaks harmony (gpt-oss): channels decide
    close: str = "</think>"  # the closing tag of the open block (what a budget forces)
    _held: str = ""
    _code: str = ""  # inside code of the answer: "```" (a fenced block) or "`" (a span)
    _strip: bool = False  # a block just closed: the blank lines before the answer go
    _harmony_header: str | None = None  # collecting "NAME" after <|channel|>
    blocks: int = 0  # reasoning blocks opened so far
    _reasoned: bool = False  # some reasoning text came

    def __post_init__(self) -> None:
        self.pairs = [(o, c) for o, c in self.pairs if o and c]
        if self.inside:
            self.blocks = 1
            self.close = self._close_for(self.opened)

    def _close_for(self, opened: str | None) -> str:
        if self.harmony:
            return H_END
        for o, c in self.pairs:
            if o == opened:
                return c
        return self.pairs[0][1] if self.pairs else "</think>"

    @property
    def in_reasoning(self) -> bool:
        return self.inside

    def _tags(self) -> list[str]:
        if self.harmony:
            return list(HARMONY_MARKERS)
        if self.inside:
            return [self.close]
        return [o for o, _ in self.pairs]

    def feed(self, text: str) -> Split:
        out = Split()
        buf = self._held + text
        self._held = ""
        i = 0
        while i < len(buf):
            if self._harmony_header is not None:  # "<|channel|>NAME<|message|>"
                i = self._harmony_channel(out, buf, i)
                continue
            if self._code:  # code in the answer: only its end matters
                end = _code_end(buf, i, self._code)
                if end < 0:
                    keep = partial_stop_len(buf[i:], [self._code if self._code == "```" else "\n\n"])
                    self._emit(out, buf[i:len(buf) - keep])
                    self._held = buf[len(buf) - keep:]
                    break
                self._emit(out, buf[i:end])
                self._code, i = "", end
                continue
            tags = self._tags()
            hit, tag = _first(buf, i, tags)
            if not (self.inside or self.harmony):  # the answer: a backtick first opens code
                tick = buf.find("`", i)
                if tick >= 0 and (hit < 0 or tick < hit):
                    run = len(buf) - tick if buf[tick:] == "`" * (len(buf) - tick) else 0
                    if 0 < run < 3:  # "`" or "``" at the end: maybe a fence's beginning
                        self._emit(out, buf[i:tick])
                        self._held = buf[tick:]
                        break
                    self._code = "```" if buf.startswith("```", tick) else "`"
                    self._emit(out, buf[i:tick + len(self._code)])
                    i = tick + len(self._code)
                    continue
            if hit < 0:  # hold back an end that could begin a tag
                keep = partial_stop_len(buf[i:], tags)
                self._emit(out, buf[i:len(buf) - keep])
                self._held = buf[len(buf) - keep:]
                break
            self._emit(out, buf[i:hit])
            i = hit + len(tag)
            if self.harmony:
                i = self._harmony_tag(buf, i, tag)
                if i < 0:
                    break
            elif self.inside:
                self.inside, self._strip = False, True
            else:
                self.inside = True
                self.blocks += 1
                self.close = self._close_for(tag)
                if self._reasoned:  # blocks after the first, apart
                    out.reasoning += "\n\n"
        return out

    def _harmony_channel(self, out: Split, buf: str, i: int) -> int:
        before = self._harmony_header or ""
        combined = before + buf[i:]
        j = combined.find(H_MESSAGE)
        if j < 0:
            header = self._harmony_header = combined
            if len(header) > MAX_CHANNEL_HEADER:  # not a header after all: it is text
                self._harmony_header = None
                self._emit(out, H_CHANNEL + header)
            return len(buf)
        header, self._harmony_header = combined[:j], None
        name = header.strip().split("<|")[0].split()
        self.inside = bool(name) and name[0] in HARMONY_REASONING
        if self.inside:
            self.blocks += 1
            if self._reasoned:
                out.reasoning += "\n\n"
        elif "to=" in header:  # a tool call (commentary to=functions.NAME): kept whole for the tool parser
            self._emit(out, H_CHANNEL + header + H_MESSAGE)
        else:
            self._strip = True
        return i + j + len(H_MESSAGE) - len(before)

    def _harmony_tag(self, buf: str, i: int, tag: str) -> int:
        """After a harmony marker at ``i``; -1 when the rest must wait for more text."""
        if tag == H_CHANNEL:
            self._harmony_header = ""
        elif tag in (H_END, "<|return|>", "<|call|>"):
            self.inside = False
        elif tag == H_START:  # "<|start|>assistant": the role's name is not text
            j = buf.find(H_CHANNEL, i)
            if j < 0:
                if len(buf) - i < 32:
                    self._held = H_START + buf[i:]
                    return -1
                return i
            return j
        return i

    def finish(self) -> Split:
        """The reply ended: what was held back is text of the part it was in (an unclosed block
        stays reasoning)."""
        out = Split()
        if self._harmony_header is not None:
            self._held = H_CHANNEL + self._harmony_header + self._held
            self._harmony_header = None
        held, self._held = self._held, ""
        self._emit(out, held)
        return out

    def _emit(self, out: Split, text: str) -> None:
        if not text:
            return
        if self.inside:
            out.reasoning += text
            self._reasoned = True
            return
        if self._strip:  # the blank lines between a block and its answer
            text = text.lstrip()
            if not text:
                return
            self._strip = False
        out.answer += text


def _first(buf: str, start: int, tags: list[str]) -> tuple[int, str]:
    best, best_tag = -1, ""
    for t in tags:
        j = buf.find(t, start)
        if j >= 0 and (best < 0 or j < best or (j == best and len(t) > len(best_tag))):
            best, best_tag = j, t
    return best, best_tag


def _code_end(buf: str, start: int, code: str) -> int:
    """Where the open code ends (after its closing backticks), or -1 beyond ``buf``; an unclosed
    code span ends with its paragraph."""
    if code == "```":
        j = buf.find("```", start)
        return -1 if j < 0 else j + 3
    j, nl = buf.find("`", start), buf.find("\n\n", start)
    if j < 0 and nl < 0:
        return -1
    return (j + 1) if j >= 0 and (nl < 0 or j < nl) else nl


def split(text: str, *, inside: bool = False, harmony: bool = False,
          pairs: list[tuple[str, str]] | None = None) -> Split:
    """A whole reply split at once (the same rules as streaming)."""
    s = Splitter(pairs=list(pairs) if pairs else list(TAG_PAIRS), inside=inside, harmony=harmony)
    a, b = s.feed(text), s.finish()
    return Split(reasoning=(a.reasoning + b.reasoning).strip(), answer=(a.answer + b.answer).strip())
