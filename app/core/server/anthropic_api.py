"""The Anthropic Messages API (POST /v1/messages), streaming events included, on the same core."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.core.errors import ApiError
from app.core.server import params as P
from app.core.server.chat import ChatJob, ChatRun, Outcome
from app.core.server.openai_api import PING_S, complete, note, note_run, read, service_of
from app.core.server.service import Service

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {"server_error": "api_error"}


def anthropic_error(exc: ApiError) -> dict[str, Any]:
    kind = "overloaded_error" if exc.status == 429 else ERROR_TYPES.get(exc.kind, exc.kind)
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def _blocks_text(value: Any, where: str) -> str:
    return P.text_content(value, where)


def messages_job(svc: Service, f: P.Fields) -> ChatJob:
    model = svc.model(f.data.get("model"))
    f.get("max_tokens", "integer", required=True, lo=1)
    out: list[dict[str, Any]] = []
    if f.data.get("system") is not None:
        out.append({"role": "system", "content": _blocks_text(f.data["system"], "system")})
    raw = f.get("messages", "array", required=True)
    if not raw:
        raise P.bad("messages", "must hold at least one message")
    for i in range(len(raw)):
        m = f.sub("messages", i)
        role = m.get("role", "string", required=True, choices=("user", "assistant"))
        content = m.data.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise P.bad(m.name("content"), "must be a string or a list of content blocks")
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        images: list[dict[str, str]] = []
        for j, block in enumerate(content):
            where = f"{m.name('content')}[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "image" and role == "user":
                images.append(_image(block, where))
            elif kind == "tool_use" and role == "assistant":
                calls.append({"id": str(block.get("id", "")), "type": "function",
                              "function": {"name": str(block.get("name", "")), "arguments": block.get("input") or {}}})
            elif kind == "tool_result" and role == "user":
                result = block.get("content", "")
                out.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
                            "content": result if isinstance(result, str) else _blocks_text(result, f"{where}.content")})
            elif kind == "thinking" and role == "assistant":  # goes to the template, which keeps or drops it
                thoughts.append(str(block.get("thinking", "")))
            elif kind in ("thinking", "redacted_thinking"):
                continue
            else:
                raise P.bad(where, f"'{kind}' content is not supported here: QuantDesk's API serves text and tool use")
        if text or calls or images or role == "assistant":
            msg: dict[str, Any] = {"role": role, "content": "".join(text), **({"images": images} if images else {})}
            if thoughts:
                msg["reasoning_content"] = "".join(thoughts)
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    tools: list[dict[str, Any]] = []
    for i in range(len(f.get("tools", "array", []))):
        t = f.sub("tools", i)
        tools.append({"type": "function", "function": {
            "name": t.get("name", "string", required=True),
            **({"description": t.get("description", "string")} if t.data.get("description") else {}),
            "parameters": t.get("input_schema", "object", {"type": "object", "properties": {}}),
        }})
    choice = P.ToolChoice("auto" if tools else "none")
    if f.data.get("tool_choice") is not None:
        tc = f.sub("tool_choice")
        kind = tc.get("type", "string", required=True, choices=("auto", "any", "tool", "none"))
        if kind == "tool":
            name = tc.get("name", "string", required=True)
            if name not in [t["function"]["name"] for t in tools]:
                raise P.bad("tool_choice.name", f"'{name}' is not among the tools")
            choice = P.ToolChoice("function", name)
        elif kind == "any":
            choice = P.ToolChoice("required" if tools else "none")
        else:
            choice = P.ToolChoice(kind if tools else "none")
    sampling = P.sampling(f, max_key=("max_tokens",), openai=False)
    return ChatJob(model=model, messages=out, sampling=sampling, stop=P.stop_list(f, "stop_sequences"), thinking=P.anthropic_thinking(f),
                   tools=tools, tool_choice=choice)


def _image(block: dict[str, Any], where: str) -> dict[str, str]:
    """An Anthropic image block ({"source": {"type": "base64", "media_type", "data"}}) as the engine takes it."""
    from app.core.engine.images import ImageError, from_base64

    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64" or not isinstance(source.get("data"), str):
        raise P.bad(f"{where}.source", "must be {\"type\": \"base64\", \"media_type\": ..., \"data\": ...}; "
                    "the server never fetches a URL")
    try:
        data = from_base64(source["data"], where)
    except ImageError as exc:
        raise P.bad(f"{where}.source.data", str(exc).split(": ", 1)[-1]) from None
    return {"data": base64.b64encode(data).decode(), "name": where}


def _content(out: Outcome) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "thinking", "thinking": out.reasoning, "signature": ""}] if out.reasoning else []
    if out.content or not out.tool_calls:
        blocks.append({"type": "text", "text": out.content})
    for call in out.tool_calls:
        blocks.append({"type": "tool_use", "id": "toolu_" + call.id.removeprefix("call_"), "name": call.name, "input": call.input()})
    return blocks


def _usage(out: Outcome | None, prompt_tokens: int = 0, cached: int = 0) -> dict[str, Any]:
    if out is None:
        return {"input_tokens": prompt_tokens - cached, "output_tokens": 0, "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0}
    r = out.reply
    return {"input_tokens": r.prompt_tokens - r.cached_tokens, "output_tokens": r.completion_tokens,
            "cache_read_input_tokens": r.cached_tokens, "cache_creation_input_tokens": 0}


async def messages(request: Request) -> Response:
    svc = service_of(request)
    f = await read(request)
    job = messages_job(svc, f)
    note(request, model=job.model.id)
    mid = "msg_" + uuid.uuid4().hex[:24]
    if f.get("stream", "boolean", False):
        run = ChatRun(svc.pool, job)
        await run.__aenter__()
        return EventSourceResponse(_stream(request, run, mid), ping=PING_S)
    async with ChatRun(svc.pool, job) as run:
        out = await complete(request, run)
    note_run(request, run)
    return JSONResponse({"id": mid, "type": "message", "role": "assistant", "model": job.model.id,
                         "content": _content(out), "stop_reason": STOP_REASONS.get(out.finish_reason, "end_turn"),
                         "stop_sequence": None, "usage": _usage(out)})


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"event": name, "data": json.dumps({"type": name, **data}, ensure_ascii=False)}


async def _stream(request: Request, run: ChatRun, mid: str) -> AsyncIterator[dict[str, Any]]:
    t0, job = time.perf_counter(), run.job
    try:
        index, text_open, thinking_open = 0, False, False
        async for kind, value in run.deltas():
            if kind == "start":
                yield _event("message_start", {"message": {
                    "id": mid, "type": "message", "role": "assistant", "model": job.model.id, "content": [],
                    "stop_reason": None, "stop_sequence": None,
                    "usage": _usage(None, value.get("prompt_tokens", 0), value.get("cached_tokens", 0))}})
                yield _event("ping", {})
            elif kind == "reasoning":
                if text_open:  # a later block of reasoning after some answer
                    yield _event("content_block_stop", {"index": index})
                    index, text_open = index + 1, False
                if not thinking_open:
                    yield _event("content_block_start", {"index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                    thinking_open = True
                yield _event("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": value}})
            elif kind == "text":
                if thinking_open:  # the answer began: the thinking block ends
                    yield _event("content_block_stop", {"index": index})
                    index, thinking_open = index + 1, False
                if not text_open:
                    yield _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                    text_open = True
                yield _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": value}})
            elif kind == "done":
                out: Outcome = value
                if thinking_open:
                    yield _event("content_block_stop", {"index": index})
                    index += 1
                if text_open:
                    yield _event("content_block_stop", {"index": index})
                    index += 1
                elif not out.tool_calls:  # an empty reply still has its (empty) text block
                    yield _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                    yield _event("content_block_stop", {"index": index})
                    index += 1
                for block in _content(out):
                    if block["type"] != "tool_use":
                        continue
                    yield _event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
                    yield _event("content_block_delta", {"index": index, "delta": {
                        "type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}})
                    yield _event("content_block_stop", {"index": index})
                    index += 1
                yield _event("message_delta", {"delta": {"stop_reason": STOP_REASONS.get(out.finish_reason, "end_turn"),
                                                         "stop_sequence": None},
                                               "usage": {"output_tokens": out.reply.completion_tokens}})
                yield _event("message_stop", {})
        note_run(request, run)
    except ApiError as exc:
        note(request, note=f"error {exc.status}: {exc.message[:120]} after {time.perf_counter() - t0:.1f} s")
        yield {"event": "error", "data": json.dumps(anthropic_error(exc))}
    finally:
        run.cancel()
