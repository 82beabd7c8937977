"""Reasoning in the engine host: what a model's template offers (a thinking switch, harmony
channels), the options of one reply (thinking on or off, a budget in tokens), and the split of the
reply's text into reasoning and answer as it streams (app.core.engine.reasoning).

Thinking off uses the template's own switch (``enable_thinking``; gpt-oss's ``reasoning_effort``
has no off, so its lowest effort is used). A template without one that opens the block itself
gets the block closed in the prompt; otherwise off is a budget of 0: the block the model opens is
closed at once. Past the budget the engine forces the block's closing tag, and the model answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from app.core.engine.reasoning import H_END, TAG_PAIRS, Split, Splitter, marker_strings

EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class TemplateReasoning:
    reasons: bool = False  # the template mentions reasoning (a tag, a switch, harmony channels)
    switch: str | None = None  # the template variable that turns thinking on and off
    harmony: bool = False  # gpt-oss's channels
    effort: bool = False  # reasoning_effort (gpt-oss): low, medium, high

    def to_dict(self) -> dict[str, Any]:
        return {"reasons": self.reasons, "switch": self.switch, "harmony": self.harmony, "effort": self.effort}


def template_reasoning(template: str | None) -> TemplateReasoning:
    if not template:
        return TemplateReasoning()
    harmony = "<|channel|>" in template
    switch = "enable_thinking" if "enable_thinking" in template else None
    effort = "reasoning_effort" in template
    tags = any(o in template for o, _ in TAG_PAIRS)
    return TemplateReasoning(reasons=bool(harmony or switch or effort or tags), switch=switch, harmony=harmony, effort=effort)


def template_variables(tr: TemplateReasoning, options: dict[str, Any]) -> dict[str, Any]:
    """The variables a reply's thinking options set in the model's template."""
    out: dict[str, Any] = {}
    enabled = options.get("enabled")
    if tr.switch and enabled is not None:
        out[tr.switch] = bool(enabled)
    if tr.effort:
        effort = options.get("effort")
        if enabled is False:
            effort = "low"
        if effort in EFFORTS:
            out["reasoning_effort"] = effort
    return out


def preserved_tokens(tokenize: Callable[[str], list[int]], pairs: list[tuple[str, str]]) -> set[int]:
    """The reasoning markers that are single tokens: rendered as text (a control token's text is
    otherwise dropped) so the splitter sees them."""
    out = set()
    for marker in marker_strings(pairs):
        ids = tokenize(marker)
        if len(ids) == 1:
            out.add(ids[0])
    return out


def custom_pairs(options: dict[str, Any]) -> list[tuple[str, str]]:
    """Tag pairs set for the model first, then the usual ones."""
    pairs: list[tuple[str, str]] = []
    for pair in options.get("tags") or []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) and 0 < len(t) <= 64 for t in pair):
            pairs.append((pair[0], pair[1]))
    return pairs + [p for p in TAG_PAIRS if p not in pairs]


class ReplyThinking:
    """One reply's reasoning: where it starts (inside a block the prompt opened), the budget, and
    the split. ``prompt`` is the rendered prompt; ``tokenize`` turns forced text into tokens."""

    def __init__(self, tr: TemplateReasoning, options: dict[str, Any], prompt: str,
                 tokenize: Callable[[str], list[int]], *, grammar: bool = False) -> None:
        if options.get("split") is False:  # a raw completion: all of it is text
            tr, options = TemplateReasoning(), {}
            self.pairs: list[tuple[str, str]] = []
        else:
            self.pairs = custom_pairs(options)
        tail = prompt.rstrip()
        opened = next((o for o, _ in self.pairs if tail.endswith(o)), None)
        if tr.harmony and not opened and tail.endswith("<|channel|>analysis<|message|>"):
            opened = "<|channel|>analysis<|message|>"
        self.tokenize = tokenize
        self.splitter = Splitter(pairs=self.pairs, inside=opened is not None, opened=opened, harmony=tr.harmony)
        enabled = options.get("enabled")
        budget = options.get("budget")
        self.budget: int | None = int(budget) if isinstance(budget, (int, float)) and budget >= 0 else None
        self.prefill: list[int] = []  # tokens added after the prompt (closing the block it opened)
        if enabled is False and not (tr.switch or tr.effort):
            if self.splitter.inside:  # the template opened the block: close it in the prompt
                self.prefill = tokenize("\n" + self.splitter.close + "\n\n")
                self.splitter = Splitter(pairs=self.pairs, harmony=tr.harmony)
                self.splitter.blocks, self.splitter._strip = 1, True
            self.budget = 0
        if grammar:  # a forced token the grammar refuses would abort llama.cpp: no budget with a grammar
            self.budget = None
        self.reasoning_tokens = 0
        self.forced = 0  # blocks closed at the budget
        self._forcing = False
        self.started: float | None = None
        self.thought_s = 0.0
        self.reasoning, self.answer = "", ""

    def on_token(self, _text: str) -> list[int] | None:
        """The decode loop's hook: count the reasoning's tokens and close the block past the budget."""
        if not self.splitter.in_reasoning:
            self._forcing = False
            return None
        self.reasoning_tokens += 1
        if self.budget is None or self.reasoning_tokens <= self.budget or self._forcing:
            return None
        self._forcing = True
        self.forced += 1
        close = self.splitter.close
        text = close + "<|start|>assistant<|channel|>final<|message|>" if close == H_END else "\n" + close + "\n\n"
        return self.tokenize(text)

    def feed(self, text: str) -> Split:
        return self._add(self.splitter.feed(text))

    def finish(self) -> Split:
        return self._add(self.splitter.finish())

    def _add(self, part: Split) -> Split:
        now = time.perf_counter()
        if part.reasoning:
            self.started = self.started or now
            self.thought_s = now - self.started
        self.reasoning += part.reasoning
        self.answer += part.answer
        return part
