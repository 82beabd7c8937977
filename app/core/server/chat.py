"""One chat request on the core, whichever API it came in by (OpenAI or Anthropic).

``ChatJob`` is the request as data; ``ChatRun`` takes the model's turn in the pool, renders the
tools the way the model's template wants them, starts the engine and yields what the API layers
stream: ``("text", piece)`` while content arrives and ``("done", Outcome)`` at the end, with the
tool calls parsed. Closing the run early (the client went away) cancels the engine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from app.core.engine.protocol import Reply, SamplingParams
from app.core.errors import ApiError, ContextOverflow, EngineCrashed, EngineError, ImageRefused
from app.core.server import toolcalls
from app.core.server.catalog import ServedModel
from app.core.server.params import ToolChoice
from app.core.server.pool import Generation, ModelPool, Slot


@dataclass
class ChatJob:
    model: ServedModel
    messages: list[dict[str, Any]]
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoice = ToolChoice("none")
    prompt: str | None = None  # /v1/completions: raw text, no template
    thinking: dict[str, Any] | None = None  # enabled, budget, effort; None: the model's saved setting


@dataclass
class Outcome:
    content: str
    tool_calls: list[toolcalls.ToolCall]
    finish_reason: str  # OpenAI's: stop, length, tool_calls
    reply: Reply

    @property
    def reasoning(self) -> str:
        return self.reply.reasoning

    @property
    def usage(self) -> dict[str, Any]:
        r = self.reply
        return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "total_tokens": r.prompt_tokens + r.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": r.cached_tokens}}


def _tools_as_text(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For a template without tools: the tools in the system message, earlier calls and their
    results as Hermes text."""
    out: list[dict[str, Any]] = []
    prompt = toolcalls.system_prompt(tools) if tools else ""
    if messages and messages[0]["role"] == "system":
        out.append({"role": "system", "content": (messages[0]["content"] + "\n\n" + prompt).strip()})
        messages = messages[1:]
    elif prompt:
        out.append({"role": "system", "content": prompt})
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "\n".join("<tool_call>\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                                                          ensure_ascii=False) + "\n</tool_call>" for c in m["tool_calls"])
            out.append({"role": "assistant", "content": (m["content"] + "\n" + calls).strip()})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


class ChatRun:
    """``async with ChatRun(pool, job) as run: async for kind, value in run.deltas(): ...``"""

    def __init__(self, pool: ModelPool, job: ChatJob) -> None:
        self.pool, self.job = pool, job
        self.slot: Slot | None = None
        self.gen: Generation | None = None
        self.started = time.perf_counter()
        self.ttft_s: float | None = None
        self.outcome: Outcome | None = None
        self.queued_s = 0.0
        self._events: AsyncIterator[dict[str, Any]] | None = None
        self._start: dict[str, Any] | None = None

    async def __aenter__(self) -> "ChatRun":
        """Wait for the model's turn and start the reply, up to the engine's ``start`` (the prompt
        fits): errors until then (queue full, context overflow) come before any response is sent."""
        t0 = time.perf_counter()
        self.slot = await self.pool.acquire(self.job.model)
        self.queued_s = time.perf_counter() - t0
        try:
            messages, options = self._engine_request(self.slot)
            self.gen = self.pool.generate(self.slot, messages, self.job.sampling, **options)
        except BaseException:
            self.pool.release(self.slot)
            raise
        self._events = self.gen.events()
        try:
            self._start = await self._next()
        except BaseException:
            self.cancel()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Stop the engine if the reply is not finished (safe in a cancelled task: no await)."""
        if self.gen is not None:
            self.gen.cancel()

    @property
    def forced(self) -> bool:
        return self.job.tool_choice.mode in ("required", "function")

    @property
    def parsing_tools(self) -> bool:
        return bool(self.job.tools) and self.job.tool_choice.mode == "auto" and self.job.json_schema is None

    def _engine_request(self, slot: Slot) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        job = self.job
        tools = job.tools if job.tool_choice.mode != "none" else []
        in_template = bool(slot.info and slot.info.template_tools)
        if not in_template and (tools or _has_tool_turns(job.messages)):
            messages = _tools_as_text(job.messages, tools)
        else:
            messages = job.messages
        schema = job.json_schema
        if self.forced:
            schema = toolcalls.call_schema(tools, job.tool_choice.name if job.tool_choice.mode == "function" else None)
        options: dict[str, Any] = {"stop": job.stop or None, "json_schema": schema, "trim": False,
                                   "logit_bias": job.logit_bias or None, "tools": tools if in_template and tools else None,
                                   "prompt": job.prompt,
                                   # a raw prompt is completed as it is: nothing is split off as reasoning
                                   "thinking": {"split": False} if job.prompt is not None else job.thinking}
        return messages, options

    async def _next(self) -> dict[str, Any] | None:
        assert self._events is not None
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            return None
        except ContextOverflow as exc:
            raise overflow_error(exc, self.job) from None
        except EngineCrashed as exc:
            raise ApiError(500, f"The engine stopped while answering: {exc}", code="engine_crashed", kind="server_error") from None
        except EngineError as exc:
            raise ApiError(400 if _is_input_error(exc) else 500, str(exc), code="engine_error",
                           kind="invalid_request_error" if _is_input_error(exc) else "server_error") from None

    async def deltas(self) -> AsyncIterator[tuple[str, Any]]:
        filt = toolcalls.StreamFilter() if self.parsing_tools else None
        parts: list[str] = []
        event = self._start
        while event is not None:
            kind = event["ev"]
            if kind == "start":
                yield "start", event
            elif kind == "token":
                if self.ttft_s is None:
                    self.ttft_s = time.perf_counter() - self.started
                if event.get("reasoning"):
                    yield "reasoning", event["reasoning"]
                parts.append(event["text"])
                out = "" if self.forced else filt.feed(event["text"]) if filt is not None else event["text"]
                if out:
                    yield "text", out
            elif kind == "done":
                self.outcome = self._finish(event["reply"], "".join(parts), filt)
                if filt is not None and not self.outcome.tool_calls and filt.held():
                    yield "text", filt.held()
                yield "done", self.outcome
            event = await self._next()

    def _finish(self, reply: Reply, text: str, filt: toolcalls.StreamFilter | None) -> Outcome:
        text = reply.text or text
        finish = "length" if reply.finish_reason in ("length", "context") else "stop"
        if self.forced:
            call = toolcalls.forced_call(text, self.job.tools)
            if call is not None:
                return Outcome("", [call], "tool_calls", reply)
            return Outcome(text, [], finish, reply)
        if self.parsing_tools:
            content, calls = toolcalls.parse(text, self.job.tools)
            if calls:
                return Outcome(content, calls, "tool_calls", reply)
        return Outcome(text, [], finish, reply)


def _has_tool_turns(messages: list[dict[str, Any]]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


def _is_input_error(exc: EngineError) -> bool:
    if isinstance(exc, ImageRefused):
        return True
    text = str(exc)
    return any(s in text for s in ("grammar", "JSON schema", "chat template", "too long"))


def overflow_error(exc: ContextOverflow, job: ChatJob) -> ApiError:
    asked = f", {exc.reserve:,} in the completion (max_tokens)" if job.sampling.max_tokens else ""
    return ApiError(400, f"This model's maximum context length is {exc.n_ctx:,} tokens. However, you requested "
                    f"{exc.prompt_tokens + (exc.reserve if job.sampling.max_tokens else 0):,} tokens "
                    f"({exc.prompt_tokens:,} in the messages{asked}). Please reduce the length of the messages or "
                    "the completion.", param="messages", code="context_length_exceeded")
