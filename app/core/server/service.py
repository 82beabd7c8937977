"""What the API server is made of, without HTTP: its settings, the model catalog, the pool of
loaded models and the record of recent requests (the log line, the GUI's Server page)."""

from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.core.errors import ApiError, BadValueError
from app.core.library.catalog import Library
from app.core.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_QUEUE
from app.core.server.catalog import CHAT, ModelCatalog, ServedModel
from app.core.server.pool import ModelPool, PoolOptions

log = logging.getLogger("app.core.server")

RECENT = 200  # requests kept for the Server page


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    models: tuple[Path, ...] | None = None  # serve only these (None: the whole library)
    ctx: int | None = None
    queue: int = DEFAULT_QUEUE
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are given ("*" for any)
    allowed_hosts: tuple[str, ...] = ()  # Host header names accepted besides localhost and the bound address
    gpu_mem: int | None = None
    ram: int | None = None
    threads: int | None = None
    preload: bool = False  # load the first model before serving
    workers: tuple[str, ...] = ()  # RPC workers a model that does not fit here is split over (HOST:PORT)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise BadValueError(f"port {self.port}: must be 0 to 65535")
        if self.queue < 1:
            raise BadValueError(f"queue {self.queue}: must be at least 1")
        if not is_loopback(self.host) and not self.api_key:
            raise BadValueError(f"host {self.host}: serving beyond this machine needs an API key (--api-key KEY, or "
                                "QUANTDESK_API_KEY); without one, bind to 127.0.0.1")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(header: str, config: ServerConfig) -> bool:
    """Whether a request's Host header may reach the server. A web page that rebinds its own DNS
    name to 127.0.0.1 sends that name: only localhost, IP literals (never rebound) and the names the
    user allowed pass. A loopback server accepts loopback addresses only."""
    name = header.strip()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.lower().rstrip(".")
    if not name:
        return False
    if name in (h.lower() for h in config.allowed_hosts) or name == config.host.lower():
        return True
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or not is_loopback(config.host)


@dataclass
class RequestRecord:
    at: float
    client: str
    method: str
    path: str
    status: int
    duration_s: float
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    note: str = ""

    def line(self) -> str:
        parts = [f'{self.client} "{self.method} {self.path}" {self.status} {self.duration_s * 1000:.0f} ms']
        if self.model:
            parts.append(f"model={self.model}")
        if self.prompt_tokens is not None:
            parts.append(f"prompt={self.prompt_tokens} completion={self.completion_tokens}")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.ttft_s is not None:
            parts.append(f"ttft={self.ttft_s * 1000:.0f} ms")
        if self.note:
            parts.append(self.note)
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LogTail(logging.Handler):
    """The server's last log lines (requests, loads, unloads), for the GUI's Server page."""

    def __init__(self, lines: int = 500) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # a log line must never break a request
            self.handleError(record)

    def lines(self) -> list[str]:
        return list(self._lines)


@dataclass
class Service:
    config: ServerConfig
    catalog: ModelCatalog
    pool: ModelPool
    recent: collections.deque[RequestRecord] = field(default_factory=lambda: collections.deque(maxlen=RECENT))
    requests: int = 0
    active: int = 0
    listeners: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    log_tail: LogTail = field(default_factory=LogTail)

    def __post_init__(self) -> None:
        server_log = logging.getLogger("app.core.server")
        server_log.addHandler(self.log_tail)
        if server_log.getEffectiveLevel() > logging.INFO:
            server_log.setLevel(logging.INFO)

    @classmethod
    def create(cls, config: ServerConfig, *, library: Library | None = None, log_path: Path | None = None,
               engine_env: dict[str, str] | None = None, shared: Any = None) -> "Service":
        """``shared``: the chat window's engine (pool.SharedEngine) when the server runs in the app."""
        catalog = ModelCatalog(library or Library(), list(config.models) if config.models is not None else None)
        catalog.refresh()
        pool = ModelPool(PoolOptions(ctx=config.ctx, gpu_mem=config.gpu_mem, ram=config.ram, queue=config.queue,
                                     threads=config.threads, log_path=log_path, engine_env=engine_env,
                                     workers=config.workers), shared=shared)
        return cls(config, catalog, pool)

    def model(self, name: Any, *, kind: str | None = CHAT, param: str = "model") -> ServedModel:
        if not isinstance(name, str) or not name:
            raise ApiError(400, f"{param}: this field is required (one of GET /v1/models)", param=param, code="invalid_value")
        found = self.catalog.find(name)
        if found is None:
            raise ApiError(404, f"The model '{name}' does not exist: GET /v1/models lists the models served here.",
                           param=param, code="model_not_found")
        if kind is not None and found.kind != kind:
            what = "an embedding model" if found.kind != CHAT else "a chat model"
            use = "/v1/embeddings" if found.kind != CHAT else "/v1/chat/completions, /v1/completions or /v1/messages"
            raise ApiError(400, f"The model '{found.id}' is {what} and cannot serve this request; use it with {use}.",
                           param=param, code="model_not_supported")
        return found

    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests += 1
            self.recent.append(rec)
            listeners = list(self.listeners)
        log.info("%s", rec.line())
        for listener in listeners:
            try:
                listener(rec)
            except Exception:  # a GUI listener must never break serving
                log.exception("request listener failed")

    def close(self) -> None:
        logging.getLogger("app.core.server").removeHandler(self.log_tail)
        self.pool.close()
        self.catalog.library.close()


def now() -> float:
    return time.time()
