"""Running the API server: uvicorn on a socket bound first (so that a port in use is a clear
error, and port 0 picks a free one), in the foreground (``quantdesk serve``: Ctrl-C / SIGTERM stop
the generations, the server and every engine process) or on a thread (the GUI's Server switch)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable

from app.core.errors import BadValueError
from app.core.library.catalog import Library
from app.core.server.service import ServerConfig, Service

log = logging.getLogger("app.core.server")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a clear error when that cannot be."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise BadValueError(f"host {host}: cannot be resolved ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BadValueError(f"{host}:{port}: cannot listen there ({exc.strerror or exc}); "
                            "another server may be using the port: choose another with --port") from None
    return sock


def _uvicorn_server(config: Any, service: Service, on_started: Callable[[], None]) -> Any:
    """uvicorn's Server, with a signal handler that stops the generations first (so that open
    streams end at once and the graceful shutdown does not wait for them) and does not raise the
    signal again once stopped (a clean exit)."""
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            service.pool.cancel_all()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_started()

    return Server(config)


class ApiServer:
    """One API server: ``run()`` in the foreground, or ``start()`` / ``stop()`` on a thread."""

    def __init__(self, config: ServerConfig, *, library: Library | None = None, log_path: Path | None = None,
                 engine_env: dict[str, str] | None = None, on_started: Callable[["ApiServer"], None] | None = None,
                 shared: Any = None) -> None:
        self.config = config
        self.sock = bind(config.host, config.port)
        self.port = int(self.sock.getsockname()[1])
        self.service = Service.create(config, library=library, log_path=log_path, engine_env=engine_env, shared=shared)
        self.started = threading.Event()
        self._on_started = on_started
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}/v1"

    def _uvicorn(self) -> Any:
        import uvicorn

        from app.core.server.http import build_app

        app = build_app(self.service)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                                ws="none", server_header=False)
        return _uvicorn_server(config, self.service, self._announce)

    def _announce(self) -> None:
        self.started.set()
        if self._on_started is not None:
            self._on_started(self)

    async def _serve(self) -> None:
        if self.config.preload:
            models = self.service.catalog.models()
            if models:
                slot = await self.service.pool.acquire(models[0])
                self.service.pool.release(slot)
        await self._server.serve(sockets=[self.sock])

    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM (from the main thread); then stop every engine."""
        self._server = self._uvicorn()
        try:
            asyncio.run(self._serve())
        finally:
            self.close()

    def start(self) -> None:
        """Serve on a thread; ``started`` is set once requests are answered (``error`` when not)."""
        self._server = self._uvicorn()

        def work() -> None:
            try:
                asyncio.run(self._serve())
            except BaseException as exc:  # reported to the caller through ``error``
                self.error = exc
                log.exception("the API server stopped")
            finally:
                self.started.set()

        self._thread = threading.Thread(target=work, name="api-server", daemon=True)
        self._thread.start()

    def drop_copy(self, path: str | Path, timeout: float = 30.0) -> None:
        """The chat window is about to load ``path``: the server's own idle copy goes first (from
        any thread but the server's)."""
        loop = self.service.pool._loop
        if loop is None or loop.is_closed():
            return  # nothing was loaded yet
        try:
            asyncio.run_coroutine_threadsafe(self.service.pool.drop_copy(Path(path)), loop).result(timeout)
        except Exception as exc:  # a load must not fail for it: the planner sees the memory that is free
            log.info("the server kept its copy of %s: %s", path, exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the generations and the server, then every engine process (blocking)."""
        self.service.pool.cancel_all()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.service.close()
