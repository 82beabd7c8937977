"""Every exception of QuantDesk, one hierarchy whose messages are written for the user (in the
way of huggingface_hub's errors.py), grouped by subsystem.

The CLI prints ``str(error)`` and exits with status 2; the GUI shows it in a dialog or inline.
"""

from __future__ import annotations

from typing import Any


class QuantDeskError(Exception):
    """Base class: the message names the file or value and the cause."""


class ModelFileError(QuantDeskError):
    """A model file is missing, not GGUF, truncated, or of an unsupported architecture."""


class BadValueError(QuantDeskError):
    """A parameter given by the user is out of range."""


class EngineError(QuantDeskError):
    """The engine reported a failure (load or generation)."""


class EngineCrashed(EngineError):
    """The engine process died (native crash, abort, out of memory, killed)."""


class ImageRefused(EngineError):
    """An image the engine would not take: damaged, too large, of an unread type, or the model
    cannot see (the request's fault, not the engine's)."""


class ContextOverflow(EngineError):
    """A prompt (with the room asked for the reply) does not fit the model's context; the numbers
    are kept for the API server's error."""

    def __init__(self, message: str, *, prompt_tokens: int, reserve: int, n_ctx: int) -> None:
        super().__init__(message)
        self.prompt_tokens, self.reserve, self.n_ctx = prompt_tokens, reserve, n_ctx


class JobFailed(QuantDeskError):
    """A job's child process failed. ``failure`` (an ``app.core.proc.failure.Failure``, or None
    when the job failed before or after its child) says how: crashed with which signal, out of
    memory, bad input, failed."""

    def __init__(self, message: str, *, failure: Any = None) -> None:
        super().__init__(message)
        self.failure = failure


class ConversionError(JobFailed):
    """Converting a Hugging Face model folder to GGUF failed (the converter's reason included)."""


class QuantizeError(JobFailed):
    """Quantizing a GGUF file, or computing its importance matrix, failed."""


class DiskSpaceError(QuantDeskError):
    """The destination has too little free space for the files a job would write."""


class Cancelled(QuantDeskError):
    """The user cancelled the job; nothing it was writing is left behind."""

    def __init__(self, what: str = "job") -> None:
        super().__init__(f"{what} cancelled")


class SchemaTooNewError(QuantDeskError):
    """A database was written by a newer QuantDesk (its schema version is unknown here)."""


# -- GGUF files --------------------------------------------------------------------------------
class HeaderIncomplete(Exception):
    """The header runs past the bytes fetched so far (remote reads grow and try again)."""


# -- the Hub -----------------------------------------------------------------------------------
class HubError(QuantDeskError):
    """The Hub said no (gated, missing, unreachable); the message says what to do."""


class GatedError(HubError):
    """The repository is gated: the user must accept its terms on the Hub (and be logged in)."""


class LoginError(QuantDeskError):
    """The Hub refused the token, or could not be reached."""


class ChecksumError(QuantDeskError):
    """A downloaded file does not match the Hub's checksum (it is deleted, never registered)."""


# -- conversion, quantization, quality ---------------------------------------------------------
class ConverterMissing(QuantDeskError):
    """llama.cpp's converter is not installed, or is from another llama.cpp version than the engine."""


class EvalError(JobFailed):
    """A quality measurement failed (model unloadable, text too short, different tokenizers)."""


class RemoteCodeRefused(RuntimeError):
    """A model folder asks to run its own Python code (trust_remote_code), which QuantDesk never does."""


# -- the API server ----------------------------------------------------------------------------
class ApiError(QuantDeskError):
    """A request to the API server that cannot be served: the HTTP status, and what the OpenAI and
    Anthropic APIs put in their error objects (``kind``: the error type; ``param``: the field at
    fault; ``code``: a machine-readable reason); ``retry_after``: seconds, for 429."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after
        self.kind = kind or {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                             404: "not_found_error", 429: "rate_limit_error"}.get(status, "server_error")


# -- RPC workers -------------------------------------------------------------------------------
class WorkerError(QuantDeskError):
    """An RPC worker that cannot be used: unreachable, not a QuantDesk worker, another protocol
    version, busy, or one that did not start. The message is one line naming the address."""
