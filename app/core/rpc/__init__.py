"""RPC workers: llama.cpp's RPC backend, which lends another computer's GPU (or CPU) memory to
the engine, so that one model's layers can be split over several machines.

- ``worker``: the supervisor (``quantdesk worker``): starts the worker child, stops it.
- ``serve``: the worker child: ggml's RPC server on the chosen device, and beside it (port + 1)
  a read-only status over HTTP (``status``).
- ``client``: the engine side: ``probe`` a worker before anything is tried, ``register`` its
  devices in ggml's registry so that a later ``llama_cpp.Llama(...)`` places layers on them.
- ``ggml``: the ctypes bindings both sides use.

llama.cpp's RPC is unauthenticated: a worker listens on loopback unless told otherwise
(``--allow-network``); reach one on another machine through an SSH tunnel.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
# RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION of ggml/include/ggml-rpc.h in the pinned llama.cpp: the library
# exports no getter. A worker reads its own from the server's HELLO answer (serve.py), and the tests check
# that it is this one.
PROTOCOL = (7, 0, 0)
STATUS_PATH = "/status"
KIND = "quantdesk-rpc-worker"  # the status document's "kind": tells a QuantDesk worker from anything else


def status_port(port: int) -> int:
    """The worker's status endpoint listens on the port after its RPC port."""
    return port + 1


def protocol_text(version: tuple[int, int, int] | list[int]) -> str:
    return ".".join(str(n) for n in version)


def compatible(server: tuple[int, int, int] | list[int], client: tuple[int, int, int] = PROTOCOL) -> bool:
    """llama.cpp's own rule (ggml-rpc.cpp, negotiate_hello): the same major version, and a server
    minor version no newer than the client's."""
    return server[0] == client[0] and server[1] <= client[1]
