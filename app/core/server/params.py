"""Reading API request bodies: every field checked, and a 400 that names the field at fault.

``Fields`` reads one JSON object; ``sampling`` maps the OpenAI/Anthropic sampling fields onto the
engine's ``SamplingParams`` (OpenAI's defaults: temperature 1, top_p 1, no other sampler, no length
limit); ``chat_messages`` turns OpenAI messages into the engine's (text content, tool calls with
their arguments as objects, as chat templates expect them).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from app.core.engine.protocol import SamplingParams
from app.core.errors import ApiError

_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float), "integer": (int,), "string": (str,), "boolean": (bool,), "object": (dict,), "array": (list,),
}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise ApiError(400, "The request body is empty: send a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, not a JSON {type(body).__name__}.", code="invalid_json")
    return body


class Fields:
    """Typed reads of a JSON object; ``where`` prefixes field names in errors (``messages[2].content``)."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data, self.where = data, where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: str, default: Any = None, *, lo: float | None = None, hi: float | None = None,
            required: bool = False, choices: tuple[Any, ...] | None = None) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise bad(self.name(key), "this field is required")
            return default
        ok = isinstance(value, _TYPES[kind]) and not (kind in ("number", "integer") and isinstance(value, bool))
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            raise bad(self.name(key), f"must be {'an' if kind[0] in 'aeio' else 'a'} {kind}, not {json.dumps(value)[:80]}")
        if lo is not None and value < lo:
            raise bad(self.name(key), f"{value} is below the minimum of {lo}")
        if hi is not None and value > hi:
            raise bad(self.name(key), f"{value} is above the maximum of {hi}")
        if choices is not None and value not in choices:
            raise bad(self.name(key), f"{json.dumps(value)} is not one of {', '.join(json.dumps(c) for c in choices)}")
        return value

    def sub(self, key: str, index: int | None = None) -> "Fields":
        value = self.data[key] if index is None else self.data[key][index]
        where = self.name(key) + (f"[{index}]" if index is not None else "")
        if not isinstance(value, dict):
            raise bad(where, "must be an object")
        return Fields(value, where)


def stop_list(f: Fields, key: str = "stop", limit: int = 16) -> list[str]:
    value = f.data.get(key)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad(f.name(key), "must be a string or a list of strings")
    if len(items) > limit:
        raise bad(f.name(key), f"at most {limit} stop sequences")
    return [s for s in items if s]


def sampling(f: Fields, *, max_key: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
             default_max: int | None = None, openai: bool = True) -> SamplingParams:
    """The engine's sampling for a request; unset fields take the API's defaults."""
    max_tokens = default_max
    for key in max_key:
        value = f.get(key, "integer", lo=1)
        if value is not None:
            max_tokens = value
            break
    seed = f.get("seed", "integer")
    return SamplingParams(
        temperature=f.get("temperature", "number", 1.0, lo=0, hi=2),
        top_p=f.get("top_p", "number", 1.0, lo=0, hi=1),
        top_k=f.get("top_k", "integer", 0, lo=0),  # llama.cpp-style extras, off unless asked for
        min_p=f.get("min_p", "number", 0.0, lo=0, hi=1),
        repeat_penalty=f.get("repeat_penalty", "number", 1.0, lo=0),
        presence_penalty=f.get("presence_penalty", "number", 0.0, lo=-2, hi=2) if openai else 0.0,
        frequency_penalty=f.get("frequency_penalty", "number", 0.0, lo=-2, hi=2) if openai else 0.0,
        max_tokens=max_tokens,
        seed=seed & 0x7FFFFFFF if seed is not None else -1,
    )


def logit_bias(f: Fields) -> dict[int, float]:
    raw = f.get("logit_bias", "object", {})
    out = {}
    for key, value in raw.items():
        try:
            token = int(key)
        except ValueError:
            raise bad(f"logit_bias.{key}", "keys are token ids") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise bad(f"logit_bias.{key}", "must be a number from -100 to 100")
        out[token] = float(value)
    return out


def text_content(value: Any, where: str, *, allow_none: bool = False) -> str:
    """Message content as text: a string, or a list of text parts (OpenAI and Anthropic)."""
    text, images = content_parts(value, where, allow_none=allow_none, images=False)
    return text


def content_parts(value: Any, where: str, *, allow_none: bool = False,
                  images: bool = True) -> tuple[str, list[dict[str, str]]]:
    """OpenAI message content: its text, and its images as the engine takes them ({"data": base64,
    "name"}) from ``image_url`` parts with a base64 data URL (the server never fetches a URL)."""
    from app.core.engine.images import ImageError, from_data_url

    if value is None and allow_none:
        return "", []
    if isinstance(value, str):
        return value, []
    if isinstance(value, list):
        parts, found = [], []
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind == "image_url" and images:
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise bad(f"{where}[{i}].image_url.url", "must be a string (a data:image/...;base64, URL)")
                try:
                    data = from_data_url(url, f"{where}[{i}]")
                except ImageError as exc:
                    raise bad(f"{where}[{i}].image_url.url", str(exc).split(": ", 1)[-1]) from None
                found.append({"data": base64.b64encode(data).decode(), "name": f"{where}[{i}]"})
            elif kind in ("image_url", "image", "input_audio", "file", "document"):
                raise bad(f"{where}[{i}]", f"'{kind}' content is not supported here: QuantDesk's API takes text "
                          "and, in user messages, images")
            else:
                raise bad(f"{where}[{i}]", "must be a text part ({\"type\": \"text\", \"text\": ...})")
        return "".join(parts), found
    raise bad(where, "must be a string or a list of content parts")


ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def chat_messages(f: Fields) -> list[dict[str, Any]]:
    """OpenAI messages -> the engine's messages (role, text content, tool_calls, tool_call_id)."""
    raw = f.get("messages", "array", required=True)
    if not raw:
        raise bad("messages", "must hold at least one message")
    out: list[dict[str, Any]] = []
    for i in range(len(raw)):
        m = f.sub("messages", i)
        role = m.get("role", "string", required=True, choices=ROLES)
        content, images = content_parts(m.data.get("content"), m.name("content"), allow_none=role == "assistant",
                                        images=role == "user")
        msg: dict[str, Any] = {"role": "system" if role == "developer" else "tool" if role == "function" else role,
                               "content": content, **({"images": images} if images else {})}
        if role == "assistant" and m.data.get("tool_calls"):
            calls = m.get("tool_calls", "array")
            msg["tool_calls"] = []
            for j in range(len(calls)):
                c = m.sub("tool_calls", j)
                fn = c.sub("function")
                name = fn.get("name", "string", required=True)
                args = fn.data.get("arguments", "{}")
                try:
                    parsed = json.loads(args) if isinstance(args, str) else args
                except ValueError:
                    raise bad(fn.name("arguments"), "must be a JSON object (as text)") from None
                msg["tool_calls"].append({"id": c.get("id", "string", ""), "type": "function",
                                          "function": {"name": name, "arguments": parsed}})
        if role == "assistant" and m.data.get("reasoning_content"):  # the reasoning of an earlier reply
            msg["reasoning_content"] = m.get("reasoning_content", "string")
        if role in ("tool", "function"):
            msg["tool_call_id"] = m.get("tool_call_id", "string", "")
            if m.data.get("name"):
                msg["name"] = m.get("name", "string")
        out.append(msg)
    return out


EFFORTS = ("none", "minimal", "low", "medium", "high")


def openai_thinking(f: Fields) -> dict[str, Any] | None:
    """Thinking options from an OpenAI request: ``reasoning_effort`` ("none" turns thinking off)
    and llama-server's ``chat_template_kwargs.enable_thinking``; None: the model's saved setting."""
    out: dict[str, Any] = {}
    effort = f.get("reasoning_effort", "string", choices=EFFORTS)
    if effort is not None:
        out["enabled"] = effort != "none"
        if effort in ("low", "medium", "high"):
            out["effort"] = effort
        elif effort == "minimal":
            out["effort"] = "low"
    if f.data.get("chat_template_kwargs") is not None:
        kwargs = f.sub("chat_template_kwargs")
        enabled = kwargs.get("enable_thinking", "boolean")
        if enabled is not None:
            out["enabled"] = enabled
    return out or None


def anthropic_thinking(f: Fields) -> dict[str, Any] | None:
    """``thinking: {"type": "enabled", "budget_tokens": N}`` or ``{"type": "disabled"}``."""
    if f.data.get("thinking") is None:
        return None
    t = f.sub("thinking")
    kind = t.get("type", "string", required=True, choices=("enabled", "disabled", "adaptive"))
    if kind == "disabled":
        return {"enabled": False}
    budget = t.get("budget_tokens", "integer", lo=0)
    return {"enabled": True, **({"budget": budget} if budget is not None else {})}


def openai_tools(f: Fields) -> list[dict[str, Any]]:
    raw = f.get("tools", "array", [])
    tools: list[dict[str, Any]] = []
    for i in range(len(raw)):
        t = f.sub("tools", i)
        t.get("type", "string", "function", choices=("function",))
        fn = t.sub("function")
        tools.append({"type": "function", "function": {
            "name": fn.get("name", "string", required=True),
            **({"description": fn.get("description", "string")} if fn.data.get("description") else {}),
            "parameters": fn.get("parameters", "object", {"type": "object", "properties": {}}),
        }})
    return tools


@dataclass(frozen=True)
class ToolChoice:
    mode: str  # "none", "auto", "required", "function"
    name: str | None = None


def openai_tool_choice(f: Fields, tools: list[dict[str, Any]]) -> ToolChoice:
    value = f.data.get("tool_choice")
    if value is None:
        return ToolChoice("auto" if tools else "none")
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise bad("tool_choice", f"{json.dumps(value)} is not one of \"none\", \"auto\", \"required\" or a function")
        if value != "none" and not tools:
            raise bad("tool_choice", "is given but tools is empty")
        return ToolChoice(value)
    if isinstance(value, dict) and isinstance(value.get("function"), dict) and isinstance(value["function"].get("name"), str):
        name = value["function"]["name"]
        if name not in [t["function"]["name"] for t in tools]:
            raise bad("tool_choice.function.name", f"'{name}' is not among the tools")
        return ToolChoice("function", name)
    raise bad("tool_choice", "must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}")


def response_schema(f: Fields) -> dict[str, Any] | None:
    """``response_format``: None for text, {} for any JSON object, else the JSON schema."""
    if f.data.get("response_format") is None:
        return None
    rf = f.sub("response_format")
    kind = rf.get("type", "string", required=True, choices=("text", "json_object", "json_schema"))
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    js = rf.sub("json_schema")
    js.get("name", "string")
    schema = js.get("schema", "object", {"type": "object"})
    return schema or {"type": "object"}
