"""The HTTP face of the API server (Starlette): routes, the guard in front of them (Host header
against DNS rebinding, API key, CORS only when origins are configured), errors in the API's own
JSON shape, and one log record per request."""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import ApiError
from app.core.server import anthropic_api, openai_api
from app.core.server.service import RequestRecord, Service, host_allowed

log = logging.getLogger("app.core.server")


def _anthropic(path: str) -> bool:
    return path.rstrip("/").endswith("/messages") or "/messages/" in path


def error_response(exc: ApiError, path: str) -> Response:
    body = anthropic_api.anthropic_error(exc) if _anthropic(path) else openai_api.openai_error(exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    if exc.status == 401 and not _anthropic(path):
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=exc.status, headers=headers)


class Guard:
    """Pure ASGI middleware, outermost: log record, Host check, API key."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 0}

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        self.service.active += 1
        try:
            if refusal is not None:
                await error_response(refusal, scope["path"])(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.service.active -= 1
            stats: dict[str, Any] = scope.get("state", {}).get("qd", {})
            client = scope.get("client") or ("?", 0)
            code = status["code"] or 499  # no response started: the client went away
            self.service.record(RequestRecord(
                at=time.time(), client=f"{client[0]}", method=scope["method"], path=scope["path"], status=code,
                duration_s=time.perf_counter() - t0, model=stats.get("model"), prompt_tokens=stats.get("prompt_tokens"),
                completion_tokens=stats.get("completion_tokens"), tokens_per_s=stats.get("tokens_per_s"),
                ttft_s=stats.get("ttft_s"), note=stats.get("note", "")))

    def _refusal(self, scope: Scope) -> ApiError | None:
        config = self.service.config
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not host_allowed(headers.get("host", ""), config):
            return ApiError(403, f"Host '{headers.get('host', '')}' is not allowed: this server answers requests to "
                            "localhost or its own address (a guard against DNS rebinding); add the name with --allow-host.",
                            code="host_not_allowed", kind="permission_error")
        if config.api_key and scope["method"] != "OPTIONS":
            auth = headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
            if not given:
                return ApiError(401, "No API key given: send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY').",
                                code="missing_api_key")
            if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return None


async def health(request: Request) -> Response:
    svc: Service = request.app.state.service
    pool = svc.pool
    return JSONResponse({"status": "ok", "loaded": pool.status(), "requests": svc.requests, "active": svc.active,
                         "loads": pool.loads, "unloads": pool.unloads, "max_loaded": pool.max_loaded})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"Unknown endpoint: {request.method} {request.url.path}",
               405: f"Method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return error_response(ApiError(exc.status_code, message, code="unknown_endpoint" if exc.status_code == 404 else None),
                          request.url.path)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s", request.url.path)
    return error_response(ApiError(500, f"Internal error: {type(exc).__name__}: {exc}", kind="server_error"), request.url.path)


def build_app(service: Service) -> Starlette:
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", openai_api.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", openai_api.get_model, methods=["GET"]),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/v1/completions", openai_api.completions, methods=["POST"]),
        Route("/v1/embeddings", openai_api.embeddings, methods=["POST"]),
        Route("/v1/messages", anthropic_api.messages, methods=["POST"]),
    ]
    middleware = []
    if service.config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(service.config.cors_origins), allow_methods=["GET", "POST"],
                                     allow_headers=["*"], max_age=600))
    middleware.insert(0, Middleware(Guard, service=service))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.pool.cancel_all()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.state.service = service
    return app
