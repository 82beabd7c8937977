"""Tool calls: what goes to the model, and its tool-call text back in OpenAI's shape.

Tools go to the model's own chat template (its ``tools`` variable). A template that does not render
tools gets them in a system message in the Hermes format (``<tool_call>`` JSON), which small models
of most families follow. The reply is parsed for the common formats:

- Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (one block per call);
- Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` or ``[TOOL_CALLS]name[ARGS]{...}``;
- Llama 3.x: the whole reply is ``{"name": ..., "parameters": {...}}`` (after ``<|python_tag|>``),
  several separated by ``;``; also a bare JSON list of calls (Mistral's marker is a control token
  the engine does not print);
- gpt-oss (harmony): ``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}``,
  as the engine's reasoning splitter (engine.reasoning) keeps it in the answer.

A call names one of the request's tools, or the text is left as content. A ``tool_choice`` that
names a function, or ``required``, is enforced by a grammar (the JSON schemas below).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
MISTRAL_ARGS = re.compile(r"\[TOOL_CALLS\]\s*([A-Za-z0-9_.\-]+)\s*\[ARGS\]", re.DOTALL)
HARMONY = re.compile(r"<\|channel\|>[^<]*?\bto=functions\.([A-Za-z0-9_.\-]+)[^<]*(?:<\|constrain\|>[^<]*)?<\|message\|>(.*?)"
                     r"(?=<\|call\|>|<\|channel\|>|$)", re.DOTALL)
MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<|channel|>")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = ""

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        if index is not None:
            out["index"] = index
        return out

    def input(self) -> Any:
        try:
            return json.loads(self.arguments or "{}")
        except ValueError:
            return {}


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def tool_names(tools: list[dict[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def system_prompt(tools: list[dict[str, Any]]) -> str:
    """The tools in a system message (Hermes format), for templates that do not render ``tools``."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("You may call one or more functions to assist with the user query. The functions are listed in "
            f"<tools></tools> tags:\n<tools>\n{listing}\n</tools>\n\nTo call a function, reply with a JSON object with "
            'the function name and arguments in <tool_call></tool_call> tags:\n<tool_call>\n{"name": <function-name>, '
            '"arguments": <args-json-object>}\n</tool_call>')


def _call(obj: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if obj.get("type") == "function" and isinstance(obj.get("function"), dict):  # OpenAI's own shape
        return _call(obj["function"], names)
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str) or name not in names:
        return None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return ToolCall(name, json.dumps(args if args is not None else {}, ensure_ascii=False), new_call_id())


def _json_prefix(text: str) -> tuple[Any, str] | None:
    """The JSON value at the start of ``text`` and what follows it."""
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    return value, text[end:]


def parse(text: str, tools: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
    """Split a reply into its content and tool calls (no calls: the text unchanged)."""
    names = set(tool_names(tools))
    if "<|channel|>" in text and HARMONY.search(text):
        calls = []
        for name, body in HARMONY.findall(text):
            found = _json_prefix(body.strip())
            call = _call({"name": name, "arguments": found[0]}, names) if found else None
            if call is None:
                return text, []
            calls.append(call)
        return text[:text.index("<|channel|>")].strip(), calls
    if "<tool_call>" in text:
        calls = []
        for block in HERMES.findall(text):
            found = _json_prefix(block)
            call = _call(found[0], names) if found else None
            if call is None:
                return text, []
            calls.append(call)
        if calls:
            return text[:text.index("<tool_call>")].strip(), calls
    if MISTRAL_ARGS.search(text):
        calls, content = [], text[:text.index("[TOOL_CALLS]")].strip()
        parts = MISTRAL_ARGS.split(text)[1:]
        for name, rest in zip(parts[::2], parts[1::2]):
            found = _json_prefix(rest.strip())
            call = _call({"name": name, "arguments": found[0]}, names) if found else None
            if call is None:
                return text, []
            calls.append(call)
        return content, calls
    body = text.strip()
    content = ""
    for marker in ("[TOOL_CALLS]", "<|python_tag|>"):
        if marker in body:
            content, body = body[:body.index(marker)].strip(), body[body.index(marker) + len(marker):].strip()
    calls = []
    while body:
        found = _json_prefix(body)
        if found is None:
            return text, []
        value, body = found[0], found[1].strip().lstrip(";").strip()
        for obj in value if isinstance(value, list) else [value]:
            call = _call(obj, names)
            if call is None:
                return text, []
            calls.append(call)
    return (content, calls) if calls else (text, [])


class StreamFilter:
    """While a reply streams: the text that is surely content, holding back what may be a tool call
    (from a marker on, or the whole reply when it starts as JSON) until the end."""

    def __init__(self) -> None:
        self.text = ""
        self.sent = 0
        self.holding = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.holding:
            return ""
        rest = self.text[self.sent:]
        if not self.text.strip():
            return ""
        if self.sent == 0 and self.text.lstrip()[:1] in ("{", "["):
            self.holding = True
            return ""
        for marker in MARKERS:
            at = rest.find(marker)
            if at >= 0:
                self.holding = True
                out, self.sent = rest[:at], self.sent + at
                return out
        keep = max((k for m in MARKERS for k in range(1, len(m)) if rest.endswith(m[:k])), default=0)
        out = rest[:len(rest) - keep]
        self.sent += len(out)
        return out

    def held(self) -> str:
        """Everything not sent yet (the end of the reply)."""
        return self.text[self.sent:]


def call_schema(tools: list[dict[str, Any]], only: str | None = None) -> dict[str, Any]:
    """JSON schema of one call ``{"name": ..., "arguments": {...}}`` to one of ``tools`` (or ``only``)."""
    options = []
    for t in tools:
        fn = t["function"]
        if only is not None and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object"}
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                        "required": ["name", "arguments"]})
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_call(text: str, tools: list[dict[str, Any]]) -> ToolCall | None:
    """The call in a reply that a ``call_schema`` grammar shaped."""
    found = _json_prefix(text.strip())
    return _call(found[0], set(tool_names(tools))) if found else None
