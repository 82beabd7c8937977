"""The OpenAI-compatible endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from typing import Any, AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.core.errors import ApiError, ContextOverflow, EngineError
from app.core.server import params as P
from app.core.server.catalog import EMBEDDING
from app.core.server.chat import ChatJob, ChatRun, Outcome
from app.core.server.service import Service

PING_S = 15  # an SSE comment this often while a request waits in the queue


def service_of(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def note(request: Request, **stats: Any) -> None:
    """Stats for the request's log line and the Server page."""
    request.scope.setdefault("state", {}).setdefault("qd", {}).update(stats)


async def read(request: Request) -> P.Fields:
    return P.Fields(P.parse_body(await request.body()))


async def list_models(request: Request) -> Response:
    svc = service_of(request)
    await asyncio.to_thread(svc.catalog.refresh)  # a library scan: off the event loop
    return JSONResponse({"object": "list", "data": [m.to_openai() for m in svc.catalog.models()]})


async def get_model(request: Request) -> Response:
    svc = service_of(request)
    return JSONResponse(svc.model(request.path_params["model"], kind=None).to_openai())


def chat_job(svc: Service, f: P.Fields) -> ChatJob:
    model = svc.model(f.data.get("model"))
    messages = P.chat_messages(f)
    n = f.get("n", "integer", 1)
    if n != 1:
        raise P.bad("n", "only n=1 is supported")
    tools = P.openai_tools(f)
    choice = P.openai_tool_choice(f, tools)
    return ChatJob(model=model, messages=messages, sampling=P.sampling(f), stop=P.stop_list(f), logit_bias=P.logit_bias(f),
                   json_schema=P.response_schema(f), tools=tools, tool_choice=choice, thinking=P.openai_thinking(f))


def stream_options(f: P.Fields, stream: bool) -> bool:
    if f.data.get("stream_options") is None:
        return False
    if not stream:
        raise P.bad("stream_options", "is only allowed with stream: true")
    return bool(f.sub("stream_options").get("include_usage", "boolean", False))


async def until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def complete(request: Request, run: ChatRun) -> Outcome:
    """The whole reply; a client that goes away first cancels it."""

    async def collect() -> Outcome:
        async for kind, value in run.deltas():
            if kind == "done":
                return value  # type: ignore[no-any-return]
        raise ApiError(500, "the engine ended without a reply", kind="server_error")

    task = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        run.cancel()
        task.cancel()
        raise ApiError(499, "The client disconnected before the reply was complete; the generation was stopped.",
                       code="client_disconnected")
    return task.result()


def note_run(request: Request, run: ChatRun) -> None:
    out = run.outcome
    if out is not None:
        r = out.reply
        note(request, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, tokens_per_s=r.tokens_per_s,
             ttft_s=run.ttft_s, finish=out.finish_reason)


def _message(out: Outcome) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": out.content if out.content or not out.tool_calls else None}
    if out.reasoning:  # as llama-server, LM Studio and DeepSeek's API give it
        msg["reasoning_content"] = out.reasoning
    if out.tool_calls:
        msg["tool_calls"] = [c.to_openai() for c in out.tool_calls]
    return msg


async def chat_completions(request: Request) -> Response:
    svc = service_of(request)
    f = await read(request)
    job = chat_job(svc, f)
    note(request, model=job.model.id)
    stream = bool(f.get("stream", "boolean", False))
    usage_chunk = stream_options(f, stream)
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
    if stream:
        run = ChatRun(svc.pool, job)
        await run.__aenter__()  # queue full, context overflow: a real status, before the stream starts
        return EventSourceResponse(_chat_stream(request, run, cid, created, usage_chunk), ping=PING_S,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    async with ChatRun(svc.pool, job) as run:
        out = await complete(request, run)
    note_run(request, run)
    return JSONResponse({
        "id": cid, "object": "chat.completion", "created": created, "model": job.model.id,
        "choices": [{"index": 0, "message": _message(out), "finish_reason": out.finish_reason, "logprobs": None}],
        "usage": out.usage, "system_fingerprint": "quantdesk",
    })


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "system_fingerprint": "quantdesk",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]},
                      ensure_ascii=False)


async def _chat_stream(request: Request, run: ChatRun, cid: str, created: int,
                       usage_chunk: bool) -> AsyncIterator[dict[str, Any]]:
    job = run.job
    try:
        async for kind, value in run.deltas():
            if kind == "start":
                yield {"data": _chunk(cid, created, job.model.id, {"role": "assistant", "content": ""})}
            elif kind == "text":
                yield {"data": _chunk(cid, created, job.model.id, {"content": value})}
            elif kind == "reasoning":
                yield {"data": _chunk(cid, created, job.model.id, {"reasoning_content": value})}
            elif kind == "done":
                out: Outcome = value
                if out.tool_calls:
                    yield {"data": _chunk(cid, created, job.model.id,
                                          {"tool_calls": [c.to_openai(i) for i, c in enumerate(out.tool_calls)]})}
                yield {"data": _chunk(cid, created, job.model.id, {}, out.finish_reason)}
                if usage_chunk:
                    yield {"data": json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                               "model": job.model.id, "choices": [], "usage": out.usage})}
        note_run(request, run)
    except ApiError as exc:  # after the 200 went out: the error as a last event, as OpenAI does
        note(request, note=f"error {exc.status}: {exc.message[:120]}")
        yield {"data": json.dumps(openai_error(exc))}
    except asyncio.CancelledError:
        note(request, note="client disconnected")
        raise
    finally:
        run.cancel()
    yield {"data": "[DONE]"}


def openai_error(exc: ApiError) -> dict[str, Any]:
    kind = "server_error" if exc.status >= 500 else "rate_limit_exceeded" if exc.status == 429 else "invalid_request_error"
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}


# -- /v1/completions -----------------------------------------------------------------------------
async def completions(request: Request) -> Response:
    svc = service_of(request)
    f = await read(request)
    model = svc.model(f.data.get("model"))
    note(request, model=model.id)
    prompt = f.data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise P.bad("prompt", "must be a string (one prompt per request)")
    for key in ("suffix", "echo", "best_of", "logprobs"):
        if f.data.get(key) not in (None, False, 0, 1 if key == "best_of" else None):
            raise P.bad(key, "is not supported")
    if f.get("n", "integer", 1) != 1:
        raise P.bad("n", "only n=1 is supported")
    job = ChatJob(model=model, messages=[], sampling=P.sampling(f, max_key=("max_tokens",), default_max=16),
                  stop=P.stop_list(f), logit_bias=P.logit_bias(f), prompt=prompt)
    stream = bool(f.get("stream", "boolean", False))
    usage_chunk = stream_options(f, stream)
    cid, created = "cmpl-" + uuid.uuid4().hex[:24], int(time.time())

    def body(text: str, finish: str | None) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": created, "model": model.id,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

    if not stream:
        async with ChatRun(svc.pool, job) as run:
            out = await complete(request, run)
        note_run(request, run)
        return JSONResponse({**body(out.content, out.finish_reason), "usage": out.usage})

    run = ChatRun(svc.pool, job)
    await run.__aenter__()

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            async for kind, value in run.deltas():
                if kind == "text":
                    yield {"data": json.dumps(body(value, None), ensure_ascii=False)}
                elif kind == "done":
                    yield {"data": json.dumps(body("", value.finish_reason))}
                    if usage_chunk:
                        yield {"data": json.dumps({**body("", None), "choices": [], "usage": value.usage})}
            note_run(request, run)
        except ApiError as exc:
            yield {"data": json.dumps(openai_error(exc))}
        finally:
            run.cancel()
        yield {"data": "[DONE]"}

    return EventSourceResponse(events(), ping=PING_S)


# -- /v1/embeddings ------------------------------------------------------------------------------
async def embeddings(request: Request) -> Response:
    svc = service_of(request)
    f = await read(request)
    model = svc.model(f.data.get("model"), kind=EMBEDDING)
    note(request, model=model.id)
    raw = f.data.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise P.bad("input", "must be a string or a non-empty list of strings")
    if f.data.get("dimensions") is not None:
        raise P.bad("dimensions", "is not supported: the model's own size is returned")
    encoding = f.get("encoding_format", "string", "float", choices=("float", "base64"))
    slot = await svc.pool.acquire(model)
    try:
        assert slot.client is not None
        vectors, tokens = await asyncio.to_thread(slot.client.embed, texts)
    except ContextOverflow as exc:
        raise ApiError(400, f"An input is {exc.prompt_tokens:,} tokens; the model's context holds {exc.n_ctx:,}.",
                       param="input", code="context_length_exceeded") from None
    except EngineError as exc:
        raise ApiError(500, str(exc), code="engine_error", kind="server_error") from None
    finally:
        svc.pool.release(slot)
    note(request, prompt_tokens=tokens, completion_tokens=0)

    def encode(v: list[float]) -> Any:
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if encoding == "base64" else v

    return JSONResponse({"object": "list", "model": model.id,
                         "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
