"""The reasoning splitter on its own (engine.reasoning): every case split the same whether the text
comes whole or a character at a time, as the engine streams it."""

from __future__ import annotations

import pytest

from app.core.engine.reasoning import MAX_CHANNEL_HEADER, Splitter, split

HARMONY = ("<|channel|>analysis<|message|>The user greets.<|end|><|start|>assistant<|channel|>final<|message|>Hello!")
CASES = [
    # (text, splitter options, reasoning, answer)
    ("<think>\nLet me add.\n</think>\n\nThe answer is 4.", {}, "Let me add.", "The answer is 4."),
    ("Let me add.</think>\n\nFour.", {"inside": True}, "Let me add.", "Four."),  # the template opened the block
    ("<think>a</think>b <think>c</think>d", {}, "a\n\nc", "b d"),  # several blocks
    ("<think>never closes", {}, "never closes", ""),  # stopped or cut: it stays reasoning
    ("<thinking>t</thinking>A", {}, "t", "A"),
    ("<reasoning>r</reasoning>A", {}, "r", "A"),
    ("<seed:think>s</seed:think>A", {}, "s", "A"),
    ("[THINK]m[/THINK]A", {}, "m", "A"),  # Magistral
    (HARMONY, {"harmony": True}, "The user greets.", "Hello!"),
    ("<x>custom</x>answer", {"pairs": [("<x>", "</x>")]}, "custom", "answer"),
    # tags inside code are text
    ("Write:\n```html\n<think>x</think>\n```\nand `<think>` too", {},
     "", "Write:\n```html\n<think>x</think>\n```\nand `<think>` too"),
    ("a < b, c <thin", {}, "", "a < b, c <thin"),  # a tag's beginning that never completes
]


def streamed(text: str, step: int, **options: object) -> tuple[str, str]:
    s = Splitter(**options)  # type: ignore[arg-type]
    reasoning = answer = ""
    for i in range(0, len(text), step):
        part = s.feed(text[i:i + step])
        reasoning, answer = reasoning + part.reasoning, answer + part.answer
    part = s.finish()
    return (reasoning + part.reasoning).strip(), answer + part.answer


@pytest.mark.parametrize(("text", "options", "reasoning", "answer"), CASES)
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_every_case_splits_the_same_in_any_chunks(text: str, options: dict, reasoning: str, answer: str, step: int) -> None:
    assert streamed(text, step, **options) == (reasoning, answer)
    assert split(text, **options) == type(split(""))(reasoning, answer.strip())


def test_a_gpt_oss_tool_call_is_kept_for_the_tool_parser() -> None:
    text = ("<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}')
    reasoning, answer = streamed(text, 3, harmony=True)
    assert reasoning == "Need the weather."
    assert answer == '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}'


def test_what_is_held_back_is_bounded() -> None:
    s = Splitter(harmony=True)
    s.feed("<|channel|>" + "x" * (MAX_CHANNEL_HEADER + 10))
    assert s._harmony_header is None  # not a header: shown as text, not held without end
    s = Splitter()
    s.feed("y" * 100_000 + "<thin")
    assert len(s._held) <= len("<seed:think>")
