"""Turning a conversation into the prompt the model was trained on (runs in the engine host).

The model's own Jinja template from the GGUF is rendered in a sandbox (llama-cpp-python's
``Jinja2ChatFormatter`` uses ``ImmutableSandboxedEnvironment``). Without a template, the format is
chosen from the model's special tokens and rendered by one of llama.cpp's built-in templates, and
the choice is reported to the UI; a model without any chat tokens is named a base model.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

from app.core.engine.thinking import TemplateReasoning, template_reasoning

# (special token that must exist as one token, llama.cpp built-in template, stop string)
BUILTIN_GUESSES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("<|im_start|>", "<|im_end|>"), "chatml", "<|im_end|>"),
    (("<|start_header_id|>", "<|eot_id|>"), "llama3", "<|eot_id|>"),
    (("<start_of_turn>", "<end_of_turn>"), "gemma", "<end_of_turn>"),
    (("<|user|>", "<|end|>", "<|assistant|>"), "phi3", "<|end|>"),
    (("<|START_OF_TURN_TOKEN|>",), "command-r", "<|END_OF_TURN_TOKEN|>"),
    (("[INST]", "[/INST]"), "mistral-v7", "</s>"),
)


@dataclass
class Formatted:
    prompt: str
    add_bos: bool
    stop: list[str]


@dataclass
class ChatFormat:
    source: str  # "gguf" or "builtin" or "plain"
    name: str
    note: str
    render: Callable[..., Formatted]  # (messages, tools=None, variables=None) -> Formatted
    tools_in_template: bool = False  # the model's template renders a ``tools`` list itself
    reasoning: TemplateReasoning = TemplateReasoning()  # what the template offers for thinking


def _is_single_special_token(llm: Any, text: str) -> bool:
    try:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    except Exception:
        return False
    return len(ids) == 1


def _token_text(llm: Any, token_id: int) -> str:
    return llm._model.token_get_text(token_id) if token_id != -1 else ""


def _builtin_renderer(llm: Any, name: str, stop: str) -> Callable[..., Formatted]:
    import llama_cpp

    def render(messages: list[dict[str, str]], tools: list[dict[str, Any]] | None = None,
               variables: dict[str, Any] | None = None) -> Formatted:
        keep = [(m["role"].encode("utf-8"), m["content"].encode("utf-8")) for m in messages]
        chat = (llama_cpp.llama_chat_message * len(keep))()
        for i, (role, content) in enumerate(keep):
            chat[i].role = role
            chat[i].content = content
        size = 2 * sum(len(r) + len(c) for r, c in keep) + 1024
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(keep), True, buf, size)
        if n > size:
            size = n + 1
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(keep), True, buf, size)
        if n < 0:
            raise ValueError(f"llama.cpp could not apply its built-in '{name}' chat template")
        return Formatted(prompt=buf.raw[:n].decode("utf-8", errors="replace"), add_bos=True, stop=[stop])

    return render


def _plain_render(messages: list[dict[str, str]], tools: list[dict[str, Any]] | None = None,
                  variables: dict[str, Any] | None = None) -> Formatted:
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return Formatted(prompt="\n\n".join(lines) + "\n\nAssistant:", add_bos=True, stop=["\nUser:"])


MAX_PROMPT_CHARS = 8_000_000  # far beyond any context (a million tokens is ~4 million characters)


def choose_chat_format(llm: Any) -> ChatFormat:
    """The model's own template when the GGUF has one, else a built-in chosen from its tokens."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    eos, bos = _token_text(llm, eos_id), _token_text(llm, bos_id)
    if template:
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
        )

        def render_jinja(messages: list[dict[str, str]], tools: list[dict[str, Any]] | None = None,
                         variables: dict[str, Any] | None = None) -> Formatted:
            # Jinja2ChatFormatter.__call__'s variables, rendered as a stream so that a template that
            # writes without end is refused at MAX_PROMPT_CHARS (its time is bounded by the host)
            def raise_exception(message: str) -> None:
                raise ValueError(message)

            chunks, size = [], 0
            for chunk in formatter._environment.generate(
                **(variables or {}), messages=messages, eos_token=formatter.eos_token, bos_token=formatter.bos_token,
                raise_exception=raise_exception, add_generation_prompt=formatter.add_generation_prompt,
                functions=None, function_call=None, tools=tools or None, tool_choice=None, strftime_now=formatter.strftime_now,
            ):
                size += len(chunk)
                if size > MAX_PROMPT_CHARS:
                    raise ValueError(f"the model's chat template wrote more than {MAX_PROMPT_CHARS // 1_000_000} million "
                                     "characters for this conversation: refused")
                chunks.append(chunk)
            return Formatted(prompt="".join(chunks), add_bos=False, stop=[s for s in [eos] if s])

        return ChatFormat("gguf", "model's template", "Chat format: the model's own template (from the GGUF file).", render_jinja,
                          tools_in_template="tools" in template, reasoning=template_reasoning(template))
    for tokens, name, stop in BUILTIN_GUESSES:
        if all(_is_single_special_token(llm, t) for t in tokens):
            note = (
                f"This GGUF has no chat template; its special tokens ({', '.join(tokens)}) match "
                f"llama.cpp's built-in '{name}' format, which is used."
            )
            return ChatFormat("builtin", name, note, _builtin_renderer(llm, name, stop))
    note = (
        "This GGUF has no chat template and no chat tokens: it looks like a base (non-chat) model. "
        "Messages are sent as a plain 'User:/Assistant:' transcript; replies may be poor."
    )
    return ChatFormat("plain", "plain transcript", note, _plain_render)
